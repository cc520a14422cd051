"""Benchmark GCL's discriminator step and view-contrast losses against the official compute patterns.

Measured in one run, on the current device:
  * the discriminator step at the paper configuration (3-scale PatchGAN, 256×128, LSGAN + R1 0.01,
    three fakes x'_ori, x'_new, x''_ori): the official pattern (D(real) and the R1 double backprop
    recomputed for every fake, fakes one at a time) against ``share_real=True, batch_fakes=True``
    (D(real) and R1 once, scaled by 3; fakes in one batch) — time, peak memory, and the loss values,
    which must agree;
  * the three view-invariant losses (Eq. 6–8) at Market-1501 scale (N = 12,936 memory rows, 512-d,
    batch 16, K = 8192 negatives, ~520 clusters plus outliers): the official per-sample Python loop
    (index pools per anchor, randperm, gathering K×512 rows) against the vectorised sampler +
    one B×N product, forward and backward;
  * the memory update (Eq. 5): per-sample loop against the vectorised update.

Peak memory: CUDA max_memory_allocated on a GPU; on CPU the growth of the peak RSS (VmHWM, reset
through /proc/self/clear_refs) while one step runs in a fresh child process (Linux only; coarse, but
comparable between the two patterns).

Usage: python bench/bench_gcl_networks.py [--quick] [--device auto|cpu|cuda] [--batch N]
Times are the median (and best) of several calls; ratios use medians. Writes bench/results/gcl_networks.json and prints a table.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Tuple

import torch

from _common import machine, write_results
import torch.nn.functional as F

from gclreid.config import GeneratorConfig
from gclreid.losses import ViewMemory, discriminator_loss, sample_view_contrast, view_invariant_losses
from gclreid.models import build_discriminator
from gclreid.runtime import resolve_device

PATTERNS = {"official": dict(share_real=False, batch_fakes=False), "ours": dict(share_real=True, batch_fakes=True)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, repeats: int, warmup: int = 1) -> Tuple[float, float]:
    """(median, best) seconds per call over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2], times[0]


# ---------------------------------------------------------------- discriminator step

def _d_setup(batch: int, device: torch.device):
    torch.manual_seed(0)
    disc = build_discriminator(GeneratorConfig()).to(device)
    g = torch.Generator(device="cpu").manual_seed(1)
    real, *fakes = (torch.randn(batch, 3, 256, 128, generator=g).to(device) for _ in range(4))
    return disc, real, fakes


def _d_step(disc, real, fakes, pattern: str) -> float:
    disc.zero_grad(set_to_none=True)
    loss = discriminator_loss(disc, real, fakes, "lsgan", r1_weight=0.01, **PATTERNS[pattern])
    loss.total.backward()
    return loss.total.item()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _cpu_peak_child(pattern: str, batch: int, queue) -> None:
    disc, real, fakes = _d_setup(batch, torch.device("cpu"))
    # Reset the peak-RSS mark (VmHWM) so that only this step counts; a spawned child otherwise
    # starts with its parent's high-water mark.
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    _d_step(disc, real, fakes, pattern)
    queue.put((_status_kib("VmHWM") - before) * 1024)


def d_step_peak_bytes(pattern: str, batch: int, device: torch.device) -> int:
    if device.type == "cuda":
        disc, real, fakes = _d_setup(batch, device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        _d_step(disc, real, fakes, pattern)
        return torch.cuda.max_memory_allocated(device) - base
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_cpu_peak_child, args=(pattern, batch, queue))
    proc.start()
    value = queue.get()
    proc.join()
    return int(value)


# ---------------------------------------------------------------- view contrast

def loop_view_losses(f, f_new, idx, memory, labels, k, tau, generator):
    """The official per-sample pattern (memory.py): pools, random picks and K×D gathers per anchor."""
    f, f_new = F.normalize(f, dim=1), F.normalize(f_new, dim=1)
    totals = [0.0, 0.0, 0.0]
    for b in range(len(idx)):
        y = labels[idx[b]]
        pos_pool = torch.nonzero(labels == y).flatten()
        neg_pool = torch.nonzero(labels != y).flatten()
        p1 = pos_pool[torch.randint(len(pos_pool), (1,), generator=generator, device=labels.device)]
        p2 = pos_pool[torch.randint(len(pos_pool), (1,), generator=generator, device=labels.device)]
        negs = neg_pool[torch.randperm(len(neg_pool), generator=generator, device=labels.device)[:k]]
        neg = memory[negs] @ f_new[b]
        for t, pos in enumerate((f[b] @ memory[p1][0], f_new[b] @ memory[idx[b]], f_new[b] @ memory[p2][0])):
            logits = torch.cat([pos.reshape(1), neg]) / tau
            totals[t] = totals[t] + torch.logsumexp(logits, 0) - logits[0]
    return [t / len(idx) for t in totals]


def view_setup(device, n=12936, dim=512, batch=16, clusters=520, outlier_frac=0.1):
    g = torch.Generator(device="cpu").manual_seed(0)
    memory = ViewMemory(n, dim)
    memory.initialise(torch.randn(n, dim, generator=g))
    labels = torch.randint(0, clusters, (n,), generator=g)
    labels[torch.rand(n, generator=g) < outlier_frac] = -1
    memory.set_labels(labels)
    memory.to(device)
    idx = torch.randperm(n, generator=g)[:batch]
    idx = idx[labels[idx] >= 0].to(device)  # the official loader holds clustered images only
    f = torch.randn(len(idx), dim, generator=g).to(device).requires_grad_()
    f_new = torch.randn(len(idx), dim, generator=g).to(device).requires_grad_()
    return memory, idx, f, f_new


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=0, help="D-step batch (default 16 on a GPU, 2 on CPU)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gcl_networks.json"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    repeats = 3 if args.quick else 5
    batch = args.batch or (16 if device.type == "cuda" else 2)
    rows, ratios = [], {}

    def add(name, timing, **extra):
        median, best = timing
        rows.append({"case": name, "seconds": round(median, 5), "best_seconds": round(best, 5), **extra})
        extras = "  ".join(f"{k}={v}" for k, v in extra.items())
        print(f"{name:<58} {median * 1000:10.1f} ms (best {best * 1000:8.1f})  {extras}", flush=True)

    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")

    # Discriminator step
    disc, real, fakes = _d_setup(batch, device)
    values, times, peaks = {}, {}, {}
    for pattern in PATTERNS:
        peaks[pattern] = d_step_peak_bytes(pattern, batch, device)
        values[pattern] = _d_step(disc, real, fakes, pattern)
        times[pattern] = time_call(lambda: _d_step(disc, real, fakes, pattern), device, repeats)
        add(f"D step {pattern} (paper D, 256x128, batch {batch}, 3 fakes)", times[pattern],
            peak_mib=round(peaks[pattern] / 2 ** 20, 1), loss=round(values[pattern], 6))
    ratios["d_step_speedup"] = round(times["official"][0] / times["ours"][0], 3)
    ratios["d_step_memory_ratio"] = round(peaks["ours"] / max(peaks["official"], 1), 3)
    ratios["d_step_loss_rel_diff"] = abs(values["ours"] - values["official"]) / abs(values["official"])

    # View-invariant losses at Market scale
    memory, idx, f, f_new = view_setup(device)
    k, tau = 8192, 0.04

    def vectorised():
        sample = sample_view_contrast(memory.labels, idx, k, shared_positive=False, generator=None)
        losses = view_invariant_losses(f, f_new, idx, memory.features, sample, temperature=tau, lvi2_positive="memory")
        sum(losses.values()).backward()

    def looped():
        sum(loop_view_losses(f, f_new, idx, memory.features, memory.labels, k, tau, None)).backward()

    cheap = 5 * repeats  # the view-contrast and memory cases take milliseconds: more repeats
    t_vec = time_call(vectorised, device, cheap)
    t_loop = time_call(looped, device, cheap)
    t_sample = time_call(lambda: sample_view_contrast(memory.labels, idx, k), device, cheap)
    add(f"view losses loop (N=12936, B={len(idx)}, K={k}) fwd+bwd", t_loop)
    add(f"view losses vectorised (N=12936, B={len(idx)}, K={k}) fwd+bwd", t_vec)
    add("sampling alone (positives + K negatives, vectorised)", t_sample)
    ratios["view_loss_speedup"] = round(t_loop[0] / t_vec[0], 3)

    # Memory update
    feats = torch.randn(len(idx), 512, device=device)

    def update_loop():
        m = memory.features.clone()
        for i, x in zip(idx.tolist(), F.normalize(feats, dim=1)):
            m[i] = F.normalize(0.2 * m[i] + 0.8 * x, dim=0)

    t_uloop = time_call(update_loop, device, cheap)
    t_uvec = time_call(lambda: memory.update(idx, feats), device, cheap)
    add("memory update loop", t_uloop)
    add("memory update vectorised", t_uvec)
    ratios["memory_update_speedup"] = round(t_uloop[0] / t_uvec[0], 3)

    print()
    for key, value in ratios.items():
        print(f"{key:<40} {value:.4g}")
    write_results(args.out, {**machine(device), "quick": args.quick, "d_batch": batch, "rows": rows, "ratios": ratios,})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark one GCL training iteration at the paper's settings against the official compute pattern.

The iteration is the real one, ``GCL.step`` of ``gclreid.engine.gcl`` (all forward passes, the D step,
the G (+ Eid) step, the memory update), built from ``configs/gcl_market1501.yaml``: ResNet-50
identity encoder (last stride 1, 2048×4×1 parts, 512-d embedding), 256×128 images, generator and
3-scale discriminator at the official sizes, LSGAN + R1 0.01, a memory bank of 12,936 rows (Market-1501's
training set) with ~700 pseudo-label clusters and K = 8192 negatives. Random images and structure maps
(the numbers do not depend on the pixels).

Two compute patterns, same seed, same inputs:

* ``official`` — as the official code: D(real) and the R1 double backprop recomputed for every fake
  (``share_real=False``), the three fakes through D one at a time (``batch_fakes=False``), in
  stage 2 the frozen identity encoder's parameter gradients computed (``requires_grad`` left on),
  and every network in PyTorch's default NCHW memory format;
* ``ours_nchw`` — our compute pattern: D(real) and R1 once, scaled by 3; fakes as one batch; no Eid
  parameter gradients in stage 2; still NCHW (``generator.channels_last=false``);
* ``ours`` — the defaults: ``ours_nchw`` with the generator and D in channels-last format;
* ``ours_ckpt`` — ``ours`` with ``gcl.checkpoint_decoder``: the decoder's activations recomputed in
  the backward instead of stored (memory for time).

Time: one process builds the models once and switches them from pattern to pattern between steps
(``set_pattern``: config switches, method attributes, memory format of G and D), ``--iters`` rounds
after a warm-up round, the order reversed every other round; the speed-up of a pattern is the median
over rounds of (official time / pattern time) in the same round. Pairing steps that run seconds
apart cancels most of the drift of a shared machine (separate processes measured minutes apart
varied by ±10 %). Memory: each (stage, pattern) in a fresh process, one warm-up and one more
iteration: CUDA ``max_memory_allocated`` above what the models occupy; on CPU the growth of the
peak RSS (VmHWM, reset through /proc/self/clear_refs after the models are built), which includes
optimiser state and gradient buffers (Linux only; coarse, but comparable between the patterns). The
losses of the first iteration are compared between patterns: they must agree.

Usage: python bench/bench_gcl_iteration.py [--device auto|cpu|cuda] [--bf16] [--batch N] [--iters N]
       [--stages 2,3] [--quick]
Writes bench/results/gcl_iteration.json and prints a table with official/ours ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List

import torch

RESULTS = Path(__file__).parent / "results" / "gcl_iteration.json"
PATTERNS = ("official", "ours_nchw", "ours", "ours_ckpt")
MEMORY_ROWS = 12936  # Market-1501 training images
CLUSTERS = 700


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(stage: int, pattern: str, device: torch.device, bf16: bool, batch: int, quick: bool, out: str):
    """The GCL method at the paper configuration on a stand-in dataset, and one batch of inputs."""
    from gclreid.config import PACKAGE_CONFIGS, load_config
    amp = str(bf16).lower()
    overrides = [f"gcl.stage={stage}", "model.pretrained=false", f"train.batch_size={batch}", f"train.amp={amp}",
                 f"train.amp_cpu={amp}", f"run.out={out}", "data.workers=0"]
    if quick:  # a small setting to check the script itself
        overrides += ["model.arch=resnet18", "data.height=128", "data.width=64"]
    cfg = load_config(PACKAGE_CONFIGS / "gcl_market1501.yaml", overrides)
    method, inputs = standin_method(cfg, device, stage, batch, MEMORY_ROWS if not quick else 512,
                                    CLUSTERS if not quick else 40)
    set_pattern(method, pattern)
    return method, inputs


def standin_method(cfg, device: torch.device, stage: int, batch: int, rows: int, clusters: int):
    """The GCL method of `cfg` on a stand-in dataset of `rows` training images (no files), its memory bank
    filled and clustered into `clusters` pseudo identities (10 % outliers) for stage 3, and one batch of
    random inputs. Seeded: the same arguments give the same method and batch."""
    from gclreid.engine import build_method
    records = [SimpleNamespace(pid=i % 751, camid=0, path="", relpath="", split="train") for i in range(rows)]
    dataset = SimpleNamespace(name="standin", root="", train=records, query=[], gallery=[])
    torch.manual_seed(0)
    method = build_method(cfg, dataset, device)
    g = torch.Generator().manual_seed(1)
    if stage == 3:
        memory = torch.nn.functional.normalize(torch.randn(rows, method.encoder.embed_dim, generator=g), dim=1)
        labels = torch.randint(0, clusters, (rows,), generator=g)
        labels[torch.rand(rows, generator=g) < 0.1] = -1  # outliers
        method.contrast.memory.initialise(memory.to(device))
        method.contrast.memory.set_labels(labels.numpy())
        method.labels, method.memory_ready = labels.numpy(), True
        index = torch.nonzero(labels >= 0).flatten()[torch.randperm(int((labels >= 0).sum()), generator=g)[:batch]]
    else:
        index = torch.randperm(rows, generator=g)[:batch]
    h, w = cfg.data.height, cfg.data.width
    inputs = {"image": torch.randn(batch, 3, h, w, generator=g), "structure": torch.rand(batch, 1, h, w, generator=g) * 2 - 1,
              "structure_new": torch.rand(batch, 1, h, w, generator=g) * 2 - 1, "index": index}
    return method, inputs


def set_pattern(method, pattern: str) -> None:
    """Switch a built GCL method to a compute pattern (any number of times): the config switches, the
    method's pattern attributes, and the memory format of the generator and D (their optimiser
    states follow)."""
    ours = pattern.startswith("ours")
    method.cfg.gcl.share_real = ours
    method.cfg.gcl.checkpoint_decoder = pattern == "ours_ckpt"
    method.batch_fakes = method.stream_d_backward = method.freeze_encoder_grads = ours
    fmt = torch.channels_last if pattern in ("ours", "ours_ckpt") else torch.contiguous_format
    for name in ("generator", "discriminator"):
        method.models[name].to(memory_format=fmt)
        for state in method.optimizers[name].state.values():
            for key, value in state.items():
                if torch.is_tensor(value) and value.dim() == 4:
                    state[key] = value.contiguous(memory_format=fmt)
    method.train_mode()


def _peak_start(device: torch.device) -> int:
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: count only what follows
    return _status_kib("VmRSS") * 1024


def _peak_since(device: torch.device, base: int) -> int:
    _sync(device)
    return (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _status_kib("VmHWM") * 1024) - base


def _timed_step(method, inputs, device: torch.device):
    start = time.perf_counter()
    losses = method.step(inputs)
    _sync(device)
    return time.perf_counter() - start, losses


def memory_worker(stage: int, pattern: str, args) -> Dict:
    """Fresh process, one pattern: peak memory over a warm-up and one more iteration; first losses."""
    from gclreid.runtime import resolve_device
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as out:
        method, inputs = build(stage, pattern, device, args.bf16, args.batch, args.quick, out)
        base = _peak_start(device)
        torch.manual_seed(2)  # the negatives drawn by the view-contrast loss
        _, first = _timed_step(method, inputs, device)
        _timed_step(method, inputs, device)
        peak = _peak_since(device, base)
    return {"stage": stage, "pattern": pattern, "peak_bytes": peak, "losses": {k: float(v) for k, v in first.items()}}


def timing_worker(stage: int, args) -> Dict[str, List[float]]:
    """One process, one model set, switched from pattern to pattern between steps (order reversed
    every other round), so that every pattern runs under the same conditions."""
    from gclreid.runtime import resolve_device
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as out:
        method, inputs = build(stage, "official", device, args.bf16, args.batch, args.quick, out)
        times: Dict[str, List[float]] = {p: [] for p in PATTERNS}
        for i in range(-1, args.iters):  # round -1: warm-up
            for pattern in (PATTERNS if i % 2 == 0 else PATTERNS[::-1]):
                set_pattern(method, pattern)
                seconds = _timed_step(method, inputs, device)[0]
                if i >= 0:
                    times[pattern].append(seconds)
    return times


def _run_child(flag: str, value: str, args) -> Dict:
    cmd = [sys.executable, __file__, flag, value, "--device", args.device, "--batch", str(args.batch),
           "--iters", str(args.iters)] + (["--bf16"] if args.bf16 else []) + (["--quick"] if args.quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{flag} {value} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def max_rel_diff(a: Dict[str, float], b: Dict[str, float]) -> float:
    return max(abs(a[k] - b[k]) / max(abs(a[k]), abs(b[k]), 1e-12) for k in a)


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (train.amp on CUDA, train.amp_cpu on the CPU)")
    p.add_argument("--batch", type=int, default=0, help="images per iteration (default 4 on CPU, 16 on CUDA)")
    p.add_argument("--iters", type=int, default=8, help="timed rounds (one step of every pattern each)")
    p.add_argument("--stages", default="2,3")
    p.add_argument("--quick", action="store_true", help="ResNet-18 at 128×64, small memory: checks the script")
    p.add_argument("--memory-worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--timing-worker", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from gclreid.runtime import resolve_device
    device = resolve_device(args.device)
    if not args.batch:
        args.batch = 16 if device.type == "cuda" else 4
    if args.memory_worker:
        stage, pattern = args.memory_worker.split(":")
        print(json.dumps(memory_worker(int(stage), pattern, args)))
        return 0
    if args.timing_worker:
        print(json.dumps(timing_worker(int(args.timing_worker), args)))
        return 0
    results, rows = [], []
    for stage in [int(s) for s in args.stages.split(",")]:
        memory = {pattern: _run_child("--memory-worker", f"{stage}:{pattern}", args) for pattern in PATTERNS}
        times = _run_child("--timing-worker", str(stage), args)
        o = memory["official"]
        row = {"stage": stage, "official_median_s": statistics.median(times["official"]),
               "official_peak_mib": o["peak_bytes"] / 2**20}
        for pattern in PATTERNS:
            m = memory[pattern]
            results.append({**m, "times": times[pattern]})
            if pattern == "official":
                continue
            paired = [a / b for a, b in zip(times["official"], times[pattern])]
            row.update({f"{pattern}_median_s": statistics.median(times[pattern]),
                        f"{pattern}_speedup": statistics.median(paired),
                        f"{pattern}_speedup_range": [min(paired), max(paired)],
                        f"{pattern}_peak_mib": m["peak_bytes"] / 2**20,
                        f"{pattern}_memory_ratio": m["peak_bytes"] / o["peak_bytes"] if o["peak_bytes"] > 0 else float("nan"),
                        f"{pattern}_loss_max_rel_diff": max_rel_diff(o["losses"], m["losses"])})
        rows.append(row)
    setting = "ResNet-18 128x64 (quick)" if args.quick else "ResNet-50 256x128, paper generator/D"
    print(f"GCL iteration, {setting}, batch {args.batch}, {device.type}{' bf16' if args.bf16 else ''}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.iters} paired rounds")
    print(f"{'stage':>5} {'pattern':>10} {'median s/it':>12} {'speed-up (paired)':>18} {'range':>13} {'peak MiB':>9} "
          f"{'memory':>7} {'loss rel diff':>14}")
    for r in rows:
        print(f"{r['stage']:>5} {'official':>10} {r['official_median_s']:>12.3f} {'1.00x':>18} {'':>13} "
              f"{r['official_peak_mib']:>9.0f} {'1.00':>7}")
        for pattern in PATTERNS[1:]:
            lo, hi = r[pattern + "_speedup_range"]
            print(f"{r['stage']:>5} {pattern:>10} {r[pattern + '_median_s']:>12.3f} {r[pattern + '_speedup']:>17.2f}x "
                  f"{f'{lo:.2f}-{hi:.2f}':>13} {r[pattern + '_peak_mib']:>9.0f} {r[pattern + '_memory_ratio']:>7.2f} "
                  f"{r[pattern + '_loss_max_rel_diff']:>14.2e}")
    payload = {"benchmark": "gcl_iteration", "setting": setting, "device": str(device), "bf16": args.bf16,
               "batch": args.batch, "paired_rounds": args.iters, "torch": torch.__version__,
               "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "rows": rows, "runs": results,
               "note": "speed-ups are medians of per-round paired ratios within one process; memory from fresh processes"}
    out = RESULTS if not args.quick else RESULTS.with_name("gcl_iteration_quick.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

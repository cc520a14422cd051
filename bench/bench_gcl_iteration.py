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

Each (stage, pattern) runs in a fresh process: one warm-up iteration (its losses are compared
between patterns: they must agree), then ``--iters`` timed iterations. ``--rounds`` repeats all
processes, patterns interleaved, so that load from other jobs on a shared machine hits every
pattern alike; the time reported is the fastest iteration over all rounds (the least disturbed
measurement of the same work), the median is recorded too. Peak memory (the largest over rounds):
CUDA ``max_memory_allocated`` above what the models occupy; on CPU the growth of the peak RSS (VmHWM,
reset through /proc/self/clear_refs after the models are built) over the whole run, which includes
optimiser state and gradient buffers (Linux only; coarse, but comparable between the patterns).

Usage: python bench/bench_gcl_iteration.py [--device auto|cpu|cuda] [--bf16] [--batch N] [--iters N]
       [--rounds N] [--stages 2,3] [--quick]
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
    from gclreid.engine import build_method
    ours = pattern.startswith("ours")
    overrides = [f"gcl.stage={stage}", f"gcl.share_real={ours}", f"gcl.checkpoint_decoder={pattern == 'ours_ckpt'}",
                 f"generator.channels_last={pattern in ('ours', 'ours_ckpt')}",
                 "model.pretrained=false",
                 f"train.batch_size={batch}", f"train.amp={str(bf16).lower()}", f"run.out={out}", "data.workers=0"]
    if quick:  # a small setting to check the script itself
        overrides += ["model.arch=resnet18", "data.height=128", "data.width=64"]
    cfg = load_config(PACKAGE_CONFIGS / "gcl_market1501.yaml", overrides)
    rows = MEMORY_ROWS if not quick else 512
    records = [SimpleNamespace(pid=i % 751, camid=0, path="", relpath="", split="train") for i in range(rows)]
    dataset = SimpleNamespace(name="standin", root="", train=records, query=[], gallery=[])
    torch.manual_seed(0)
    method = build_method(cfg, dataset, device)
    method.batch_fakes = method.stream_d_backward = method.freeze_encoder_grads = ours
    g = torch.Generator().manual_seed(1)
    if stage == 3:
        memory = torch.nn.functional.normalize(torch.randn(rows, method.encoder.embed_dim, generator=g), dim=1)
        labels = torch.randint(0, CLUSTERS if not quick else 40, (rows,), generator=g)
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
    method.train_mode()
    return method, inputs


def worker(stage: int, pattern: str, device_name: str, bf16: bool, batch: int, iters: int, quick: bool) -> Dict:
    from gclreid.runtime import resolve_device
    device = resolve_device(device_name)
    with tempfile.TemporaryDirectory() as out:
        method, inputs = build(stage, pattern, device, bf16, batch, quick, out)
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: count only what follows
            base = _status_kib("VmRSS") * 1024
        torch.manual_seed(2)  # the negatives drawn by the view-contrast loss
        start = time.perf_counter()
        first = method.step(inputs)
        _sync(device)
        warmup = time.perf_counter() - start
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            method.step(inputs)
            _sync(device)
            times.append(time.perf_counter() - start)
        peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _status_kib("VmHWM") * 1024) - base
    return {"stage": stage, "pattern": pattern, "seconds": statistics.median(times) if times else warmup,
            "times": times, "warmup_seconds": warmup, "peak_bytes": peak,
            "losses": {k: float(v) for k, v in first.items()}}


def run_worker(stage: int, pattern: str, args) -> Dict:
    cmd = [sys.executable, __file__, "--worker", f"{stage}:{pattern}", "--device", args.device,
           "--batch", str(args.batch), "--iters", str(args.iters)] + (["--bf16"] if args.bf16 else []) \
        + (["--quick"] if args.quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {stage}:{pattern} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def max_rel_diff(a: Dict[str, float], b: Dict[str, float]) -> float:
    return max(abs(a[k] - b[k]) / max(abs(a[k]), abs(b[k]), 1e-12) for k in a)


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (train.amp; CUDA only)")
    p.add_argument("--batch", type=int, default=0, help="images per iteration (default 4 on CPU, 16 on CUDA)")
    p.add_argument("--iters", type=int, default=3, help="timed iterations after the warm-up one")
    p.add_argument("--rounds", type=int, default=2, help="fresh processes per pattern, interleaved")
    p.add_argument("--stages", default="2,3")
    p.add_argument("--quick", action="store_true", help="ResNet-18 at 128×64, small memory: checks the script")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from gclreid.runtime import resolve_device
    device = resolve_device(args.device)
    if not args.batch:
        args.batch = 16 if device.type == "cuda" else 4
    if args.worker:
        stage, pattern = args.worker.split(":")
        print(json.dumps(worker(int(stage), pattern, args.device, args.bf16, args.batch, args.iters, args.quick)))
        return 0
    if args.bf16 and device.type != "cuda":
        print("note: --bf16 only changes anything on CUDA (autocast is off on CPU)")
    results, rows = [], []
    for stage in [int(s) for s in args.stages.split(",")]:
        rounds = [{pattern: run_worker(stage, pattern, args) for pattern in PATTERNS} for _ in range(args.rounds)]
        runs = {}
        for pattern in PATTERNS:
            per_round = [r[pattern] for r in rounds]
            times = [t for r in per_round for t in (r["times"] or [r["seconds"]])]
            runs[pattern] = {**per_round[0], "seconds": min(times), "median_seconds": statistics.median(times),
                             "times": times, "peak_bytes": max(r["peak_bytes"] for r in per_round)}
        results.extend(runs.values())
        o = runs["official"]
        row = {"stage": stage, "official_s": o["seconds"], "official_median_s": o["median_seconds"],
               "official_peak_mib": o["peak_bytes"] / 2**20}
        for pattern in PATTERNS[1:]:
            r = runs[pattern]
            row.update({f"{pattern}_s": r["seconds"], f"{pattern}_median_s": r["median_seconds"],
                        f"{pattern}_speedup": o["seconds"] / r["seconds"],
                        f"{pattern}_median_speedup": o["median_seconds"] / r["median_seconds"],
                        f"{pattern}_peak_mib": r["peak_bytes"] / 2**20,
                        f"{pattern}_memory_ratio": r["peak_bytes"] / o["peak_bytes"] if o["peak_bytes"] > 0 else float("nan"),
                        f"{pattern}_loss_max_rel_diff": max_rel_diff(o["losses"], r["losses"])})
        rows.append(row)
    setting = "ResNet-18 128x64 (quick)" if args.quick else "ResNet-50 256x128, paper generator/D"
    print(f"GCL iteration, {setting}, batch {args.batch}, {device.type}{' bf16' if args.bf16 else ''}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'stage':>5} {'pattern':>10} {'s/it':>8} {'speed-up':>9} {'median':>8} {'speed-up':>9} {'peak MiB':>9} "
          f"{'memory':>7} {'loss rel diff':>14}")
    for r in rows:
        print(f"{r['stage']:>5} {'official':>10} {r['official_s']:>8.3f} {'1.00x':>9} {r['official_median_s']:>8.3f} "
              f"{'1.00x':>9} {r['official_peak_mib']:>9.0f} {'1.00':>7}")
        for pattern in PATTERNS[1:]:
            print(f"{r['stage']:>5} {pattern:>10} {r[pattern + '_s']:>8.3f} {r[pattern + '_speedup']:>8.2f}x "
                  f"{r[pattern + '_median_s']:>8.3f} {r[pattern + '_median_speedup']:>8.2f}x "
                  f"{r[pattern + '_peak_mib']:>9.0f} {r[pattern + '_memory_ratio']:>7.2f} "
                  f"{r[pattern + '_loss_max_rel_diff']:>14.2e}")
    payload = {"benchmark": "gcl_iteration", "setting": setting, "device": str(device), "bf16": args.bf16,
               "batch": args.batch, "timed_iterations": args.iters, "rounds": args.rounds, "torch": torch.__version__,
               "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "rows": rows, "runs": results,
               "note": "ratios within one run; the CPU may be shared with other jobs"}
    out = RESULTS if not args.quick else RESULTS.with_name("gcl_iteration_quick.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

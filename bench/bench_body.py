"""Grey structure maps per second (GCL structure maps: each body at 0°, 45°, …, 315°).

Renders ``--bodies`` walking bodies (random phase and yaw) at 8 angles, ``--size`` high (2:1),
and reports maps per second for: one process with 1 thread, one process with 2 threads, two
worker processes with 1 thread each (the batch split in halves), and, in the same run, the
straightforward reference that evaluates the same ray-primitive math on the full frame for every
primitive instead of its bounding-box window (rendered on fewer bodies; it is slow). Wall-clock
rates are noisy on a shared machine, so CPU-time rates (process CPU seconds) are printed too.
Checks that the reference and ours give identical z-buffers. Writes bench/results/body.json.

    python bench/bench_body.py [--bodies 128] [--size 256] [--repeat 3] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path

import torch

from gclreid.body import Body, frame_camera, rasterize, render_structure
from gclreid.body.raster import prepare, surface
from gclreid.synth.writer import tune_malloc


def make_bodies(n: int, seed: int = 0, device: str = "cpu") -> Body:
    g = torch.Generator().manual_seed(seed)
    b = Body.walking(phase=torch.rand(n, generator=g), yaw=torch.rand(n, generator=g) * 360.0)
    return Body(b.pose.to(device), b.shape.to(device), b.yaw.to(device), b.trans.to(device))


def timed(fn, repeat: int):
    """Best wall and CPU seconds over ``repeat`` runs (after one warm-up run)."""
    fn()
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu


def _render_half(args):
    n, seed, size = args
    torch.set_num_threads(1)
    tune_malloc()
    b = make_bodies(n, seed)
    t = time.process_time()
    render_structure(b, height=size, width=size // 2, chunk=32)
    return time.process_time() - t


def _init_worker():
    torch.set_num_threads(1)
    tune_malloc()


def reference_maps(bodies: Body, size: int) -> None:
    """The same renderer with every primitive evaluated on the whole frame (no windows)."""
    seg = bodies.segments()
    cam = frame_camera(seg, bodies.yaw, size, size // 2)
    for angle in range(0, 360, 45):
        view = cam.project(seg, bodies.yaw + angle)
        prep = prepare(view)
        keys = rasterize(view, size, size // 2, prep, full_frame=True)
        surface(view, keys, prep, full=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bodies", type=int, default=128)
    ap.add_argument("--size", type=int, default=256, help="image height (width = height / 2)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    tune_malloc()
    size, n = args.size, args.bodies
    maps = n * 8
    rows = []

    if args.device.startswith("cuda"):
        bodies = make_bodies(n, device=args.device)

        def run_gpu():
            render_structure(bodies, height=size, width=size // 2, chunk=n)
            torch.cuda.synchronize()
        wall, _ = timed(run_gpu, args.repeat)
        rows.append({"config": f"{torch.cuda.get_device_name()} (batch {n})", "maps_per_s": maps / wall})
    else:
        bodies = make_bodies(n)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            wall, cpu = timed(lambda: render_structure(bodies, height=size, width=size // 2, chunk=32), args.repeat)
            rows.append({"config": f"1 process, {threads} thread(s)", "maps_per_s": maps / wall,
                         "maps_per_cpu_s": maps / cpu})
        torch.set_num_threads(1)
        with mp.get_context("spawn").Pool(2, initializer=_init_worker) as pool:
            pool.map(_render_half, [(8, 99, size)] * 2)  # warm-up: imports in the workers
            best = float("inf")
            cpu_total = 0.0
            for _ in range(args.repeat):
                w0 = time.perf_counter()
                cpus = pool.map(_render_half, [(n // 2, 0, size), (n - n // 2, 1, size)])
                wall = time.perf_counter() - w0
                if wall < best:
                    best, cpu_total = wall, sum(cpus)
            rows.append({"config": "2 processes x 1 thread", "maps_per_s": maps / best,
                         "maps_per_cpu_s": maps / cpu_total})
        # Reference: full-frame evaluation, on fewer bodies (same per-map work), one thread.
        ref_n = max(2, n // 16)
        ref_bodies = make_bodies(ref_n, seed=5)
        seg = ref_bodies.segments()
        cam = frame_camera(seg, ref_bodies.yaw, size, size // 2)
        view = cam.project(seg, ref_bodies.yaw)
        same = torch.equal(rasterize(view, size, size // 2), rasterize(view, size, size // 2, full_frame=True))
        wall, cpu = timed(lambda: reference_maps(ref_bodies, size), 1)
        ours_1t = rows[0]["maps_per_cpu_s"]
        rows.append({"config": "reference: full frame, 1 thread", "maps_per_s": ref_n * 8 / wall,
                     "maps_per_cpu_s": ref_n * 8 / cpu, "identical_zbuffer": same})
        rows[-1]["ours_vs_reference_cpu"] = ours_1t / rows[-1]["maps_per_cpu_s"]

    print(f"grey structure maps at {size}x{size // 2}, {n} bodies x 8 angles, {platform.processor() or platform.machine()},"
          f" {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"{'configuration':38s} {'maps/s (wall)':>14s} {'maps/CPU-s':>11s}")
    for r in rows:
        print(f"{r['config']:38s} {r['maps_per_s']:14.0f} {r.get('maps_per_cpu_s', float('nan')):11.0f}")
    if not args.device.startswith("cuda"):
        print(f"ours / reference (1 thread, CPU time): {rows[-1]['ours_vs_reference_cpu']:.1f}x; "
              f"identical z-buffers: {rows[-1]['identical_zbuffer']}")
        print(f"2 processes / 1 process 1 thread (wall): {rows[2]['maps_per_s'] / rows[0]['maps_per_s']:.2f}x")
    out = Path(__file__).parent / "results" / "body.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"size": [size, size // 2], "bodies": n, "angles": 8, "device": args.device,
                               "cpus": os.cpu_count(), "torch": torch.__version__, "results": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

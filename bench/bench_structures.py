"""Structure estimation on SynthReID images against the ground truth, and throughput.

For each estimator (silhouette fallback; MediaPipe Pose when an interpreter with mediapipe is given by
$GCLREID_POSE_PYTHON or installed here): detection rate, median yaw error (degrees), silhouette IoU
between the estimated and the true 0° maps (grey > 20), and images/s for estimate + 8 renders.

    python bench/bench_structures.py [--root /tmp/synth_demo] [--images 200]

Writes bench/results/structures.json. Makes a demo SynthReID in /tmp/synth_demo if the root is absent.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

from gclreid.data import build_dataset
from gclreid.data.images import load_image
from gclreid.structures import structure_path
from gclreid.structures.sources import EstimateSource, render_estimates


def yaw_error(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def run(source: EstimateSource, records, truth, root: str, batch: int = 32) -> dict:
    errs, ious, detected = [], [], 0
    start = time.perf_counter()
    for i in range(0, len(records), batch):
        chunk = records[i:i + batch]
        ests = source.estimate([load_image(r.path) for r in chunk])
        maps = render_estimates(ests, (45, 90, 135, 180, 225, 270, 315), 128, 64)
        for r, e, m in zip(chunk, ests, maps):
            detected += e.status == "detected"
            errs.append(yaw_error(e.yaw, truth[r.relpath]))
            true = np.asarray(Image.open(structure_path(os.path.join(root, "structures"), r, 0)).convert("L")) > 20
            est = m[0] > 20
            ious.append((true & est).sum() / max((true | est).sum(), 1))
    seconds = time.perf_counter() - start
    errs = np.asarray(errs)
    return {"images": len(records), "detection_rate": detected / len(records), "median_yaw_error": float(np.median(errs)),
            "yaw_within_45": float((errs <= 45).mean()), "front_back_confusion": float((errs > 135).mean()),
            "median_iou": float(np.median(ious)), "mean_iou": float(np.mean(ious)),
            "images_per_second": len(records) / seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/synth_demo")
    ap.add_argument("--images", type=int, default=200)
    args = ap.parse_args()
    if not os.path.isdir(args.root):
        subprocess.run([sys.executable, "-m", "gclreid", "synth", "--preset", "demo", "--out", args.root, "--no-progress"],
                       check=True)
    torch.set_num_threads(2)
    with open(os.path.join(args.root, "synthreid.json"), encoding="utf-8") as fh:
        truth = {os.path.basename(m["file"]): m["yaw"] for m in json.load(fh)["images"]}
    ds = build_dataset("synthreid", args.root)
    records = list(ds.train) + list(ds.query) + list(ds.gallery)
    step = max(1, len(records) // args.images)
    records = records[::step][:args.images]
    results = {"fallback": run(EstimateSource("fallback"), records, truth, args.root)}
    try:
        mp_source = EstimateSource("mediapipe")
    except Exception as exc:  # the optional extra is not available
        print(f"MediaPipe skipped: {exc}")
    else:
        results["mediapipe"] = run(mp_source, records, truth, args.root)
        mp_source.close()
    print(f"{'estimator':10s} {'images':>6s} {'detect':>7s} {'yaw err':>8s} {'<=45°':>6s} {'f/b conf':>8s} {'IoU':>6s} {'img/s':>7s}")
    for name, r in results.items():
        print(f"{name:10s} {r['images']:6d} {100 * r['detection_rate']:6.1f}% {r['median_yaw_error']:7.1f}° "
              f"{100 * r['yaw_within_45']:5.1f}% {100 * r['front_back_confusion']:7.1f}% {r['median_iou']:6.3f} "
              f"{r['images_per_second']:7.1f}")
    if "mediapipe" in results:
        print(f"ratio fallback/mediapipe throughput: "
              f"{results['fallback']['images_per_second'] / results['mediapipe']['images_per_second']:.1f}x")
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    with open(os.path.join(os.path.dirname(__file__), "results", "structures.json"), "w") as fh:
        json.dump({"root": args.root, "threads": 2, "size": "128x64", "angles": 8, "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()

"""Benchmark of the data layer: readers at release scale, image decoding + transforms, the identity
sampler at MSMT17 scale. Prints a table and writes bench/results/data.json.

Ratios compare with a lower bound measured in the same run (listing the folders for readers,
decoding alone for transforms) or with a straightforward reference (pure-Python sampler).
Usage: python bench/bench_data.py [--images 300] [--skip-msmt]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gclreid.config import DataConfig, TransformConfig
from gclreid.data import (RandomIdentitySampler, build_dataset, build_test_transform, build_train_transform,
                          load_image)


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def market_tree(root: Path, rng: random.Random) -> int:
    """Empty files with Market-1501 names and release counts (readers never open the images)."""
    counts = {"bounding_box_train": 12936, "query": 3368, "bounding_box_test": 19732}
    total = 0
    for folder, n in counts.items():
        (root / folder).mkdir(parents=True)
        for i in range(n):
            pid = -1 if folder == "bounding_box_test" and i < 3819 else rng.randint(0, 1501)
            (root / folder / f"{pid:04d}_c{rng.randint(1, 6)}s1_{i:06d}_01.jpg").touch()
            total += 1
    return total


def msmt_tree(root: Path, rng: random.Random) -> int:
    """MSMT17 V1 list files and empty images at release counts."""
    sizes = {"list_train.txt": ("train", 30248, 1041), "list_val.txt": ("train", 2373, 1041),
             "list_query.txt": ("test", 11659, 3060), "list_gallery.txt": ("test", 82161, 3060)}
    total = 0
    for list_name, (folder, n, ids) in sizes.items():
        lines = []
        for i in range(n):
            pid = i % ids
            rel = f"{pid:04d}/{pid:04d}_{total + i:06d}_{rng.randint(1, 15):02d}_0303morning_{i:04d}_0.jpg"
            (root / folder / f"{pid:04d}").mkdir(parents=True, exist_ok=True)
            (root / folder / rel).touch()
            lines.append(f"{rel} {pid}\n")
        (root / list_name).write_text("".join(lines))
        total += n
    return total


def listing_lower_bound(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        len(files)


def reference_identity_sampler(labels, k, batch_size, rng):
    """Straightforward pure-Python P×K sampler (the common open-source form)."""
    by_id = defaultdict(list)
    for i, label in enumerate(labels):
        by_id[label].append(i)
    groups = {}
    for pid, idxs in by_id.items():
        idxs = list(idxs)
        if len(idxs) < k:
            idxs = [rng.choice(idxs) for _ in range(k)]
        rng.shuffle(idxs)
        groups[pid] = [idxs[i:i + k] for i in range(0, len(idxs) - k + 1, k)]
    avail = [p for p in groups if groups[p]]
    out = []
    p = batch_size // k
    while len(avail) >= p:
        for pid in rng.sample(avail, p):
            out.extend(groups[pid].pop(0))
            if not groups[pid]:
                avail.remove(pid)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="images for the transform timing")
    parser.add_argument("--skip-msmt", action="store_true", help="skip the 126k-file MSMT17 tree")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    rng = random.Random(0)
    rows, results = [], {"hardware": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                      "torch": torch.__version__, "python": platform.python_version()}}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tmp = Path(tmp)
        # readers at release scale
        n = market_tree(tmp / "market", rng)
        ours = best_of(lambda: build_dataset("market1501", tmp / "market"))
        bound = best_of(lambda: listing_lower_bound(tmp / "market"))
        rows.append(("read market1501 (36,036 files)", f"{ours * 1e3:.0f} ms", f"{n / ours:,.0f} files/s", f"{ours / bound:.1f}x listing"))
        results["read_market1501"] = {"files": n, "seconds": ours, "listing_seconds": bound, "ratio_vs_listing": ours / bound}
        if not args.skip_msmt:
            n = msmt_tree(tmp / "msmt", rng)
            ours = best_of(lambda: build_dataset("msmt17", tmp / "msmt"), repeat=2)
            bound = best_of(lambda: listing_lower_bound(tmp / "msmt"), repeat=2)
            rows.append(("read msmt17 V1 (126,441 files)", f"{ours * 1e3:.0f} ms", f"{n / ours:,.0f} files/s", f"{ours / bound:.1f}x listing"))
            results["read_msmt17"] = {"files": n, "seconds": ours, "listing_seconds": bound, "ratio_vs_listing": ours / bound}
        # decoding and transforms on Market-sized JPEGs (64×128)
        paths = []
        for i in range(args.images):
            array = np.random.default_rng(i).integers(0, 256, (128, 64, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(array).save(buf, "JPEG", quality=90)
            path = tmp / f"img{i}.jpg"
            path.write_bytes(buf.getvalue())
            paths.append(str(path))
        decode = best_of(lambda: [load_image(p) for p in paths])
        results["decode"] = {"images": len(paths), "seconds": decode, "images_per_s": len(paths) / decode}
        rows.append(("decode 64×128 JPEG", f"{decode / len(paths) * 1e3:.2f} ms/img", f"{len(paths) / decode:,.0f} img/s", "1.0x decode"))
        configs = {
            "test transform (resize 256×128 + normalise)": (build_test_transform(DataConfig()), "test"),
            "train transform, defaults (flip, pad-crop, erasing)": (build_train_transform(DataConfig()), "train_default"),
            "train transform, all augmentations": (build_train_transform(DataConfig(transforms=TransformConfig(
                color_jitter_p=1.0, blur_p=1.0, rotation_deg=5))), "train_all"),
        }
        for label, (transform, key) in configs.items():
            seconds = best_of(lambda: [transform(load_image(p)) for p in paths])
            results[key] = {"images": len(paths), "seconds": seconds, "images_per_s": len(paths) / seconds,
                            "ratio_vs_decode": seconds / decode}
            rows.append((f"decode + {label}", f"{seconds / len(paths) * 1e3:.2f} ms/img", f"{len(paths) / seconds:,.0f} img/s",
                         f"{seconds / decode:.1f}x decode"))
    # identity sampler at MSMT17 train+val scale
    labels = np.random.default_rng(0).integers(0, 1041, 32621).tolist()
    sampler = RandomIdentitySampler(labels, num_instances=4, batch_size=64, seed=0)

    def one_epoch():
        sampler.set_epoch(sampler.epoch + 1)
        list(sampler)

    ours = best_of(one_epoch)
    ref = best_of(lambda: reference_identity_sampler(labels, 4, 64, random.Random(0)))
    results["identity_sampler"] = {"images": len(labels), "ids": 1041, "seconds": ours, "reference_seconds": ref,
                                   "speedup_vs_reference": ref / ours}
    rows.append(("identity sampler epoch (32,621 imgs, 1,041 ids, 16×4)", f"{ours * 1e3:.1f} ms", "",
                 f"{ref / ours:.1f}x faster than pure Python"))

    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'time':>14}  {'rate':>16}  ratio")
    for name, t, rate, ratio in rows:
        print(f"{name:<{width}}  {t:>14}  {rate:>16}  {ratio}")
    out = Path(__file__).parent / "results" / "data.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

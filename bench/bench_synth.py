"""SynthReID generation speed, and (with --difficulty) how hard the generated task is.

Speed (default): generates the ``--preset`` dataset (default ``demo``: ~1,000 images at 128x64)
with 1 worker and with ``--workers`` workers, counting every file written per image: the image, 8
structure maps, 7 true novel views (16 JPEGs) plus the metadata; prints images per second, the
speed-up of the workers over one process measured in the same run, and a per-stage CPU breakdown
of one chunk. Writes bench/results/synth.json.

Difficulty (--difficulty): on a generated dataset (``--root``, or a fresh demo preset), ranks the
queries against the gallery with features that know nothing about identity, and reports mAP and
rank-1 overall, for query–gallery positives seen from opposite sides only (|yaw difference| >
120°; other positives of the query are left out as junk) and from the same side (< 60°):
(a) raw pixels (64x32, each image standardised), (b) stripe colour histograms of the central
region, (c) a randomly initialised ResNet-50 (if ``gclreid.models`` is available), and for
contrast (d) a small CNN trained with the training identities (``--epochs``). Because those
natural subsets mix different camera pairs, a controlled comparison is added: every gallery
image is replaced by its own true novel view turned to the query's viewpoint, or to the opposite
one (same cameras, scenes, poses and noise; only the side of the person seen changes).
Writes bench/results/synth_difficulty.json.

    python bench/bench_synth.py [--preset demo] [--workers 2]
    python bench/bench_synth.py --difficulty [--root DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gclreid.synth import generate, make_plan, preset, tune_malloc

RESULTS = Path(__file__).parent / "results"


def stage_breakdown(cfg, out: str) -> dict:
    """CPU seconds per stage for one chunk, in this process (one thread)."""
    from gclreid.synth.clothing import Outfit
    from gclreid.synth.scene import compose, dress, frame_shots, make_bodies, noise_field, render_people, render_structures
    from gclreid.synth.writer import _background, _identity, _make_dirs, _save

    torch.set_num_threads(1)
    plan = make_plan(cfg)
    specs = plan.images[:cfg.chunk]
    _make_dirs(out, cfg)
    h, w = cfg.height, cfg.width
    clock = time.process_time
    times = {"setup": 0.0, "structure maps": 0.0, "colour renders": 0.0, "compositing": 0.0, "JPEG + write": 0.0}
    for rep in range(2):   # the first pass warms up caches; keep the second
        times = dict.fromkeys(times, 0.0)
        t = clock()
        people = [_identity(cfg.seed, s.person, s.pid) for s in specs]
        shots = [s.shot for s in specs]
        profs = [plan.cameras[s.cam - 1] for s in specs]
        outfit = Outfit.from_identities(people)
        base = make_bodies(people, shots)
        dressed = dress(base, outfit)
        cam = frame_shots(dressed.body, base.yaw, shots, h, w)
        bgs = [_background(cfg.seed, p, h, w) for p in profs]
        light = torch.tensor([p.light for p in profs])
        amb = torch.tensor([p.ambient for p in profs])
        noise = [noise_field(s, h, w) for s in shots]
        times["setup"] += clock() - t
        k = len(specs)
        angles = (0, *cfg.angles)
        t = clock()
        rep_idx = torch.arange(k).repeat(len(angles))
        yaw = base.yaw[rep_idx] + torch.tensor(angles, dtype=torch.float32).repeat_interleave(k)
        grey = render_structures(dressed.body.select(rep_idx), yaw, cam.select(rep_idx), h, w).numpy()
        times["structure maps"] += clock() - t
        t = clock()
        for i, g in enumerate(grey):
            _save(g, os.path.join(out, f"s{i}.jpg"), 95)
        times["JPEG + write"] += clock() - t
        for angle in angles:
            t = clock()
            rgb, alpha = render_people(dressed, base.yaw + float(angle), outfit, cam, h, w, cfg.ssaa, light, amb)
            times["colour renders"] += clock() - t
            t = clock()
            images = compose(rgb, alpha, shots, profs, bgs, h, w, noise=noise)
            times["compositing"] += clock() - t
            t = clock()
            for i, img in enumerate(images):
                _save(img, os.path.join(out, f"v{angle}_{i}.jpg"), profs[i].jpeg)
            times["JPEG + write"] += clock() - t
    total = sum(times.values())
    return {"images": len(specs), "cpu_seconds": times, "images_per_cpu_second": len(specs) / total}


def speed(args) -> None:
    tune_malloc()
    cfg = preset(args.preset)
    rows = []
    tmp = tempfile.mkdtemp(prefix="bench_synth_")
    try:
        for workers in sorted({1, args.workers}):
            out = os.path.join(tmp, f"w{workers}")
            t0 = time.perf_counter()
            summary = generate(cfg, out, workers=workers, progress=False)
            total = time.perf_counter() - t0
            files = sum(len(f) for _, _, f in os.walk(out))
            rows.append({"workers": workers, "images": summary["images"], "files": files,
                         "render_write_seconds": summary["seconds"], "images_per_s": summary["images_per_second"],
                         "total_seconds_incl_startup": round(total, 2)})
        stages = stage_breakdown(cfg, os.path.join(tmp, "stages"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"SynthReID preset {args.preset}: {cfg.height}x{cfg.width}, ssaa {cfg.ssaa}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"{'workers':>7s} {'images':>7s} {'files':>7s} {'seconds':>8s} {'images/s':>9s} {'incl. start-up':>15s}")
    for r in rows:
        print(f"{r['workers']:7d} {r['images']:7d} {r['files']:7d} {r['render_write_seconds']:8.1f} "
              f"{r['images_per_s']:9.1f} {r['total_seconds_incl_startup']:14.1f}s")
    if len(rows) > 1:
        print(f"{rows[-1]['workers']} workers / 1 worker: {rows[-1]['images_per_s'] / rows[0]['images_per_s']:.2f}x")
    per = stages["cpu_seconds"]
    total = sum(per.values())
    print(f"one chunk of {stages['images']} images, CPU seconds per stage (1 thread): "
          + ", ".join(f"{k} {v:.3f} ({100 * v / total:.0f}%)" for k, v in per.items())
          + f"; {stages['images_per_cpu_second']:.0f} images per CPU-second")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "synth.json"
    out.write_text(json.dumps({"preset": args.preset, "config": cfg.to_dict(), "cpus": os.cpu_count(),
                               "torch": torch.__version__, "runs": rows, "stages": stages}, indent=1))
    print(f"wrote {out}")


# ---------------------------------------------------------------------------------------------
# difficulty

ANGLES = (0, 45, 90, 135, 180, 225, 270, 315)


def _read(root: str, paths) -> torch.Tensor:
    from PIL import Image
    imgs = np.stack([np.asarray(Image.open(os.path.join(root, p)).convert("RGB")) for p in paths])
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0


def _load(root: str, meta: dict, split: str):
    recs = [r for r in meta["images"] if r["split"] == split]
    return recs, _read(root, [r["file"] for r in recs])


def _load_views(root: str, recs) -> torch.Tensor:
    """[8, G, 3, H, W]: each gallery image turned by 0, 45, ..., 315 degrees (its true views)."""
    out = []
    for a in ANGLES:
        paths = [r["file"] if a == 0 else os.path.join("views", r["structure_split"], f"view_{a}",
                                                       os.path.basename(r["file"])) for r in recs]
        out.append(_read(root, paths))
    return torch.stack(out)


def _raw_pixels(x: torch.Tensor) -> torch.Tensor:
    x = torch.nn.functional.interpolate(x, size=(64, 32), mode="area").flatten(1)
    x = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True).clamp_min(1e-6)
    return torch.nn.functional.normalize(x, dim=1)


def _stripe_histograms(x: torch.Tensor, bins: int = 8, stripes: int = 6) -> torch.Tensor:
    """A hand-crafted ReID descriptor: chromaticity and intensity histograms in horizontal stripes
    of the central half of the crop (where the person is)."""
    n, _, h, w = x.shape
    x = x[:, :, :, w // 4: 3 * w // 4]
    total = x.sum(1, keepdim=True).clamp_min(1e-3)
    chans = torch.cat([x[:, :2] / total, total / 3], 1)
    feats = []
    for k in range(stripes):
        part = chans[:, :, k * h // stripes:(k + 1) * h // stripes].flatten(2)
        idx = (part.clamp(0, 0.999) * bins).long()
        for c in range(3):
            hist = torch.zeros(n, bins).scatter_add_(1, idx[:, c], torch.ones(idx[:, c].shape))
            feats.append(hist / hist.sum(1, keepdim=True))
    return torch.nn.functional.normalize(torch.cat(feats, 1).sqrt(), dim=1)


def _random_resnet(x: torch.Tensor) -> torch.Tensor:
    from gclreid.models import build_identity_encoder
    torch.manual_seed(0)
    model = build_identity_encoder({"arch": "resnet50", "pretrained": False, "last_stride": 1,
                                    "embed_dim": 512, "num_parts": 4}).eval()
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    feats = []
    with torch.no_grad():   # at the images' own 128x64 (the 256x128 paper input costs 4x more)
        for i in range(0, len(x), 64):
            feats.append(model.embed((x[i:i + 64] - mean) / std))
    return torch.cat(feats)


def _train_small_cnn(train_x: torch.Tensor, train_pids, epochs: int):
    """A small CNN trained with identity labels on the training split (64x32 input): a supervised
    model that is not built to be view-invariant. Returns the feature function."""
    torch.manual_seed(0)
    pids = sorted(set(train_pids))
    labels = torch.tensor([pids.index(p) for p in train_pids])

    def block(cin, cout):
        return [torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.BatchNorm2d(cout), torch.nn.ReLU()]
    net = torch.nn.Sequential(*block(3, 32), torch.nn.MaxPool2d(2), *block(32, 64), torch.nn.MaxPool2d(2),
                              *block(64, 128), *block(128, 256), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    head = torch.nn.Linear(256, len(pids))
    small = lambda x: torch.nn.functional.interpolate(x, size=(64, 32), mode="area")  # noqa: E731
    xs = small(train_x)
    mean, std = xs.mean((0, 2, 3), keepdim=True), xs.std((0, 2, 3), keepdim=True)
    opt = torch.optim.Adam(list(net.parameters()) + list(head.parameters()), 2e-3)
    for _ in range(epochs):
        for b in torch.randperm(len(xs)).split(32):
            loss = torch.nn.functional.cross_entropy(head(net((xs[b] - mean) / std)), labels[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()

    def features(x):
        with torch.no_grad():
            return torch.nn.functional.normalize(torch.cat([net((small(x[i:i + 256]) - mean) / std)
                                                            for i in range(0, len(x), 256)]), dim=1)
    return features


def _restricted(dist: np.ndarray, q, g, keep) -> dict:
    """mAP / rank-1 where, per query, only the positives with keep(|yaw difference|) count: the
    query's other positives are removed from its gallery (junk); all negatives stay."""
    from gclreid.evaluation import evaluate_ranking
    g_pid = np.array([r["pid"] for r in g])
    g_cam = np.array([r["camid"] for r in g])
    g_yaw = np.array([r["yaw"] for r in g])
    aps, r1 = [], []
    for i, rec in enumerate(q):
        dyaw = np.abs((g_yaw - rec["yaw"] + 180.0) % 360.0 - 180.0)
        pos = (g_pid == rec["pid"]) & (g_cam != rec["camid"])
        if not (pos & keep(dyaw)).any():
            continue
        cols = np.nonzero(~(pos & ~keep(dyaw)))[0]
        res = evaluate_ranking(dist[i:i + 1, cols], [rec["pid"]], g_pid[cols], [rec["camid"]], g_cam[cols], max_rank=1)
        aps.append(res["mAP"])
        r1.append(res["cmc"][0])
    return {"mAP": float(np.mean(aps)) if aps else float("nan"),
            "rank1": float(np.mean(r1)) if r1 else float("nan"), "queries": len(aps)}


def _controlled(qf: torch.Tensor, view_f: torch.Tensor, q, g, delta: float) -> dict:
    """Every gallery image replaced by its own true view turned so that it faces ``delta`` degrees
    away from the query's viewpoint (nearest 45° step): same cameras, scenes and poses, only the
    side of the person that is seen changes. ``view_f`` is [8, G, D]."""
    from gclreid.evaluation import evaluate_ranking
    g_yaw = np.array([r["yaw"] for r in g])
    g_pid = np.array([r["pid"] for r in g])
    g_cam = np.array([r["camid"] for r in g])
    aps, r1 = [], []
    cols = np.arange(len(g))
    for i, rec in enumerate(q):
        want = (rec["yaw"] + delta - g_yaw) % 360.0
        step = np.rint(want / 45.0).astype(int) % 8            # which true view to use per gallery image
        gf = view_f[torch.from_numpy(step), torch.from_numpy(cols)]
        dist = torch.cdist(qf[i:i + 1], gf).numpy()
        if not ((g_pid == rec["pid"]) & (g_cam != rec["camid"])).any():
            continue
        res = evaluate_ranking(dist, [rec["pid"]], g_pid, [rec["camid"]], g_cam, max_rank=1)
        aps.append(res["mAP"])
        r1.append(res["cmc"][0])
    return {"mAP": float(np.mean(aps)), "rank1": float(np.mean(r1)), "queries": len(aps)}


PAIRS = ("overall", "opposite sides (|dyaw| > 120)", "same side (|dyaw| < 60)",
         "controlled: gallery turned to the query's view", "controlled: gallery turned to the opposite view")


def difficulty(args) -> None:
    from gclreid.evaluation import evaluate_ranking
    root = args.root
    tmp = None
    if root is None:
        tmp = tempfile.mkdtemp(prefix="synth_difficulty_")
        root = os.path.join(tmp, "demo")
        generate(preset("demo"), root, workers=args.workers, progress=False)
    with open(os.path.join(root, "synthreid.json")) as fh:
        meta = json.load(fh)
    q, qx = _load(root, meta, "query")
    g, gx = _load(root, meta, "gallery")
    gviews = _load_views(root, g)
    extractors = {"raw pixels (64x32, standardised)": _raw_pixels,
                  "stripe colour histograms": _stripe_histograms}
    import importlib.util
    if importlib.util.find_spec("gclreid.models") is not None:
        extractors["random-init ResNet-50 (128x64)"] = _random_resnet
    if args.epochs > 0:
        t0 = time.perf_counter()
        tr, tx = _load(root, meta, "train")
        extractors[f"small CNN, supervised ({args.epochs} epochs)"] = _train_small_cnn(tx, [r["pid"] for r in tr], args.epochs)
        print(f"trained the small CNN in {time.perf_counter() - t0:.0f} s")
    results = {}
    for name, fn in extractors.items():
        t0 = time.perf_counter()
        qf, gf = fn(qx), fn(gx)
        vf = fn(gviews.flatten(0, 1)).view(len(ANGLES), len(g), -1)
        dist = torch.cdist(qf, gf).numpy()
        overall = evaluate_ranking(dist, [r["pid"] for r in q], [r["pid"] for r in g],
                                   [r["camid"] for r in q], [r["camid"] for r in g], max_rank=10)
        results[name] = {
            PAIRS[0]: {"mAP": overall["mAP"], "rank1": float(overall["cmc"][0]), "queries": overall["num_valid_queries"]},
            PAIRS[1]: _restricted(dist, q, g, lambda d: d > 120.0),
            PAIRS[2]: _restricted(dist, q, g, lambda d: d < 60.0),
            PAIRS[3]: _controlled(qf, vf, q, g, 0.0),
            PAIRS[4]: _controlled(qf, vf, q, g, 180.0),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    print(f"SynthReID difficulty on {root}: {len(q)} queries, {len(g)} gallery images")
    print(f"{'features':40s} {'pairs':48s} {'mAP':>6s} {'rank-1':>7s} {'queries':>8s}")
    for name, res in results.items():
        for key in PAIRS:
            r = res[key]
            print(f"{name:40s} {key:48s} {100 * r['mAP']:6.1f} {100 * r['rank1']:7.1f} {r['queries']:8d}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "synth_difficulty.json"
    out.write_text(json.dumps({"root": root, "settings": meta["settings"], "results": results}, indent=1))
    print(f"wrote {out}")
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--difficulty", action="store_true", help="measure task difficulty instead of speed")
    ap.add_argument("--root", help="existing SynthReID folder for --difficulty (default: generate the demo preset)")
    ap.add_argument("--epochs", type=int, default=12, help="--difficulty: epochs of the supervised small CNN (0: skip)")
    args = ap.parse_args()
    difficulty(args) if args.difficulty else speed(args)


if __name__ == "__main__":
    main()

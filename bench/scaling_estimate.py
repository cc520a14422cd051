"""Scaling on paper: memory and time per epoch for MSMT17 (1 and 8 GPUs) and for 1M unlabeled images
on 8 GPUs, for cluster contrast (batch 256, ResNet-50 / MobileNetV2) and GCL stage 3 (ResNet-50, batch
16), clustering included — computed from a table of per-item costs, not run.

Per-item costs come from three places, and every cost in the output says which:
* measured here (``--measure``, a few minutes on the CPU, cached in bench/scaling_measured.json):
  the parameter counts of the project's models, and ``pseudo_labels`` stage times and peak memory at
  N = 5k … 40k identity-structured 512-d features (bench_clustering's features and child process;
  each stage's fastest of 3 runs), fitted as t = a·N^b per stage (memory: a + b·N);
* a GPU check (``--gpu-summary runs/gpu_check/summary.json``, bench/gpu_check.py): training and
  embedding images/s and peak memory per GPU, the GPU kNN rate;
* otherwise ASSUMPTIONS (``ASSUMED`` below, each with its reason) — not measurements.

    python bench/scaling_estimate.py                       # the tables (measures first if no cache)
    python bench/scaling_estimate.py --measure             # re-measure the CPU inputs (nice -n 19 …)
    python bench/scaling_estimate.py --gpu-summary runs/gpu_check/summary.json [--out FILE.md]
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEASURED = HERE / "scaling_measured.json"  # tracked (bench/results/ is not): the inputs of the docs' table
GB = 1e9

# Assumed per-item costs (an H200 with NVLink, bf16 autocast, 256×128, last stride 1). Replaced by a GPU
# check's numbers where it has them. Each: (value, why).
ASSUMED = {
    "infer_ips/resnet50": (4000.0, "H200 bf16 eager embedding, ResNet-50 at 256×128 (≈ the FLOPs of 224², last "
                                   "stride 1 included); a guess of the order of published ResNet-50 inference rates"),
    "infer_ips/mobilenet_v2": (8000.0, "H200 bf16, MobileNetV2 (memory-bound depthwise layers); a guess"),
    "train_ips/resnet50": (1200.0, "H200 bf16 forward + backward + Adam, ResNet-50 256×128; a guess below published "
                                   "ResNet-50 training rates (eager PyTorch, no DALI)"),
    "train_ips/mobilenet_v2": (2500.0, "H200 bf16 train step, MobileNetV2 256×128; a guess"),
    "train_ips/gcl3": (160.0, "H200 bf16 GCL stage-3 iteration (Eid ×2 passes, generator, 3-scale D with R1) at "
                              "batch 16: a guess, ≈ 1/8 of the ResNet-50 rate (on the CPU a stage-3 image costs "
                              "several ResNet-50 train steps)"),
    "step_floor_s/cc": (0.010, "shortest step time whatever the batch (kernel launches, Python): a guess"),
    "step_floor_s/gcl3": (0.060, "shortest GCL stage-3 step (thousands of small kernels): a guess; batch 2 per GPU "
                                 "on 8 GPUs is launch-bound"),
    "act_bytes/resnet50": (50e6, "bf16 activation memory per training image, ResNet-50 256×128 last stride 1: "
                                 "rule of thumb (≈ 100 MB fp32 at 224², halved)"),
    "act_bytes/mobilenet_v2": (45e6, "bf16 activation memory per training image, MobileNetV2 256×128: a guess"),
    "act_bytes/gcl3": (400e6, "per image of a stage-3 iteration, bf16: the CPU fp32 peak of 4,028 MiB at batch 4 "
                              "(docs/benchmarks.md) less the models, halved"),
    "nvlink_Bps": (400e9, "NCCL bus bandwidth on 8× H200 NVLink 4 (900 GB/s bidirectional per GPU; "
                          "≈ 400 GB/s busbw assumed for large messages); latency ignored"),
    "hbm_Bps": (4.8e12, "H200 HBM3e bandwidth (datasheet)"),
    "knn_rate_gpu": (2e13, "GPU kNN, N²·D multiply-adds per second incl. top-k: a guess (fp32 matmul "
                           "≈ 67 TFLOP/s peak on an H200, top-k over N columns costs as much again)"),
}

# Measured earlier on this machine (docs/benchmarks.md, bench/bench_data.py, 2026-11-20): CPU seconds to
# decode one Market-1501 JPEG (64×128) and apply the test / default train transform. MSMT17 images are larger.
_DATA = "measured (bench_data.py, 2026-11-20, this machine): decode + {} transform, 64×128 JPEG"
DOCUMENTED = {"load_s/test": (0.99e-3, _DATA.format("test")), "load_s/train": (1.16e-3, _DATA.format("train"))}

SCENARIOS = [
    # name, method, arch, N, GPUs[, feature dimension D]
    ("cc-r50-msmt-1", "cc", "resnet50", 32621, 1),
    ("cc-r50-msmt-8", "cc", "resnet50", 32621, 8),
    ("cc-mbv2-msmt-1", "cc", "mobilenet_v2", 32621, 1),
    ("cc-mbv2-msmt-8", "cc", "mobilenet_v2", 32621, 8),
    ("gcl3-r50-msmt-1", "gcl3", "resnet50", 32621, 1),
    ("gcl3-r50-msmt-8", "gcl3", "resnet50", 32621, 8),
    ("cc-r50-1M-8", "cc", "resnet50", 1_000_000, 8),
    ("cc-mbv2-1M-8", "cc", "mobilenet_v2", 1_000_000, 8),
    ("gcl3-r50-1M-8", "gcl3", "resnet50", 1_000_000, 8),
    # model.embed_dim=0: the pooled 2048-d feature (the ft_net variant, the official cluster-contrast head)
    ("cc-r50-2048-1M-8", "cc", "resnet50", 1_000_000, 8, 2048),
    ("gcl3-r50-2048-1M-8", "gcl3", "resnet50", 1_000_000, 8, 2048),
]
# Method settings from the shipped configs (cluster_contrast_base.yaml, gcl_base.yaml, base.yaml).
METHODS = {
    "cc": {"title": "cluster contrast", "batch": 256, "iters": 400, "optimizer_bytes": 16,
           "per_cluster": 17},  # Adam: weight + grad + 2 states, fp32; ≈ 17 images per cluster
    "gcl3": {"title": "GCL stage 3", "batch": 16, "iters": None, "optimizer_bytes": 16},  # one pass; Adam G/D, SGD Eid
}
EMBED_DIM = {"resnet50": 512, "mobilenet_v2": 1280}  # model.embed_dim 512; MobileNetV2 configs use 0 (1280-d)


# -- measuring the CPU inputs ------------------------------------------------------------------------------

def count_parameters() -> dict:
    """Parameters of the project's networks as the shipped configs build them (random init)."""
    sys.path.insert(0, str(HERE.parent / "src"))
    from gclreid.config import PACKAGE_CONFIGS, load_config
    from gclreid.models import build_identity_encoder
    from gclreid.models.decoder import build_generator
    from gclreid.models.discriminator import build_discriminator

    def count(module):
        return sum(p.numel() for p in module.parameters())

    cfg = load_config(PACKAGE_CONFIGS / "gcl_market1501.yaml", ["model.pretrained=false"])
    encoder = build_identity_encoder(cfg.model)
    out = {"resnet50": count(encoder),
           "generator": count(build_generator(cfg.generator, encoder.part_dim)),
           "discriminator": count(build_discriminator(cfg.generator))}
    mbv2 = load_config(PACKAGE_CONFIGS / "cluster_contrast_market1501_mbv2_256.yaml", ["model.pretrained=false"])
    out["mobilenet_v2"] = count(build_identity_encoder(mbv2.model))
    return out


def measure_clustering(sizes=(5000, 10000, 20000, 40000), dim=512, repeats=3) -> list:
    """pseudo_labels (k1 30, k2 6, min_samples 4, eps from rho with ρ·(N−1) = 26, i.e. Market's ρ = 0.002
    at every N) in a fresh process per size, via bench_clustering's child: stage seconds, peak extra RSS."""
    import numpy as np
    sys.path.insert(0, str(HERE))
    from bench_clustering import make_features, run_children
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            x, ids = make_features(n, dim=dim)
            path = os.path.join(tmp, f"f{n}.npz")
            np.savez(path, x=x, ids=ids)
            rho = 26.0 / (n - 1)
            runs = [run_children(["pseudo_labels"], path, rho, 1)["pseudo_labels"] for _ in range(repeats)]
            # the machine is shared: each stage's fastest run, the largest memory
            stages = {k: min(r["timings"][k] for r in runs) for k in runs[0]["timings"]}
            r = min(runs, key=lambda r: r["seconds"])
            rows.append({"n": n, "dim": dim, "rho": rho, "seconds": r["seconds"], "stages": stages,
                         "all_stages": [r["timings"] for r in runs], "extra_mb": max(r["extra_mb"] for r in runs),
                         "num_clusters": r["num_clusters"], "eps": r["eps"]})
            print(f"N {n}: {r['seconds']:.2f} s, stages (fastest of {repeats}) "
                  + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()) + f" s, extra {rows[-1]['extra_mb']:.0f} MB",
                  flush=True)
    return rows


def measure(path: Path = MEASURED) -> dict:
    sys.path.insert(0, str(HERE))
    from _common import cpu_name
    import torch
    data = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg(),
            "parameters": count_parameters(), "clustering": measure_clustering()}
    from _common import write_results
    write_results(path, data)
    return data


# -- the cost table ---------------------------------------------------------------------------------------

def fit_power(ns, ts) -> tuple:
    """Least-squares fit of log t = log a + b·log N: returns (a, b)."""
    xs, ys = [math.log(n) for n in ns], [math.log(max(t, 1e-9)) for t in ts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 1.0
    return math.exp(my - b * mx), b


def fit_line(ns, ys) -> tuple:
    """Least-squares fit of y = a + b·N: returns (a, b)."""
    mx, my = sum(ns) / len(ns), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in ns)
    b = sum((x - mx) * (y - my) for x, y in zip(ns, ys)) / sxx if sxx else 0.0
    return my - b * mx, b


def cost_table(measured: dict, gpu: dict | None = None) -> dict:
    """{name: (value, source)}: the assumptions, overridden by a GPU check, plus the CPU measurements."""
    costs = {k: (v, "assumed: " + why) for k, (v, why) in ASSUMED.items()}
    costs.update(DOCUMENTED)
    costs.update(gpu or {})
    where = (f"measured here ({measured.get('date', '?')}, {measured.get('cpu', 'CPU')}, "
             f"{measured.get('cores', '?')} cores)")
    for name, p in measured.get("parameters", {}).items():
        costs[f"params/{name}"] = (float(p), where)
    rows = measured.get("clustering", [])
    if rows:
        ns = [r["n"] for r in rows]
        dim = rows[0]["dim"]
        for stage in ("knn", "encode", "jaccard", "dbscan"):
            a, b = fit_power(ns, [r["stages"][stage] for r in rows])
            costs[f"fit/{stage}"] = ((a, b), f"{where}: t = a·N^b over N = {min(ns):,}–{max(ns):,}, {dim}-d")
        a, b = fit_line(ns, [r["extra_mb"] * 1e6 for r in rows])
        costs["fit/cluster_bytes"] = ((a, b), f"{where}: peak extra RSS of pseudo_labels, bytes = a + b·N "
                                              "(fixed buffers + per image)")
        costs["fit/dim"] = (dim, where)
        big = max(rows, key=lambda r: r["n"])
        rate = big["n"] ** 2 * dim / big["stages"]["knn"]
        costs["knn_rate_cpu"] = (rate, f"{where}: N²·D / kNN seconds at N = {big['n']:,}, "
                                       f"{measured.get('torch_threads', '?')} threads")
    return costs


def read_gpu_summary(path) -> dict:
    """Per-item costs from a gpu_check summary.json (bench/gpu_check.py): cluster_contrast_step rows
    (bf16 preferred), gcl_iteration stage-3 rows (pattern "ours", bf16 preferred), clustering rows (the
    GPU kNN rate). Refuses a --quick or CPU summary (tiny sizes: not per-item costs of the real thing)."""
    s = json.loads(Path(path).read_text())
    if s.get("quick") or s.get("device") != "cuda":
        raise SystemExit(f"{path}: a {'--quick ' if s.get('quick') else ''}run on {s.get('device')!r}; "
                         "the estimate needs a full GPU check (bash bench/gpu_check.sh on a GPU)")
    env = s.get("environment", {})
    src = f"GPU check {s.get('date', '?')} ({env.get('device_name', 'GPU')})"
    parts = {p["name"]: p for p in s.get("parts", []) if p.get("status") == "ok"}
    out = {}

    def best(rows):  # bf16 (the default train.amp) when present, else fp32
        return sorted(rows, key=lambda r: r.get("precision") != "bf16")[0] if rows else None

    for arch in ("resnet50", "mobilenet_v2"):
        r = best([r for r in parts.get("cluster_contrast_step", {}).get("data", {}).get("rows", [])
                  if r.get("arch") == arch])
        if r:
            tag = f"{src}: cluster_contrast_step {arch} {r['precision']} batch {r['batch']}"
            out[f"train_ips/{arch}"] = (float(r["train_images_per_s"]), tag)
            out[f"infer_ips/{arch}"] = (float(r["infer_images_per_s"]), tag)
            if r.get("peak_mib"):
                out[f"act_bytes/{arch}"] = (r["peak_mib"] * 2**20 / r["batch"], tag + " (peak MiB / batch)")
    g = best([r for r in parts.get("gcl_iteration", {}).get("data", {}).get("rows", [])
              if r.get("stage") == 3 and r.get("pattern") == "ours"])
    if g:
        batch = parts["gcl_iteration"]["data"].get("batch", 16)
        tag = f"{src}: gcl_iteration stage 3 ours {g['precision']} batch {batch}"
        out["train_ips/gcl3"] = (float(g["images_per_s"]), tag)
        if g.get("peak_mib"):
            out["act_bytes/gcl3"] = (g["peak_mib"] * 2**20 / batch, tag + " (peak MiB / batch)")
    rows = parts.get("clustering", {}).get("data", {}).get("rows", [])
    if rows:
        r = max(rows, key=lambda r: r["n"])
        out["knn_rate_gpu"] = (r["n"] ** 2 * r["dim"] / r["knn_s"], f"{src}: bare kNN at N = {r['n']:,}, {r['dim']}-d")
    return out


# -- the estimate -------------------------------------------------------------------------------------------

def clustering_estimate(c: dict, n: int, dim: int, world: int) -> dict:
    """Seconds and bytes of one clustering on rank 0 (features already gathered)."""
    def fit(stage):
        a, b = c[f"fit/{stage}"][0]
        return a * n ** b
    base_dim = c["fit/dim"][0]
    flops = n * n * dim  # multiply-adds of the N×N similarity (chunked, never held whole)
    return {
        "gather_bytes": (world - 1) / world * n * dim * 4 if world > 1 else 0.0,  # received per rank
        "features_bytes": n * dim * 4,  # what every rank holds afterwards (N×D fp32)
        "knn_s_gpu": flops / c["knn_rate_gpu"][0],
        "knn_s_cpu": flops / c["knn_rate_cpu"][0],
        "encode_s": fit("encode"), "jaccard_s": fit("jaccard"), "dbscan_s": fit("dbscan"),
        # rank 0's extra host memory in pseudo_labels: the fit at base_dim, plus what its normalised copy
        # of the features adds at another D
        "cluster_bytes": c["fit/cluster_bytes"][0][0] + c["fit/cluster_bytes"][0][1] * n + n * (dim - base_dim) * 4,
    }


def estimate(c: dict, method: str, arch: str, n: int, world: int, dim: int | None = None,
             iters: int | None = None) -> dict:
    """Per-epoch time (s) and memory (bytes) of one scenario; see docs/benchmarks.md for the formulas."""
    m = METHODS[method]
    dim = dim or EMBED_DIM[arch]
    key = "gcl3" if method == "gcl3" else arch
    params = c[f"params/{arch}"][0]
    if method == "gcl3":
        params += c["params/generator"][0] + c["params/discriminator"][0]
    per_gpu = m["batch"] / world
    iters = iters or m["iters"] or math.ceil(n / m["batch"])  # gcl3: one pass over the images
    cl = clustering_estimate(c, n, dim, world)
    bw = c["nvlink_Bps"][0]
    allreduce_s = 2 * (world - 1) / world * params * 4 / bw if world > 1 else 0.0  # ring, fp32 gradients
    compute_s = max(c[f"step_floor_s/{'gcl3' if method == 'gcl3' else 'cc'}"][0], per_gpu / c[f"train_ips/{key}"][0])
    bank_s = 0.0
    if method == "gcl3":
        # per step: the B×N negative logits read the bank once, and ViewMemory.update clones it
        # (read + write): ≈ 3 passes over N×D fp32 in HBM
        bank_s = 3 * n * dim * 4 / c["hbm_Bps"][0]
    step_s = compute_s + allreduce_s + bank_s
    features_s = n / (world * c[f"infer_ips/{arch}"][0])
    gather_s = cl["gather_bytes"] / bw
    clustering_s = cl["knn_s_gpu"] + cl["encode_s"] + cl["jaccard_s"] + cl["dbscan_s"]
    train_s = iters * step_s
    if method == "gcl3":
        bank_bytes = 2 * n * dim * 4  # the N×D instance memory, twice while an update clones it
    else:
        bank_bytes = math.ceil(n / m["per_cluster"]) * dim * 4  # one centroid per cluster
    static = params * m["optimizer_bytes"]
    return {
        "scenario": f"{m['title']}, {arch}" + ("" if dim == EMBED_DIM[arch] else f", {dim}-d"),
        "n": n, "world": world, "dim": dim, "params": params,
        "iters": iters, "per_gpu_batch": per_gpu,
        # gcl3 extracts features and all-gathers them once (memory initialisation), then clusters its bank
        "features_s": features_s, "gather_s": gather_s, "first_epoch_only": method == "gcl3",
        "clustering_s": clustering_s, "clustering_s_cpu_knn": clustering_s - cl["knn_s_gpu"] + cl["knn_s_cpu"],
        "compute_step_s": compute_s, "allreduce_step_s": allreduce_s, "bank_step_s": bank_s,
        "step_s": step_s, "train_s": train_s,
        "epoch_s": (0 if method == "gcl3" else features_s + gather_s) + clustering_s + train_s,
        "epoch_s_cpu_knn": (0 if method == "gcl3" else features_s + gather_s) + clustering_s + train_s
                           - cl["knn_s_gpu"] + cl["knn_s_cpu"],
        "gpu_train_bytes": static + per_gpu * c[f"act_bytes/{key}"][0] + bank_bytes,
        # all_gather_shards holds the W padded parts and their concatenation
        "gpu_gather_bytes": static + 2 * cl["features_bytes"] if world > 1 else 0.0,
        "host_bytes_rank": cl["features_bytes"], "host_bytes_rank0": cl["features_bytes"] + cl["cluster_bytes"],
        # CPU cores the data loaders need to keep the GPUs fed (all ranks of the machine together)
        "loader_cores_features": world * c[f"infer_ips/{arch}"][0] * c["load_s/test"][0],
        "loader_cores_train": world * per_gpu / compute_s * c["load_s/train"][0],
        "allreduce_bytes": params * 4, **{k: cl[k] for k in ("gather_bytes", "knn_s_gpu", "knn_s_cpu", "encode_s",
                                                               "jaccard_s", "dbscan_s", "cluster_bytes")},
    }


# -- output ---------------------------------------------------------------------------------------------------

def _t(s: float) -> str:
    if s == 0:
        return "0"
    if s < 1:
        return f"{s * 1000:.0f} ms" if s >= 0.001 else f"{s * 1e6:.0f} µs"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _b(x: float) -> str:
    return f"{x / GB:.2f} GB" if x < 10 * GB else f"{x / GB:.0f} GB"


def render(results: list, costs: dict) -> str:
    lines = ["| scenario | N | GPUs | features | all-gather | clustering (kNN on GPU) | training | epoch | "
             "epoch, kNN on the CPU (code as now) | step: compute + all-reduce (+ bank) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        first = " (1st epoch)" if r["first_epoch_only"] else ""
        step = _t(r["compute_step_s"]) + (f" + {_t(r['allreduce_step_s'])}" if r["world"] > 1 else "") + (
            f" + {_t(r['bank_step_s'])}" if r["bank_step_s"] else "")
        gather = f"{_t(r['gather_s'])}{first}" if r["world"] > 1 else "–"
        lines.append(f"| {r['scenario']} | {r['n']:,} | {r['world']} | {_t(r['features_s'])}{first} | {gather} | "
                     f"{_t(r['clustering_s'])} | {_t(r['train_s'])} ({r['iters']:,} it) | **{_t(r['epoch_s'])}** | "
                     f"{_t(r['epoch_s_cpu_knn'])} | {step} |")
    lines += ["", "| scenario | N | GPUs | GPU memory per rank: training | GPU: at the all-gather | host per rank "
              "| host, rank 0 (clustering) | all-gather received per rank | gradients per step | loader cores: "
              "features / training |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r['scenario']} | {r['n']:,} | {r['world']} | {_b(r['gpu_train_bytes'])} | "
                     f"{_b(r['gpu_gather_bytes']) if r['world'] > 1 else '–'} | {_b(r['host_bytes_rank'])} | "
                     f"{_b(r['host_bytes_rank0'])} | "
                     f"{_b(r['gather_bytes'])} | {r['allreduce_bytes'] / 1e6:.0f} MB | "
                     f"{r['loader_cores_features']:.0f} / {r['loader_cores_train']:.0f} |")
    lines += ["", "Clustering on rank 0 (CPU stages as measured here; kNN on the GPU, or on the CPU as the code "
              "runs it now):", "",
              "| N | D | kNN on GPU | kNN on the CPU (as measured here) | encoding | overlaps + eps | DBSCAN | "
              "host memory (pseudo_labels peak) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    seen = set()
    for r in results:
        if (r["n"], r["dim"]) in seen:
            continue
        seen.add((r["n"], r["dim"]))
        lines.append(f"| {r['n']:,} | {r['dim']} | {_t(r['knn_s_gpu'])} | {_t(r['knn_s_cpu'])} | {_t(r['encode_s'])} "
                     f"| {_t(r['jaccard_s'])} | {_t(r['dbscan_s'])} | {_b(r['cluster_bytes'])} |")
    lines += ["", "Per-item costs used:", "", "| cost | value | source |", "| --- | --- | --- |"]
    for name in sorted(costs):
        value, source = costs[name]
        if isinstance(value, tuple):
            shown = f"a = {value[0]:.3g}, b = {value[1]:.3g}"
        elif name.startswith("params/"):
            shown = f"{value / 1e6:.2f} M"
        elif name.endswith("_Bps") or name.startswith("knn_rate"):
            shown = f"{value:.3g}/s"
        elif name.startswith("act_bytes"):
            shown = f"{value / 1e6:.0f} MB"
        elif name.startswith("load_s") or name.startswith("step_floor"):
            shown = f"{value * 1000:g} ms"
        else:
            shown = f"{value:g}"
        lines.append(f"| `{name}` | {shown} | {source} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu-summary", help="summary.json of bench/gpu_check.py (a full run on a GPU)")
    parser.add_argument("--measure", action="store_true", help="re-measure the CPU inputs first")
    parser.add_argument("--measured", default=str(MEASURED), help="the cached CPU measurements")
    parser.add_argument("--out", help="also write the markdown here")
    args = parser.parse_args(argv)
    path = Path(args.measured)
    measured = measure(path) if args.measure or not path.is_file() else json.loads(path.read_text())
    costs = cost_table(measured, read_gpu_summary(args.gpu_summary) if args.gpu_summary else None)
    results = [estimate(costs, *scenario[1:]) for scenario in SCENARIOS]
    text = render(results, costs)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

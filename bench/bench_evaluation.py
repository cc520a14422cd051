"""Evaluation at Market-1501 size: distances + mAP/CMC/mINP, ours vs a per-query numpy reference.

Synthetic 512-d L2-normalised features with identity structure (an identity centre plus a camera
offset plus noise) for 3,368 queries and 15,913 gallery images (750 identities over 6 cameras, plus
distractors of identity 0), the sizes of Market-1501. Times pairwise_distance + evaluate_ranking
(best and median of --repeat runs), the metrics with the candidate shortcut switched off, and, in
the same run, the textbook reference: a numpy distance
matrix and a per-query loop (stable argsort, junk removal, AP/INP/CMC). Checks that both agree to
1e-6, prints a table and writes bench/results/evaluation.json.

    python bench/bench_evaluation.py [--repeat 3] [--device cpu|cuda] [--small]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from _common import cpu_name

from gclreid.evaluation import evaluate_ranking, pairwise_distance, ranking


def make_features(num_q: int, num_g: int, num_ids: int, num_cams: int, num_distractors: int, dim: int,
                  seed: int = 0):
    """Identity-structured features: normalize(0.53·centre[pid] + 0.3·camera[cam] + noise), unit-norm
    centres and cameras, noise of norm about 1: tuned to land near mAP 0.7 / rank-1 0.95."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(num_ids + 1, dim, generator=gen), dim=1)
    cameras = torch.nn.functional.normalize(torch.randn(num_cams, dim, generator=gen), dim=1)

    def sample(pids, cams):
        noise = torch.randn(len(pids), dim, generator=gen) / dim ** 0.5
        x = 0.53 * centres[pids] + 0.3 * cameras[cams] + noise
        return torch.nn.functional.normalize(x, dim=1)

    q_pids = torch.randint(1, num_ids + 1, (num_q,), generator=gen)
    g_pids = torch.randint(1, num_ids + 1, (num_g - num_distractors,), generator=gen)
    q_cams = torch.randint(0, num_cams, (num_q,), generator=gen)
    g_cams = torch.randint(0, num_cams, (num_g,), generator=gen)
    g_pids = torch.cat([g_pids, torch.zeros(num_distractors, dtype=torch.int64)])  # identity 0: distractors
    qf, gf = sample(q_pids, q_cams), sample(g_pids, g_cams)
    gf[-num_distractors:] = torch.nn.functional.normalize(torch.randn(num_distractors, dim, generator=gen), dim=1)
    return qf, gf, q_pids.numpy(), g_pids.numpy(), q_cams.numpy(), g_cams.numpy()


def reference(qf: np.ndarray, gf: np.ndarray, q_pids, g_pids, q_cams, g_cams, max_rank: int):
    """Straightforward per-query evaluation (squared Euclidean distances, stable sort). Returns the
    metrics and the seconds spent on distances and on the per-query loop."""
    t0 = time.perf_counter()
    dist = (qf ** 2).sum(1)[:, None] + (gf ** 2).sum(1)[None, :] - 2 * qf @ gf.T
    t1 = time.perf_counter()
    aps, inps, cmcs = [], [], []
    for i in range(len(qf)):
        order = np.argsort(dist[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
        matches = (g_pids[order] == q_pids[i])[keep]
        if not matches.any():
            continue
        ranks = np.flatnonzero(matches) + 1
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
        inps.append(len(ranks) / ranks[-1])
        cmc = np.cumsum(matches)[:max_rank] >= 1
        cmcs.append(np.concatenate([cmc, np.full(max_rank - len(cmc), cmc[-1])]))
    metrics = {"mAP": float(np.mean(aps)), "mINP": float(np.mean(inps)), "cmc": np.mean(cmcs, axis=0),
               "num_valid_queries": len(aps)}
    return metrics, t1 - t0, time.perf_counter() - t1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--query-chunk", type=int, default=1024)
    parser.add_argument("--small", action="store_true", help="a 10x smaller problem, to check the script")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "evaluation.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    scale = 10 if args.small else 1
    sizes = dict(num_q=3368 // scale, num_g=15913 // scale, num_ids=750 // scale, num_cams=6,
                 num_distractors=2798 // scale, dim=512)
    max_rank = 50
    qf, gf, qp, gp, qc, gc = make_features(**sizes)
    qf_d, gf_d = qf.to(device), gf.to(device)

    ours, dist_times, metric_times = [], [], []
    for _ in range(max(1, args.repeat)):
        sync(device)
        t0 = time.perf_counter()
        dist = pairwise_distance(qf_d, gf_d)
        sync(device)
        t1 = time.perf_counter()
        result = evaluate_ranking(dist, qp, gp, qc, gc, max_rank=max_rank, query_chunk=args.query_chunk)
        t2 = time.perf_counter()
        dist_times.append(t1 - t0)
        metric_times.append(t2 - t1)
        ours.append(t2 - t0)
        del dist

    # The same metrics with the candidate shortcut switched off (every gallery entry searched).
    dense_times = []
    saved = ranking._CANDIDATE_MAX_FRACTION
    ranking._CANDIDATE_MAX_FRACTION = -1.0
    try:
        dist = pairwise_distance(qf_d, gf_d)
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            dense = evaluate_ranking(dist, qp, gp, qc, gc, max_rank=max_rank, query_chunk=args.query_chunk)
            dense_times.append(time.perf_counter() - t0)
        del dist
    finally:
        ranking._CANDIDATE_MAX_FRACTION = saved
    assert dense["mAP"] == result["mAP"] and np.array_equal(dense["cmc"], result["cmc"])

    ref, ref_dist_time, ref_loop_time = reference(qf.numpy(), gf.numpy(), qp, gp, qc, gc, max_rank)
    ref_time = ref_dist_time + ref_loop_time

    diff = max(abs(result["mAP"] - ref["mAP"]), abs(result["mINP"] - ref["mINP"]),
               float(np.abs(result["cmc"] - ref["cmc"]).max()))
    best, median = min(ours), statistics.median(ours)
    rows = [
        ("distances (pairwise_distance)", min(dist_times)),
        ("metrics (evaluate_ranking)", min(metric_times)),
        ("metrics, dense path forced", min(dense_times)),
        ("total, best of %d" % len(ours), best),
        ("total, median", median),
        ("reference: numpy distances", ref_dist_time),
        ("reference: per-query loop", ref_loop_time),
        ("reference: total", ref_time),
    ]
    print(f"evaluation at {sizes['num_q']} queries x {sizes['num_g']} gallery, {sizes['dim']}-d, "
          f"device {device}, torch threads {torch.get_num_threads()}")
    for name, seconds in rows:
        print(f"  {name:32s} {seconds:8.3f} s")
    print(f"  {'speed-up, total (best)':32s} {ref_time / best:8.1f} x")
    print(f"  {'speed-up, metrics only (best)':32s} {ref_loop_time / min(metric_times):8.1f} x")
    print(f"  mAP {result['mAP']:.4f}  R1 {result['cmc'][0]:.4f}  R10 {result['cmc'][9]:.4f}  "
          f"mINP {result['mINP']:.4f}  valid {result['num_valid_queries']}/{result['num_queries']}")
    print(f"  max |ours - reference| over mAP, mINP, CMC: {diff:.2e}")
    if diff > 1e-6 or result["num_valid_queries"] != ref["num_valid_queries"]:
        raise SystemExit("ours and the reference disagree")

    report = {
        "sizes": sizes, "max_rank": max_rank, "device": str(device), "query_chunk": args.query_chunk,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "seconds": {"distances_best": min(dist_times), "metrics_best": min(metric_times),
                    "metrics_dense_path_best": min(dense_times), "total_best": best,
                    "total_median": median, "total_all": ours, "reference_distances": ref_dist_time,
                    "reference_loop": ref_loop_time, "reference": ref_time},
        "speedup_vs_reference": ref_time / best,
        "speedup_metrics_vs_reference_loop": ref_loop_time / min(metric_times),
        "metrics": {"mAP": result["mAP"], "mINP": result["mINP"], "rank1": float(result["cmc"][0]),
                    "num_valid_queries": result["num_valid_queries"]},
        "max_abs_diff_vs_reference": diff,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""bench/scaling_estimate.py (issue 18, scaling on paper): the arithmetic of the estimate on a tiny
made-up cost table, and reading a minimal gpu_check summary.json. No measurement runs here."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "scaling_estimate.py"
spec = importlib.util.spec_from_file_location("scaling_estimate", SCRIPT)
se = importlib.util.module_from_spec(spec)
spec.loader.exec_module(se)


def tiny_costs(floor: float = 0.0) -> dict:
    """Round numbers: every stage after the kNN linear in N (b = 1), no step floor unless asked."""
    c = {k: (v, "test") for k, v in {
        "infer_ips/resnet50": 1000.0, "infer_ips/mobilenet_v2": 2000.0,
        "train_ips/resnet50": 100.0, "train_ips/mobilenet_v2": 200.0, "train_ips/gcl3": 10.0,
        "step_floor_s/cc": floor, "step_floor_s/gcl3": floor,
        "act_bytes/resnet50": 1e6, "act_bytes/mobilenet_v2": 1e6, "act_bytes/gcl3": 1e7,
        "nvlink_Bps": 1e9, "hbm_Bps": 1e12, "load_s/test": 1e-3, "load_s/train": 1e-3,
        "knn_rate_gpu": 1e12, "knn_rate_cpu": 1e9,
        "params/resnet50": 1e6, "params/mobilenet_v2": 1e5, "params/generator": 1e6, "params/discriminator": 1e5,
        "fit/dim": 512, "fit/knn": (1e-9, 2.0),
    }.items()}
    for stage in ("encode", "jaccard", "dbscan"):
        c[f"fit/{stage}"] = ((1e-5, 1.0), "test")
    c["fit/cluster_bytes"] = ((0.0, 1000.0), "test")  # bytes = a + b·N
    return c


def test_doubling_n_doubles_the_linear_stages_and_quadruples_the_knn():
    c = tiny_costs()
    one, two = se.estimate(c, "cc", "resnet50", 10_000, 8), se.estimate(c, "cc", "resnet50", 20_000, 8)
    for key in ("features_s", "gather_s", "gather_bytes", "encode_s", "jaccard_s", "dbscan_s", "cluster_bytes",
                "host_bytes_rank"):
        assert two[key] == pytest.approx(2 * one[key]), key
    assert two["knn_s_gpu"] == pytest.approx(4 * one["knn_s_gpu"])
    assert two["train_s"] == pytest.approx(one["train_s"])  # cluster contrast: 400 iterations whatever N


def test_all_gather_bytes_and_memory_bank():
    c = tiny_costs()
    n, d = 1000, se.EMBED_DIM["resnet50"]
    r = se.estimate(c, "cc", "resnet50", n, 8)
    assert r["host_bytes_rank"] == n * d * 4  # every rank holds the gathered N×D fp32 features
    assert r["gather_bytes"] == pytest.approx(7 / 8 * n * d * 4)  # ring all-gather: received per rank
    assert r["gather_s"] == pytest.approx(7 / 8 * n * d * 4 / 1e9)
    assert se.estimate(c, "cc", "resnet50", n, 1)["gather_bytes"] == 0
    g = se.estimate(c, "gcl3", "resnet50", n, 8)
    static = (1e6 + 1e6 + 1e5) * 16
    assert g["gpu_train_bytes"] == pytest.approx(static + 2 * 1e7 + 2 * n * d * 4)  # bank N×D, twice while cloned


def test_eight_gpus_divide_the_per_gpu_training_time():
    c = tiny_costs()
    one, eight = se.estimate(c, "cc", "resnet50", 5000, 1), se.estimate(c, "cc", "resnet50", 5000, 8)
    assert one["compute_step_s"] == pytest.approx(256 / 100)
    assert eight["compute_step_s"] == pytest.approx(one["compute_step_s"] / 8)
    assert one["allreduce_step_s"] == 0
    assert eight["allreduce_step_s"] == pytest.approx(2 * 7 / 8 * 1e6 * 4 / 1e9)  # ring all-reduce of fp32 grads
    assert se.estimate(c, "cc", "resnet50", 5000, 8)["features_s"] == pytest.approx(5000 / (8 * 1000))
    # a step floor bounds the division: batch 2 per GPU costs at least the floor
    floored = se.estimate(tiny_costs(floor=1.0), "gcl3", "resnet50", 5000, 8)
    assert floored["compute_step_s"] == 1.0
    assert floored["iters"] == 5000 // 16 + 1  # one pass over the images


def test_fit_power_recovers_the_exponent():
    a, b = se.fit_power([1000, 2000, 4000], [3e-6 * n ** 1.5 for n in (1000, 2000, 4000)])
    assert b == pytest.approx(1.5) and a == pytest.approx(3e-6)


def test_reads_a_minimal_gpu_summary(tmp_path):
    summary = {"date": "2026-12-04", "device": "cuda", "quick": False, "environment": {"device_name": "H200"},
               "parts": [
                   {"name": "cluster_contrast_step", "status": "ok", "data": {"rows": [
                       {"arch": "resnet50", "precision": "fp32", "batch": 256, "train_images_per_s": 500.0,
                        "infer_images_per_s": 2000.0, "peak_mib": 1000.0},
                       {"arch": "resnet50", "precision": "bf16", "batch": 256, "train_images_per_s": 900.0,
                        "infer_images_per_s": 3000.0, "peak_mib": 512.0}]}},
                   {"name": "gcl_iteration", "status": "ok", "data": {"batch": 16, "rows": [
                       {"stage": 3, "precision": "bf16", "pattern": "ours", "images_per_s": 80.0, "peak_mib": 16.0},
                       {"stage": 3, "precision": "bf16", "pattern": "official", "images_per_s": 30.0}]}},
                   {"name": "clustering", "status": "ok", "data": {"rows": [
                       {"n": 1000, "dim": 2048, "knn_s": 0.5}, {"n": 2000, "dim": 2048, "knn_s": 1.0}]}}]}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    gpu = se.read_gpu_summary(path)
    assert gpu["train_ips/resnet50"][0] == 900.0 and "H200" in gpu["train_ips/resnet50"][1]
    assert gpu["infer_ips/resnet50"][0] == 3000.0
    assert gpu["act_bytes/resnet50"][0] == pytest.approx(512 * 2**20 / 256)
    assert gpu["train_ips/gcl3"][0] == 80.0
    assert gpu["knn_rate_gpu"][0] == pytest.approx(2000 ** 2 * 2048 / 1.0)
    assert "train_ips/mobilenet_v2" not in gpu  # absent parts keep the assumptions
    costs = se.cost_table({}, gpu)
    assert costs["train_ips/resnet50"][0] == 900.0 and costs["train_ips/mobilenet_v2"][1].startswith("assumed")
    summary["quick"] = True
    path.write_text(json.dumps(summary))
    with pytest.raises(SystemExit):
        se.read_gpu_summary(path)

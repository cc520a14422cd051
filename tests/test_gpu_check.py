"""bench/gpu_check.py, the prepared GPU check (issue 18), exercised on the CPU: in quick mode every part
runs at tiny sizes or is skipped with its reason (the CUDA-only tests; the real-data run without
Market-1501), and the summary records every part with a status. Without CUDA and without
``--device cpu`` the check says that it needs a GPU and exits cleanly."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"
PARTS = ["env", "cuda_tests", "methods", "gcl_iteration", "cluster_contrast_step", "clustering", "evaluation",
         "real_market"]
METHODS = ["tmp", "cluster_contrast", "supervised", "gcl_stage2", "gcl_stage3", "dgnet"]


def _env(tmp_path):
    env = dict(os.environ, GCLREID_MARKET1501=str(tmp_path / "no-market"), PYTHON=sys.executable)
    env.pop("OUT", None)  # the device tool's output folder: would switch on --pack
    return env


def _summary(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    assert [p["name"] for p in summary["parts"]] == PARTS
    assert all(p["status"] in ("ok", "failed", "timeout", "skipped") for p in summary["parts"])
    assert all(p["reason"] for p in summary["parts"] if p["status"] != "ok")
    return summary


def test_quick_cpu_run_records_every_part(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--budget", "240", str(out)],
                          capture_output=True, text=True, env=_env(tmp_path), cwd=REPO, timeout=400)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = _summary(out)
    parts = {p["name"]: p for p in summary["parts"]}
    for name in ("env", "methods", "gcl_iteration", "cluster_contrast_step", "clustering", "evaluation"):
        assert parts[name]["status"] == "ok", (name, parts[name]["reason"])
    # Needs CUDA: skipped with the reason, the tests it would run listed.
    assert parts["cuda_tests"]["status"] == "skipped" and "CUDA" in parts["cuda_tests"]["reason"]
    assert {"tests/test_clustering.py::test_jaccard_on_gpu_matches_cpu",
            "tests/test_body.py::test_gpu_render_matches_cpu"} <= set(parts["cuda_tests"]["data"]["selected"])
    assert parts["real_market"]["status"] == "skipped" and "Market-1501 not found" in parts["real_market"]["reason"]
    # Every method ran; on the CPU the bf16 slot is a repeat of fp32 from the same snapshot: identical losses.
    methods = parts["methods"]["data"]["methods"]
    assert list(methods) == METHODS
    for name, result in methods.items():
        assert "error" not in result and not result["nonfinite"], (name, result)
        assert result["first_step_max_rel_diff"] <= 1e-6, (name, result["first_step_max_rel_diff"])
    rows = parts["gcl_iteration"]["data"]["rows"]
    assert {(r["stage"], r["pattern"]) for r in rows} == {(s, p) for s in (2, 3) for p in ("official", "ours", "ours_ckpt")}
    assert all(r["speedup_vs_official_fp32"] > 0 and r["loss_rel_diff_vs_official_fp32"] < 1e-4 for r in rows)
    assert summary["environment"]["torch"] == torch.__version__
    md = (out / "summary.md").read_text()
    assert "| part | status | seconds | note |" in md and all(f"| {name} |" in md for name in PARTS)
    assert all((out / "logs" / f"{name}.log").is_file() for name in PARTS if name != "cuda_tests")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")
def test_without_cuda_the_check_says_so_and_exits_cleanly(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), str(out)], capture_output=True, text=True,
                          env=_env(tmp_path), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "needs one" in proc.stdout
    summary = _summary(out)
    assert summary["parts"][0]["status"] == "ok" and summary.get("no_cuda") is True
    assert all(p["status"] == "skipped" and "CUDA" in p["reason"] for p in summary["parts"][1:])

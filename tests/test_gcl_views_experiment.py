"""bench/gcl_views_experiment.py's summary (issue 15): mean ± std over seeds and paired differences,
from fabricated run records (the runs themselves are ordinary training runs, tested elsewhere)."""
import importlib.util
import json
import statistics
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gcl_views_experiment.py"
_spec = importlib.util.spec_from_file_location("gcl_views_experiment", SCRIPT)
exp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(exp)

MAP = {"stage1": [0.20, 0.30, 0.25], "stage2": [0.20, 0.30, 0.25], "contrast_only": [0.26, 0.35, 0.31],
       "generated": [0.19, 0.31, 0.22]}


def write_runs(root: Path, skip=()):
    for name, values in MAP.items():
        for seed, m in enumerate(values):
            if (seed, name) in skip:
                continue
            run = root / f"seed{seed}" / name
            run.mkdir(parents=True)
            record = {"eval": {"mAP": m, "rank1": m + 0.1}}
            if name in ("stage2", "generated"):
                record["generation"] = {"ssim": 0.4 + seed / 100, "copy_ssim": 0.5, "body_ssim": 0.3}
            (run / "results.json").write_text(json.dumps(record))


def test_summary_means_stds_and_paired_differences(tmp_path):
    write_runs(tmp_path)
    table = exp.summarise(tmp_path, [0, 1, 2], ["contrast_only", "generated"])
    gen = table["generated"]
    assert gen["seeds"] == 3 and gen["per_seed_mAP"] == [19.0, 31.0, 22.0]
    assert gen["mAP"][0] == pytest.approx(24.0) and gen["mAP"][1] == pytest.approx(statistics.stdev([19, 31, 22]))
    assert gen["rank1"][0] == pytest.approx(34.0)
    # paired: the same seed's stage 1 / contrast-only run
    assert gen["vs_stage1"][0] == pytest.approx(statistics.mean([-1, 1, -3]))
    assert gen["vs_contrast_only"][0] == pytest.approx(statistics.mean([-7, -4, -9]))
    assert gen["vs_contrast_only"][1] == pytest.approx(statistics.stdev([-7, -4, -9]))
    assert "vs_contrast_only" not in table["contrast_only"] and "vs_stage1" not in table["stage1"]
    assert gen["generation"]["ssim"][0] == pytest.approx(0.41) and "generation" not in table["contrast_only"]
    md = (tmp_path / "summary.md").read_text()
    assert "| generated | 3 | 24.00 ± 6.24 |" in md and "-6.67 ±" in md
    assert json.loads((tmp_path / "summary.json").read_text())["generated"]["per_seed_mAP"] == [19.0, 31.0, 22.0]


def test_summary_pairs_only_seeds_that_both_rows_have(tmp_path):
    write_runs(tmp_path, skip={(1, "contrast_only"), (2, "generated")})
    table = exp.summarise(tmp_path, [0, 1, 2], ["contrast_only", "generated"])
    assert table["generated"]["seeds"] == 2 and table["contrast_only"]["seeds"] == 2
    # only seed 0 has both: one difference, no spread
    assert table["generated"]["vs_contrast_only"] == (pytest.approx(-7.0), 0.0)


def test_synth_settings_are_parsed_as_integers_and_bad_ones_named():
    assert exp.synth_settings(["cams=3", "train_ids=80"]) == {"cams": 3, "train_ids": 80}
    assert exp.synth_settings([]) == {}
    for bad in ("cams", "cams=three", "=3"):
        with pytest.raises(SystemExit, match=f"--synth-set '{bad}'"):
            exp.synth_settings([bad])

"""`gclreid demo` end to end on a tiny SynthReID: data → untrained → stage 1 → stage 2 → stage 3 (+ contrast only)."""
import json

import pytest

from gclreid.cli import main
from gclreid.config import load_config
from gclreid.demo import format_results, run_demo
from gclreid.errors import GclreidError

TINY = dict(train_ids=6, test_ids=3, distractors=2, cams=2, train_images_per_id=5.0, test_images_per_id=4.0,
            height=64, width=32)
SMALL = ["train.epochs=1", "train.iters_per_epoch=2", "train.batch_size=4", "data.height=64", "data.width=32"]
# 64x32 images (the generator without ASPP, whose dilations need larger maps) keep it quick.
# Stage 1 on 30 images: instance labels (no clustering of a 2-iteration model); stage 3 clusters
# its memory with a wide eps so that there are clusters at all.
TINY_STAGES = {"stage1": SMALL + ["cluster.instance_epochs=1", "train.num_instances=2"],
               "stage2": SMALL + ["gcl.gen_eval_images=2", "generator.aspp=false"],
               "stage3": SMALL + ["gcl.gen_eval_images=2", "generator.aspp=false", "cluster.eps=0.9", "gcl.num_negatives=16"]}
TINY_STAGES["contrast"] = TINY_STAGES["stage3"]


def test_demo_data_and_untrained_encoder_only_and_reuse(tmp_path):
    results = run_demo(tmp_path / "demo", workers=1, progress=False, synth_overrides=TINY, stages=())
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert [r["stage"] for r in saved["rows"]] == ["untrained encoder"]
    assert 0 <= saved["rows"][0]["mAP"] <= 1
    assert saved["stats"]["train"]["ids"] == 6 and saved["stats"]["query"]["ids"] == 3
    assert (tmp_path / "demo" / "data" / "synthreid.json").is_file()
    assert "untrained encoder" in format_results(results)
    again = run_demo(tmp_path / "demo", workers=1, progress=False, synth_overrides=TINY, stages=())
    assert again["synth"] == {"reused": True, "out": str(tmp_path / "demo" / "data")}
    assert again["rows"][0]["mAP"] == results["rows"][0]["mAP"]  # same seed, same numbers


def test_demo_runs_every_stage_from_the_previous_checkpoint(tmp_path):
    out = tmp_path / "demo"
    results = run_demo(out, workers=1, progress=False, synth_overrides=TINY, overrides=TINY_STAGES)
    stages = [r["stage"] for r in results["rows"]]
    assert stages == ["untrained encoder", "stage 1: cluster contrast", "stage 2: generator warm-up",
                      "stage 3: GCL joint", "stage 3 without generation"]
    # Stage 2 freezes the identity encoder: its evaluation equals stage 1's exactly.
    assert results["rows"][2]["mAP"] == results["rows"][1]["mAP"]
    assert all(0 < results["rows"][i]["novel_view_ssim"] <= 1 for i in (2, 3))
    for key, previous in (("stage2", "stage1"), ("stage3", "stage2"), ("contrast", "stage2")):
        cfg = load_config(out / key / "config.yaml")
        init = cfg.train.init if key == "stage2" else cfg.gcl.init
        assert init == str(out / previous / "last.pt"), f"{key} is not initialised from {previous}"
    # the control is stage 3's run without the generated views
    assert load_config(out / "contrast" / "config.yaml").gcl.losses == ["contrast_only"]
    assert load_config(out / "stage3" / "config.yaml").gcl.losses == ["gan", "lvi", "lvi2", "lvi3"]
    assert list((out / "stage3" / "grids").glob("*.png")), "stage 3 left no image grid"
    table = format_results(json.loads((out / "results.json").read_text()))
    assert "stage 3: GCL joint" in table and "SSIM" in table


def test_demo_rejects_bad_stage_lists(tmp_path, capsys):
    with pytest.raises(GclreidError, match="skip one"):
        run_demo(tmp_path, stages=("stage2",), synth_overrides=TINY, progress=False)
    with pytest.raises(GclreidError, match="contrast needs stage2"):
        run_demo(tmp_path, stages=("stage1", "contrast"), synth_overrides=TINY, progress=False)
    with pytest.raises(GclreidError, match="unknown stage"):
        run_demo(tmp_path, stages=("stage9",), synth_overrides=TINY, progress=False)
    assert main(["demo", "--out", str(tmp_path), "--set", "train.epochs=1"]) != 0
    assert "STAGE:KEY=VALUE" in capsys.readouterr().err


def test_demo_help_lists_its_options(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    assert "--stages" in text and "--set" in text and "cluster_contrast_synthreid.yaml" in text


def test_demo_checks_every_stage_config_before_any_work(tmp_path, capsys):
    # an unknown key in --set for the last stage is refused before the dataset is generated
    assert main(["demo", "--out", str(tmp_path / "d"), "--set", "stage3:train.nokey=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "stage3" in err and "train.nokey=1" in err
    assert not (tmp_path / "d").exists()
    with pytest.raises(GclreidError, match="stage1.*train.epochs=0 must be >= 1"):
        run_demo(tmp_path / "e", synth_overrides=TINY, progress=False, overrides={"stage1": ["train.epochs=0"]})
    assert not (tmp_path / "e").exists()


def test_a_second_demo_into_the_same_folder_retrains_its_stages(tmp_path):
    stage1 = {"stage1": TINY_STAGES["stage1"]}
    run_demo(tmp_path / "demo", workers=1, progress=False, synth_overrides=TINY, stages=("stage1",), overrides=stage1)
    # the stage folder holds a run now; the demo replaces it (as train --overwrite) rather than refusing
    again = run_demo(tmp_path / "demo", workers=1, progress=False, synth_overrides=TINY, stages=("stage1",),
                     overrides=stage1)
    assert [r["stage"] for r in again["rows"]] == ["untrained encoder", "stage 1: cluster contrast"]
    assert len((tmp_path / "demo" / "stage1" / "metrics.jsonl").read_text().splitlines()) == 1

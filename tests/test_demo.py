"""`gclreid demo` end to end on a tiny SynthReID."""
import json

from gclreid.cli import main
from gclreid.demo import format_results, run_demo

TINY = dict(train_ids=4, test_ids=3, distractors=2, cams=2, train_images_per_id=3.0, test_images_per_id=4.0,
            views=False)


def test_demo_generates_data_evaluates_and_reuses_the_data(tmp_path):
    results = run_demo(tmp_path / "demo", workers=1, progress=False, synth_overrides=TINY)
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert saved["rows"][0]["stage"] == "untrained encoder"
    assert 0 <= saved["rows"][0]["mAP"] <= 1
    assert saved["stats"]["train"]["ids"] == 4 and saved["stats"]["query"]["ids"] == 3
    assert (tmp_path / "demo" / "data" / "synthreid.json").is_file()
    assert (tmp_path / "demo" / "config.yaml").is_file()
    assert "untrained encoder" in format_results(results)
    again = run_demo(tmp_path / "demo", workers=1, progress=False, synth_overrides=TINY)
    assert again["synth"] == {"reused": True, "out": str(tmp_path / "demo" / "data")}
    assert again["rows"][0]["mAP"] == results["rows"][0]["mAP"]  # same seed, same numbers


def test_demo_help_lists_its_options(capsys):
    try:
        main(["demo", "--help"])
    except SystemExit:
        pass
    assert "--out" in capsys.readouterr().out

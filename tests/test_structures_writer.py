"""`gclreid structures` end to end on a tiny SynthReID: estimate (fallback), synth truth, precomputed
check, resuming, records, bad input."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gclreid.cli import main
from gclreid.data import ImageRecord, build_dataset
from gclreid.structures import ANGLES, structure_path
from gclreid.structures.sources import validate_precomputed
from gclreid.structures.writer import RECORDS, SUMMARY, read_records


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "s"
    rc = main(["synth", "--out", str(root), "--train-ids", "2", "--test-ids", "2", "--cams", "2", "--distractors", "0",
               "--images-per-id", "2", "--no-views", "--no-progress", "--seed", "3", "--workers", "1"])
    assert rc == 0
    return root


def _records(root):
    ds = build_dataset("synthreid", root)
    return list(ds.train) + list(ds.query) + list(ds.gallery)


def _run(root, out, *extra):
    return main(["structures", "--dataset", "synthreid", "--root", str(root), "--out", str(out), "--no-progress",
                 "--batch", "3", *extra])


def test_fallback_writes_every_map_and_resumes(synth_root, tmp_path, capsys):
    out = tmp_path / "est"
    records = _records(synth_root)
    n = len(records)
    assert _run(synth_root, out, "--estimator", "fallback") == 0
    for r in records:
        for angle in (0, *ANGLES):
            path = structure_path(out, r, angle)
            with Image.open(path) as im:
                assert im.mode == "L" and im.size == (64, 128)
    recs = read_records(out)
    assert len(recs) == n
    assert {r["status"] for r in recs.values()} == {"fallback"}
    assert all(0 <= r["yaw"] < 360 and 0 <= r["confidence"] <= 1 for r in recs.values())
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["processed"] == n and summary["skipped"] == 0
    assert summary["fallback_rate"] == 1.0 and summary["detection_rate"] == 0.0
    assert (out / "contact_sheet.png").is_file()
    # Re-run: nothing to do.
    capsys.readouterr()
    assert _run(synth_root, out, "--estimator", "fallback", "--json") == 0
    again = json.loads(capsys.readouterr().out)
    assert again["processed"] == 0 and again["skipped"] == n
    # An interrupted image (one map gone) is redone, and only that one.
    victim = records[1]
    structure_path(out, victim, 90).unlink()
    assert _run(synth_root, out, "--estimator", "fallback", "--json") == 0
    third = json.loads(capsys.readouterr().out)
    assert third["processed"] == 1 and third["skipped"] == n - 1
    assert structure_path(out, victim, 90).is_file()
    assert len((out / RECORDS).read_text().splitlines()) == n + 1
    assert not list(out.rglob("*.tmp"))


def test_split_and_angles_options(synth_root, tmp_path):
    out = tmp_path / "train_only"
    assert _run(synth_root, out, "--estimator", "fallback", "--split", "train", "--angles", "90,180",
                "--contact-rows", "0") == 0
    assert sorted(p.name for p in (out / "train").iterdir()) == ["render", "render_180", "render_90"]
    assert not (out / "test").exists()
    ds = build_dataset("synthreid", synth_root)
    assert len(list((out / "train" / "render").iterdir())) == len(ds.train)


def test_synth_source_reproduces_ground_truth(synth_root, tmp_path):
    out = tmp_path / "truth"
    assert _run(synth_root, out, "--source", "synth") == 0
    for r in _records(synth_root):
        for angle in (0, 135, 315):
            mine = np.asarray(Image.open(structure_path(out, r, angle)))
            truth = np.asarray(Image.open(structure_path(synth_root / "structures", r, angle)))
            assert np.array_equal(mine, truth)
    recs = read_records(out)
    meta = json.loads((synth_root / "synthreid.json").read_text())
    yaw = {m["file"].split("/")[-1]: m["yaw"] % 360 for m in meta["images"]}
    assert all(r["status"] == "truth" and abs(r["yaw"] - yaw[r["relpath"]]) < 0.01 for r in recs.values())


def test_precomputed_check(synth_root, tmp_path, capsys):
    folder = tmp_path / "released"
    shutil.copytree(synth_root / "structures", folder)
    assert _run(synth_root, folder, "--source", "precomputed") == 0
    records = _records(synth_root)
    gone = structure_path(folder, records[0], 225)
    gone.unlink()
    capsys.readouterr()
    assert _run(synth_root, folder, "--source", "precomputed") == 1
    text = capsys.readouterr().out
    assert "1 files missing" in text and str(gone) in text and "render_225: 1" in text


def test_precomputed_msmt_identity_subfolders(tmp_path):
    # MSMT17 keeps identity sub-folders in the relative path, .jpg names kept.
    recs = [ImageRecord(path=f"/x/{p}", pid=int(p[:4]), camid=0, relpath=p, split="train")
            for p in ("0000/0000_000_01_0303morning_0015_0.jpg", "0001/0001_001_01_0303morning_0016_0.jpg")]
    for r in recs:
        for angle in (0, *ANGLES):
            path = structure_path(tmp_path, r, angle)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (64, 128), 128).save(path, format="JPEG")
    report = validate_precomputed(tmp_path, recs, ANGLES)
    assert report["ok"] and report["complete"] == 2
    structure_path(tmp_path, recs[1], 45).unlink()
    report = validate_precomputed(tmp_path, recs, ANGLES)
    assert not report["ok"] and report["images_missing"] == 1
    assert report["missing_per_folder"] == {"train/render_45": 1}
    assert report["first_missing"] == [str(tmp_path / "train/render_45/0001/0001_001_01_0303morning_0016_0.jpg")]


@pytest.mark.parametrize("extra, message", [
    (["--angles", "50"], "--angles"),
    (["--source", "smpl"], "--smpl-params"),
    (["--height", "100", "--width", "64"], "2:1"),
    (["--workers", "0"], "--workers"),
])
def test_bad_input_is_one_line_error(synth_root, tmp_path, capsys, extra, message):
    assert _run(synth_root, tmp_path / "bad", *extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_synth_source_needs_metadata(tmp_path, capsys):
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (64, 128)).save(tmp_path / folder / "0002_c1s1_000001_01.jpg")
    Image.new("RGB", (64, 128)).save(tmp_path / "bounding_box_train" / "0001_c1s1_000001_01.jpg")
    assert main(["structures", "--dataset", "market1501", "--root", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--source", "synth", "--no-progress"]) == 2
    assert "synthreid.json" in capsys.readouterr().err


def test_two_workers_give_the_same_maps_as_one(synth_root, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert _run(synth_root, one, "--source", "synth", "--workers", "1") == 0
    assert _run(synth_root, two, "--source", "synth", "--workers", "2") == 0
    for r in _records(synth_root):
        for angle in (0, 90, 315):
            assert structure_path(one, r, angle).read_bytes() == structure_path(two, r, angle).read_bytes()
    assert read_records(one).keys() == read_records(two).keys()


def test_records_and_summary_say_how_each_map_was_made(synth_root, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GCLREID_POSE_PYTHON", raising=False)
    out = tmp_path / "auto"
    capsys.readouterr()
    assert _run(synth_root, out, "--estimator", "auto", "--pose-python", str(tmp_path / "no" / "python")) == 0
    err = capsys.readouterr().err
    # auto without a MediaPipe interpreter: one clear line, saying what runs and how to get MediaPipe.
    line = [x for x in err.splitlines() if x.startswith("structures: estimator")]
    assert len(line) == 1 and "fallback" in line[0] and "make pose-env" in line[0] and "GCLREID_POSE_PYTHON" in line[0]
    recs = read_records(out)
    assert all(r["reason"] in ("silhouette", "prior", "no_mask") and "quality" in r and "box" in r for r in recs.values())
    summary = json.loads((out / SUMMARY).read_text())
    assert sum(summary["reasons"].values()) == len(recs) and summary["estimator"].startswith("estimator fallback")


def test_mediapipe_missing_is_one_line_pointing_to_pose_env(synth_root, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GCLREID_POSE_PYTHON", raising=False)
    import importlib.util
    if importlib.util.find_spec("mediapipe") is not None:
        pytest.skip("mediapipe is installed in this environment")
    assert _run(synth_root, tmp_path / "mp", "--estimator", "mediapipe") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "make pose-env" in err and "pip install" not in err


def test_contact_sheet_is_a_grid_with_status_on_every_cell(synth_root, tmp_path):
    out = tmp_path / "grid"
    assert _run(synth_root, out, "--estimator", "fallback", "--contact-rows", "2") == 0
    n = len(_records(synth_root))
    with Image.open(out / "contact_sheet.png") as im:
        w, h = im.size
        sheet = np.asarray(im.convert("RGB"))
    cell_w = 2 * 64 + 4 * 32 + 3 * 4  # image, overlay, maps at half size in two rows of four
    assert w >= 4 * cell_w and h < w  # several columns: wider than tall
    assert min(n, 8) <= (w // cell_w) * 2
    # Caption text is drawn under the images (bright pixels on the dark band below each cell).
    band = sheet[128 + 4:128 + 4 + 30, 4:cell_w]
    assert (band.max(-1) > 150).sum() > 50


def test_query_and_gallery_images_sharing_a_file_name_are_refused(tmp_path, capsys):
    # query and gallery maps share test/: a folder dataset reusing a file name would get one map for two images
    for split, colour in (("query", (200, 0, 0)), ("gallery", (0, 0, 200)), ("train", (0, 200, 0))):
        (tmp_path / "d" / split).mkdir(parents=True)
        for name in ("0001_c1_a.jpg", "0001_c2_b.jpg") if split == "train" else ("0001_c1_x.jpg",):
            Image.new("RGB", (32, 64), colour).save(tmp_path / "d" / split / name)
    assert main(["structures", "--dataset", "folder", "--root", str(tmp_path / "d"), "--out", str(tmp_path / "s"),
                 "--option", r"pattern=^(?P<pid>\d+)_c(?P<camid>\d)", "--option", "train_dir=train",
                 "--estimator", "fallback", "--split", "test", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "would share one structure map" in err and "0001_c1_x.jpg" in err
    assert not list((tmp_path / "s").rglob("*.jpg"))

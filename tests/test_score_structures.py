"""bench/score_structures.py on synthetic fixtures: fake grey maps, a fake structures.jsonl and a small
labels CSV written in tmp_path (no Market-1501, no MediaPipe)."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "score_structures.py"
_spec = importlib.util.spec_from_file_location("score_structures", SCRIPT)
ss = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("score_structures", ss)  # dataclasses look their module up there
_spec.loader.exec_module(ss)

H, W = 128, 64
ANGLES = (0, 45, 90, 135, 180, 225, 270, 315)
HEADER = "relpath,facing,top,bottom,pose,notes\n"


def body_map(top: float, bottom: float, x0: int = 20, x1: int = 44, grey: int = 200) -> np.ndarray:
    """A black map with a grey box from row top*H to bottom*H (a stand-in for a rendered body)."""
    m = np.zeros((H, W), dtype=np.uint8)
    m[int(round(top * H)):int(round(bottom * H)), x0:x1] = grey
    return m


def write_map(root: Path, angle: int, relpath: str, array: np.ndarray) -> None:
    folder = "render" if angle == 0 else f"render_{angle}"
    path = root / "train" / folder / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG", quality=95)  # JPEG data, like gclreid structures


@pytest.fixture
def fixture(tmp_path):
    """Five labelled crops and a structures folder:

    a: facing ok (yaw 10 vs 0), extent ok → plausible;
    b: front/back confusion (yaw 170 vs 0), extent ok;
    c: facing ok (fallback, yaw 100 vs 90), body too low (top 0.30 vs 0.10), empty map at 90°;
    d: no record and no maps (missing);
    e: no facing label, extent ok, body cut by the left border at 45°.
    """
    labels = tmp_path / "labels.csv"
    labels.write_text("# comment line\n" + HEADER + "a.jpg,0,0.10,0.90,walking,\n"
                      "b.jpg,0,0.10,0.90,standing,back view\n"
                      "c.jpg,90,0.10,0.90,walking,\"profile, bag\"\n"
                      "d.jpg,180,0.05,1.00,walking,feet cut\n"
                      "e.jpg,,0.20,0.95,cycling,facing not clear\n", encoding="utf-8")
    root = tmp_path / "structures"
    records = [("a.jpg", "detected", 10.0), ("b.jpg", "detected", 170.0), ("c.jpg", "fallback", 100.0),
               ("e.jpg", "detected", 45.0)]
    root.mkdir()
    with open(root / "structures.jsonl", "w", encoding="utf-8") as fh:
        for relpath, status, yaw in records:
            fh.write(json.dumps({"split": "train", "relpath": relpath, "status": status, "yaw": yaw,
                                 "confidence": 0.9, "source": "estimate"}) + "\n")
    for angle in ANGLES:
        write_map(root, angle, "a.jpg", body_map(0.10, 0.90))
        write_map(root, angle, "b.jpg", body_map(0.12, 0.88))
        write_map(root, angle, "c.jpg", np.zeros((H, W), np.uint8) if angle == 90 else body_map(0.30, 0.90))
        write_map(root, angle, "e.jpg", body_map(0.20, 0.95, x0=0 if angle == 45 else 20))
    return labels, root


def test_yaw_difference_is_circular():
    assert ss.yaw_difference(350, 10) == pytest.approx(20)
    assert ss.yaw_difference(10, 350) == pytest.approx(20)
    assert ss.yaw_difference(0, 180) == pytest.approx(180)
    assert ss.yaw_difference(-90, 270) == pytest.approx(0)
    assert ss.yaw_difference(45, 90) == pytest.approx(45)


def test_body_extent():
    mask = body_map(0.25, 0.75) > ss.BODY_GREY
    assert ss.body_extent(mask) == pytest.approx((0.25, 0.75))
    assert ss.body_extent(np.zeros((H, W), bool)) is None


def test_counts(fixture):
    labels, root = fixture
    report = ss.score(root, labels)
    o = report["overall"]
    assert o["images"] == 5
    assert (o["facing_ok"]["count"], o["facing_ok"]["of"]) == (2, 4)      # a, c of a, b, c, d (e unlabelled)
    assert (o["front_back"]["count"], o["front_back"]["of"]) == (1, 4)    # b
    assert (o["extent_ok"]["count"], o["extent_ok"]["of"]) == (3, 5)      # a, b, e
    assert (o["plausible"]["count"], o["plausible"]["of"]) == (1, 4)      # a
    assert (o["empty_maps"]["count"], o["empty_maps"]["of"]) == (1, 4)    # c (d has no maps)
    assert (o["border"]["count"], o["border"]["of"]) == (1, 4)            # e
    assert (o["border_0"]["count"], o["border_rotated"]["count"]) == (0, 1)
    assert (o["missing"]["count"], o["missing"]["of"]) == (1, 5)          # d
    assert o["facing_ok_by_label"]["0"]["count"] == 1 and o["facing_ok_by_label"]["0"]["of"] == 2

    per = report["per_status"]
    assert set(per) == {"detected", "fallback", "missing"}
    assert per["detected"]["images"] == 3 and per["detected"]["plausible"]["count"] == 1
    assert per["fallback"]["facing_ok"]["count"] == 1 and per["fallback"]["extent_ok"]["count"] == 0

    rows = {r["relpath"]: r for r in report["images"]}
    assert rows["a.jpg"]["facing_error"] == pytest.approx(10)
    assert rows["c.jpg"]["top"] == pytest.approx(0.30, abs=0.01) and rows["c.jpg"]["empty_maps"] == [90]
    assert rows["e.jpg"]["border_maps"] == [45] and rows["e.jpg"]["plausible"] is None
    assert rows["d.jpg"]["status"] == "missing" and rows["d.jpg"]["plausible"] is False
    # Worst first: the missing crop, then the failures; the plausible one last.
    assert report["worst"][0]["relpath"] == "d.jpg"
    assert report["worst"][-1]["relpath"] in ("a.jpg", "e.jpg")


def test_missing_maps_are_reported(fixture):
    labels, root = fixture
    (root / "train" / "render_180" / "a.jpg").unlink()
    rows = {r["relpath"]: r for r in ss.score(root, labels)["images"]}
    assert rows["a.jpg"]["missing_maps"] == [180]
    assert ss.score(root, labels)["overall"]["missing"]["count"] == 2


def test_cli_table_and_json(fixture, capsys):
    labels, root = fixture
    assert ss.main(["--structures", str(root), "--labels", str(labels)]) == 0
    text = capsys.readouterr().out
    assert "plausible" in text and "detected" in text and "fallback" in text and "d.jpg" in text
    assert ss.main(["--structures", str(root), "--labels", str(labels), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["overall"]["plausible"]["count"] == 1


def test_missing_structures_jsonl_is_a_clear_error(fixture, tmp_path, capsys):
    labels, _ = fixture
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    with pytest.raises(ss.ScoreError, match="structures.jsonl"):
        ss.score(empty, labels)
    assert ss.main(["--structures", str(empty), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err
    assert str(empty / "structures.jsonl") in err


@pytest.mark.parametrize("body, message", [
    ("relpath,facing,top,bottom\n", "header"),
    (HEADER + "a.jpg,0,0.1,0.9,walking\n", "line 2: 5 fields"),
    (HEADER + "a.jpg,30,0.1,0.9,walking,\n", "facing 30"),
    (HEADER + "a.jpg,front,0.1,0.9,walking,\n", "must be numbers"),
    (HEADER + "a.jpg,0,0.9,0.1,walking,\n", "top 0.9 and bottom 0.1"),
    (HEADER + "a.jpg,0,0.1,0.9,running,\n", "pose 'running'"),
    (HEADER + "a.jpg,0,0.1,0.9,walking,\na.jpg,0,0.1,0.9,walking,\n", "line 3: a.jpg is labelled twice"),
    (HEADER, "no rows"),
])
def test_malformed_labels_name_the_file(tmp_path, body, message):
    path = tmp_path / "bad_labels.csv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ss.ScoreError) as info:
        ss.read_labels(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_missing_labels_file(tmp_path):
    with pytest.raises(ss.ScoreError, match="does not exist"):
        ss.read_labels(tmp_path / "absent.csv")


def test_estimator_needs_an_existing_market_root(fixture, tmp_path, capsys):
    labels, _ = fixture
    code = ss.main(["--estimator", "fallback", "--out", str(tmp_path / "out"), "--labels", str(labels),
                    "--root", str(tmp_path / "no_market")])
    assert code == 2
    assert "no_market" in capsys.readouterr().err


def test_shipped_labels_parse():
    labels = ss.read_labels(ss.DEFAULT_LABELS)
    assert len(labels) >= 110
    cams = {lab.relpath.split("_")[1][:2] for lab in labels}
    assert cams == {f"c{i}" for i in range(1, 7)}

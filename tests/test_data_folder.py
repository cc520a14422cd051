"""The generic `folder` reader: file-name patterns, CSV, optional cameras, unlabeled mode, bad input."""
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from gclreid.config import load_config
from gclreid.data import build_dataset, dataset_from_config
from gclreid.errors import DatasetError


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 8), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png()


def write(folder: Path, names):
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(PNG)


def stats(ds):
    return {s: (v["images"], v["ids"], v["cams"]) for s, v in ds.stats().items()}


def test_default_pattern_relabels_sparse_cameras(tmp_path):
    write(tmp_path / "train", ["0001_c3_a.png", "0001_c12_b.png", "0004_c7_a.png", "-1_c7_junk.png"])
    write(tmp_path / "query", ["0009_c3_q.png"])
    write(tmp_path / "gallery", ["0009_c12_g.png", "0000_c7_distractor.png"])
    ds = build_dataset("folder", tmp_path)
    assert stats(ds) == {"train": (3, 2, 3), "query": (1, 1, 1), "gallery": (2, 2, 2)}
    assert ds.camera_names == ["3", "7", "12"]  # numeric order, not string order
    assert [(r.relpath, r.pid, r.camid) for r in ds.train] == [("0001_c12_b.png", 1, 2), ("0001_c3_a.png", 1, 0),
                                                               ("0004_c7_a.png", 4, 1)]
    assert ds.query[0].camid == 0 and ds.dropped["train"] == 1


def test_identity_folders_without_cameras(tmp_path):
    write(tmp_path / "train", ["0003/a.png", "0003/b.png", "0005/a.jpg", "0005/sub/c.jpeg"])
    write(tmp_path / "query", ["0007/q.png"])
    write(tmp_path / "gallery", ["0007/g1.png", "0008/g2.png", "notes.txt"])  # non-images are ignored
    (tmp_path / "gallery" / "notes.txt").write_text("x")
    ds = build_dataset("folder", tmp_path, pattern=r"^(?P<pid>\d+)/")
    assert stats(ds) == {"train": (4, 2, 0), "query": (1, 1, 0), "gallery": (2, 2, 0)}
    assert all(r.camid == -1 for r in ds.train + ds.query + ds.gallery)
    assert [r.relpath for r in ds.train] == ["0003/a.png", "0003/b.png", "0005/a.jpg", "0005/sub/c.jpeg"]
    assert ds.train_labels() == [0, 0, 1, 1]


def test_named_cameras_and_custom_dirs(tmp_path):
    write(tmp_path / "tr", ["12_north_1.png", "12_south_2.png", "40_east_1.png"])
    ds = build_dataset("folder", tmp_path, pattern=r"(?P<pid>\d+)_(?P<camid>[a-z]+)_", train_dir="tr")
    assert ds.camera_names == ["east", "north", "south"]
    assert [(r.pid, r.camid) for r in ds.train] == [(12, 1), (12, 2), (40, 0)]
    assert stats(ds)["query"] == (0, 0, 0)


def test_csv_with_cameras_and_splits(tmp_path):
    write(tmp_path / "imgs", ["a.png", "b.png", "c.png", "q.png", "g.png", "h.png"])
    (tmp_path / "labels.csv").write_text("path,pid,camid,split\nimgs/a.png,3,0,train\nimgs/b.png,3,1,\n"
                                         "imgs/c.png,8,,train\nimgs/q.png,11,0,query\nimgs/g.png,11,1,gallery\n"
                                         f"{tmp_path / 'imgs' / 'h.png'},-1,1,gallery\n")
    ds = build_dataset("folder", tmp_path, csv="labels.csv")
    assert stats(ds) == {"train": (3, 2, 2), "query": (1, 1, 1), "gallery": (1, 1, 1)}
    assert [(r.relpath, r.pid, r.camid) for r in ds.train] == [("imgs/a.png", 3, 0), ("imgs/b.png", 3, 1),
                                                               ("imgs/c.png", 8, -1)]
    assert ds.train[0].path == str(tmp_path / "imgs" / "a.png") and ds.dropped["gallery"] == 1


def test_csv_without_cameras_or_split(tmp_path):
    write(tmp_path, ["x1.png", "x2.png", "x3.png"])
    csv_path = tmp_path / "meta" / "list.csv"
    csv_path.parent.mkdir()
    csv_path.write_text("Path,PID\nx1.png,1\nx2.png,1\nx3.png,2\n")  # header case does not matter
    ds = build_dataset("folder", tmp_path, csv=str(csv_path))
    assert stats(ds) == {"train": (3, 2, 0), "query": (0, 0, 0), "gallery": (0, 0, 0)}


def test_unlabeled_modes(tmp_path):
    write(tmp_path / "frames", ["cam1/0001.png", "cam1/0002.png", "cam2/0001.png"])
    ds = build_dataset("folder", tmp_path / "frames", unlabeled=True)
    assert stats(ds) == {"train": (3, 0, 0), "query": (0, 0, 0), "gallery": (0, 0, 0)}
    assert ds.unlabeled and ds.train_labels() == [-1, -1, -1]
    ds = build_dataset("folder", tmp_path / "frames", unlabeled="true", pattern=r"cam(?P<camid>\d+)/")
    assert [r.camid for r in ds.train] == [0, 0, 1] and all(r.pid == -1 for r in ds.train)
    # a train/ folder is preferred; query/ and gallery/ are not read in unlabeled mode
    write(tmp_path / "split", ["train/0002_c1_x.png", "train/0003_c2_y.png", "query/0002_c2_q.png"])
    ds = build_dataset("folder", tmp_path / "split", unlabeled=True, pattern=r"_c(?P<camid>\d)")
    assert stats(ds) == {"train": (2, 0, 2), "query": (0, 0, 0), "gallery": (0, 0, 0)}
    (tmp_path / "u.csv").write_text("path\nframes/cam1/0001.png\nframes/cam2/0001.png\n")
    assert stats(build_dataset("folder", tmp_path, csv="u.csv", unlabeled=True))["train"] == (2, 0, 0)


def test_folder_bad_input(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        build_dataset("folder", tmp_path / "missing")
    write(tmp_path / "train", ["0001_c1_a.png", "holiday.png"])
    with pytest.raises(DatasetError, match=r"holiday.png does not match the pattern"):
        build_dataset("folder", tmp_path)
    with pytest.raises(DatasetError, match=r"needs a named group \(\?P<pid>...\)"):
        build_dataset("folder", tmp_path, pattern=r"(?P<camid>\d+)")
    with pytest.raises(DatasetError, match="not a valid regular expression"):
        build_dataset("folder", tmp_path, pattern=r"(?P<pid>\d+")
    with pytest.raises(DatasetError, match="identity 'holiday' is not an integer"):
        build_dataset("folder", tmp_path, pattern=r"(?P<pid>[a-z0-9]+)_?")
    (tmp_path / "train" / "holiday.png").unlink()
    write(tmp_path / "query", ["0001_c2_q.png"])
    with pytest.raises(DatasetError, match="query exists but .*gallery does not"):
        build_dataset("folder", tmp_path)
    (tmp_path / "gallery").mkdir()
    with pytest.raises(DatasetError, match="the gallery folder .* has no images"):
        build_dataset("folder", tmp_path)
    with pytest.raises(DatasetError, match="no training folder .*use unlabeled=true"):
        build_dataset("folder", tmp_path, train_dir="nope")
    with pytest.raises(DatasetError, match="unknown option 'patern'"):
        build_dataset("folder", tmp_path, patern="x")


def test_csv_bad_input(tmp_path):
    write(tmp_path, ["a.png"])
    with pytest.raises(DatasetError, match=r"CSV file .*none.csv does not exist"):
        build_dataset("folder", tmp_path, csv="none.csv")
    cases = {
        "path,camid\na.png,1\n": r"has no column pid",
        "path,pid\na.png,x\n": r"line 2: identity 'x' is not an integer",
        "path,pid,split\na.png,1,val\n": r"line 2: split 'val'; expected train, query or gallery",
        "path,pid\nb.png,1\n": r"1 images listed in .* do not exist, e.g. .*b.png",
        "path,pid,split\na.png,1,query\n": r"lists no training images",
    }
    for text, message in cases.items():
        (tmp_path / "l.csv").write_text(text)
        with pytest.raises(DatasetError, match=message):
            build_dataset("folder", tmp_path, csv="l.csv")
    (tmp_path / "l.csv").write_text("path,split\na.png,gallery\n")
    with pytest.raises(DatasetError, match="unlabeled mode reads training images only"):
        build_dataset("folder", tmp_path, csv="l.csv", unlabeled=True)


def test_csv_with_utf8_bom(tmp_path):
    # Excel's "CSV UTF-8" starts the file with a byte-order mark
    write(tmp_path, ["a.png", "b.png"])
    (tmp_path / "l.csv").write_bytes("path,pid,camid\na.png,1,0\nb.png,2,1\n".encode("utf-8-sig"))
    ds = build_dataset("folder", tmp_path, csv="l.csv")
    assert [(r.relpath, r.pid, r.camid) for r in ds.train] == [("a.png", 1, 0), ("b.png", 2, 1)]


def test_integer_cameras_compared_by_value(tmp_path):
    # pandas writes 1.0 when the camid column has gaps; 01 and 1 are the same camera too
    write(tmp_path, ["a.png", "b.png", "c.png", "d.png", "e.png"])
    (tmp_path / "l.csv").write_text("path,pid,camid\na.png,1,1.0\nb.png,01,1\nc.png,2,\nd.png,2,2.0\ne.png,3,02\n")
    ds = build_dataset("folder", tmp_path, csv="l.csv")
    assert ds.camera_names == ["1", "2"]
    assert [(r.pid, r.camid) for r in ds.train] == [(1, 0), (1, 0), (2, -1), (2, 1), (3, 1)]
    assert ds.stats()["train"] == {"images": 5, "ids": 3, "cams": 2}
    write(tmp_path / "p" / "train", ["0001_c01_a.png", "0001_c1_b.png", "0002_c10_a.png"])
    ds = build_dataset("folder", tmp_path / "p")
    assert ds.camera_names == ["1", "10"] and [r.camid for r in ds.train] == [0, 0, 1]
    (tmp_path / "l.csv").write_text("path,pid,camid\na.png,1,1.5\n")
    with pytest.raises(DatasetError, match=r"l.csv line 2: camera '1.5' is a number but not an integer"):
        build_dataset("folder", tmp_path, csv="l.csv")
    write(tmp_path / "q" / "train", ["0001_c1.5_a.png"])
    with pytest.raises(DatasetError, match=r"0001_c1.5_a.png: camera '1.5' is a number but not an integer"):
        build_dataset("folder", tmp_path / "q", pattern=r"(?P<pid>\d+)_c(?P<camid>[\d.]+)_")


def test_str_options_given_as_numbers(tmp_path):
    # YAML reads `train_dir: 2019` as an int and `csv: 001` as 1
    write(tmp_path / "2019", ["0001_c1_a.png"])
    ds = build_dataset("folder", tmp_path, train_dir=2019)
    assert ds.split_dirs["train"] == "2019" and len(ds.train) == 1
    write(tmp_path, ["a.png"])
    (tmp_path / "1").write_text("path,pid\na.png,4\n")
    assert [r.pid for r in build_dataset("folder", tmp_path, csv=1).train] == [4]
    assert [r.pid for r in build_dataset("folder", tmp_path, csv=tmp_path / "1").train] == [4]  # a Path is fine
    for key, value in (("train_dir", ["a"]), ("pattern", {"a": 1}), ("train_dir", False)):
        message = f"option {key}={value!r} for dataset 'folder': expected a string, got {type(value).__name__}"
        with pytest.raises(DatasetError, match=re.escape(message)):
            build_dataset("folder", tmp_path, **{key: value})


def test_str_option_from_config_override(tmp_path):
    write(tmp_path / "2019", ["0001_c1_a.png"])
    cfg = load_config(overrides=[f"data.root={tmp_path}", "data.name=folder", "data.options.train_dir=2019"])
    assert dataset_from_config(cfg.data).split_dirs["train"] == "2019"

"""Dataset readers on miniature copies of the released layouts, the registry, and `gclreid datasets`."""
import io
import json
import os
import warnings
from pathlib import Path

import pytest
from PIL import Image

from gclreid.cli import main
from gclreid.config import load_config
from gclreid.data import (MSMT17, DatasetCountWarning, ImageRecord, ReIDDataset, build_dataset, dataset_from_config,
                          list_datasets, register_dataset, unregister_dataset)
from gclreid.errors import DatasetError


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 8), (120, 30, 200)).save(buf, "JPEG")
    return buf.getvalue()


JPEG = _jpeg_bytes()


def write_files(folder: Path, names):
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(JPEG)


# Market-1501 miniature: 7 train images (ids 2, 7, 10; cams c1 c2 c3 c6), 3 query (3 ids, cams c2 c1 c5),
# gallery: 6 kept (ids 2, 7, 10 and two distractors 0000; cams c1 c4 c6) + 3 junk (-1) that are dropped.
MARKET = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c1s1_000551_01.jpg", "0002_c1s2_000100_02.jpg",
                           "0002_c2s1_000301_01.jpg", "0007_c3s1_000010_01.jpg", "0007_c3s3_000020_04.jpg",
                           "0010_c6s1_000076_01.jpg"],
    "query": ["0002_c2s1_000101_00.jpg", "0007_c1s1_000030_00.jpg", "0010_c5s1_000080_00.jpg"],
    "bounding_box_test": ["0002_c1s1_000455_01.jpg", "0002_c1s1_000466_02.jpg", "0007_c4s2_000045_01.jpg",
                          "0010_c6s2_000090_03.jpg", "0000_c1s1_000151_01.jpg", "0000_c4s1_000166_02.jpg",
                          "-1_c2s1_000301_01.jpg", "-1_c2s1_000302_05.jpg", "-1_c3s1_000401_03.jpg"],
}
MARKET_STATS = {"train": {"images": 7, "ids": 3, "cams": 4}, "query": {"images": 3, "ids": 3, "cams": 3},
                "gallery": {"images": 6, "ids": 4, "cams": 3}}


def make_market(folder: Path) -> Path:
    for split, names in MARKET.items():
        write_files(folder / split, names)
    (folder / "bounding_box_train" / "Thumbs.db").write_bytes(b"not an image")  # shipped with the release
    return folder


def make_duke(folder: Path) -> Path:
    write_files(folder / "bounding_box_train", ["0001_c2_f0046182.jpg", "0001_c5_f0051341.jpg",
                                                "0003_c8_f0017623.jpg", "0004_c1_f0061423.jpg", "0004_c1_f0061443.jpg"])
    write_files(folder / "query", ["0005_c2_f0046985.jpg", "0008_c7_f0000123.jpg"])
    write_files(folder / "bounding_box_test", ["0005_c1_f0046140.jpg", "0008_c3_f0000512.jpg",
                                               "0009_c8_f0001000.jpg", "0011_c4_f0002000.jpg"])
    return folder


# MSMT17: list lines "<pid folder>/<name> <pid>"; the camera is the third field of the name.
MSMT_LISTS = {
    "list_train.txt": ["0000/0000_000_01_0303morning_0015_0.jpg 0", "0000/0000_001_01_0303morning_0016_0.jpg 0",
                       "0000/0000_002_05_0303noon_0005_1.jpg 0", "0001/0001_000_07_0303afternoon_0102_0.jpg 1",
                       "0002/0002_000_15_0303morning_0500_2.jpg 2"],
    "list_val.txt": ["0001/0001_001_12_0303afternoon_0109_1.jpg 1", "0002/0002_001_03_0303noon_0018_0.jpg 2"],
    "list_query.txt": ["0000/0000_000_02_0113morning_0020_0.jpg 0", "0001/0001_000_09_0113noon_0004_0.jpg 1"],
    "list_gallery.txt": ["0000/0000_001_04_0113morning_0025_0.jpg 0", "0000/0000_002_04_0113morning_0027_1.jpg 0",
                         "0001/0001_001_10_0113noon_0007_0.jpg 1", "0002/0002_000_11_0113noon_0099_0.jpg 2"],
}


def make_msmt(folder: Path, version: int) -> Path:
    train_dir, test_dir = ("train", "test") if version == 1 else ("mask_train_v2", "mask_test_v2")
    for list_name, lines in MSMT_LISTS.items():
        image_dir = folder / (train_dir if list_name in ("list_train.txt", "list_val.txt") else test_dir)
        write_files(image_dir, [line.split()[0] for line in lines])
        (folder / list_name).write_text("".join(line + "\n" for line in lines))
    return folder


# -- Market-1501 -----------------------------------------------------------------------------------

def test_market_counts_junk_and_distractors(tmp_path):
    ds = build_dataset("market1501", make_market(tmp_path / "market"))
    assert ds.stats() == MARKET_STATS
    assert ds.dropped == {"train": 0, "query": 0, "gallery": 3}
    assert all(r.pid != -1 for r in ds.gallery)
    assert sorted(r.relpath for r in ds.gallery if r.pid == 0) == ["0000_c1s1_000151_01.jpg", "0000_c4s1_000166_02.jpg"]
    first = ds.train[0]
    assert first == ImageRecord(str(tmp_path / "market" / "bounding_box_train" / "0002_c1s1_000451_03.jpg"),
                                2, 0, "0002_c1s1_000451_03.jpg", "train")
    assert os.path.isabs(first.path)
    assert [r.relpath for r in ds.train] == sorted(MARKET["bounding_box_train"])
    assert sorted({r.camid for r in ds.train}) == [0, 1, 2, 5]  # c1 c2 c3 c6, 0-based
    assert ds.train_labels() == [0, 0, 0, 0, 1, 1, 2]
    assert ds.num_train_ids == 3 and not ds.unlabeled


@pytest.mark.parametrize("sub", ["Market-1501-v15.09.15", "market1501", "market1501/Market-1501-v15.09.15"])
def test_market_root_forms_and_published_count_warning(tmp_path, sub):
    make_market(tmp_path / sub)
    with pytest.warns(DatasetCountWarning) as caught:
        ds = build_dataset("market", tmp_path)  # alias, parent root
    assert ds.dataset_dir == str(tmp_path / sub)
    assert ds.stats() == MARKET_STATS
    messages = [str(w.message) for w in caught]
    assert any("train split has 7 images, the published release has 12936" in m for m in messages)
    assert any("gallery split has 6 images, the published release has 15913" in m for m in messages)
    assert any("query split has 3 identities, the published release has 750" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_dataset("market1501", tmp_path, verify_counts=False)


def test_market_contents_directly_does_not_warn(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build_dataset("market1501", make_market(tmp_path / "my_copy")).stats() == MARKET_STATS


def test_synthreid_reads_market_layout_and_config(tmp_path):
    ds = build_dataset("synthreid", make_market(tmp_path / "synth"))
    assert ds.name == "synthreid" and ds.stats() == MARKET_STATS
    cfg = load_config(overrides=[f"data.root={tmp_path}", "data.name=market1501", "data.options.verify_counts=false"])
    make_market(tmp_path / "market1501")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = dataset_from_config(cfg.data)
    assert ds.name == "market1501" and ds.dataset_dir == str(tmp_path / "market1501")


def test_duke_counts(tmp_path):
    make_duke(tmp_path / "dukemtmc-reid" / "DukeMTMC-reID")
    with pytest.warns(DatasetCountWarning):
        ds = build_dataset("dukemtmc-reid", tmp_path)
    assert ds.name == "dukemtmc"
    assert ds.stats() == {"train": {"images": 5, "ids": 3, "cams": 4}, "query": {"images": 2, "ids": 2, "cams": 2},
                          "gallery": {"images": 4, "ids": 4, "cams": 4}}
    assert [(r.pid, r.camid) for r in ds.train] == [(1, 1), (1, 4), (3, 7), (4, 0), (4, 0)]


# -- MSMT17 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [1, 2])
def test_msmt17_versions_and_include_val(tmp_path, version):
    make_msmt(tmp_path / f"MSMT17_V{version}", version)
    with pytest.warns(DatasetCountWarning) as caught:
        ds = build_dataset("msmt17", tmp_path)
    assert "train split has 7 images, the published release has 32621" in str(caught[0].message)
    assert len(caught) == 1  # one warning (one line) for all differences: images in 3 splits, identities in 3
    assert str(caught[0].message).count("; ") == 5 and "\n" not in str(caught[0].message)
    assert ds.version == version
    assert ds.stats() == {"train": {"images": 7, "ids": 3, "cams": 6}, "query": {"images": 2, "ids": 2, "cams": 2},
                          "gallery": {"images": 4, "ids": 3, "cams": 3}}
    image_dir = "train" if version == 1 else "mask_train_v2"
    rec = ds.train[0]
    assert rec.relpath == "0000/0000_000_01_0303morning_0015_0.jpg" and rec.pid == 0 and rec.camid == 0
    assert rec.path == str(tmp_path / f"MSMT17_V{version}" / image_dir / rec.relpath)
    assert {r.camid for r in ds.train} == {0, 4, 6, 14, 11, 2}
    with pytest.warns(DatasetCountWarning) as caught:
        no_val = build_dataset("msmt17", tmp_path, include_val="false")  # string as from the CLI
    assert "train split has 5 images, the published release has 30248" in str(caught[0].message)
    assert no_val.stats()["train"] == {"images": 5, "ids": 3, "cams": 4}


def test_msmt17_version_choice(tmp_path):
    make_msmt(tmp_path / "MSMT17_V1", 1)
    make_msmt(tmp_path / "MSMT17_V2", 2)
    with pytest.raises(DatasetError, match="both V1 and V2 found.*version=1 or version=2"):
        build_dataset("msmt17", tmp_path)
    ds = build_dataset("msmt17", tmp_path, version="2", verify_counts=False)
    assert ds.version == 2 and ds.dataset_dir == str(tmp_path / "MSMT17_V2")
    assert ds.train[0].path.startswith(str(tmp_path / "MSMT17_V2" / "mask_train_v2"))
    with pytest.raises(DatasetError, match=r"no MSMT17 layout found: expected image folders train/ \+ test/ \(V1\)"):
        build_dataset("msmt17", tmp_path / "MSMT17_V2", version=1)
    with pytest.raises(DatasetError, match="version=3"):
        MSMT17(tmp_path, version=3)


def test_msmt17_bad_lists(tmp_path):
    root = make_msmt(tmp_path / "data", 1)
    (root / "list_val.txt").unlink()
    with pytest.raises(DatasetError, match=r"list file .*list_val.txt is missing"):
        build_dataset("msmt17", root)
    build_dataset("msmt17", root, include_val=False)  # val list not needed then
    (root / "list_query.txt").write_text("0000/0000_000_02_0113morning_0020_0.jpg\n")
    with pytest.raises(DatasetError, match=r"list_query.txt line 1: .* is not '<relative path> <pid>'"):
        build_dataset("msmt17", root, include_val=False)
    (root / "list_query.txt").write_text("0000/0000_000_02_0113morning_0020_0.jpg 0\n0000/missing_0_03_x.jpg 0\n")
    with pytest.raises(DatasetError, match=r"file name 0000/missing_0_03_x.jpg does not match"):
        build_dataset("msmt17", root, include_val=False)
    (root / "list_query.txt").write_text("0000/0000_000_02_0113morning_0020_0.jpg 0\n0000/0000_009_03_a_1_0.jpg 0\n")
    with pytest.raises(DatasetError, match=r"1 images named in the list files are not in .*test, e.g. .*0000_009_03_a_1_0.jpg"):
        build_dataset("msmt17", root, include_val=False)
    (root / "list_query.txt").write_text("\n")
    with pytest.raises(DatasetError, match=r"list_query.txt lists no images \(query split would be empty\)"):
        build_dataset("msmt17", root, include_val=False)


# -- bad input -------------------------------------------------------------------------------------

def test_wrong_root_and_wrong_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"dataset root .*nowhere does not exist"):
        build_dataset("market1501", tmp_path / "nowhere")
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"no Market-1501 layout found: expected folders bounding_box_train/, "
                                           r"query/, bounding_box_test/ in one of .*Market-1501-v15.09.15"):
        build_dataset("market1501", tmp_path)
    write_files(tmp_path / "bounding_box_train", ["0002_c1s1_000451_03.jpg"])
    with pytest.raises(DatasetError, match=r"has bounding_box_train/ but not query/, bounding_box_test/"):
        build_dataset("market1501", tmp_path)
    with pytest.raises(DatasetError, match="no MSMT17 layout found"):
        build_dataset("msmt17", tmp_path)


def test_empty_split_and_bad_names(tmp_path):
    root = make_market(tmp_path / "m")
    for f in (root / "query").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match=r"the query folder .*query has no images \(expected files named like 0002_c1s1"):
        build_dataset("market1501", root)
    write_files(root / "query", ["0002_c2s1_000101_00.jpg", "frame_0001.jpg"])
    with pytest.raises(DatasetError, match=r"file name .*frame_0001.jpg does not match the naming rule"):
        build_dataset("market1501", root)
    (root / "query" / "frame_0001.jpg").unlink()
    write_files(root / "query", ["0002_c7s1_000101_00.jpg"])
    with pytest.raises(DatasetError, match=r"0002_c7s1_000101_00.jpg has camera c7; expected 1..6"):
        build_dataset("market1501", root)
    assert build_dataset("synthreid", root).stats()["query"]["cams"] == 2  # no camera limit for SynthReID
    (root / "query" / "0002_c7s1_000101_00.jpg").unlink()
    for f in (root / "query").iterdir():
        f.rename(f.with_name("-1" + f.name[4:]))
    with pytest.raises(DatasetError, match="has only junk images"):
        build_dataset("market1501", root)


def test_unknown_name_option_and_value(tmp_path):
    root = make_market(tmp_path / "m")
    with pytest.raises(DatasetError, match=r"unknown dataset 'marketxyz'; registered datasets: .*market1501.*msmt17"):
        build_dataset("marketxyz", root)
    with pytest.raises(DatasetError, match=r"unknown option 'include_val' for dataset 'market1501'; accepted options: verify_counts"):
        build_dataset("market1501", root, include_val=True)
    with pytest.raises(DatasetError, match=r"option include_val='maybe' for dataset 'msmt17': expected a boolean"):
        build_dataset("msmt17", root, include_val="maybe")
    with pytest.raises(DatasetError, match=r"option version='two' for dataset 'msmt17': expected int"):
        build_dataset("msmt17", root, version="two")


# -- registry --------------------------------------------------------------------------------------

def test_user_registered_dataset(tmp_path):
    @register_dataset("toy_test_ds", aliases=("toyds",))
    class Toy(ReIDDataset):
        """A toy dataset."""

        def __init__(self, root, copies: int = 1, labelled: bool = True):
            self.copies, self.labelled = copies, labelled
            super().__init__(root)

        def load(self):
            pid = 5 if self.labelled else -1
            train = [ImageRecord(os.path.join(self.root, f"t{i}.jpg"), pid, i % 2, f"t{i}.jpg", "train")
                     for i in range(self.copies)]
            return train, [], []

    try:
        assert "toy_test_ds" in list_datasets()
        ds = build_dataset("TOYDS", tmp_path, copies="3", labelled="no")  # strings converted by annotation
        assert isinstance(ds, Toy) and ds.name == "toy_test_ds" and ds.copies == 3
        assert ds.stats() == {"train": {"images": 3, "ids": 0, "cams": 2}, "query": {"images": 0, "ids": 0, "cams": 0},
                              "gallery": {"images": 0, "ids": 0, "cams": 0}}
        assert ds.unlabeled and ds.train_labels() == [-1, -1, -1]
        with pytest.raises(DatasetError, match=r"the train split under .* is empty"):
            build_dataset("toy_test_ds", tmp_path, copies=0)
        with pytest.raises(DatasetError, match="already registered"):
            @register_dataset("toyds")
            class Other(ReIDDataset):
                pass
        with pytest.raises(TypeError, match="subclass of ReIDDataset"):
            register_dataset("not_a_dataset")(dict)
    finally:
        unregister_dataset("toy_test_ds")
    assert "toy_test_ds" not in list_datasets()


def test_from_records_validates():
    rec = ImageRecord("/x/a.jpg", 1, 0, "a.jpg", "train")
    ds = ReIDDataset.from_records("/x", [rec, ImageRecord("/x/b.jpg", 1, 1, "b.jpg", "train")], name="mine")
    assert ds.name == "mine" and ds.stats()["train"] == {"images": 2, "ids": 1, "cams": 2}
    with pytest.raises(DatasetError, match="appears twice in the train split"):
        ReIDDataset.from_records("/x", [rec, rec])
    with pytest.raises(DatasetError, match="marked split='train' but was returned in the query list"):
        ReIDDataset.from_records("/x", [rec], [rec], [rec])
    with pytest.raises(DatasetError, match="the gallery split .* is empty"):
        ReIDDataset.from_records("/x", [rec], [ImageRecord("/x/q.jpg", 1, 0, "q.jpg", "query")])


# -- CLI -------------------------------------------------------------------------------------------

def test_cli_json_and_table(tmp_path, capsys):
    root = make_market(tmp_path / "m")
    assert main(["datasets", "--name", "market1501", "--root", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == MARKET_STATS
    assert main(["datasets", "--name", "market1501", "--root", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["split", "images", "ids", "cams"]
    assert out[2].split() == ["train", "7", "3", "4"] and out[4].split() == ["gallery", "6", "4", "3"]
    assert out[5] == "dropped (junk, pid -1): gallery 3"


def test_cli_list_options_warnings_and_errors(tmp_path, capsys):
    assert main(["datasets", "--list"]) == 0
    listed = capsys.readouterr().out
    for name in ("market1501", "dukemtmc", "msmt17", "folder", "synthreid"):
        assert name in listed
    make_msmt(tmp_path / "MSMT17_V1", 1)
    assert main(["datasets", "--name", "msmt17", "--root", str(tmp_path), "--option", "include_val=false", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["train"] == {"images": 5, "ids": 3, "cams": 4}
    assert "warning: msmt17 at" in captured.err and "published release has 30248" in captured.err
    assert main(["datasets", "--name", "market1501", "--root", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["datasets", "--name", "msmt17", "--root", str(tmp_path), "--option", "bogus=1"]) == 2
    assert "unknown option 'bogus'" in capsys.readouterr().err
    assert main(["datasets", "--name", "msmt17", "--root", str(tmp_path), "--option", "novalue"]) == 2
    assert "must look like key=value" in capsys.readouterr().err
    assert main(["datasets", "--name", "msmt17"]) == 2


def test_cli_check_images(tmp_path, capsys):
    root = make_market(tmp_path / "m")
    assert main(["datasets", "--name", "market1501", "--root", str(root), "--check-images", "--json"]) == 0
    assert "checked 16 images: 0 do not decode" in capsys.readouterr().err
    (root / "query" / "0007_c1s1_000030_00.jpg").write_bytes(JPEG[:40])
    assert main(["datasets", "--name", "market1501", "--root", str(root), "--check-images", "--json"]) == 1
    err = capsys.readouterr().err
    assert "0007_c1s1_000030_00.jpg does not decode" in err and "1 do not decode" in err

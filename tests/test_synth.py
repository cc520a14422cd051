"""SynthReID: splits, names, ground truth on disk, metadata, determinism, bad input, CLI."""
import hashlib
import json
import os
import re
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch
from PIL import Image

from gclreid.errors import GclreidError
from gclreid.synth import (METADATA, Outfit, generate, identity_from_dict, make_plan, preset, sample_cameras,
                           sample_identity, sample_yaw)
from gclreid.synth.scene import dress, frame_shots, make_bodies, render_people, render_structures

NAME = re.compile(r"^(\d{4})_c(\d)s1_(\d{6})_01\.jpg$")
ANGLES = (45, 90, 135, 180, 225, 270, 315)


def tiny(**kw):
    base = dict(train_ids=3, test_ids=3, cams=3, distractors=2, train_images_per_id=4.0, test_images_per_id=6.0,
                height=64, width=32, ssaa=1, chunk=8)
    base.update(kw)
    return preset("demo", **base)


def tree_digest(root):
    digest = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                digest[os.path.relpath(path, root)] = hashlib.sha1(fh.read()).hexdigest()
    return digest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synth") / "ds")
    summary = generate(tiny(), out, workers=1, progress=False)
    with open(os.path.join(out, METADATA)) as fh:
        meta = json.load(fh)
    return out, summary, meta


def test_split_counts_names_and_files(dataset):
    out, summary, meta = dataset
    plan = make_plan(tiny())
    expect = Counter(s.split for s in plan.images)
    folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    for split, folder in folders.items():
        names = sorted(os.listdir(os.path.join(out, folder)))
        assert len(names) == expect[split] == summary[split] == meta["counts"][split]
        for name in names:
            assert NAME.match(name), name
    assert sorted(os.listdir(out)) == sorted(["bounding_box_train", "query", "bounding_box_test", "structures",
                                              "views", METADATA, "contact_sheet.png"])
    # Every image has its 8 structure maps (grey, same size) and 7 true views (colour, same size).
    for rec in meta["images"]:
        name = os.path.basename(rec["file"])
        split = "train" if rec["split"] == "train" else "test"
        img = Image.open(os.path.join(out, rec["file"]))
        assert img.size == (32, 64) and img.mode == "RGB"
        for sub in ["render"] + [f"render_{a}" for a in ANGLES]:
            s = Image.open(os.path.join(out, "structures", split, sub, name))
            assert s.size == (32, 64) and s.mode == "L"
        for a in ANGLES:
            v = Image.open(os.path.join(out, "views", split, f"view_{a}", name))
            assert v.size == (32, 64) and v.mode == "RGB"
    n_test = sum(1 for r in meta["images"] if r["split"] != "train")
    for split, count in (("train", expect["train"]), ("test", n_test)):
        for sub in ["render"] + [f"render_{a}" for a in ANGLES]:
            assert len(os.listdir(os.path.join(out, "structures", split, sub))) == count
        for a in ANGLES:
            assert len(os.listdir(os.path.join(out, "views", split, f"view_{a}"))) == count


def test_metadata_consistent_with_files_and_protocol(dataset):
    out, _, meta = dataset
    train_ids, test_ids = set(), set()
    queries = defaultdict(int)
    gallery_cams = defaultdict(set)
    for rec in meta["images"]:
        m = NAME.match(os.path.basename(rec["file"]))
        assert int(m.group(1)) == rec["pid"] and int(m.group(2)) == rec["camid"] and int(m.group(3)) == rec["frame"]
        assert os.path.isfile(os.path.join(out, rec["file"]))
        assert 0.0 <= rec["yaw"] < 360.0 and 0.0 <= rec["phase"] < 1.0
        assert str(rec["person"]) in meta["identities"]
        if rec["split"] == "train":
            train_ids.add(rec["pid"])
        elif rec["split"] == "query":
            test_ids.add(rec["pid"])
            queries[(rec["pid"], rec["camid"])] += 1
        elif rec["pid"] > 0:
            gallery_cams[rec["pid"]].add(rec["camid"])
    assert len(train_ids) == 3 and len(test_ids) == 3 and not train_ids & test_ids and 0 not in train_ids
    assert set(queries.values()) == {1}   # one query per (identity, camera)
    for (pid, cam) in queries:
        assert gallery_cams[pid] - {cam}, "every query has a true match in another camera"
    assert sum(1 for r in meta["images"] if r["pid"] == 0) == 2
    assert all(r["split"] == "gallery" for r in meta["images"] if r["pid"] == 0)
    names = [r["file"] for r in meta["images"]]
    assert len(names) == len(set(names))
    assert meta["settings"]["seed"] == 0 and len(meta["cameras"]) == 3
    ident = identity_from_dict(meta["identities"][str(meta["images"][0]["person"])])
    assert ident == sample_identity(0, meta["images"][0]["person"], meta["images"][0]["pid"])


def test_readers_read_the_dataset(dataset):
    out, summary, _ = dataset
    data = pytest.importorskip("gclreid.data")
    for name in ("synthreid", "market1501"):
        ds = data.build_dataset(name, out)
        assert (len(ds.train), len(ds.query), len(ds.gallery)) == (summary["train"], summary["query"], summary["gallery"])
        assert len({r.pid for r in ds.train}) == 3
        assert {r.camid for r in ds.query} <= {0, 1, 2}


def test_same_seed_is_byte_identical_with_workers(dataset, tmp_path):
    out, _, _ = dataset
    again = str(tmp_path / "again")
    generate(tiny(), again, workers=2, progress=False)
    assert tree_digest(out) == tree_digest(again)
    other = str(tmp_path / "other")
    generate(tiny(seed=1), other, workers=1, progress=False, contact_sheet=False)
    a, b = tree_digest(out), tree_digest(other)
    images_a = {v for k, v in a.items() if k.startswith("bounding_box_train")}
    images_b = {v for k, v in b.items() if k.startswith("bounding_box_train")}
    assert images_a and images_b and not images_a & images_b   # another seed: other images


def test_structure_map_aligns_with_the_person_and_views_turn(dataset):
    cfg = tiny()
    plan = make_plan(cfg)
    specs = plan.images[:6]
    people = [sample_identity(cfg.seed, s.person, s.pid) for s in specs]
    shots = [s.shot for s in specs]
    outfit = Outfit.from_identities(people)
    base = make_bodies(people, shots)
    dressed = dress(base, outfit)
    body = dressed.body
    cam = frame_shots(body, base.yaw, shots, 128, 64)
    light, amb = torch.tensor([[-0.3, -0.3, -1.0]] * 6), torch.full((6,), 0.4)
    _, alpha = render_people(dressed, base.yaw, outfit, cam, 128, 64, 1, light, amb)
    grey = render_structures(body, base.yaw, cam, 128, 64)
    for a, g in zip(alpha > 0.5, grey > 0):
        # The structure (body only) lies inside the dressed person; clothes and bags only add.
        assert (a & g).sum() / g.sum() > 0.97
        assert (a & g).sum() / (a | g).sum() > 0.6
    turned = render_structures(body, base.yaw + 180.0, cam, 128, 64)
    assert not torch.equal(turned, grey)


def test_identities_and_cameras():
    people = [sample_identity(7, i, i) for i in range(1, 201)]
    assert sample_identity(7, 5, 5) == people[4]
    assert people[4] != sample_identity(8, 5, 5)
    # Many people look different from behind (the point of cross-view matching).
    assert 0.6 < np.mean([p.differs_front_back() for p in people]) < 0.99
    assert {p.lower_kind for p in people} == {"trousers", "shorts", "skirt"}
    assert identity_from_dict(json.loads(json.dumps(people[0].to_dict()))) == people[0]
    cams = sample_cameras(3, 5)
    assert [c.cam for c in cams] == [1, 2, 3, 4, 5]
    assert {c.view for c in cams[:3]} == {"front", "back", "side"}
    rng = np.random.default_rng(0)
    for cam in cams[:3]:
        yaws = np.array([sample_yaw(cam, rng) for _ in range(400)])
        front = np.mean(np.minimum(yaws, 360 - yaws) < 60)
        back = np.mean(np.abs(yaws - 180) < 60)
        side = np.mean(np.minimum(np.abs(yaws - 90), np.abs(yaws - 270)) < 45)
        top = {"front": front, "back": back, "side": side}[cam.view]
        assert top > 0.75, (cam.view, front, back, side)


@pytest.mark.parametrize("kw, match", [
    (dict(train_ids=-1), "train_ids=-1"),
    (dict(distractors=-5), "distractors=-5"),
    (dict(height=100, width=64), "not 2:1"),
    (dict(height=65, width=32), "not 2:1"),
    (dict(cams=10), "cams=10"),
    (dict(cams=1), "cams=1"),
    (dict(train_ids=6000, test_ids=4000), "at most 9999"),
    (dict(ssaa=0), "ssaa=0"),
])
def test_bad_settings_are_clear_errors(kw, match):
    with pytest.raises(GclreidError, match=match):
        tiny(**kw)


def test_existing_folder_is_not_overwritten(dataset, tmp_path):
    out, _, _ = dataset
    before = tree_digest(out)
    with pytest.raises(GclreidError, match="not empty.*SynthReID dataset.*--overwrite"):
        generate(tiny(seed=3), out, workers=1, progress=False)
    assert tree_digest(out) == before
    other = tmp_path / "market"
    (other / "bounding_box_train").mkdir(parents=True)
    (other / "bounding_box_train" / "0001_c1s1_000001_01.jpg").write_bytes(b"real image")
    with pytest.raises(GclreidError, match="Market-1501 layout"):
        generate(tiny(), str(other), workers=1, progress=False)
    assert (other / "bounding_box_train" / "0001_c1s1_000001_01.jpg").read_bytes() == b"real image"
    # With overwrite: our outputs are replaced, unrelated files stay.
    (other / "notes.txt").write_text("keep me")
    generate(tiny(train_ids=2, test_ids=2), str(other), workers=1, progress=False, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"
    assert not (other / "bounding_box_train" / "0001_c1s1_000001_01.jpg").exists()
    assert not (other / ".synthreid-incomplete").exists()


def test_cli_end_to_end_and_errors(tmp_path, capsys):
    from gclreid.cli import main
    out = str(tmp_path / "cli")
    code = main(["synth", "--out", out, "--preset", "demo", "--train-ids", "2", "--test-ids", "2", "--cams", "2",
                 "--distractors", "1", "--images-per-id", "4", "--height", "64", "--width", "32", "--ssaa", "1",
                 "--no-views", "--workers", "1", "--no-progress", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train_ids"] == 2 and summary["test_ids"] == 2
    assert not os.path.exists(os.path.join(out, "views"))
    assert os.path.isfile(os.path.join(out, "contact_sheet.png"))
    code = main(["synth", "--out", out, "--train-ids", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "not empty" in err and err.count("\n") == 1
    code = main(["synth", "--out", str(tmp_path / "x"), "--train-ids", "-3"])
    assert code == 2 and "train_ids=-3" in capsys.readouterr().err
    code = main(["synth", "--out", str(tmp_path / "y"), "--height", "128"])
    assert code == 2 and "together" in capsys.readouterr().err
    code = main(["synth", "--out", str(tmp_path / "z"), "--preset", "huge"])
    assert code == 2 and "unknown preset" in capsys.readouterr().err

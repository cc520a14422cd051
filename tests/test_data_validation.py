"""The validation split carved out of the training identities (data.val_identities)."""
import json
import logging
from collections import Counter

import pytest
import torch

from gclreid.checkpoint import read_checkpoint
from gclreid.cli import main
from gclreid.config import ConfigError, load_config
from gclreid.data import ImageRecord, ReIDDataset, build_dataset, dataset_from_config, hold_out_identities
from gclreid.engine import build_method, train
from gclreid.errors import DatasetError

from conftest import TINY_GENERATOR, add_body_structures, make_stripe_people


def rec(pid, cam, k, split="train"):
    rel = f"{pid:04d}_c{cam + 1}s1_{k:06d}_00.jpg"
    return ImageRecord(f"/fake/{split}/{rel}", pid, cam, rel, split)


def toy(ids=10, cams=3, per_cam=2, extra=(), skip=()):
    """`ids` identities × `cams` cameras × `per_cam` images (minus (pid, cam) pairs in `skip`), plus `extra`
    training records, and a one-identity released query/gallery that the validation split must replace."""
    train = [rec(p, c, k) for p in range(1, ids + 1) for c in range(cams) for k in range(per_cam)
             if (p, c) not in skip] + list(extra)
    ds = ReIDDataset.from_records("/fake", train, [rec(900, 0, 0, "query")], [rec(900, 1, 0, "gallery")], name="toy")
    ds.dropped["train"] = 5
    return ds


def relpaths(records):
    return [r.relpath for r in records]


def test_counts_and_the_split_is_a_partition_of_train():
    unlabeled = [ImageRecord(f"/fake/x{i}.jpg", -1, 0, f"x{i}.jpg", "train") for i in range(3)]
    ds = toy(extra=unlabeled)
    val = hold_out_identities(ds, 4, seed=0)
    held = {r.pid for r in val.query + val.gallery}
    assert len(held) == 4 and -1 not in held
    assert val.num_train_ids == 6 and not held & {r.pid for r in val.train}
    assert set(relpaths(unlabeled)) <= set(relpaths(val.train))  # pid -1 never held out
    # One query per (identity, camera): 4 ids × 3 cams; the other image of each pair is in the gallery.
    assert sorted(Counter((r.pid, r.camid) for r in val.query).values()) == [1] * 12
    assert len(val.gallery) == 4 * 3 * 2 - 12
    everything = relpaths(val.train) + relpaths(val.query) + relpaths(val.gallery)
    assert sorted(everything) == sorted(relpaths(ds.train))  # no overlap, nothing lost, nothing added
    assert {r.split for r in val.query} == {"query"} and {r.split for r in val.gallery} == {"gallery"}
    assert all(r.path.startswith("/fake/train/") for r in val.query + val.gallery)  # the training images
    assert val.validation == {"held_out_ids": 4, "query_ids": 4, "distractor_ids": 0, "query": 12, "gallery": 12,
                              "seed": 0}
    assert (val.name, val.root, val.dataset_dir) == (ds.name, ds.root, ds.dataset_dir)
    assert val.dropped == {"train": 5, "query": 0, "gallery": 0}
    assert val.stats()["query"] == {"images": 12, "ids": 4, "cams": 3}
    assert len(ds.train) == 10 * 6 + 3 and len(ds.query) == 1  # the input is left alone


def test_the_draw_depends_only_on_the_seed():
    def draw(seed):
        val = hold_out_identities(toy(), 3, seed=seed)
        return sorted({r.pid for r in val.query}), relpaths(val.query)

    assert draw(0) == draw(0) and draw(7) == draw(7)
    assert draw(0)[0] != draw(1)[0]
    # The input order does not matter (records are sorted by relpath on construction).
    shuffled = ReIDDataset.from_records("/fake", list(reversed(toy().train)), name="toy")
    assert relpaths(hold_out_identities(shuffled, 3, seed=0).query) == draw(0)[1]


def test_single_camera_identities_and_unknown_cameras_go_to_the_gallery():
    # Identities 1-3 are seen by camera 0 only; identity 4 also has two images with an unknown camera.
    skip = {(p, c) for p in (1, 2, 3) for c in (1, 2)}
    unknown = [ImageRecord(f"/fake/u{i}.jpg", 4, -1, f"u{i}.jpg", "train") for i in range(2)]
    val = hold_out_identities(toy(ids=6, skip=skip, extra=unknown), 5, seed=3)
    held = {r.pid for r in val.query + val.gallery}
    singles = held & {1, 2, 3}
    assert singles and not singles & {r.pid for r in val.query}
    assert val.validation["distractor_ids"] == len(singles) == 5 - val.validation["query_ids"]
    if 4 in held:
        assert {"u0.jpg", "u1.jpg"} <= set(relpaths(val.gallery))
    assert all(r.camid >= 0 for r in val.query)


def test_every_query_has_a_cross_camera_match_in_the_gallery():
    # Cameras with a single image of an identity: taking it as a query could leave its identity's
    # other queries without a match from another camera; such queries go back to the gallery.
    skip_one = [rec(1, 0, 0), rec(1, 1, 0)]  # identity 1: two images, two cameras
    skip_two = [rec(2, 0, k) for k in range(3)] + [rec(2, 1, 0)]  # identity 2: 3 in camera 0, 1 in camera 1
    three = [rec(3, c, 0) for c in range(3)]  # identity 3: one image in each of three cameras
    ds = ReIDDataset.from_records("/fake", skip_one + skip_two + three + [rec(4, 0, 0), rec(4, 1, 0)], name="toy")
    val = hold_out_identities(ds, 3, seed=0)
    for q in val.query:
        assert any(g.pid == q.pid and g.camid >= 0 and g.camid != q.camid for g in val.gallery), q
    per_id = Counter(r.pid for r in val.query)
    held = {r.pid for r in val.query + val.gallery}
    expected = {1: 1, 2: 1, 3: 2, 4: 1}  # the most queries that keep a match
    assert dict(per_id) == {p: expected[p] for p in held}


def test_errors_name_the_value_and_what_was_expected():
    ds = toy()
    for bad in (-1, 0, True, 2.0):
        with pytest.raises(ConfigError, match=f"num_ids={bad!r}"):
            hold_out_identities(ds, bad)
    with pytest.raises(DatasetError, match="cannot hold out 10 identities.*10 labelled identities.*at most 9"):
        hold_out_identities(ds, 10)
    unlabeled = ReIDDataset.from_records("/fake", [ImageRecord(f"/f/{i}.jpg", -1, 0, f"{i}.jpg", "train")
                                                   for i in range(4)], name="toy")
    with pytest.raises(DatasetError, match="unlabeled"):
        hold_out_identities(unlabeled, 1)
    one_camera = toy(cams=1)
    with pytest.raises(DatasetError, match="two or more known cameras"):
        hold_out_identities(one_camera, 3)
    no_cameras = ReIDDataset.from_records("/fake", [ImageRecord(f"/f/{p}_{k}.jpg", p, -1, f"{p}_{k}.jpg", "train")
                                                    for p in range(3) for k in range(3)], name="toy")
    with pytest.raises(DatasetError, match="two or more known cameras"):
        hold_out_identities(no_cameras, 2)


def test_config_keys_and_dataset_from_config(stripe_people):
    cfg = load_config(None, ["data.name=market1501", f"data.root={stripe_people}"])
    assert cfg.data.val_identities == 0 and cfg.data.val_seed == 0
    released = dataset_from_config(cfg.data, for_training=True)  # 0 = off
    assert len(released.query) == 24 and not hasattr(released, "validation")
    cfg.data.val_identities = 4
    assert len(dataset_from_config(cfg.data).query) == 24  # not for training: the released test split
    val = dataset_from_config(cfg.data, for_training=True)
    assert val.validation["held_out_ids"] == 4 and val.num_train_ids == 8 and len(val.query) == 12
    for key, value in (("val_identities", -1), ("val_seed", -2)):
        bad = load_config(None, ["data.name=market1501", f"data.root={stripe_people}", f"data.{key}={value}"])
        with pytest.raises(ConfigError, match=f"data.{key}={value}; expected an integer >= 0"):
            dataset_from_config(bad.data, for_training=True)
    with pytest.raises(ConfigError, match="val_identities"):
        load_config(None, ["data.val_identities=many"])


def test_training_evaluates_on_the_validation_split_and_evaluate_on_test(stripe_people, tmp_path, monkeypatch,
                                                                         caplog, capsys):
    import gclreid.evaluation.pipeline as pipeline
    seen = []
    real = pipeline.evaluate_model

    def spy(model, dataset, *args, **kwargs):
        seen.append(({r.pid for r in dataset.query}, len(dataset.query), len(dataset.gallery)))
        return real(model, dataset, *args, **kwargs)

    monkeypatch.setattr(pipeline, "evaluate_model", spy)
    out = tmp_path / "run"
    cfg = load_config(None, [
        "data.name=market1501", f"data.root={stripe_people}", "data.height=32", "data.width=16", "data.workers=0",
        "model.arch=resnet18", "model.pretrained=false", "model.embed_dim=32", "train.method=supervised",
        "train.epochs=1", "train.iters_per_epoch=2", "train.batch_size=16", "train.num_instances=4",
        "eval.batch_size=64", f"run.out={out}", "data.val_identities=4", "data.val_seed=1"])
    with caplog.at_level(logging.INFO, logger="gclreid"):
        record = train(cfg, progress=False)
    assert "on the validation split: 4 training identities held out" in caplog.text
    # stripe_people: training identities 1-12, test identities 13-20 (3 cameras × 3 images each).
    (query_pids, num_query, num_gallery), = seen
    assert len(query_pids) == 4 and query_pids <= set(range(1, 13)) and (num_query, num_gallery) == (12, 24)
    assert record["eval_split"] == "val"
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["eval_split"] == "val"
    assert json.loads((out / "results.json").read_text())["eval_split"] == "val"
    assert read_checkpoint(out / "last.pt")["models"]["classifier"]["weight"].shape[0] == 8  # 12 - 4 ids trained

    # `gclreid evaluate` on that checkpoint: the released test split, whatever the run's validation split.
    seen.clear()
    assert main(["evaluate", "--checkpoint", str(out / "last.pt"), "--dataset", "market1501",
                 "--root", str(stripe_people), "data.workers=0"]) == 0
    report = json.loads((out / "evaluate.json").read_text())
    test = build_dataset("market1501", stripe_people)
    assert report["eval_split"] == "test" and report["num_query_images"] == len(test.query) == 24
    assert seen[0][0] == set(range(13, 21))
    capsys.readouterr()


def test_gcl_test_sample_finds_the_structure_maps_of_validation_queries(tmp_path):
    # Validation queries are training images: their structure maps are under structures/train/.
    root = add_body_structures(make_stripe_people(tmp_path / "people", train_ids=6, test_ids=2, per_cam=2, cams=2,
                                                  height=64, width=32), 64, 32)
    cfg = load_config(None, [
        "data.name=market1501", f"data.root={root}", "data.height=64", "data.width=32", "data.workers=0",
        "model.arch=resnet18", "model.pretrained=false", "model.embed_dim=32", *TINY_GENERATOR,
        "generator.mlp_dim=32", "train.method=gcl", "train.batch_size=4", f"run.out={tmp_path / 'run'}",
        "gcl.num_negatives=16", "data.val_identities=2", "gcl.gen_eval_images=4"])
    dataset = dataset_from_config(cfg.data, for_training=True)
    sample = build_method(cfg, dataset, torch.device("cpu")).test_sample()
    query_pids = {r.pid for r in dataset.query}
    assert sample["records"] and {r.pid for r in sample["records"]} <= query_pids
    assert sample["structure"].shape[0] == len(sample["records"]) and len(sample["angles"]) == 7

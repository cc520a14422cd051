"""Structure-map layout and the GCL training dataset (image + structure at 0° + at a new angle)."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from gclreid.data import build_dataset, build_test_transform
from gclreid.config import load_config
from gclreid.errors import DatasetError
from gclreid.structures import (ANGLES, OFFICIAL_ANGLES, StructureDataset, parse_angles, structure_path)


def write_structures(root, records, angles=ANGLES, size=(16, 32)):
    for rec in records:
        for angle in (0, *angles):
            path = structure_path(root, rec, angle)
            path.parent.mkdir(parents=True, exist_ok=True)
            # encode the angle in the grey level so the test can tell which map was loaded; the white
            # bottom row makes it a map with a body (a one-value map is blank); JPEG blurs only its own 8-row block
            grey = np.full(size[::-1], angle * 255 // 315, dtype=np.uint8)
            grey[-1] = 255
            Image.fromarray(grey).save(path)


def test_layout_follows_the_gcl_release(stripe_people, tmp_path):
    ds = build_dataset("market1501", stripe_people)
    train, query = ds.train[0], ds.query[0]
    assert structure_path(tmp_path, train, 0) == tmp_path / "train" / "render" / train.relpath
    assert structure_path(tmp_path, train, 90) == tmp_path / "train" / "render_90" / train.relpath
    assert structure_path(tmp_path, query, 315) == tmp_path / "test" / "render_315" / query.relpath
    assert train.relpath.endswith(".jpg")


def test_parse_angles():
    assert parse_angles("90,45, 315") == (45, 90, 315)
    assert OFFICIAL_ANGLES == (45, 90, 135, 180, 225, 270)
    for bad in ("30", "0", "360", "x", ""):
        with pytest.raises(ValueError):
            parse_angles(bad)


def test_dataset_items_pair_image_with_its_structures(stripe_people, tmp_path):
    ds = build_dataset("market1501", stripe_people)
    write_structures(tmp_path, ds.train)
    cfg = load_config(None, ["data.height=32", "data.width=16"])
    items = StructureDataset(ds.train, tmp_path, build_test_transform(cfg.data), 32, 16, angles=(90, 180))
    random.seed(0)
    seen = set()
    for i in range(len(items)):
        item = items[i]
        assert item["image"].shape == (3, 32, 16)
        assert item["structure"].shape == item["structure_new"].shape == (1, 32, 16)
        assert item["index"] == i and item["pid"] == ds.train[i].pid
        assert item["structure"][:, :16].max() == -1.0  # angle 0 → black → −1
        expected = item["angle"] * 255 // 315 / 127.5 - 1
        assert torch.allclose(item["structure_new"][:, :16], torch.full((1, 16, 16), expected))
        seen.add(item["angle"])
    assert seen == {90, 180}


def test_flip_mirrors_image_and_structures_together(stripe_people, tmp_path):
    ds = build_dataset("market1501", stripe_people)
    rec = ds.train[0]
    write_structures(tmp_path, [rec])
    ramp = np.tile(np.arange(16, dtype=np.uint8) * 16, (32, 1))
    Image.fromarray(ramp).save(structure_path(tmp_path, rec, 0))
    cfg = load_config(None, ["data.height=32", "data.width=16"])
    plain = StructureDataset([rec], tmp_path, build_test_transform(cfg.data), 32, 16)[0]
    flipped = StructureDataset([rec], tmp_path, build_test_transform(cfg.data), 32, 16, flip_p=1.0)[0]
    assert torch.equal(flipped["structure"], plain["structure"].flip(-1))
    assert torch.equal(flipped["image"], plain["image"].flip(-1))


def test_missing_structure_is_an_error_naming_the_image(stripe_people, tmp_path):
    ds = build_dataset("market1501", stripe_people)
    write_structures(tmp_path, ds.train)
    victim = ds.train[3]
    structure_path(tmp_path, victim, 225).unlink()
    cfg = load_config(None, ["data.height=32", "data.width=16"])
    with pytest.raises(DatasetError) as err:
        StructureDataset(ds.train, tmp_path, build_test_transform(cfg.data), 32, 16)
    assert victim.path in str(err.value) and "render_225" in str(err.value)
    # the official angle set does not need 315
    structure_path(tmp_path, victim, 225).write_bytes(structure_path(tmp_path, victim, 270).read_bytes())
    structure_path(tmp_path, victim, 315).unlink()
    StructureDataset(ds.train, tmp_path, build_test_transform(cfg.data), 32, 16, angles=OFFICIAL_ANGLES)


def test_blank_new_view_is_replaced_by_the_next_angle_with_a_body(stripe_people, tmp_path, caplog):
    ds = build_dataset("market1501", stripe_people)
    rec = ds.train[0]
    write_structures(tmp_path, [rec])
    for angle in (90, 135):  # the body left the frame at these angles
        Image.fromarray(np.zeros((32, 16), dtype=np.uint8)).save(structure_path(tmp_path, rec, angle))
    cfg = load_config(None, ["data.height=32", "data.width=16"])
    items = StructureDataset([rec], tmp_path, build_test_transform(cfg.data), 32, 16, angles=(90, 135, 180))
    with caplog.at_level("WARNING"):
        for seed in range(6):
            random.seed(seed)
            item = items[0]
            assert item["angle"] == 180
            assert torch.allclose(item["structure_new"][:, :16], torch.full((1, 16, 16), 180 * 255 // 315 / 127.5 - 1))
    warned = [r.getMessage() for r in caplog.records if "blank" in r.getMessage()]
    assert len(warned) == 2 and any("render_90" in m for m in warned)  # once per file, not per item


def test_blank_maps_that_cannot_be_replaced_are_errors(stripe_people, tmp_path):
    ds = build_dataset("market1501", stripe_people)
    rec = ds.train[0]
    write_structures(tmp_path, [rec])
    cfg = load_config(None, ["data.height=32", "data.width=16"])
    for angle in (90, 180):
        Image.fromarray(np.zeros((32, 16), dtype=np.uint8)).save(structure_path(tmp_path, rec, angle))
    with pytest.raises(DatasetError, match="every structure map of .* is blank"):
        StructureDataset([rec], tmp_path, build_test_transform(cfg.data), 32, 16, angles=(90, 180))[0]
    Image.fromarray(np.full((32, 16), 7, dtype=np.uint8)).save(structure_path(tmp_path, rec, 0))
    with pytest.raises(DatasetError, match="render/.*is blank"):
        StructureDataset([rec], tmp_path, build_test_transform(cfg.data), 32, 16, angles=(45,))[0]

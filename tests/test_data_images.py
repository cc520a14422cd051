"""Image loading, ImageDataset (fail and skip modes), identity sampler and loaders."""
import io
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from gclreid.data import (BadImageWarning, ImageDataset, ImageRecord, RandomIdentitySampler, build_loader,
                          build_train_transform, check_images, load_image)
from gclreid.config import DataConfig
from gclreid.errors import DatasetError, GclreidError, ImageDecodeError


def save(path, image, fmt):
    image.save(path, fmt)
    return str(path)


@pytest.fixture
def images(tmp_path):
    """Five good images (various modes) and three bad files."""
    good = [
        save(tmp_path / "rgb.jpg", Image.new("RGB", (4, 8), (200, 10, 10)), "JPEG"),
        save(tmp_path / "grey.png", Image.new("L", (4, 8), 77), "PNG"),
        save(tmp_path / "rgba.png", Image.new("RGBA", (4, 8), (1, 2, 3, 4)), "PNG"),
        save(tmp_path / "pal.png", Image.new("P", (4, 8), 5), "PNG"),
        save(tmp_path / "big.jpg", Image.new("RGB", (64, 128), (0, 90, 0)), "JPEG"),
    ]
    buf = io.BytesIO()
    Image.new("RGB", (64, 128), (5, 5, 5)).save(buf, "JPEG")
    (tmp_path / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "text.jpg").write_text("this is not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    bad = [str(tmp_path / n) for n in ("truncated.jpg", "text.jpg", "empty.png")]
    return good, bad


def records_of(paths):
    return [ImageRecord(p, i // 2, i % 3, p.rsplit("/", 1)[1], "train") for i, p in enumerate(paths)]


def test_load_image_rgb_and_errors(images, tmp_path):
    good, bad = images
    for path in good:
        assert load_image(path).mode == "RGB"
    assert load_image(good[1]).getpixel((0, 0)) == (77, 77, 77)
    for path in bad:
        with pytest.raises(ImageDecodeError, match=f"image {path} does not decode"):
            load_image(path)
    with pytest.raises(DatasetError, match="does not exist") as info:
        load_image(tmp_path / "missing.jpg")
    assert not isinstance(info.value, ImageDecodeError)
    assert [(i, p) for i, p, _ in check_images(good + bad + good)] == [(5, bad[0]), (6, bad[1]), (7, bad[2])]


def test_image_dataset_items(images):
    good, _ = images
    ds = ImageDataset(records_of(good), transform=lambda im: torch.tensor(im.size), labels=[4, 4, 1, 1, 0])
    item = ds[3]
    assert item["pid"] == 1 and item["camid"] == 0 and item["index"] == 3 and item["label"] == 1
    assert item["image"].tolist() == [4, 8]
    assert isinstance(ImageDataset(records_of(good))[0]["image"], Image.Image)
    with pytest.raises(DatasetError, match="2 labels for 5 images"):
        ImageDataset(records_of(good), labels=[0, 1])


def test_image_dataset_fails_on_bad_image_by_default(images):
    good, bad = images
    ds = ImageDataset(records_of(good + bad[:1]), transform=lambda im: torch.zeros(1))
    assert len(ds) == 6
    with pytest.raises(ImageDecodeError, match="truncated.jpg does not decode"):
        ds[5]
    for workers in (0, 1):  # from a worker process too, the error keeps its type and the path
        batches = iter(build_loader(ds, batch_size=3, workers=workers, seed=0))
        with pytest.raises(ImageDecodeError, match="truncated.jpg"):
            for _ in batches:
                pass
        # stop the worker now: left to the garbage collector, torch waits 5 s for it
        getattr(batches, "_shutdown_workers", lambda: None)()


def test_image_dataset_skips_bad_images_when_asked(images):
    good, bad = images
    paths = [good[0], bad[0], good[1], bad[1], good[2], bad[2], good[3], good[4]]
    recs = records_of(paths)
    with pytest.warns(BadImageWarning, match=r"skipped 3 of 8 images that do not decode: .*truncated.jpg, .*text.jpg, .*empty.png"):
        ds = ImageDataset(recs, build_train_transform(DataConfig(height=16, width=8)), skip_bad_images=True,
                          labels=list(range(8)))
    assert ds.num_skipped == 3 and [p for p, _ in ds.skipped] == bad
    assert len(ds) == 5 and ds.kept_indices == [0, 2, 4, 6, 7]
    assert ds.records == [recs[i] for i in (0, 2, 4, 6, 7)] and ds.labels == [0, 2, 4, 6, 7]
    batch = next(iter(build_loader(ds, batch_size=5, seed=1)))
    assert batch["image"].shape == (5, 3, 16, 8)
    assert batch["index"].tolist() == [0, 1, 2, 3, 4] and batch["label"].tolist() == [0, 2, 4, 6, 7]


# -- samplers and loaders --------------------------------------------------------------------------

LABELS = [0] * 9 + [1] * 2 + [2] * 4 + [-1] * 5 + [3] * 1 + [4] * 6 + [5] * 7 + [6] * 3 + [7] * 5


def test_identity_sampler_batches_are_p_times_k():
    k, batch = 4, 12  # P = 3
    sampler = RandomIdentitySampler(LABELS, num_instances=k, batch_size=batch, seed=3)
    for _ in range(3):  # three epochs
        expected_len = len(sampler)
        indices = list(sampler)
        assert len(indices) == expected_len and len(indices) % batch == 0 and indices
        for start in range(0, len(indices), batch):
            chunk = indices[start:start + batch]
            counts = Counter(LABELS[i] for i in chunk)
            assert len(counts) == 3 and set(counts.values()) == {k}
            assert -1 not in counts
            for j in range(0, batch, k):  # each identity's K instances are contiguous
                assert len({LABELS[i] for i in chunk[j:j + k]}) == 1
        # identities with >= K images never repeat an index within the epoch
        used = Counter(indices)
        assert all(used[i] == 1 for i in used if LABELS.count(LABELS[i]) >= k)
        # per identity, the number of groups drawn is at most max(1, n // K)
        groups = Counter(LABELS[i] for i in indices)
        for label, n in groups.items():
            assert n % k == 0 and n // k <= max(1, LABELS.count(label) // k)


def test_identity_sampler_small_identities_and_determinism():
    labels = [0, 1, 1, 2, 2, 2, 3, 3, 3, 3]
    sampler = RandomIdentitySampler(labels, num_instances=4, batch_size=8, seed=0)
    epochs = [list(sampler) for _ in range(20)]
    drawn_for_0 = Counter(i for e in epochs for i in e if labels[i] == 0)
    assert drawn_for_0 and set(drawn_for_0) == {0} and all(c % 4 == 0 for c in drawn_for_0.values())
    assert len({tuple(e) for e in epochs}) > 1  # epochs differ
    again = RandomIdentitySampler(labels, num_instances=4, batch_size=8, seed=0)
    assert [list(again) for _ in range(20)] == epochs
    again.set_epoch(7)
    assert list(again) == epochs[7]
    torch.manual_seed(5)
    a = list(RandomIdentitySampler(labels, 2, 4))
    torch.manual_seed(5)
    assert list(RandomIdentitySampler(labels, 2, 4)) == a  # seed=None follows torch's RNG


def test_identity_sampler_bad_arguments():
    with pytest.raises(GclreidError, match="batch_size=10 must be a positive multiple of num_instances=4"):
        RandomIdentitySampler(LABELS, 4, 10)
    with pytest.raises(GclreidError, match="2 identities with a label >= 0, fewer than the 3 identities per batch"):
        RandomIdentitySampler([0, 0, 1, -1, -1], 2, 6)


class Noise(torch.utils.data.Dataset):
    """Each item draws from torch's and Python's RNG, as random transforms do."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        import random
        return {"x": torch.rand(2), "r": random.random(), "n": float(np.random.rand()), "i": i}


def test_build_loader_seeding_is_reproducible():
    def run(seed, workers):
        loader = build_loader(Noise(), batch_size=4, shuffle=True, workers=workers, seed=seed)
        return [(b["i"].tolist(), b["x"].tolist(), b["r"].tolist(), b["n"].tolist()) for b in loader]

    assert sorted(sum((b[0] for b in run(0, 0)), [])) == list(range(8))
    assert any(run(s, 0)[0][0] != [0, 1, 2, 3] for s in range(3))  # shuffled
    assert run(1, 0)[0][0] == run(1, 0)[0][0] and run(1, 0) != run(2, 0)
    two = run(3, 2)
    assert two == run(3, 2)
    assert two[0][3] != two[1][3]  # numpy streams differ between the two workers
    with pytest.raises(GclreidError, match="either shuffle=True or a sampler"):
        build_loader(Noise(), 2, shuffle=True, sampler=RandomIdentitySampler([0, 1], 1, 2))
    sampler = RandomIdentitySampler([0, 0, 1, 1, 2, 2, 3, 3], 2, 4, seed=0)
    batches = [b["i"].tolist() for b in build_loader(Noise(), 4, sampler=sampler)]
    assert len(batches) == 2 and sorted(sum(batches, [])) == list(range(8))

"""DG-Net's pair sampler: a and b never share an identity, positives are other images of the same
identity, each usable image is visited once as a and once as b, and bad label sets fail clearly."""
import numpy as np
import pytest
import torch

from gclreid.data.pairs import PairDataset, PairSampler, single_image_identities
from gclreid.errors import DatasetError


def check_epoch(sampler, labels, allow_self=False):
    quads = np.array(list(sampler))
    a, pa, b, pb = quads.T
    labels = np.asarray(labels)
    assert (labels[a] != labels[b]).all(), "a and b share an identity"
    assert (labels[pa] == labels[a]).all() and (labels[pb] == labels[b]).all()
    if not allow_self:
        assert (pa != a).all() and (pb != b).all(), "a positive is the image itself"
    return quads


@pytest.mark.parametrize("seed", range(6))
def test_pairs_never_share_an_identity_and_positives_are_other_images(seed):
    rng = np.random.default_rng(seed)
    # Skewed identities: one holds 40% of the images, others have 2..6 images.
    sizes = [int(v) for v in rng.integers(2, 7, size=25)]
    sizes.append(int(0.4 * sum(sizes) / 0.6))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(labels)
    sampler = PairSampler(labels, seed=seed)
    for _ in range(3):
        quads = check_epoch(sampler, labels)
        # every image once as a and (the permutation survives the collision fixes) once as b
        assert sorted(quads[:, 0]) == list(range(len(labels)))
        assert sorted(quads[:, 2]) == list(range(len(labels)))


def test_dominant_identity_still_never_pairs_with_itself():
    labels = [0] * 30 + [1, 1, 2, 2]  # identity 0 holds 88% of the images: no valid permutation exists
    sampler = PairSampler(labels, seed=3)
    for _ in range(5):
        check_epoch(sampler, labels)


def test_positive_covers_every_other_image_of_the_identity():
    labels = [0, 0, 0, 1, 1]
    sampler = PairSampler(labels, seed=0)
    rng = np.random.default_rng(0)
    assert {int(p) for p in sampler.positives(np.zeros(200, dtype=np.int64), rng)} == {1, 2}
    assert {int(p) for p in sampler.positives(np.full(50, 4), rng)} == {3}


def test_order_depends_on_seed_and_epoch_only():
    labels = np.repeat(np.arange(10), 3)
    first, again = PairSampler(labels, seed=5), PairSampler(labels, seed=5)
    assert list(first) == list(again)
    assert list(first) != list(PairSampler(labels, seed=5))  # epoch 1 differs from epoch 0
    resumed = PairSampler(labels, seed=5)
    resumed.set_epoch(1)
    assert list(resumed) == list(again)


def test_single_image_identity_is_a_clear_error_or_an_explicit_choice():
    labels = [0, 0, 1, 2, 2]
    assert single_image_identities(labels) == [1]
    with pytest.raises(DatasetError, match=r"single image \(label 1\).*single_image_ids=drop"):
        PairSampler(labels, seed=0)
    # self: the official behaviour, the image is its own positive
    quads = check_epoch(PairSampler(labels, seed=0, allow_self_positive=True), labels, allow_self=True)
    own = quads[quads[:, 0] == 2]
    assert (own[:, 1] == 2).all()
    # drop: the identity is left out of the pairs
    usable = [True, True, False, True, True]
    quads = check_epoch(PairSampler(labels, seed=0, usable=usable), labels)
    assert 2 not in quads and len(quads) == 4


def test_fewer_than_two_identities_is_an_error():
    with pytest.raises(DatasetError, match="at least 2 identities"):
        PairSampler([0, 0, 0], seed=0)
    with pytest.raises(DatasetError, match="at least 2 identities"):
        PairSampler([-1, -1, 3, 3], seed=0)


def test_pair_dataset_items(stripe_people):
    from gclreid.data import build_dataset, build_test_transform
    from omegaconf import OmegaConf
    ds = build_dataset("market1501", stripe_people)
    _, labels = np.unique([r.pid for r in ds.train], return_inverse=True)
    transform = build_test_transform(OmegaConf.create({"height": 32, "width": 16}))
    pairs = PairDataset(ds.train, labels.tolist(), transform, id_transform=lambda x: x * 0)
    quad = next(iter(PairSampler(labels, seed=1)))
    item = pairs[quad]
    for stream, index in zip(PairDataset.STREAMS, quad):
        assert item[f"index_{stream}"] == index and item[f"label_{stream}"] == labels[index]
        assert item[f"image_{stream}"].shape == (3, 32, 16)
        assert torch.equal(item[f"erased_{stream}"], torch.zeros(3, 32, 16))
        assert item[f"image_{stream}"].abs().sum() > 0  # the erased copy is a copy

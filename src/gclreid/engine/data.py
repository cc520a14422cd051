"""Training-set plumbing shared by the methods: usable records and labelled loaders."""
from __future__ import annotations

import itertools
from typing import Iterable, Iterator, List, Sequence

import numpy as np
import torch

from ..errors import DatasetError


class TwoViews:
    """Apply a random transform twice to one image: the positive pair of contrastive methods."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image):
        return torch.stack([self.transform(image), self.transform(image)])


def usable_train_records(dataset, cfg) -> List:
    """The training records, minus undecodable images when data.skip_bad_images is on (counted and
    warned about by ImageDataset); checked once here so every epoch sees the same list."""
    from ..data import ImageDataset
    records = list(dataset.train)
    if not records:
        raise DatasetError(f"dataset {dataset.name!r} at {dataset.root} has no training images")
    if cfg.data.skip_bad_images:
        records = ImageDataset(records, skip_bad_images=True).records
    return records


class Limited:
    """Exactly `n` batches from `loader`, starting it again when it runs out (n = 0: one pass)."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n

    def __len__(self) -> int:
        return self.n or len(self.loader)

    def __iter__(self) -> Iterator:
        if not self.n:
            return iter(self.loader)
        return itertools.islice(itertools.chain.from_iterable(itertools.repeat(self.loader)), self.n)


def labelled_loader(records: Sequence, labels: np.ndarray, cfg, two_views: bool) -> Iterable:
    """Batches of training images with their (pseudo) labels; images labelled −1 are left out.

    With train.num_instances > 0 batches hold P clusters × K images (identity sampler), else plain
    shuffling. Incomplete last batches are dropped (BatchNorm and in-batch contrast need full ones).
    Under torchrun every rank draws the same global batches of train.batch_size and loads its share.
    """
    from ..data import ImageDataset, RandomIdentitySampler, build_loader, build_train_transform
    from . import distributed
    t = cfg.train
    keep = np.flatnonzero(np.asarray(labels) >= 0)
    if len(keep) < t.batch_size:
        raise DatasetError(f"only {len(keep)} training images have a label this epoch, fewer than one batch "
                           f"(train.batch_size={t.batch_size})")
    transform = build_train_transform(cfg.data)
    images = ImageDataset([records[i] for i in keep], TwoViews(transform) if two_views else transform,
                          labels=[int(labels[i]) for i in keep])
    batch, shard = distributed.rank_batch(t.batch_size), distributed.shard_spec()
    if t.num_instances > 0:
        sampler = RandomIdentitySampler(images.labels, t.num_instances, t.batch_size, seed=distributed.shared_seed())
        loader = build_loader(images, batch, sampler=sampler, workers=cfg.data.workers, drop_last=True, shard=shard)
    else:
        loader = build_loader(images, batch, shuffle=True, workers=cfg.data.workers, drop_last=True,
                              seed=distributed.shared_seed(), shard=shard)
    if len(loader) == 0:
        raise DatasetError(f"no complete batch of {t.batch_size} images this epoch ({len(keep)} labelled images; "
                           f"with num_instances={t.num_instances} an identity sampler needs enough clusters)")
    return Limited(loader, t.iters_per_epoch)

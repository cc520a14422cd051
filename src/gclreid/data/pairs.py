"""DG-Net's training pairs: (a, positive of a, b, positive of b) with different identities for a and b.

The official code zips two independently shuffled loaders, so a and b can be the same person (its
issue #42), and takes as positive a random other image of the same identity (the image itself when
the identity has only one). :class:`PairSampler` guarantees both properties instead:

* every epoch visits each usable image once as ``a`` and once as ``b`` (two permutations);
* ``label[a] != label[b]`` always: collisions of the second permutation are removed by swapping
  with random partners (which keeps it a permutation); should a pathological label distribution
  leave one (an identity holding more than half the images), ``b`` is redrawn among the images of
  other identities;
* the positive of an image is uniform over the *other* images of its identity. Identities with a
  single image are refused unless ``allow_self_positive`` (then the image is its own positive, as
  the official code) — or leave them out of ``usable`` (``dgnet.single_image_ids: drop``).

Items are index quadruples ``(a, pa, b, pb)``; :class:`PairDataset` turns them into images.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..errors import DatasetError
from .images import load_image

__all__ = ["PairSampler", "PairDataset", "single_image_identities"]

Quad = Tuple[int, int, int, int]


def single_image_identities(labels: Sequence[int]) -> List[int]:
    """Labels (>= 0) that occur exactly once."""
    values, counts = np.unique(np.asarray(labels, dtype=np.int64), return_counts=True)
    return [int(v) for v, c in zip(values, counts) if v >= 0 and c == 1]


class PairSampler(Sampler[Quad]):
    """Index quadruples ``(a, positive of a, b, positive of b)`` over the images with ``usable`` true
    (default: label >= 0), one epoch = one quadruple per usable image. The order is a function of
    ``seed`` and the epoch, which advances after every pass. ``seed=None`` draws one from torch's RNG.
    """

    def __init__(self, labels: Sequence[int], seed: Optional[int] = None, allow_self_positive: bool = False,
                 usable: Optional[Sequence[bool]] = None) -> None:
        self.labels = np.asarray([int(v) for v in labels], dtype=np.int64)
        keep = self.labels >= 0 if usable is None else (np.asarray(usable, dtype=bool) & (self.labels >= 0))
        self.indices = np.flatnonzero(keep)
        used = self.labels[self.indices]
        ids, counts = np.unique(used, return_counts=True)
        if len(ids) < 2:
            raise DatasetError(f"DG-Net pairs need images of at least 2 identities; the usable training images have "
                               f"{len(ids)} identit{'y' if len(ids) == 1 else 'ies'}")
        single = ids[counts == 1]
        if len(single) and not allow_self_positive:
            raise DatasetError(f"{len(single)} training identit{'y has' if len(single) == 1 else 'ies have'} a single "
                               f"image (label {', '.join(map(str, single[:5].tolist()))}{' …' if len(single) > 5 else ''}); "
                               "DG-Net's same-identity reconstruction (Eq. 2) needs a second image of the same person. "
                               "Set dgnet.single_image_ids=drop to leave them out, or =self to use the image as its "
                               "own positive (official code)")
        # Images grouped by identity: members of identity k are order[start[k]:start[k] + size[k]].
        self.order = self.indices[np.argsort(used, kind="stable")]
        self.ident = np.searchsorted(ids, self.labels)  # identity index of every (usable) image
        self.sizes = counts
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.rank = np.empty(len(self.labels), dtype=np.int64)  # position of each image inside its group
        self.rank[self.order] = np.arange(len(self.order)) - np.repeat(self.starts, counts)
        self.seed = int(torch.empty((), dtype=torch.int64).random_().item()) if seed is None else int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def positives(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A uniformly random other image of each anchor's identity (itself for a single-image identity)."""
        k = self.ident[anchors]
        size = self.sizes[k]
        offset = 1 + rng.integers(0, np.maximum(size - 1, 1))  # 1..size-1: never the anchor itself
        offset = np.where(size > 1, offset, 0)
        return self.order[self.starts[k] + (self.rank[anchors] + offset) % size]

    def partners(self, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A permutation of ``a``'s images with ``label[b[i]] != label[a[i]]`` everywhere."""
        la = self.labels[a]
        b = a[rng.permutation(len(a))]
        for _ in range(100):
            bad = np.flatnonzero(self.labels[b] == la)
            if not len(bad):
                return b
            for i, j in zip(bad.tolist(), rng.integers(0, len(b), size=len(bad)).tolist()):
                if self.labels[b[j]] != la[i] and self.labels[b[i]] != la[j]:
                    b[i], b[j] = b[j], b[i]
        for i in np.flatnonzero(self.labels[b] == la).tolist():
            others = self.indices[self.labels[self.indices] != la[i]]
            b[i] = others[rng.integers(0, len(others))]
        return b

    def quadruples(self) -> List[Quad]:
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.seed >> 32 & 0xFFFFFFFF, self.epoch])
        a = self.indices[rng.permutation(len(self.indices))]
        b = self.partners(a, rng)
        pa, pb = self.positives(a, rng), self.positives(b, rng)
        return list(zip(a.tolist(), pa.tolist(), b.tolist(), pb.tolist()))

    def __iter__(self) -> Iterator[Quad]:
        quads = self.quadruples()
        self.epoch += 1
        return iter(quads)

    def __len__(self) -> int:
        return len(self.indices)


class PairDataset(Dataset):
    """Images of index quadruples from :class:`PairSampler`.

    ``transform`` makes the (augmented, never erased) image that the generator, the structure encoder
    and the discriminator see; ``id_transform`` (e.g. random erasing), when given, is applied to a copy
    of it for the identification losses (the official code erases only the copies fed to the ID
    losses). An item is a dict with ``image_<s>`` (and ``erased_<s>``), ``label_<s>``, ``index_<s>`` for
    the streams ``s`` in ``a``, ``pa``, ``b``, ``pb``.
    """

    STREAMS = ("a", "pa", "b", "pb")

    def __init__(self, records: Sequence, labels: Sequence[int], transform: Callable,
                 id_transform: Optional[Callable] = None) -> None:
        if len(labels) != len(records):
            raise DatasetError(f"PairDataset: {len(labels)} labels for {len(records)} images")
        self.records, self.labels = list(records), [int(v) for v in labels]
        self.transform, self.id_transform = transform, id_transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, quad: Quad) -> Dict[str, object]:
        item: Dict[str, object] = {}
        for stream, index in zip(self.STREAMS, quad):
            image = self.transform(load_image(self.records[index].path))
            item[f"image_{stream}"] = image
            if self.id_transform is not None:
                item[f"erased_{stream}"] = self.id_transform(image.clone())
            item[f"label_{stream}"] = self.labels[index]
            item[f"index_{stream}"] = index
        return item

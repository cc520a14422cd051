"""Batch samplers and DataLoader construction with reproducible seeding."""
from __future__ import annotations

import functools
import itertools
import random
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from ..errors import GclreidError


class RandomIdentitySampler(Sampler[int]):
    """P identities × K instances per batch (``batch_size = P·K``), for identity-based losses.

    Each epoch, every identity's images are shuffled and cut into groups of K; an identity with
    fewer than K images is filled up to K by drawing with replacement. Batches take one group from
    each of P distinct identities chosen at random among those with groups left; the epoch ends
    when fewer than P identities have groups left. Indices with a negative label (outliers,
    unlabeled) are never drawn. Use with ``DataLoader(batch_size=P·K, sampler=this)``.

    The order is a function of ``seed`` and the epoch number, which advances after every full
    pass (``set_epoch`` sets it, e.g. when resuming). ``seed=None`` draws a seed from torch's
    global RNG, so ``seed_everything`` still makes it reproducible. ``len()`` is exact.
    """

    def __init__(self, labels: Sequence[int], num_instances: int, batch_size: int, seed: Optional[int] = None) -> None:
        if num_instances < 1 or batch_size < num_instances or batch_size % num_instances:
            raise GclreidError(f"identity sampler: batch_size={batch_size} must be a positive multiple of "
                               f"num_instances={num_instances}")
        self.num_instances = num_instances
        self.batch_size = batch_size
        self.num_ids_per_batch = batch_size // num_instances
        labels_arr = np.asarray([int(v) for v in labels], dtype=np.int64)
        self.indices = np.flatnonzero(labels_arr >= 0)
        # Identity of each usable index as 0..N-1 (in increasing label order).
        _, self.ident = np.unique(labels_arr[self.indices], return_inverse=True)
        self.sizes = np.bincount(self.ident)
        if len(self.sizes) < self.num_ids_per_batch:
            raise GclreidError(f"identity sampler: {len(self.sizes)} identities with a label >= 0, fewer than "
                               f"the {self.num_ids_per_batch} identities per batch (batch_size={batch_size}, "
                               f"num_instances={num_instances})")
        self.seed = int(torch.empty((), dtype=torch.int64).random_().item()) if seed is None else int(seed)
        self.epoch = 0
        self._cache: Optional[tuple] = None  # (epoch, indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _epoch_indices(self) -> List[int]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        k, p = self.num_instances, self.num_ids_per_batch
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.seed >> 32 & 0xFFFFFFFF, self.epoch])
        # Shuffle within each identity: sort by identity + U[0, 1), so each identity's indices are
        # contiguous (from starts[i]) and in random order.
        order = self.indices[np.argsort(self.ident + rng.random(len(self.ident)))]
        starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        rank = np.arange(len(order)) - np.repeat(starts, self.sizes)
        # Identities with >= K images: their first (n // K)·K shuffled indices, K per group;
        # reshaping gives each identity's groups in consecutive rows from first[i].
        num_groups = self.sizes // k
        big_groups = order[rank < np.repeat(num_groups * k, self.sizes)].reshape(-1, k)
        first = np.concatenate([[0], np.cumsum(num_groups)[:-1]])
        # Identities with fewer than K images: one group of K draws with replacement.
        small = np.flatnonzero(self.sizes < k)
        extra = [rng.choice(order[starts[i]:starts[i] + self.sizes[i]], size=k, replace=True) for i in small]
        groups = np.concatenate([big_groups, np.asarray(extra, dtype=np.int64).reshape(-1, k)])
        num_groups[small] = 1
        first[small] = len(big_groups) + np.arange(len(small))
        # Batches: P distinct identities at random among those with groups left.
        picker = random.Random(int(rng.integers(2**62)))
        left = num_groups.tolist()
        taken = [0] * len(left)
        first_list = first.tolist()
        available = [i for i, n in enumerate(left) if n > 0]
        where = {ident: pos for pos, ident in enumerate(available)}
        rows: List[int] = []
        while len(available) >= p:
            for ident in picker.sample(available, p):
                rows.append(first_list[ident] + taken[ident])
                taken[ident] += 1
                if taken[ident] == left[ident]:  # identity exhausted: swap-remove it
                    pos, last = where.pop(ident), available.pop()
                    if last != ident:
                        available[pos] = last
                        where[last] = pos
        indices = groups[np.asarray(rows, dtype=np.int64)].ravel().tolist() if rows else []
        self._cache = (self.epoch, indices)
        return indices

    def __iter__(self) -> Iterator[int]:
        indices = self._epoch_indices()
        self.epoch += 1
        return iter(indices)

    def __len__(self) -> int:
        return len(self._epoch_indices())


class ShardedSampler(Sampler):
    """One process's share of another sampler's batches, for distributed training.

    The order of `sampler` is cut into global batches of ``batch_size × world`` items (an incomplete
    last one is dropped), and rank `rank` yields items ``[rank·batch_size, (rank+1)·batch_size)`` of
    each. Every rank must build `sampler` with the same seed: the shares then never overlap, and in
    rank order they are exactly the batches one process with a batch of ``batch_size × world`` gets
    (P×K identity batches keep their composition). Use with ``DataLoader(batch_size=batch_size)``.
    """

    def __init__(self, sampler: Sampler, batch_size: int, rank: int, world: int) -> None:
        if world < 1 or not 0 <= rank < world or batch_size < 1:
            raise GclreidError(f"sharded sampler: rank {rank} of {world} with batch_size {batch_size}")
        self.sampler, self.batch_size, self.rank, self.world = sampler, batch_size, rank, world

    def __iter__(self) -> Iterator:
        items = iter(self.sampler)
        size, lo = self.batch_size * self.world, self.rank * self.batch_size
        while True:
            batch = list(itertools.islice(items, size))
            if len(batch) < size:
                return
            yield from batch[lo:lo + self.batch_size]

    def __len__(self) -> int:
        return len(self.sampler) // (self.batch_size * self.world) * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


def seed_worker(worker_id: int, rank: int = 0) -> None:
    """DataLoader ``worker_init_fn``: seed Python's and numpy's RNG from the worker's torch seed
    (which DataLoader derives from its generator and the worker id). ``rank`` > 0 (distributed
    training, whose ranks share the loader's seed) moves all three to a stream of the rank's own."""
    seed = torch.initial_seed() % 2**32
    if rank:
        seed = int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
        torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def build_loader(dataset: Dataset, batch_size: int, *, shuffle: bool = False, sampler: Optional[Sampler] = None,
                 workers: int = 0, seed: Optional[int] = None, drop_last: bool = False,
                 pin_memory: Optional[bool] = None, persistent_workers: bool = False,
                 shard: Optional[Tuple[int, int]] = None) -> DataLoader:
    """A DataLoader whose shuffling and worker RNGs follow ``seed`` (None: torch's global RNG).

    ``shuffle=True`` uses torch's :class:`RandomSampler` (plain shuffling); pass ``sampler`` for
    another order, e.g. :class:`RandomIdentitySampler`. Workers are seeded by :func:`seed_worker`.
    ``shard=(rank, world)`` (distributed training): batches of ``batch_size`` are this rank's share of
    global batches of ``batch_size × world`` (:class:`ShardedSampler`); every rank must pass the same
    ``seed`` (with ``shuffle``) or a sampler built with the same seed."""
    if sampler is not None and shuffle:
        raise GclreidError("build_loader: give either shuffle=True or a sampler, not both")
    generator = torch.Generator()
    generator.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()) if seed is None else int(seed))
    if shuffle:
        sampler = RandomSampler(dataset, generator=generator)
    worker_init = seed_worker
    if shard is not None and shard[1] > 1:
        rank, world = shard
        sampler = ShardedSampler(sampler if sampler is not None else SequentialSampler(dataset), batch_size, rank,
                                 world)
        worker_init = functools.partial(seed_worker, rank=rank)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      worker_init_fn=worker_init if workers > 0 else None, generator=generator,
                      drop_last=drop_last, pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                      persistent_workers=persistent_workers and workers > 0)

"""Sparse k-reciprocal encoding (Zhong et al., CVPR 2017), shared by clustering and re-ranking.

Given a neighbour ranking (row i: indices of its nearest samples, nearest first), this module builds

* the k-reciprocal sets R(i, k) = {j in kNN_k(i) : i in kNN_k(j)},
* the expanded sets R*(i): R(i) plus the half set H(c) of every candidate c in R(i) whose half
  set overlaps R(i) in more than 2/3 of its members,
* the encoding V (row i: weights exp(−d(i, j)) over R*(i), normalised to sum 1),
* the local query expansion V_qe[i] = mean of V over the k2 nearest rows of i,
* blocks of S[i, j] = Σ_k min(V_qe[i, k], V_qe[j, k]) over the pairs that share support — the
  Jaccard numerator,

as sparse rows (CSR, numpy) with vectorised operations: memory is O(N·k) plus bounded scratch
space, and there is no Python loop over samples. The two users differ only in how many ranking
columns they use and in the distance: see :mod:`gclreid.clustering.jaccard` and
:mod:`gclreid.evaluation.rerank`. The kNN itself (the O(N²·D) part) runs in torch on the device of
the features; these set operations (roughly O(N·k²)) run on the CPU in numpy, which is several
times faster than torch's CPU indexing kernels for this access pattern, except the overlap sums
S, the largest part, which run in a compiled row-by-row loop (:mod:`._overlap_kernel`, numba):
about 5× faster than any numpy formulation, whose temporaries are memory bound.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, NamedTuple, Optional, Tuple, Union

import numpy as np
import scipy.sparse as sp
import torch

from ._overlap_kernel import column_view, overlap_rows

# Generated items (pairs, gathered elements, overlap contributions) per block: bounds temporary
# memory (a few MB) and keeps numpy's temporaries in cache; measured fastest around 2**19.
DEFAULT_WORK = 1 << 19
# Threads of the overlap loop (each holds N + 12·work bytes of scratch).
MAX_OVERLAP_THREADS = 8
# Entries of the dense marker block of a block of rows in expanded_sets (4 MB of bools).
SCRATCH = 1 << 22


class SparseRows(NamedTuple):
    """Rows of a sparse matrix in CSR form (numpy); column indices sorted within each row."""
    indptr: np.ndarray  # (rows + 1,) int64
    indices: np.ndarray  # (nnz,) int64
    values: Optional[np.ndarray]  # (nnz,) float32, or None for a pattern
    num_cols: int

    @property
    def num_rows(self) -> int:
        return self.indptr.size - 1

    def row_ids(self) -> np.ndarray:
        """Row index of every stored entry."""
        return np.repeat(np.arange(self.num_rows, dtype=np.int64), np.diff(self.indptr))


def csr_from_sorted_keys(keys: np.ndarray, num_rows: int, num_cols: int,
                         values: Optional[np.ndarray] = None) -> SparseRows:
    """CSR from ascending keys ``row * num_cols + col`` (and their values)."""
    rows = keys // num_cols
    indptr = np.zeros(num_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=num_rows), out=indptr[1:])
    return SparseRows(indptr, keys - rows * num_cols, values, num_cols)


def _row_blocks(n: int, per_row: int, work: int) -> Iterator[Tuple[int, int]]:
    step = max(1, work // max(per_row, 1))
    for start in range(0, n, step):
        yield start, min(n, start + step)


def _work_blocks(row_work: np.ndarray, work: int) -> list:
    """Split rows into consecutive blocks of about `work` generated items (at least one row each)."""
    cum = np.cumsum(row_work)
    bounds, start, m = [], 0, cum.size
    while start < m:
        base = cum[start - 1] if start else 0
        stop = int(np.searchsorted(cum, base + work, side="right"))
        stop = min(m, max(stop, start + 1))
        bounds.append((start, stop))
        start = stop
    return bounds


def reciprocal_mask(rank: np.ndarray, k: int) -> np.ndarray:
    """(N, k) bool: whether ``rank[i, c]`` is a k-reciprocal neighbour of i, i.e. whether i is among
    the first k entries of the ranking of ``rank[i, c]`` (the official ``k_reciprocal_neigh``)."""
    n = rank.shape[0]
    cols = np.ascontiguousarray(rank[:, :k]).ravel()
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
    # The k-NN graph with edge ids as values, times its transpose (pattern only): an edge survives
    # the element-wise product exactly when the reverse edge exists.
    edges = sp.csr_matrix((np.arange(1, n * k + 1, dtype=np.int64), cols, indptr), shape=(n, n))
    reverse = sp.csr_matrix((np.ones(n * k, dtype=np.int64), cols, indptr), shape=(n, n)).T.tocsr()
    both = edges.multiply(reverse).tocsr()
    mask = np.zeros(n * k, dtype=bool)
    mask[both.data - 1] = True
    return mask.reshape(n, k)


def expanded_sets(rank: np.ndarray, k_cols: int, half_cols: int, work: int = DEFAULT_WORK) -> SparseRows:
    """The expanded k-reciprocal sets R*(i) as a sorted sparse pattern (no values).

    R(i) uses the first `k_cols` ranking columns, the half sets H(c) the first `half_cols` (self
    included in both, as in the official code). A candidate c in R(i) contributes H(c) when
    |H(c) ∩ R(i)| > 2/3·|H(c)|, compared in integers (3·overlap > 2·|H(c)|), which gives the same
    answer as the official floating-point test for every set size.
    """
    n = rank.shape[0]
    rank = rank.astype(np.int64, copy=False)
    in_r = reciprocal_mask(rank, k_cols)
    in_h = reciprocal_mask(rank, half_cols)
    half = np.ascontiguousarray(rank[:, :half_cols])
    half_size = in_h.sum(axis=1)
    keys = []
    rows_per_block = max(1, min(SCRATCH // n, work // (k_cols * half_cols * 4)))
    marker = np.zeros(rows_per_block * n, dtype=bool)  # marker[(i - start) * n + j]: j in R(i)
    for start, stop in _row_blocks(n, 1, rows_per_block):
        local = np.arange(stop - start, dtype=np.int64).reshape(-1, 1) * n
        cand = rank[start:stop, :k_cols]  # candidates c (valid where in_r)
        in_r_block = in_r[start:stop]
        r_keys = (local + cand)[in_r_block]
        marker[r_keys] = True
        members = half[cand]  # (rows, k, h): H(c) before its reciprocity mask
        valid = in_h[cand]
        overlap = (marker[local[:, :, None] + members] & valid).sum(axis=2)
        marker[r_keys] = False
        accept = in_r_block & (3 * overlap > 2 * half_size[cand])
        keys.append(r_keys + start * n)
        keys.append((local[:, :, None] + start * n + members)[valid & accept[:, :, None]])
    all_keys = np.sort(np.concatenate(keys))
    if all_keys.size:
        all_keys = all_keys[np.concatenate(([True], all_keys[1:] != all_keys[:-1]))]
    return csr_from_sorted_keys(all_keys, n, n)


def encode(pattern: SparseRows, distance: Callable[[np.ndarray, np.ndarray], np.ndarray],
           work: int = DEFAULT_WORK) -> SparseRows:
    """The k-reciprocal feature V: on each row's pattern, weights exp(−d(i, j)) normalised to sum 1
    (the official code's ``softmax(−d)``). `distance(rows, cols)` returns d (float32) for index
    pairs; it is called on blocks of at most `work` pairs."""
    rows = pattern.row_ids()
    nnz = rows.size
    dist = np.empty(nnz, dtype=np.float32)
    step = max(1, work)
    for start in range(0, nnz, step):
        dist[start:start + step] = distance(rows[start:start + step], pattern.indices[start:start + step])
    # d ≥ 0 and bounded (≤ 4 for unit vectors, ≤ 1 for row-normalised distances): no overflow.
    weight = np.exp(-dist)
    total = np.bincount(rows, weights=weight, minlength=pattern.num_rows).astype(np.float32)
    return pattern._replace(values=weight / total[rows])


def table_distance(rank: np.ndarray, rank_dist: np.ndarray,
                   fallback: Callable[[np.ndarray, np.ndarray], np.ndarray]
                   ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A distance function for :func:`encode` that reads d(i, j) from the kNN table (row i:
    neighbours `rank[i]` at distances `rank_dist[i]`) and calls `fallback(rows, cols)` only for
    pairs outside it. Nearly every member of an expanded set is among the k nearest, so this
    avoids gathering feature vectors for almost all pairs."""
    n = rank.shape[0]
    order = np.argsort(rank, axis=1)
    offset = (np.arange(n, dtype=np.int64) * (n + 1)).reshape(-1, 1)
    table = (np.take_along_axis(rank, order, axis=1) + offset).ravel()  # ascending overall
    table_dist = np.take_along_axis(rank_dist, order, axis=1).ravel().astype(np.float32)

    def distance(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        query = rows * (n + 1) + cols
        pos = np.minimum(np.searchsorted(table, query), table.size - 1)
        hit = table[pos] == query
        dist = table_dist[pos]
        if not hit.all():
            dist[~hit] = fallback(rows[~hit], cols[~hit])
        return dist

    return distance


def query_expand(v: SparseRows, rank: np.ndarray, k2: int) -> SparseRows:
    """V_qe[i] = mean of V over rows rank[i, :k2] (the official local query expansion).

    A sparse product Q·V with Q[i, rank[i, :k2]] = 1, then a division by k2: scipy adds the rows
    in ranking order, as ``np.mean(V[rank[i, :k2]], axis=0)`` does, so the result is the same to
    the last bit."""
    n = v.num_rows
    if k2 == 1:
        return v
    select = sp.csr_matrix((np.ones(n * k2, dtype=np.float32), np.ascontiguousarray(rank[:, :k2]).ravel(),
                            np.arange(0, n * k2 + 1, k2)), shape=(n, n))
    out = (select @ sp.csr_matrix((v.values, v.indices, v.indptr), shape=(n, v.num_cols))).tocsr()
    out.sort_indices()
    out.data /= np.float32(k2)
    return SparseRows(out.indptr.astype(np.int64), out.indices.astype(np.int64), out.data, v.num_cols)


class OverlapBlock(NamedTuple):
    """A block of S = Σ_k min(V[i, k], V[j, k]) for rows i = `row_start` + key // n, columns
    j = key % n (keys ascending)."""
    row_start: int
    keys: np.ndarray  # int64, local_row * n + j
    values: np.ndarray  # float32, > 0
    n: int

    def rows_cols(self) -> Tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of the entries, int64. (Row boundaries by binary search: numpy's integer
        division is several times slower than the search and a repeat.)"""
        num_rows = int(self.keys[-1] // self.n) + 1 if self.keys.size else 0
        bounds = np.searchsorted(self.keys, np.arange(num_rows + 1, dtype=np.int64) * self.n)
        local = np.repeat(np.arange(num_rows, dtype=np.int64), np.diff(bounds))
        cols = self.keys - local * self.n
        local += self.row_start
        return local, cols


def min_overlap_blocks(v: SparseRows, rows: Tuple[int, int] = (0, -1), min_col: Union[str, int] = "diagonal",
                       min_value: Union[float, Callable[[], float]] = 0.0,
                       work: int = DEFAULT_WORK) -> Iterator[OverlapBlock]:
    """Yield S[i, j] = Σ_k min(V[i, k], V[j, k]) for rows i in [rows[0], rows[1]) and every j that
    shares support with i, block by block of rows.

    `min_col` restricts j: ``"diagonal"`` keeps j ≥ i (the upper triangle with its diagonal — S is
    symmetric, so this halves the work), an integer c keeps j ≥ c (re-ranking: gallery columns).
    Only pairs that share at least one column of V are generated (the others have S = 0).
    `min_value` (a number, or a function called before each block) drops the entries with
    S < min_value before they are read out: the Jaccard distance falls as S grows, so this is
    how a consumer that needs only the distances below some bound keeps memory and time low."""
    n = v.num_rows
    lo, hi = rows[0], (n if rows[1] < 0 else rows[1])
    colptr, col_rows, col_vals, position = column_view(v.indptr, v.indices, v.values, v.num_cols)
    # Where each entry (i, k)'s partners j start in column k.
    if min_col == "diagonal":
        partner_start = position  # j = i itself, then larger j
    else:
        below = np.bincount(v.indices[v.row_ids() < int(min_col)], minlength=v.num_cols)
        partner_start = (colptr[:-1] + below)[v.indices]
    del position
    entry_work = np.zeros(v.indices.size + 1, dtype=np.int64)
    np.cumsum(colptr[v.indices + 1] - partner_start, out=entry_work[1:])
    row_work = entry_work[v.indptr[lo + 1:hi + 1]] - entry_work[v.indptr[lo:hi]]
    blocks = _work_blocks(row_work, work)
    if not blocks:
        return
    # The blocks are computed `threads` at a time (the kernel releases the GIL), each thread with
    # its own accumulator and output buffers (a block has at most as many entries as contributions);
    # at most MAX_OVERLAP_THREADS, which bounds that scratch memory on many-core machines.
    threads = max(1, min(torch.get_num_threads(), MAX_OVERLAP_THREADS, len(blocks)))
    capacity = int(max(row_work[a:b].sum() for a, b in blocks))
    scratch = [(np.zeros(n, dtype=np.float32), np.empty(capacity, dtype=np.int64),
                np.empty(capacity, dtype=np.float32)) for _ in range(threads)]

    def run(block: Tuple[int, int], buffers: tuple, threshold: float) -> OverlapBlock:
        start, stop = block[0] + lo, block[1] + lo
        acc, keys, sums = buffers
        count = overlap_rows(start, stop, v.indptr, v.indices, v.values, colptr, col_rows, col_vals,
                             partner_start, threshold, acc, keys, sums)
        return OverlapBlock(start, keys[:count].copy(), sums[:count].copy(), n)

    with ThreadPoolExecutor(threads) as pool:
        for first in range(0, len(blocks), threads):
            threshold = float(min_value() if callable(min_value) else min_value)
            group = blocks[first:first + threads]
            yield from pool.map(run, group, scratch[:len(group)], [threshold] * len(group))

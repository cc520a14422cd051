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
the features; these set operations are O(N·k²) and run on the CPU in numpy, which is several
times faster than torch's CPU indexing kernels for this access pattern.
"""
from __future__ import annotations

from typing import Callable, Iterator, NamedTuple, Optional, Tuple

import numpy as np

# Generated items (pairs, gathered elements) per block; bounds temporary memory (~100 MB).
DEFAULT_WORK = 1 << 22
# Entries of the dense scratch block that sums the pairs of a block of rows (float32 + bool).
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


def _work_blocks(row_work: np.ndarray, work: int, max_rows: int) -> list:
    """Split rows into consecutive blocks of about `work` generated items and ≤ `max_rows` rows."""
    cum = np.cumsum(row_work)
    bounds, start, m = [], 0, cum.size
    while start < m:
        base = cum[start - 1] if start else 0
        stop = int(np.searchsorted(cum, base + work, side="right"))
        stop = min(m, start + max_rows, max(stop, start + 1))
        bounds.append((start, stop))
        start = stop
    return bounds


def _segments(starts: np.ndarray, lengths: np.ndarray, total: Optional[int] = None) -> np.ndarray:
    """Concatenation of the index ranges [starts[e], starts[e] + lengths[e])."""
    total = int(lengths.sum()) if total is None else total
    shift = starts - (np.cumsum(lengths) - lengths)
    return np.repeat(shift, lengths) + np.arange(total, dtype=shift.dtype)


def reciprocal_mask(rank: np.ndarray, k: int) -> np.ndarray:
    """(N, k) bool: whether ``rank[i, c]`` is a k-reciprocal neighbour of i, i.e. whether i is among
    the first k entries of the ranking of ``rank[i, c]`` (the official ``k_reciprocal_neigh``)."""
    n = rank.shape[0]
    fwd = rank[:, :k].astype(np.int64)
    me = np.arange(n, dtype=np.int64).reshape(-1, 1)
    edges = np.sort((me * n + fwd).ravel())  # every edge i → j of the k-NN graph
    back = (fwd * n + me).ravel()  # the reverse edge j → i of each
    pos = np.minimum(np.searchsorted(edges, back), edges.size - 1)
    return (edges[pos] == back).reshape(n, k)


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
    pairs; it is called on blocks of at most work/64 pairs."""
    rows = pattern.row_ids()
    nnz = rows.size
    dist = np.empty(nnz, dtype=np.float32)
    step = max(1, work // 64)
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


class _Accumulator:
    """Sums (row, col, value) triplets of a block of rows into a dense scratch block and reads the
    touched entries back in (row, col) order; resets only what was touched."""

    def __init__(self, max_rows: int, num_cols: int):
        self.sums = np.zeros(max_rows * num_cols, dtype=np.float32)
        self.touched = np.zeros(max_rows * num_cols, dtype=bool)

    def reduce(self, keys: np.ndarray, values: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray]:
        """`keys` = local_row * num_cols + col < size. Returns (sorted unique keys, sums)."""
        np.add.at(self.sums, keys, values)
        self.touched[keys] = True
        unique = np.flatnonzero(self.touched[:size])
        sums = self.sums[unique]
        self.sums[unique] = 0
        self.touched[unique] = False
        return unique, sums


def query_expand(v: SparseRows, rank: np.ndarray, k2: int, work: int = DEFAULT_WORK) -> SparseRows:
    """V_qe[i] = mean of V over rows rank[i, :k2] (the official local query expansion)."""
    n = v.num_rows
    if k2 == 1:
        return v
    neigh_all = np.ascontiguousarray(rank[:, :k2])
    lengths_all = v.indptr[neigh_all + 1] - v.indptr[neigh_all]  # (n, k2)
    blocks = _work_blocks(lengths_all.sum(axis=1), work, max(1, SCRATCH // max(v.num_cols, 1)))
    acc = _Accumulator(max(b - a for a, b in blocks), v.num_cols)
    keys, values = [], []
    for start, stop in blocks:
        neigh = neigh_all[start:stop].ravel()
        lengths = lengths_all[start:stop].ravel()
        pos = _segments(v.indptr[neigh], lengths)
        local = np.repeat(np.arange(stop - start, dtype=np.int64) * v.num_cols, lengths.reshape(-1, k2).sum(axis=1))
        unique, sums = acc.reduce(local + v.indices[pos], v.values[pos], (stop - start) * v.num_cols)
        keys.append(unique + start * v.num_cols)
        values.append(sums / np.float32(k2))
    return csr_from_sorted_keys(np.concatenate(keys), n, v.num_cols, np.concatenate(values))


class OverlapBlock(NamedTuple):
    """A block of S = Σ_k min(V[i, k], V[j, k]): rows `row_start + local_rows` and columns `cols`."""
    row_start: int
    local_rows: np.ndarray  # int64, ascending
    cols: np.ndarray  # int64, ascending within a row
    values: np.ndarray  # float32, > 0


def min_overlap_blocks(v: SparseRows, rows: Tuple[int, int] = (0, -1), min_col: str | int = "diagonal",
                       work: int = DEFAULT_WORK) -> Iterator[OverlapBlock]:
    """Yield S[i, j] = Σ_k min(V[i, k], V[j, k]) for rows i in [rows[0], rows[1]) and every j that
    shares support with i, block by block of rows.

    `min_col` restricts j: ``"diagonal"`` keeps j ≥ i (the upper triangle with its diagonal — S is
    symmetric, so this halves the work), an integer c keeps j ≥ c (re-ranking: gallery columns),
    0 keeps all. Only pairs that share at least one column of V are generated (the others have
    S = 0)."""
    n = v.num_rows
    lo, hi = rows[0], (n if rows[1] < 0 else rows[1])
    # Column view of V: for every column k the rows j holding it (ascending), with their values.
    row_of = v.row_ids()
    order = np.argsort(v.indices * n + row_of)
    col_rows = row_of[order]
    col_vals = v.values[order]
    colptr = np.zeros(v.num_cols + 1, dtype=np.int64)
    np.cumsum(np.bincount(v.indices, minlength=v.num_cols), out=colptr[1:])
    # Where each entry (i, k)'s partners j start in column k.
    if min_col == "diagonal":
        start_of = np.empty_like(order)
        start_of[order] = np.arange(order.size)  # j = i itself, then larger j
    else:
        below = np.bincount(v.indices[row_of < int(min_col)], minlength=v.num_cols)
        start_of = (colptr[:-1] + below)[v.indices]
    del order
    length_of = colptr[v.indices + 1] - start_of
    entry_work = np.zeros(v.indices.size + 1, dtype=np.int64)
    np.cumsum(length_of, out=entry_work[1:])
    row_work = entry_work[v.indptr[lo + 1:hi + 1]] - entry_work[v.indptr[lo:hi]]
    blocks = _work_blocks(row_work, work, max(1, SCRATCH // max(n, 1)))
    if not blocks:
        return
    acc = _Accumulator(max(b - a for a, b in blocks), n)
    for start, stop in blocks:
        start, stop = start + lo, stop + lo
        e0, e1 = v.indptr[start], v.indptr[stop]
        lengths = length_of[e0:e1]
        total = int(lengths.sum())
        pos = _segments(start_of[e0:e1], lengths, total)
        partner = col_rows[pos]
        contrib = np.minimum(np.repeat(v.values[e0:e1], lengths), col_vals[pos])
        keys = np.repeat((row_of[e0:e1] - start) * n, lengths)
        keys += partner
        unique, sums = acc.reduce(keys, contrib, (stop - start) * n)
        local = unique // n
        yield OverlapBlock(start, local, unique - local * n, sums)

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
times faster than torch's CPU indexing kernels for this access pattern.
"""
from __future__ import annotations

from typing import Callable, Iterator, NamedTuple, Optional, Tuple, Union

import numpy as np
import scipy.sparse as sp

# Generated items (pairs, gathered elements) per block: small enough for the temporaries of a block
# to stay in cache (measured fastest around 128k), and bounds temporary memory (a few MB).
DEFAULT_WORK = 1 << 17
# Entries (float32) of the dense scratch block that sums the pairs of a block of rows (16 MB).
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


def _segments(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of the index ranges [starts[e], starts[e] + lengths[e]) (dtype of `starts`)."""
    offsets = np.cumsum(lengths) - lengths
    out = np.repeat((starts - offsets).astype(starts.dtype), lengths)
    out += np.arange(out.size, dtype=starts.dtype)
    return out


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


class _Accumulator:
    """Sums (row, col, value) triplets of a block of rows into a dense scratch block and reads the
    entries above a threshold back in (row, col) order. All values are positive, so a threshold
    of 0 returns every touched entry."""

    def __init__(self, max_rows: int, num_cols: int):
        self.sums = np.zeros(max_rows * num_cols, dtype=np.float32)

    def reduce(self, keys: np.ndarray, values: np.ndarray, size: int,
               min_sum: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
        """`keys` = local_row * num_cols + col < size. Returns (sorted keys, sums) of the entries
        whose sum is > 0 (min_sum = 0) or ≥ min_sum, and clears the scratch block."""
        block = self.sums[:size]
        np.add.at(block, keys, values)
        kept = np.flatnonzero(block >= min_sum if min_sum > 0 else block > 0)
        sums = block[kept]
        block.fill(0)
        return kept, sums


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
    # 32-bit positions and block-local keys halve the memory traffic of the passes below.
    small = np.int32 if v.indices.size < 2**31 else np.int64
    col_rows = col_rows.astype(small)
    start_of = start_of.astype(small)
    for start, stop in blocks:
        start, stop = start + lo, stop + lo
        e0, e1 = v.indptr[start], v.indptr[stop]
        lengths = length_of[e0:e1]
        pos = _segments(start_of[e0:e1], lengths)
        contrib = np.minimum(np.repeat(v.values[e0:e1], lengths), col_vals[pos])
        keys = np.repeat(((row_of[e0:e1] - start) * n).astype(small), lengths)
        keys += col_rows[pos]
        del pos
        threshold = min_value() if callable(min_value) else min_value
        kept, sums = acc.reduce(keys, contrib, (stop - start) * n, threshold)
        yield OverlapBlock(start, kept, sums, n)

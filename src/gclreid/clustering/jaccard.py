"""Sparse k-reciprocal Jaccard distance for clustering (the GCL / SpCL / cluster-contrast variant)."""
from __future__ import annotations

import time

from typing import Callable, Iterator, NamedTuple, Optional, Tuple, Union

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from ._checks import ArrayLike, FeatureError, as_feature_tensor, check_k
from .knn import knn_tensor, pair_distances
from .kreciprocal import (DEFAULT_WORK, encode, expanded_sets, min_overlap_blocks, query_expand,
                          table_distance)

Device = Optional[Union[str, torch.device]]


def half_columns(k1: int) -> int:
    """Ranking columns of the half sets: ``int(np.around(k1 / 2)) + 1`` (numpy rounds half to
    even, so k1=30 → 16, k1=20 → 11, k1=25 → 13)."""
    return int(np.around(k1 / 2)) + 1


def jaccard_from_overlap(overlap: np.ndarray) -> np.ndarray:
    """d = 1 − s / (2 − s) for the min-overlap s, in float32 like the official code."""
    overlap = overlap.astype(np.float32, copy=False)
    return np.float32(1) - overlap / (np.float32(2) - overlap)


class UpperBlock(NamedTuple):
    """Distances of a block of rows to the columns j ≥ i (diagonal included), sorted by (row, col)."""
    rows: np.ndarray  # int32 (int64 beyond 2**31 samples)
    cols: np.ndarray
    dist: np.ndarray  # float32 in [0, 1); the diagonal is 0


@torch.no_grad()
def jaccard_upper_blocks(features: ArrayLike, k1: int = 20, k2: int = 6, *, device: Device = None,
                         chunk_rows: Optional[int] = None, work: int = DEFAULT_WORK, knn_backend: str = "torch",
                         max_distance: Union[float, Callable[[], float]] = 1.0,
                         timings: Optional[dict] = None) -> Tuple[int, Iterator[UpperBlock]]:
    """The upper triangle (j ≥ i) of :func:`jaccard_distance`, block by block of rows, without
    ever holding the whole matrix: consumers that only need part of it (DBSCAN needs the pairs
    within eps) stay at O(N·k) memory. Arguments as for :func:`jaccard_distance`; the input is
    checked and the encoding V_qe computed before this returns (N, iterator of blocks).

    Every pair with distance ≤ `max_distance` (a number, or a function asked before each block,
    for a bound that tightens as blocks arrive) is in the blocks, and the diagonal; pairs above it
    may be too (the consumer filters), pairs at distance ≥ 1 never are. If `timings` is a dict,
    the seconds spent in the kNN and in the encoding (sets, V, query expansion) are added to it."""
    timings = {} if timings is None else timings
    start = time.perf_counter()
    x = as_feature_tensor(features, device=device)
    n = x.shape[0]
    check_k(k1, k2, n, k1, "jaccard_distance")
    x = F.normalize(x, dim=1)
    # The official kNN returns k1 columns; its later slice [:k1+1] therefore also yields k1.
    neighbours = knn_tensor(x, k1, normalize=False, chunk_rows=chunk_rows, backend=knn_backend)
    rank = neighbours.indices.cpu().numpy()
    timings["knn"] = timings.get("knn", 0.0) + time.perf_counter() - start
    start = time.perf_counter()

    def direct(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return pair_distances(x, rows, cols, unit_rows=True)

    pattern = expanded_sets(rank, k1, min(half_columns(k1), k1), work)
    v = encode(pattern, table_distance(rank, neighbours.distances.cpu().numpy(), direct), work)
    del pattern
    v = query_expand(v, rank, k2)
    del rank, x, neighbours
    timings["encode"] = timings.get("encode", 0.0) + time.perf_counter() - start

    def min_overlap() -> float:
        bound = max_distance() if callable(max_distance) else max_distance
        return overlap_for_distance(bound)

    return n, _upper_blocks(v, min_overlap, work)


def overlap_for_distance(bound: float) -> float:
    """A min-overlap s below which the distance 1 − s/(2 − s) is surely above `bound` (the exact
    inverse 2(1 − b)/(2 − b), lowered by a margin for float32 rounding); 0 for bound ≥ 1."""
    if bound >= 1:
        return 0.0
    bound = max(bound, 0.0)
    return max(0.0, 2 * (1 - bound) / (2 - bound) - 1e-5)


def _upper_blocks(v, min_overlap: Callable[[], float], work: int) -> Iterator[UpperBlock]:
    index_dtype = np.int32 if v.num_rows < 2**31 else np.int64
    for block in min_overlap_blocks(v, min_col="diagonal", min_value=min_overlap, work=work):
        rows, cols = (a.astype(index_dtype) for a in block.rows_cols())
        dist = jaccard_from_overlap(block.values)
        np.maximum(dist, 0, out=dist)  # the official code clamps negatives to 0
        diag = cols == rows
        dist[diag] = 0
        keep = (dist < 1) | diag
        if keep.all():
            yield UpperBlock(rows, cols, dist)
        else:
            yield UpperBlock(rows[keep], cols[keep], dist[keep])


def jaccard_distance(features: ArrayLike, k1: int = 20, k2: int = 6, *, device: Device = None,
                     chunk_rows: Optional[int] = None, work: int = DEFAULT_WORK,
                     knn_backend: str = "torch", max_distance: float = 1.0) -> sp.csr_matrix:
    """k-reciprocal Jaccard distance between all rows of `features` (N×D), as sparse N×N float32.

    The algorithm is the one SpCL, cluster contrast and GCL use for clustering
    (``compute_jaccard_distance``): rows are L2-normalised; the ranking holds the k1 nearest
    samples (self included) by squared Euclidean distance 2 − 2·cos; R(i) are the k1-reciprocal
    neighbours within it; R(i) is expanded by the half sets (first ``round(k1/2) + 1`` columns) of
    candidates overlapping it by more than 2/3; V[i] = softmax(−d) over the expanded set; V is
    replaced by the mean of the rows of the k2 nearest samples; and
    d_J(i, j) = 1 − Σmin(V_i, V_j) / (2 − Σmin(V_i, V_j)), clamped at 0.

    Returns a ``scipy.sparse.csr_matrix`` that stores every pair whose distance is below
    `max_distance` (default 1: every pair below 1; an absent entry means distance 1, as in the dense
    matrix), symmetric, with sorted column indices. The diagonal is always stored, as an explicit
    0 (the dense algorithm gives 0 up to rounding), and pairs whose distance is clamped to 0
    (duplicate samples) are stored as explicit zeros too: DBSCAN on a sparse precomputed matrix
    treats stored zeros as neighbours and absent entries as not. With real features most pairs that
    share any support are barely related (distance > 0.99), so the full matrix holds thousands of
    entries per row; `max_distance` < 1 keeps only the closer pairs (any DBSCAN with eps below it
    gives the same result).

    `device` selects where the kNN runs (default: the device of `features`; numpy → CPU).
    `chunk_rows` bounds the kNN chunk, `work` the number of pairs generated at a time (memory).
    `knn_backend` is ``"torch"`` (exact chunked matmul + top-k) or ``"faiss"`` (if installed).
    Raises :class:`~gclreid.clustering.FeatureError` for non-2-D or non-finite input or k1 ≥ N.
    """
    if not 0 < max_distance <= 1:
        raise FeatureError(f"jaccard_distance: max_distance must be in (0, 1], got {max_distance!r}")
    n, blocks = jaccard_upper_blocks(features, k1, k2, device=device, chunk_rows=chunk_rows, work=work,
                                     knn_backend=knn_backend, max_distance=max_distance)
    rows, cols, dist = [], [], []
    for block in blocks:
        keep = (block.dist < max_distance) | (block.rows == block.cols)
        rows.append(block.rows[keep])
        cols.append(block.cols[keep])
        dist.append(block.dist[keep])
    return symmetric_from_upper(n, np.concatenate(rows), np.concatenate(cols), np.concatenate(dist))


def symmetric_from_upper(n: int, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> sp.csr_matrix:
    """Full symmetric CSR from upper-triangle entries (j ≥ i) sorted by (row, col). Every row gets
    an explicit diagonal entry (0 unless given) and explicit zeros are kept."""
    has_diag = np.zeros(n, dtype=bool)
    has_diag[rows[rows == cols]] = True
    if not has_diag.all():
        missing = np.flatnonzero(~has_diag)
        rows = np.concatenate([rows, missing])
        cols = np.concatenate([cols, missing])
        values = np.concatenate([values, np.zeros(missing.size, dtype=values.dtype)])
        order = np.lexsort((cols, rows))
        rows, cols, values = rows[order], cols[order], values[order]
    index_dtype = np.int32 if 2 * rows.size < 2**31 else np.int64
    upper_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=upper_ptr[1:])
    strict = cols > rows
    # The transpose of the strict upper triangle, in CSR with sorted columns: scipy's CSR → CSC
    # conversion is a stable counting sort that keeps explicit zeros.
    strict_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[strict], minlength=n), out=strict_ptr[1:])
    lower = sp.csr_matrix((values[strict], cols[strict].astype(index_dtype), strict_ptr.astype(index_dtype)),
                          shape=(n, n)).tocsc()
    lower_ptr = lower.indptr.astype(np.int64)
    # Row r of the result: its lower entries (columns < r), then its upper ones (columns ≥ r).
    lower_count = np.diff(lower_ptr)
    indptr = lower_ptr + upper_ptr
    lower_rows = np.repeat(np.arange(n), lower_count)
    lower_dest = indptr[lower_rows] + (np.arange(lower_ptr[-1]) - lower_ptr[lower_rows])
    upper_dest = indptr[rows] + lower_count[rows] + (np.arange(rows.size) - upper_ptr[rows])
    indices = np.empty(indptr[-1], dtype=index_dtype)
    data = np.empty(indptr[-1], dtype=np.float32)
    indices[lower_dest] = lower.indices
    data[lower_dest] = lower.data
    indices[upper_dest] = cols
    data[upper_dest] = values
    out = sp.csr_matrix((data, indices, indptr.astype(index_dtype)), shape=(n, n))
    out.has_sorted_indices = True
    return out

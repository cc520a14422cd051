"""Sparse k-reciprocal Jaccard distance for clustering (the GCL / SpCL / cluster-contrast variant)."""
from __future__ import annotations

import functools
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


class DistanceBlock(NamedTuple):
    """Distances of a block of rows (to the columns j ≥ i only, for the upper triangle), sorted by
    (row, col); the diagonal is included, as 0."""
    rows: np.ndarray  # int32 (int64 beyond 2**31 samples)
    cols: np.ndarray
    dist: np.ndarray  # float32 in [0, 1); the diagonal is 0


@torch.no_grad()
def jaccard_blocks(features: ArrayLike, k1: int = 20, k2: int = 6, *, device: Device = None,
                   chunk_rows: Optional[int] = None, work: int = DEFAULT_WORK, knn_backend: str = "torch",
                   max_distance: Union[float, Callable[[], float]] = 1.0, upper: bool = True,
                   timings: Optional[dict] = None) -> Tuple[int, Iterator[DistanceBlock]]:
    """:func:`jaccard_distance` block by block of rows, without ever holding the whole matrix:
    consumers that only need part of it (DBSCAN needs the pairs within eps) stay at O(N·k)
    memory. With ``upper`` only the columns j ≥ i (the matrix is symmetric: half the work).
    Arguments as for :func:`jaccard_distance`; the input is checked and the encoding V_qe
    computed before this returns (N, iterator of blocks).

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

    # Weights use the kNN distances; pairs of an expanded set outside the k1 nearest (a minority)
    # are computed directly from the features.
    direct = functools.partial(pair_distances, x, unit_rows=True)
    pattern = expanded_sets(rank, k1, min(half_columns(k1), k1), work)
    v = encode(pattern, table_distance(rank, neighbours.distances.cpu().numpy(), direct), work)
    v = query_expand(v, rank, k2)
    del pattern, rank, x, neighbours, direct  # only V_qe is needed from here on
    timings["encode"] = timings.get("encode", 0.0) + time.perf_counter() - start

    def min_overlap() -> float:
        bound = max_distance() if callable(max_distance) else max_distance
        return overlap_for_distance(bound)

    return n, _distance_blocks(v, min_overlap, work, "diagonal" if upper else 0)


def overlap_for_distance(bound: float) -> float:
    """A min-overlap s below which the distance 1 − s/(2 − s) is surely above `bound` (the exact
    inverse 2(1 − b)/(2 − b), lowered by a margin for float32 rounding); 0 for bound ≥ 1."""
    if bound >= 1:
        return 0.0
    bound = max(bound, 0.0)
    return max(0.0, 2 * (1 - bound) / (2 - bound) - 1e-5)


def _distance_blocks(v, min_overlap: Callable[[], float], work: int, min_col) -> Iterator[DistanceBlock]:
    index_dtype = np.int32 if v.num_rows < 2**31 else np.int64
    for block in min_overlap_blocks(v, min_col=min_col, min_value=min_overlap, work=work):
        rows, cols = (a.astype(index_dtype) for a in block.rows_cols())
        dist = jaccard_from_overlap(block.values)
        np.maximum(dist, 0, out=dist)  # the official code clamps negatives to 0
        diag = cols == rows
        dist[diag] = 0
        keep = (dist < 1) | diag
        if keep.all():
            yield DistanceBlock(rows, cols, dist)
        else:
            yield DistanceBlock(rows[keep], cols[keep], dist[keep])


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
    n, blocks = jaccard_blocks(features, k1, k2, device=device, chunk_rows=chunk_rows, work=work,
                               knn_backend=knn_backend, max_distance=max_distance, upper=False)
    # Whole rows (not the upper triangle and its mirror): twice the pair work, but the blocks
    # come out in CSR order and need no transpose-and-merge, which costs more at this density.
    counts = np.zeros(n, dtype=np.int64)
    cols, dist = [], []
    diagonal = 0
    for block in blocks:
        on_diag = block.rows == block.cols
        diagonal += int(on_diag.sum())
        keep = (block.dist < max_distance) | on_diag
        counts += np.bincount(block.rows[keep], minlength=n)
        cols.append(block.cols[keep])
        dist.append(block.dist[keep])
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    index_dtype = np.int32 if indptr[-1] < 2**31 else np.int64
    indices = _concatenate(cols, index_dtype)
    data = _concatenate(dist, np.float32)
    out = sp.csr_matrix((data, indices, indptr.astype(index_dtype)), shape=(n, n))
    out.has_sorted_indices = True
    return out if diagonal == n else with_zero_diagonal(out)


def with_zero_diagonal(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """`matrix` with every diagonal entry stored, as 0. A row of V_qe without support on itself
    (conceivable only with many exact duplicates) would otherwise lack its diagonal entry."""
    coo = matrix.tocoo()
    on_diag = coo.row == coo.col
    if on_diag.sum() == matrix.shape[0] and not coo.data[on_diag].any():
        return matrix
    n = matrix.shape[0]
    keep = ~on_diag
    rows = np.concatenate([coo.row[keep], np.arange(n)])
    cols = np.concatenate([coo.col[keep], np.arange(n)])
    data = np.concatenate([coo.data[keep], np.zeros(n, dtype=matrix.dtype)])
    order = np.lexsort((cols, rows))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    out = sp.csr_matrix((data[order], cols[order], indptr), shape=matrix.shape)
    out.has_sorted_indices = True
    return out


def _concatenate(parts: list, dtype) -> np.ndarray:
    """Concatenate and free the parts as they are copied (peak: the result plus one part)."""
    out = np.empty(sum(p.size for p in parts), dtype=dtype)
    pos = 0
    while parts:
        part = parts.pop(0)
        out[pos:pos + part.size] = part
        pos += part.size
    return out


def symmetric_from_strict_upper(n: int, counts: np.ndarray, cols: np.ndarray, values: np.ndarray,
                                block_entries: int = 1 << 22) -> sp.csr_matrix:
    """The full symmetric CSR (sorted indices) from the strict upper triangle given row by row
    (`counts` entries per row, columns ascending within a row), with an explicit 0 diagonal.
    Explicit zeros are kept (scipy's sparse addition would drop them, so rows are merged here:
    row r is its lower part — the transpose of the upper triangle — then the diagonal, then its
    upper part, written block by block of rows)."""
    index_dtype = np.int32 if 2 * values.size + n < 2**31 else np.int64
    up_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=up_ptr[1:])
    upper = sp.csr_matrix((values.astype(np.float32, copy=False), cols.astype(index_dtype, copy=False),
                           up_ptr.astype(index_dtype)), shape=(n, n))
    lower = upper.T.tocsr()  # scipy's CSR → CSC: a stable counting sort, sorted indices, keeps zeros
    lo_ptr = lower.indptr.astype(np.int64)
    lo_count, up_count = np.diff(lo_ptr), np.diff(up_ptr)
    indptr = lo_ptr + up_ptr + np.arange(n + 1)
    indices = np.empty(indptr[-1], dtype=index_dtype)
    data = np.empty(indptr[-1], dtype=np.float32)
    per_row = max(1, int(indptr[-1] // max(n, 1)))
    for a in range(0, n, max(1, block_entries // per_row)):
        b = min(n, a + max(1, block_entries // per_row))
        rows = np.arange(a, b)
        # lower entries p of row r go to indptr[r] + (p - lo_ptr[r])
        dest = np.repeat(indptr[a:b] - lo_ptr[a:b], lo_count[a:b]) + np.arange(lo_ptr[a], lo_ptr[b])
        indices[dest] = lower.indices[lo_ptr[a]:lo_ptr[b]]
        data[dest] = lower.data[lo_ptr[a]:lo_ptr[b]]
        diag = indptr[a:b] + lo_count[a:b]
        indices[diag] = rows
        data[diag] = 0
        dest = np.repeat(diag + 1 - up_ptr[a:b], up_count[a:b]) + np.arange(up_ptr[a], up_ptr[b])
        indices[dest] = upper.indices[up_ptr[a]:up_ptr[b]]
        data[dest] = upper.data[up_ptr[a]:up_ptr[b]]
    out = sp.csr_matrix((data, indices, indptr.astype(index_dtype)), shape=(n, n))
    out.has_sorted_indices = True
    return out

"""Compiled inner loops of the min-overlap S[i, j] = Σ_k min(V[i, k], V[j, k]) (numba).

The sum runs row by row (Gustavson's sparse product with min in place of ×): for row i, every
stored V[i, k] meets the rows j of column k from where j's own range starts, and the contributions
go into a dense accumulator of one row (N floats, which stays in the CPU cache). The touched
columns of a row lie between the smallest and the largest partner, so only that range is read
back, in column order. The contributions are added in the same order as the numpy formulation
(entry by entry of row i, partners ascending), so the sums are the same to the last bit.
"""
from __future__ import annotations

import numba
import numpy as np

SMALLEST_POSITIVE = float(np.nextafter(np.float32(0), np.float32(1)))


@numba.njit(cache=True, nogil=True)
def column_view(indptr, indices, values, num_cols):
    """The CSR matrix by columns: (colptr, rows of each column ascending, their values, and for
    every CSR entry its position in the column view). A counting sort: O(nnz)."""
    nnz = indices.size
    colptr = np.zeros(num_cols + 1, np.int64)
    for e in range(nnz):
        colptr[indices[e] + 1] += 1
    for k in range(num_cols):
        colptr[k + 1] += colptr[k]
    fill = colptr[:-1].copy()
    col_rows = np.empty(nnz, np.int32)
    col_vals = np.empty(nnz, np.float32)
    position = np.empty(nnz, np.int64)
    for i in range(indptr.size - 1):
        for e in range(indptr[i], indptr[i + 1]):
            p = fill[indices[e]]
            fill[indices[e]] = p + 1
            col_rows[p] = i
            col_vals[p] = values[e]
            position[e] = p
    return colptr, col_rows, col_vals, position


@numba.njit(cache=True, nogil=True)
def overlap_rows(start, stop, indptr, indices, values, colptr, col_rows, col_vals, partner_start,
                 min_sum, acc, out_keys, out_sums):
    """S of rows [start, stop) with partners j from ``partner_start[e]`` on in each column: writes
    the entries with S > 0 and S ≥ `min_sum` as keys ``(i − start)·N + j`` (ascending) and sums into
    the output buffers, returns how many. `acc` (N float32) must be zero and is left zero; the
    buffers must hold the block's number of contributions."""
    n = acc.size
    threshold = max(min_sum, SMALLEST_POSITIVE)  # S > 0 and S ≥ min_sum
    m = 0
    for i in range(start, stop):
        lo = n
        hi = -1
        for e in range(indptr[i], indptr[i + 1]):
            a = values[e]
            k = indices[e]
            first = partner_start[e]
            last = colptr[k + 1]
            if first >= last:
                continue
            lo = min(lo, col_rows[first])
            hi = max(hi, col_rows[last - 1])
            for p in range(first, last):
                b = col_vals[p]
                acc[col_rows[p]] += a if a < b else b
        base = (i - start) * n
        for j in range(lo, hi + 1):
            s = acc[j]
            if s >= threshold:
                out_keys[m] = base + j
                out_sums[m] = s
                m += 1
            acc[j] = 0  # unconditionally: a branch here costs 4× (mispredicted)
    return m

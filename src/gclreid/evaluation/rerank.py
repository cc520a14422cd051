"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017), on the sparse machinery of :mod:`gclreid.clustering.kreciprocal`.

It follows the authors' ``re_ranking`` code: the original distance is the squared Euclidean
distance over query ∪ gallery, each row divided by its maximum; the ranking keeps k1 + 1
neighbours (self included) for the k1-reciprocal sets and round(k1/2) + 1 for the half sets used
in the expansion; V[i] = exp(−d) / Σ exp(−d) over the expanded set; V is averaged over the k2
nearest rows; and the final distance is (1 − λ)·Jaccard + λ·original, with
Jaccard = 1 − Σmin / (2 − Σmin) (not clamped, as in the original). Only the query rows of the
Jaccard distance are computed, and only their pairs that share support; memory besides the dense
q×g output is O((q + g)·k)."""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

from ..clustering._checks import ArrayLike, FeatureError, as_feature_tensor, check_k
from ..clustering.jaccard import half_columns, jaccard_from_overlap
from ..clustering.knn import default_chunk_rows, knn_tensor, pair_distances
from ..clustering.kreciprocal import (DEFAULT_WORK, encode, expanded_sets, min_overlap_blocks, query_expand,
                                      table_distance)

__all__ = ["re_ranking"]


@torch.no_grad()
def re_ranking(query_features: ArrayLike, gallery_features: ArrayLike, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3, *, device: Optional[Union[str, torch.device]] = None,
               chunk_rows: Optional[int] = None, work: int = DEFAULT_WORK) -> np.ndarray:
    """Re-ranked q×g distance matrix (numpy float32) for query and gallery features (q×D, g×D).

    The features are used as given (no normalisation): the original distance is the squared
    Euclidean one, as :func:`gclreid.evaluation.pairwise_distance` computes by default. Defaults
    k1=20, k2=6, λ=0.3 are the paper's. `device` chooses where the kNN runs (default: where the
    features are); `chunk_rows` and `work` bound temporary memory.
    """
    q = as_feature_tensor(query_features, "query_features", device=device)
    g = as_feature_tensor(gallery_features, "gallery_features", device=q.device)
    if q.shape[1] != g.shape[1]:
        raise FeatureError(f"re_ranking: feature dimensions differ: query {q.shape[1]}, gallery {g.shape[1]}")
    if not 0 <= lambda_value <= 1:
        raise FeatureError(f"re_ranking: lambda_value must be in [0, 1], got {lambda_value!r}")
    x = torch.cat([q, g])
    n, nq = x.shape[0], q.shape[0]
    check_k(k1, k2, n, k1 + 1, "re_ranking")

    neighbours = knn_tensor(x, k1 + 1, normalize=False, chunk_rows=chunk_rows, return_row_max=True)
    rank = neighbours.indices.cpu().numpy()
    # The original code divides each row of the distance matrix by its maximum.
    row_max = neighbours.row_max.clamp(min=torch.finfo(torch.float32).tiny)
    scaled = (neighbours.distances / row_max[:, None]).cpu().numpy()
    row_max_np = row_max.cpu().numpy()

    def direct(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return pair_distances(x, rows, cols, unit_rows=False) / row_max_np[rows]

    pattern = expanded_sets(rank, k1 + 1, min(half_columns(k1), k1 + 1), work)
    v = encode(pattern, table_distance(rank, scaled, direct), work)
    del pattern
    v = query_expand(v, rank, k2)
    del rank, scaled

    # λ·original everywhere, plus (1 − λ)·Jaccard, where absent pairs have Jaccard distance 1.
    out = _scaled_distance(q, g, row_max[:nq], chunk_rows)
    out *= np.float32(lambda_value)
    out += np.float32(1 - lambda_value)
    for block in min_overlap_blocks(v, rows=(0, nq), min_col=nq, work=work):
        rows, cols = block.rows_cols()
        cols -= nq
        jaccard = jaccard_from_overlap(block.values)
        out[rows, cols] += np.float32(1 - lambda_value) * (jaccard - np.float32(1))
    return out


def _scaled_distance(q: torch.Tensor, g: torch.Tensor, q_row_max: torch.Tensor,
                     chunk_rows: Optional[int]) -> np.ndarray:
    """Squared Euclidean query × gallery distances divided by each query row's maximum."""
    out = np.empty((q.shape[0], g.shape[0]), dtype=np.float32)
    g_sq = (g * g).sum(dim=1)
    rows = chunk_rows or default_chunk_rows(g.shape[0])
    for start in range(0, q.shape[0], rows):
        block = q[start:start + rows]
        dist = ((block * block).sum(dim=1, keepdim=True) + g_sq - 2 * block @ g.T).clamp_(min=0)
        out[start:start + rows] = (dist / q_row_max[start:start + rows, None]).cpu().numpy()
    return out

"""Nearest gallery entries for query features, without a query × gallery matrix in memory.

The distance is the **squared Euclidean distance between L2-normalised features**, ``2 − 2·cos`` (in
[0, 4]; cosine similarity = 1 − d/2) — the distance ``gclreid evaluate`` ranks with. The gallery is
scanned in chunks: each chunk's scores come from one matrix product, its top k are kept
(``torch.topk``) and merged with the running top k, so memory is O(q·k) plus one chunk of
``chunk_bytes``, whatever the gallery size (1M × 512-d features take 2 GB themselves; the search adds
``chunk_bytes``, 64 MB by default, and makes no copy of float32 features). ``backend="faiss"`` uses an
exact flat inner-product faiss index instead (``pip install gclreid[faiss]``; what
:func:`gclreid.clustering.knn.knn` offers too). It is not the default: on 2 CPU cores it was slower
than the chunked matrix products (1M × 512-d, 100 queries: 17 s + 3 s to build the index, vs 5 s;
one query: 0.45 s vs 0.3 s) and it copies the gallery into the index. Both are exact; they differ
only in the order of exactly tied entries.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np
import torch

from ..clustering._checks import ArrayLike, FeatureError, as_feature_tensor

__all__ = ["topk_search", "rerank_topk", "RERANK_MAX_GALLERY", "DEFAULT_CHUNK_BYTES"]

DEFAULT_CHUNK_BYTES = 64 * 2**20
# k-reciprocal re-ranking needs the k-nearest neighbours of every gallery entry among query ∪ gallery
# (an (q+g)×(q+g) kNN) and returns a dense q×g matrix; beyond this size it is refused.
RERANK_MAX_GALLERY = 50_000


@torch.no_grad()
def topk_search(query: ArrayLike, gallery: ArrayLike, k: int, *, backend: str = "torch",
                chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                device: Optional[Union[str, torch.device]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The `k` gallery rows nearest to each query row.

    `query` (q×D) and `gallery` (g×D): numpy or torch, L2-normalised (as :class:`Encoder` and
    ``gclreid embed`` give them; they are used as given). Returns ``(distances, indices)``: float32 and
    int64 numpy arrays of shape (q, min(k, g)), nearest first, distances ``2 − 2·q·g`` clamped at 0;
    among equal distances the lower gallery index comes first (torch backend).
    `backend`: ``"torch"`` (chunked matrix products on `device`, default the features'; the default)
    or ``"faiss"`` (exact ``IndexFlatIP``, CPU; needs the faiss package).
    `chunk_bytes` bounds one chunk of scores (query chunk × gallery chunk float32). Non-finite features
    are a :class:`FeatureError` naming the first bad gallery row."""
    q = as_feature_tensor(query, "query features", device)
    g = as_feature_tensor(gallery, "gallery features", q.device, check_finite=False)  # checked while scoring
    if q.shape[1] != g.shape[1]:
        raise FeatureError(f"feature dimensions differ: query {q.shape[1]}, gallery {g.shape[1]} (were both "
                           "embedded with the same checkpoint?)")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise FeatureError(f"k must be a positive integer, got {k!r}")
    k = int(min(k, g.shape[0]))
    if not bool(torch.isfinite(q).all()):
        raise FeatureError("query features contain NaN or infinite values")
    if backend == "faiss":
        return _topk_faiss(q, g, k)
    if backend != "torch":
        raise FeatureError(f"backend must be 'torch' or 'faiss', got {backend!r}")

    nq, ng = q.shape[0], g.shape[0]
    budget = max(int(chunk_bytes) // 4, 1)
    q_rows = int(max(1, min(nq, budget // max(min(ng, 65536), 1))))
    g_rows = int(max(k, min(ng, budget // q_rows)))
    best_d = np.empty((nq, k), dtype=np.float32)
    best_i = np.empty((nq, k), dtype=np.int64)
    for qs in range(0, nq, q_rows):
        qc = q[qs:qs + q_rows]
        top_s = top_i = None  # running best: similarity (larger = nearer) and gallery index
        for gs in range(0, ng, g_rows):
            scores = qc @ g[gs:gs + g_rows].T
            if not bool(torch.isfinite(scores).all()):  # a NaN/inf feature makes its scores non-finite
                bad = gs + int((~torch.isfinite(scores)).any(0).nonzero()[0])
                raise FeatureError(f"gallery features: row {bad} contains NaN or infinite values")
            s, i = scores.topk(min(k, scores.shape[1]), dim=1)
            i += gs
            if top_s is None:
                top_s, top_i = s, i
            else:
                top_s, top_i = _merge(torch.cat([top_s, s], 1), torch.cat([top_i, i], 1), k)
            del scores  # free this chunk before the next one is computed: one chunk in memory, not two
        top_s, top_i = _merge(top_s, top_i, k)  # final order: similarity, then gallery index
        best_d[qs:qs + len(qc)] = (2 - 2 * top_s).clamp_(min=0).cpu().numpy()
        best_i[qs:qs + len(qc)] = top_i.cpu().numpy()
    return best_d, best_i


def _merge(scores: torch.Tensor, index: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The k best of each row by (score descending, gallery index ascending)."""
    order = torch.argsort(index, dim=1, stable=True)
    scores, index = scores.gather(1, order), index.gather(1, order)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
    return scores.gather(1, order), index.gather(1, order)


def _topk_faiss(q: torch.Tensor, g: torch.Tensor, k: int) -> Tuple[np.ndarray, np.ndarray]:
    try:
        import faiss
    except ImportError as exc:
        raise FeatureError("backend='faiss' needs the faiss package (pip install faiss-cpu); backend='torch' "
                           "needs nothing extra") from exc
    index = faiss.IndexFlatIP(g.shape[1])
    if not bool(torch.isfinite(g).all()):
        raise FeatureError("gallery features contain NaN or infinite values")
    index.add(np.ascontiguousarray(g.cpu().numpy()))
    scores, idx = index.search(np.ascontiguousarray(q.cpu().numpy()), k)
    return np.clip(2 - 2 * scores, 0, None).astype(np.float32), idx.astype(np.int64)


def rerank_topk(query: ArrayLike, gallery: ArrayLike, k: int, k1: int = 20, k2: int = 6,
                lambda_value: float = 0.3) -> Tuple[np.ndarray, np.ndarray]:
    """The `k` nearest gallery rows after k-reciprocal re-ranking (Zhong et al. 2017,
    :func:`gclreid.evaluation.rerank.re_ranking`, the paper's k1/k2/λ by default). Returns
    ``(distances, indices)`` as :func:`topk_search`, the distances being re-ranked ones
    (λ·original/row max + (1 − λ)·Jaccard). Galleries larger than :data:`RERANK_MAX_GALLERY` are
    refused with a :class:`FeatureError`: the re-ranking needs the neighbours of every gallery entry and
    a dense query × gallery matrix."""
    from ..evaluation.rerank import re_ranking

    g = as_feature_tensor(gallery, "gallery features")
    if g.shape[0] > RERANK_MAX_GALLERY:
        raise FeatureError(f"re-ranking is limited to galleries of at most {RERANK_MAX_GALLERY:,} entries (this one "
                           f"has {g.shape[0]:,}): it computes the neighbours of every gallery entry and a dense "
                           "query × gallery matrix; search without re-ranking")
    dist = re_ranking(as_feature_tensor(query, "query features"), g, k1=k1, k2=k2, lambda_value=lambda_value)
    k = int(min(k, dist.shape[1]))
    idx = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, idx, 1).astype(np.float32), idx.astype(np.int64)

"""Exact k-nearest neighbours by chunked matrix product and top-k (torch; faiss optional).

Memory is O(N·k) plus one chunk of the N×N similarity matrix at a time; the chunk runs on the
device of the features (a GPU when they are on one)."""
from __future__ import annotations

from typing import NamedTuple, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import ArrayLike, FeatureError, as_feature_tensor

# Bytes of one chunk of the similarity matrix (rows × N float32). Large enough for an efficient
# matrix product, small enough to stay well inside the memory budget at N ≈ 100k.
DEFAULT_CHUNK_BYTES = 32 * 2**20


class KNN(NamedTuple):
    """Result of :func:`knn`. Row i lists the k samples nearest to sample i, nearest first (the
    sample itself is normally first, at distance 0)."""
    indices: torch.Tensor  # (N, k) int64
    distances: torch.Tensor  # (N, k) float32 squared Euclidean distances
    row_max: Optional[torch.Tensor]  # (N,) largest distance from sample i to any sample, if asked


def default_chunk_rows(n: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk so that a chunk of the N×N similarity matrix takes about `chunk_bytes`."""
    return int(max(32, min(n, chunk_bytes // (4 * max(n, 1)))))


@torch.no_grad()
def knn(features: ArrayLike, k: int, *, normalize: bool = True,
        device: Optional[Union[str, torch.device]] = None, chunk_rows: Optional[int] = None,
        backend: str = "torch", return_row_max: bool = False) -> KNN:
    """Exact k nearest neighbours of every row of `features` (N×D) among all rows, self included.

    Distances are squared Euclidean (a sample's distance to itself is reported as exactly 0).
    With ``normalize=True`` (the clustering convention) rows are L2-normalised first, so the
    distance is ``2 − 2·cos``. ``backend="torch"`` computes one chunk
    of `chunk_rows` rows of the similarity matrix at a time and keeps its top-k; ``"faiss"`` uses
    an exact flat faiss index (CPU) if faiss is installed. ``return_row_max`` also returns each
    row's largest distance (needed by Zhong et al.'s re-ranking), torch backend only.
    Results live on `device` (default: the device of `features`; numpy input means CPU).
    """
    return knn_tensor(as_feature_tensor(features, device=device), k, normalize=normalize, chunk_rows=chunk_rows,
                      backend=backend, return_row_max=return_row_max)


@torch.no_grad()
def knn_tensor(x: torch.Tensor, k: int, *, normalize: bool = True, chunk_rows: Optional[int] = None,
               backend: str = "torch", return_row_max: bool = False) -> KNN:
    """:func:`knn` for a tensor already checked by ``as_feature_tensor`` (float32, 2-D, finite)."""
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise FeatureError(f"knn: k must be an integer in [1, {n}] for {n} samples, got {k!r}")
    if normalize:
        x = F.normalize(x, dim=1)
    if backend == "faiss":
        if return_row_max:
            raise FeatureError("knn: return_row_max is only available with backend='torch'")
        return _knn_faiss(x, k, normalize)
    if backend != "torch":
        raise FeatureError(f"knn: backend must be 'torch' or 'faiss', got {backend!r}")

    rows = chunk_rows or default_chunk_rows(n)
    sq = None if normalize else (x * x).sum(dim=1)
    indices = torch.empty((n, k), dtype=torch.int64, device=x.device)
    distances = torch.empty((n, k), dtype=torch.float32, device=x.device)
    row_max = torch.empty(n, dtype=torch.float32, device=x.device) if return_row_max else None
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        # score is larger for nearer samples: cos for unit rows, 2x·y − |y|² otherwise
        # (|x|² is constant within a row and added back below).
        score = x[start:stop] @ x.T
        if sq is not None:
            score.mul_(2).sub_(sq)
        top, idx = score.topk(k, dim=1)
        indices[start:stop] = idx
        if sq is None:
            distances[start:stop] = (2 - 2 * top).clamp_(min=0)
            if row_max is not None:
                row_max[start:stop] = (2 - 2 * score.amin(dim=1)).clamp_(min=0)
        else:
            own = sq[start:stop, None]
            distances[start:stop] = (own - top).clamp_(min=0)
            if row_max is not None:
                row_max[start:stop] = (own[:, 0] - score.amin(dim=1)).clamp_(min=0)
    _zero_self(indices, distances)
    return KNN(indices, distances, row_max)


@torch.no_grad()
def pair_distances(x: torch.Tensor, rows: np.ndarray, cols: np.ndarray, *, unit_rows: bool) -> np.ndarray:
    """Squared Euclidean distances between rows ``x[rows[t]]`` and ``x[cols[t]]`` (numpy float32).
    With ``unit_rows`` (L2-normalised x) it is ``2 − 2·x_i·x_j``, as the official code computes it.
    Gathers run in small chunks: on the CPU, 1024 pairs keep both gathered blocks in cache, which
    is several times faster than one large gather."""
    out = np.empty(rows.size, dtype=np.float32)
    if x.device.type == "cpu":
        # numpy: single-threaded small gathers, none of the thread-pool overhead of tiny torch ops.
        data = x.numpy()
        for start in range(0, rows.size, 1024):
            a = data.take(rows[start:start + 1024], axis=0)
            b = data.take(cols[start:start + 1024], axis=0)
            if unit_rows:
                out[start:start + 1024] = 2 - 2 * np.einsum("ij,ij->i", a, b)
            else:
                a -= b
                out[start:start + 1024] = np.einsum("ij,ij->i", a, a)
        return out
    r_all = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64)).to(x.device)
    c_all = torch.from_numpy(np.ascontiguousarray(cols, dtype=np.int64)).to(x.device)
    step = 1 << 16
    for start in range(0, rows.size, step):
        a = x.index_select(0, r_all[start:start + step])
        b = x.index_select(0, c_all[start:start + step])
        if unit_rows:
            d = 2 - 2 * torch.linalg.vecdot(a, b)
        else:
            diff = a - b
            d = torch.linalg.vecdot(diff, diff)
        out[start:start + step] = d.cpu().numpy()
    return out


def _zero_self(indices: torch.Tensor, distances: torch.Tensor) -> None:
    """A sample's distance to itself is exactly 0 (the matrix product leaves rounding noise)."""
    me = torch.arange(indices.shape[0], device=indices.device).view(-1, 1)
    distances.masked_fill_(indices == me, 0)


def _knn_faiss(x: torch.Tensor, k: int, normalized: bool) -> KNN:
    try:
        import faiss  # optional dependency: pip install gclreid[faiss]
    except ImportError as exc:
        raise FeatureError("knn: backend='faiss' needs the faiss package (pip install faiss-cpu); "
                           "the default backend='torch' needs nothing extra") from exc
    data = x.cpu().numpy()
    index = faiss.IndexFlatIP(data.shape[1]) if normalized else faiss.IndexFlatL2(data.shape[1])
    index.add(data)
    scores, idx = index.search(data, k)
    scores = torch.from_numpy(scores).to(x.device)
    distances = (2 - 2 * scores).clamp_(min=0) if normalized else scores.clamp_(min=0)
    indices = torch.from_numpy(idx).to(device=x.device, dtype=torch.int64)
    _zero_self(indices, distances)
    return KNN(indices, distances, None)

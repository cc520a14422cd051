"""Query × gallery distance matrices in torch, on whatever device the features live on."""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["pairwise_distance", "METRICS"]

METRICS = ("euclidean", "cosine")


def prepare_features(query: Union[np.ndarray, torch.Tensor], gallery: Union[np.ndarray, torch.Tensor],
                     metric: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Check and convert a feature pair: 2-D, non-empty, same dimension, same device, float32 or
    float64 (half precision is computed in float32). For ``cosine`` the rows come back L2-normalised."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    q = query if isinstance(query, torch.Tensor) else torch.as_tensor(np.asarray(query))
    g = gallery if isinstance(gallery, torch.Tensor) else torch.as_tensor(np.asarray(gallery))
    for name, x in (("query", q), ("gallery", g)):
        if x.dim() != 2:
            raise ValueError(f"{name} features must be 2-D (num, dim), got shape {tuple(x.shape)}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{name} features are empty: shape {tuple(x.shape)}")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"feature dimensions differ: query {q.shape[1]}, gallery {g.shape[1]}")
    if q.device != g.device:
        raise ValueError(f"query features are on {q.device} but gallery features on {g.device}; "
                         "move both to one device")
    dtype = torch.float64 if torch.float64 in (q.dtype, g.dtype) else torch.float32
    q, g = q.detach().to(dtype), g.detach().to(dtype)
    if metric == "cosine":
        q, g = F.normalize(q, dim=1), F.normalize(g, dim=1)
    return q, g


def pairwise_distance(query: Union[np.ndarray, torch.Tensor], gallery: Union[np.ndarray, torch.Tensor],
                      metric: str = "euclidean", chunk: int = 4096) -> torch.Tensor:
    """Distance matrix of shape (num_query, num_gallery) on the features' device.

    ``euclidean`` returns the **squared** Euclidean distance ``‖q‖² + ‖g‖² − 2 q·g`` (clamped at 0;
    it ranks exactly like the Euclidean distance and is what torchreid, fast-reid and the GCL code
    rank with). For L2-normalised features it equals ``2 − 2 cos(q, g)``.
    ``cosine`` returns ``1 − cos(q, g)`` (rows are L2-normalised first), in [0, 2] up to float rounding
    (not clamped, so near-duplicates keep their order).

    Computed ``chunk`` query rows at a time straight into the output (one matrix product per chunk,
    no further temporaries). The result is float32, or float64 when either input is float64.
    """
    if int(chunk) < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    q, g = prepare_features(query, gallery, metric)
    out = torch.empty(q.shape[0], g.shape[0], dtype=q.dtype, device=q.device)
    g_t = g.t()
    if metric == "euclidean":
        g_sq = (g * g).sum(1)[None, :]
        q_sq = (q * q).sum(1)[:, None]
    else:
        one = torch.ones(1, 1, dtype=q.dtype, device=q.device)
    for i in range(0, q.shape[0], int(chunk)):
        rows = slice(i, i + int(chunk))
        if metric == "euclidean":
            torch.addmm(g_sq, q[rows], g_t, alpha=-2, out=out[rows])
            out[rows].add_(q_sq[rows]).clamp_(min=0)
        else:
            torch.addmm(one, q[rows], g_t, alpha=-1, out=out[rows])
    return out

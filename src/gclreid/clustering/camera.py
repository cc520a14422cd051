"""Camera-aware clustering: remove each camera's mean feature before measuring distances.

Images of one camera share its background, light and colour cast, so features of a weak encoder
(random or early in training) group by camera rather than by person, and DBSCAN then makes
camera-pure, person-impure clusters. Centring the features of each camera on zero (then
re-normalising to unit length) removes that shared offset — the same idea as camera-based batch
normalisation (Zhuang et al., ECCV 2020) applied to the clustering input only. Camera ids are part
of every ReID dataset's file names and are used by the unsupervised methods of the field; the
identity labels are never used.
"""
from __future__ import annotations

import numpy as np
import torch

from ._checks import ArrayLike, FeatureError, as_feature_tensor


def camera_centered(features: ArrayLike, cameras: ArrayLike) -> torch.Tensor:
    """`features` (N×D) minus the mean feature of their camera, L2-normalised per row.

    `cameras` holds one camera id per row. A camera with a single image keeps that image's feature
    (centring would make it zero)."""
    x = as_feature_tensor(features, "features")
    cams = np.asarray(cameras)
    if cams.shape != (x.shape[0],):
        raise FeatureError(f"camera_centered: expected one camera id per feature row ({x.shape[0]}), "
                           f"got an array of shape {cams.shape}")
    _, index = np.unique(cams, return_inverse=True)
    index_t = torch.as_tensor(index, device=x.device)
    count = torch.bincount(index_t).to(x.dtype)
    means = torch.zeros(len(count), x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, index_t, x)
    means = means / count[:, None]
    means[count < 2] = 0
    centred = x - means[index_t]
    return torch.nn.functional.normalize(centred, dim=1)

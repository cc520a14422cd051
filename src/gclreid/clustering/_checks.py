"""Input checks shared by the clustering and re-ranking entry points."""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

from ..errors import GclreidError

ArrayLike = Union[np.ndarray, torch.Tensor]
FINITE_CHECK_ROWS = 8192  # rows per block of the NaN/Inf scan


class FeatureError(GclreidError, ValueError):
    """Features or parameters that do not fit: not a finite 2-D array, or k larger than the data."""


def as_feature_tensor(features: ArrayLike, name: str = "features",
                      device: Optional[Union[str, torch.device]] = None, check_finite: bool = True) -> torch.Tensor:
    """Return `features` as a float32 2-D torch tensor on `device` (default: where it already is;
    numpy input goes to the CPU), without a copy when it already is one. Raises FeatureError for
    anything else, naming what was wrong. ``check_finite=False`` skips the NaN/Inf scan, for callers
    that find such rows on their own pass over the data (``topk_search``)."""
    if isinstance(features, np.ndarray):
        if not (np.issubdtype(features.dtype, np.floating) or np.issubdtype(features.dtype, np.integer)):
            raise FeatureError(f"{name}: expected a numeric array, got dtype {features.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(features))
    elif isinstance(features, torch.Tensor):
        tensor = features.detach()
        if tensor.is_complex() or tensor.dtype == torch.bool:
            raise FeatureError(f"{name}: expected a real-valued tensor, got dtype {tensor.dtype}")
    else:
        raise FeatureError(f"{name}: expected a numpy array or torch tensor of shape (N, D), "
                           f"got {type(features).__name__}")
    if tensor.dim() != 2:
        raise FeatureError(f"{name}: expected a 2-D array of shape (N, D), got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise FeatureError(f"{name}: empty array of shape {tuple(tensor.shape)}")
    if device is not None:
        tensor = tensor.to(device)
    tensor = tensor.float().contiguous()
    if not check_finite:
        return tensor
    # Scanned in blocks of rows, so a large feature matrix never gets a full-size temporary; only
    # when a block is not finite are the offending rows looked for.
    for lo in range(0, len(tensor), FINITE_CHECK_ROWS):
        if not bool(torch.isfinite(tensor[lo:lo + FINITE_CHECK_ROWS]).all()):
            bad = ~torch.isfinite(tensor).all(dim=1)
            rows = torch.nonzero(bad).flatten()[:5].tolist()
            raise FeatureError(f"{name}: {int(bad.sum())} row(s) contain NaN or Inf values (first rows: {rows})")
    return tensor


def check_k(k1: int, k2: int, n: int, columns: int, what: str) -> None:
    """k1 and k2 must be positive integers and fit into `columns` neighbour columns of `n` samples."""
    for name, value in (("k1", k1), ("k2", k2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise FeatureError(f"{what}: {name} must be a positive integer, got {value!r}")
    if k1 >= n:
        raise FeatureError(f"{what}: k1={k1} must be smaller than the number of samples ({n})")
    if k2 > columns:
        raise FeatureError(f"{what}: k2={k2} must not exceed the {columns} neighbours used (k1={k1})")

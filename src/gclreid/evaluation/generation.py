"""Image-quality metrics for generated views: SSIM, PSNR and L1 between two image batches.

All three take two B×C×H×W tensors with values in [0, ``data_range``] (RGB in [0, 1] by default)
and return one value per image (a tensor of length B), computed for the whole batch at once:

* **SSIM** (Wang et al. 2004): Gaussian window of size 11 and σ 1.5, constants
  C1 = (0.01·R)², C2 = (0.03·R)², local statistics over the *valid* window positions only (no
  padding, as the reference MATLAB code and ``pytorch_msssim``), sample variances with the
  window's weights; the SSIM map is averaged over positions and channels.
* **PSNR**: ``10·log10(R² / MSE)`` with the MSE over all pixels and channels of the image. Identical
  images give ``inf``; ``max_db`` caps the value instead (the per-epoch metrics of GCL use 100 dB so
  that records stay finite JSON).
* **L1**: mean absolute difference over pixels and channels.

Computation is in float32 (float64 inputs stay float64) on the inputs' device.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

__all__ = ["gaussian_window", "ssim", "psnr", "l1_error", "image_metrics"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple:
    if a.shape != b.shape:
        raise ValueError(f"image batches differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() != 4:
        raise ValueError(f"expected B×C×H×W image batches, got shape {tuple(a.shape)}")
    dtype = torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32
    return a.to(dtype), b.to(dtype)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, dtype=torch.float32,
                    device=None) -> torch.Tensor:
    """The normalised 1-D Gaussian of `size` taps (centred; the 2-D window is its outer product)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Valid separable Gaussian filtering of every channel: B×C×H×W → B×C×(H−k+1)×(W−k+1)."""
    c = x.shape[1]
    k = g.numel()
    x = F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window: int = SSIM_WINDOW,
         sigma: float = SSIM_SIGMA, k1: float = SSIM_K1, k2: float = SSIM_K2,
         mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-image SSIM of two B×C×H×W batches (mean of the SSIM map over valid positions and channels).

    `mask` (B×1×H×W, values in [0, 1]): average the SSIM map only where the mask is set (weighted by
    it), e.g. over the person; a window counts at the mask value of its centre pixel. An image whose
    mask is empty over the valid positions gets NaN."""
    a, b = _pair(a, b)
    h, w = a.shape[-2:]
    if h < window or w < window:
        raise ValueError(f"SSIM with an {window}×{window} window needs images of at least that size, got {h}×{w}")
    g = gaussian_window(window, sigma, a.dtype, a.device)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    n = len(a)
    # One filtering pass for the five local statistics: a, b, a², b², ab stacked along the batch.
    stats = _blur(torch.cat([a, b, a * a, b * b, a * b]), g)
    mu_a, mu_b, aa, bb, ab = stats.split(n)
    var_a, var_b, cov = aa - mu_a * mu_a, bb - mu_b * mu_b, ab - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    if mask is None:
        return ssim_map.flatten(1).mean(1)
    if mask.dim() != 4 or mask.shape[0] != n or mask.shape[1] != 1 or mask.shape[-2:] != a.shape[-2:]:
        raise ValueError(f"SSIM mask must be {n}×1×{h}×{w}, got shape {tuple(mask.shape)}")
    r = window // 2  # the valid map's position (i, j) is the window centred on pixel (i + r, j + r)
    m = mask.to(ssim_map.dtype)[:, :, r:r + ssim_map.shape[-2], r:r + ssim_map.shape[-1]].expand_as(ssim_map)
    return (ssim_map * m).flatten(1).sum(1) / m.flatten(1).sum(1)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, max_db: Optional[float] = None) -> torch.Tensor:
    """Per-image PSNR in dB; ``inf`` for identical images unless `max_db` caps it."""
    a, b = _pair(a, b)
    mse = (a - b).pow(2).flatten(1).mean(1)
    value = 10 * torch.log10(data_range ** 2 / mse)  # mse 0 → +inf
    return value.clamp(max=max_db) if max_db is not None else value


def l1_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image mean absolute difference."""
    a, b = _pair(a, b)
    return (a - b).abs().flatten(1).mean(1)


def image_metrics(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0,
                  max_db: Optional[float] = None) -> Dict[str, torch.Tensor]:
    """``{"ssim", "psnr", "l1"}``, each a tensor with one value per image."""
    return {"ssim": ssim(a, b, data_range), "psnr": psnr(a, b, data_range, max_db), "l1": l1_error(a, b)}

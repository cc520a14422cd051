"""DG-Net's appearance encoder Ea (the official ``ft_netAB``): GCL's identity encoder, configured differently.

:class:`AppearanceEncoder` is an :class:`~gclreid.models.IdentityEncoder` (same ResNet backbone, last
stride 1, same state-dict names for what they share) with:

* **max pooling** instead of average pooling: ``AdaptiveMaxPool2d((4, 1))`` on the layer4 map gives
  the **appearance code** ``B×2048×4×1`` (flattened channel-major to 8192-d for the AdaIN MLPs, as
  GCL's part feature), and ``AdaptiveMaxPool2d(1)`` the 2048-d vector both heads read;
* **two heads** on that vector, each ``Linear(2048→512) → BatchNorm1d(512) → Dropout → Linear(512→K)``
  (the official ``ClassBlock`` with ``relu=False``): the *primary* head (dropout 0.5) whose BN output
  is f_prim, and the *fine-grained* head (dropout 0.75) whose BN output is f_fine. The primary head's
  first two layers are the inherited ``feat``/``feat_bn`` (so ``embedding`` = f_prim and a GCL/
  supervised checkpoint's backbone and embedding load into it); the rest are ``classifier_prim``,
  ``feat_fine``, ``feat_bn_fine``, ``classifier_fine``.

Initialisation as the official code: first Linear Kaiming-normal (fan_out), bias 0; BN weight 1,
bias 0; classifiers N(0, 0.001), bias 0.

**Test feature** (:meth:`AppearanceEncoder.embed`, ``test_feature="combined"``): with p = f_prim/‖f_prim‖
and q = f_fine/‖f_fine‖, ``[p, √β·q] / √(1+β)``. Its dot product with another such feature is
``(⟨p,p'⟩ + β⟨q,q'⟩) / (1+β)``: the official score ``⟨p,p'⟩ + β⟨q,q'⟩`` (β on the query only) up to a
positive constant, so rankings are identical, and it is unit-norm, so the squared Euclidean
distance of the evaluation ranks the same way. With flip averaging (``eval.flip``),
:meth:`fuse_flip` re-normalises each half of the summed views before weighting, as the official
test script does. ``test_feature="prim"`` / ``"fine"`` give p or q alone (the paper's Table 3 rows).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from .identity_encoder import IdentityEncoder, _cfg_get
from .weights import load_imagenet_weights

__all__ = ["AppearanceOutput", "AppearanceEncoder", "build_appearance_encoder", "TEST_FEATURES",
           "is_appearance_state", "appearance_num_classes"]

TEST_FEATURES = ("combined", "prim", "fine")


class AppearanceOutput(NamedTuple):
    """What :meth:`AppearanceEncoder.forward` returns."""
    parts: torch.Tensor  # B×C×P×1 appearance code (max-pooled stripes) for the decoder
    pooled: torch.Tensor  # B×C global max-pooled feature (input of both heads)
    embedding: torch.Tensor  # B×D f_prim (primary head's BN output)
    fine: torch.Tensor  # B×D f_fine (fine-grained head's BN output)
    logits_prim: torch.Tensor  # B×K
    logits_fine: torch.Tensor  # B×K

    def flat_parts(self) -> torch.Tensor:
        return self.parts.reshape(self.parts.shape[0], -1)


class AppearanceEncoder(IdentityEncoder):
    """Ea. Args: ``arch``, ``last_stride``, ``num_parts`` as :class:`IdentityEncoder`; ``num_classes``
    training identities; ``bottleneck`` head width (512); ``dropout_prim``/``dropout_fine`` (0.5/0.75);
    ``beta`` weight of the fine half in the test feature; ``test_feature`` (combined | prim | fine)."""

    def __init__(self, arch: str = "resnet50", last_stride: int = 1, num_parts: int = 4, num_classes: int = 751,
                 bottleneck: int = 512, dropout_prim: float = 0.5, dropout_fine: float = 0.75, beta: float = 0.5,
                 test_feature: str = "combined"):
        if num_classes < 2:
            raise ConfigError(f"the appearance encoder needs at least 2 identity classes, got num_classes={num_classes}")
        if bottleneck < 1:
            raise ConfigError(f"dgnet.bottleneck must be >= 1, got {bottleneck}")
        for name, p in (("dropout_prim", dropout_prim), ("dropout_fine", dropout_fine)):
            if not 0 <= p < 1:
                raise ConfigError(f"dgnet.{name}={p}; expected a probability in [0, 1)")
        super().__init__(arch=arch, last_stride=last_stride, embed_dim=bottleneck, num_parts=num_parts)
        self.part_pool = nn.AdaptiveMaxPool2d((num_parts, 1))
        self.global_pool = nn.AdaptiveMaxPool2d(1)
        channels = self.out_channels
        self.num_classes = num_classes
        self.dropout_prim = nn.Dropout(dropout_prim)
        self.classifier_prim = nn.Linear(bottleneck, num_classes)
        self.feat_fine = nn.Linear(channels, bottleneck)
        self.feat_bn_fine = nn.BatchNorm1d(bottleneck)
        self.dropout_fine = nn.Dropout(dropout_fine)
        self.classifier_fine = nn.Linear(bottleneck, num_classes)
        nn.init.kaiming_normal_(self.feat_fine.weight, mode="fan_out")
        nn.init.zeros_(self.feat_fine.bias)
        for classifier in (self.classifier_prim, self.classifier_fine):
            nn.init.normal_(classifier.weight, std=0.001)
            nn.init.zeros_(classifier.bias)
        self.beta = 0.5
        self.test_feature = "combined"
        self.set_test_feature(test_feature, beta)

    def set_test_feature(self, test_feature: str, beta: float = None) -> None:
        """Choose what :meth:`embed` returns (``combined`` | ``prim`` | ``fine``) and β."""
        if test_feature not in TEST_FEATURES:
            raise ConfigError(f"dgnet.test_feature={test_feature!r}; expected one of {', '.join(TEST_FEATURES)}")
        if beta is not None:
            if not (beta >= 0 and math.isfinite(beta)):
                raise ConfigError(f"dgnet.beta={beta}; expected a finite number >= 0")
            self.beta = float(beta)
        self.test_feature = test_feature

    def forward(self, x: torch.Tensor) -> AppearanceOutput:
        fmap = self.backbone(x)
        pooled = torch.flatten(self.global_pool(fmap), 1)
        prim = self.feat_bn(self.feat(pooled))
        fine = self.feat_bn_fine(self.feat_fine(pooled))
        return AppearanceOutput(self.part_pool(fmap), pooled, prim, fine,
                                self.classifier_prim(self.dropout_prim(prim)),
                                self.classifier_fine(self.dropout_fine(fine)))

    # -- test feature ---------------------------------------------------------------------------------
    def _weights(self):
        return 1 / math.sqrt(1 + self.beta), math.sqrt(self.beta / (1 + self.beta))

    def combine(self, prim: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        """The test feature of (f_prim, f_fine) for the current ``test_feature`` and β."""
        p, q = F.normalize(prim, dim=1), F.normalize(fine, dim=1)
        if self.test_feature == "prim":
            return p
        if self.test_feature == "fine":
            return q
        wp, wq = self._weights()
        return torch.cat([wp * p, wq * q], dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The DG-Net test feature of a batch (call in eval mode)."""
        out = self(x)
        return self.combine(out.embedding, out.fine)

    def fuse_flip(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Test features of an image (``a``) and its mirror (``b``) → the flip-averaged feature: each half
        summed over the two views and re-normalised, then weighted (the official ``test_2label.py``)."""
        if self.test_feature != "combined":
            return F.normalize(a + b, dim=1)
        d = a.shape[1] // 2
        return self.combine(a[:, :d] + b[:, :d], a[:, d:] + b[:, d:])

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, num_classes={self.num_classes}, test_feature={self.test_feature}, "
                f"beta={self.beta}")


def is_appearance_state(state) -> bool:
    """Whether a state dict is an :class:`AppearanceEncoder`'s (it has the fine-grained head)."""
    return "classifier_fine.weight" in state


def appearance_num_classes(state) -> int:
    return int(state["classifier_prim.weight"].shape[0])


def build_appearance_encoder(model_cfg: Any, dgnet_cfg: Any, num_classes: int) -> AppearanceEncoder:
    """Ea from the ``model`` section (arch, last_stride, num_parts, pretrained, weights) and the ``dgnet``
    section (bottleneck, dropouts, beta, test_feature). ImageNet weights load into the backbone when
    ``model.pretrained``; the report is kept as ``encoder.weights_report``."""
    arch = _cfg_get(model_cfg, "arch", "resnet50")
    encoder = AppearanceEncoder(arch=arch, last_stride=int(_cfg_get(model_cfg, "last_stride", 1)),
                                num_parts=int(_cfg_get(model_cfg, "num_parts", 4)), num_classes=int(num_classes),
                                bottleneck=int(_cfg_get(dgnet_cfg, "bottleneck", 512)),
                                dropout_prim=float(_cfg_get(dgnet_cfg, "dropout_prim", 0.5)),
                                dropout_fine=float(_cfg_get(dgnet_cfg, "dropout_fine", 0.75)),
                                beta=float(_cfg_get(dgnet_cfg, "beta", 0.5)),
                                test_feature=str(_cfg_get(dgnet_cfg, "test_feature", "combined")))
    report = None
    if _cfg_get(model_cfg, "pretrained", True):
        report = load_imagenet_weights(encoder.backbone, arch, str(_cfg_get(model_cfg, "weights", "") or ""))
    encoder.weights_report = report
    return encoder

"""GCL's identity encoder Eid (the official ``ft_net``): a ResNet with two heads.

* **Generative branch** — ``AdaptiveAvgPool2d((num_parts, 1))`` on the layer4 map gives the part
  features ``B×C×P×1`` (2048×4×1 at the paper configuration) that drive the generator's AdaIN layers.
  The generator consumes them flattened *channel-major* like the official ``f.view(B, 2048*4)``:
  index ``c·P + p`` (channel c, stripe p), see :func:`flatten_parts`.
* **ReID branch** — global average pool → ``Linear(C, embed_dim)`` (``feat``) →
  ``BatchNorm1d(embed_dim)`` (``feat_bn``, bias trainable). No ReLU, dropout or classifier. The
  unnormalised BN output is the embedding trained by the contrastive losses; its L2-normalised
  version (:meth:`IdentityEncoder.embed`) is the test feature.

With ``embed_dim=0`` there is no Linear: ``feat_bn`` is a BatchNorm1d on the pooled C-d feature
(the ``ft_net`` variant of the official code used with ACT/UDAP/MLC warm-ups).

State-dict names: ``backbone.<torchvision name>``, ``feat.*``, ``feat_bn.*``. Checkpoints of the
official code / JVTC use the bare torchvision names; :func:`map_official_eid_state` converts them.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from .backbone import build_backbone

__all__ = ["IdentityOutput", "IdentityEncoder", "flatten_parts", "build_identity_encoder", "map_official_eid_state"]

log = logging.getLogger(__name__)


def flatten_parts(parts: torch.Tensor) -> torch.Tensor:
    """B×C×P×1 part features → B×(C·P), channel-major (index ``c·P + p``) as the official code."""
    return parts.reshape(parts.shape[0], -1)


class IdentityOutput(NamedTuple):
    """What :meth:`IdentityEncoder.forward` returns (the same in train and eval mode)."""
    parts: torch.Tensor  # B×C×P×1 part features for the generator
    pooled: torch.Tensor  # B×C globally pooled backbone feature
    embedding: torch.Tensor  # B×D unnormalised BN output (D = embed_dim, or C when embed_dim=0)

    def flat_parts(self) -> torch.Tensor:
        """Part features flattened channel-major to B×(C·P) (8192-d at the paper configuration)."""
        return flatten_parts(self.parts)


class IdentityEncoder(nn.Module):
    """Eid: ResNet backbone, part pooling for the generator, Linear+BN embedding for ReID.

    Args:
        arch: backbone name (``resnet18``/``34``/``50``/``101``, ``mobilenet_v2``; :func:`build_backbone`).
        last_stride: stride of layer4 (1 in GCL: 256×128 input → 16×8 map).
        embed_dim: size of the ReID embedding (Linear+BN); 0 = BN directly on the pooled feature.
        num_parts: horizontal stripes of the part feature.
    """

    def __init__(self, arch: str = "resnet50", last_stride: int = 1, embed_dim: int = 512, num_parts: int = 4,
                 pretrained: bool = False, weights: str = ""):
        super().__init__()
        if embed_dim < 0:
            raise ConfigError(f"model.embed_dim must be >= 0 (0 = no Linear layer), got {embed_dim}")
        if num_parts < 1:
            raise ConfigError(f"model.num_parts must be >= 1, got {num_parts}")
        self.backbone = build_backbone(arch, pretrained=pretrained, last_stride=last_stride, weights=weights)
        channels = self.backbone.out_channels
        self.arch, self.num_parts = arch, num_parts
        self.out_channels = channels
        self.embed_dim = embed_dim or channels
        self.part_pool = nn.AdaptiveAvgPool2d((num_parts, 1))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.feat: nn.Module = nn.Linear(channels, embed_dim) if embed_dim else nn.Identity()
        self.feat_bn = nn.BatchNorm1d(self.embed_dim)
        self._init_head()

    def _init_head(self) -> None:
        # As the open-reid/JVTC ResNet heads that GCL's warm-up checkpoints come from:
        # Kaiming-normal (fan_out) Linear weight, zero bias; BN weight 1, bias 0.
        if isinstance(self.feat, nn.Linear):
            nn.init.kaiming_normal_(self.feat.weight, mode="fan_out")
            nn.init.zeros_(self.feat.bias)
        nn.init.ones_(self.feat_bn.weight)
        nn.init.zeros_(self.feat_bn.bias)

    @property
    def part_dim(self) -> int:
        """Length of the flattened part feature, C·P (8192 at the paper configuration)."""
        return self.out_channels * self.num_parts

    def forward(self, x: torch.Tensor) -> IdentityOutput:
        """Images B×3×H×W (ImageNet-normalised) → :class:`IdentityOutput`."""
        fmap = self.backbone(x)
        pooled = torch.flatten(self.global_pool(fmap), 1)
        embedding = self.feat_bn(self.feat(pooled))
        return IdentityOutput(self.part_pool(fmap), pooled, embedding)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The test feature: the L2-normalised embedding (call in eval mode for BN running stats)."""
        return F.normalize(self(x).embedding, dim=1)

    def extra_repr(self) -> str:
        return f"arch={self.arch}, embed_dim={self.embed_dim}, num_parts={self.num_parts}"


def _cfg_get(cfg: Any, key: str, default: Any) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def build_identity_encoder(model_cfg: Any) -> IdentityEncoder:
    """Build Eid from a :class:`gclreid.config.ModelConfig` (or a DictConfig/dict with its keys).

    With ``pretrained`` the backbone gets ImageNet weights via :func:`load_imagenet_weights`
    (``weights`` = explicit file or folder, else the torch hub cache); the load report is kept as
    ``encoder.weights_report`` (``None`` without pretraining).
    """
    encoder = IdentityEncoder(arch=_cfg_get(model_cfg, "arch", "resnet50"),
                              last_stride=int(_cfg_get(model_cfg, "last_stride", 1)),
                              embed_dim=int(_cfg_get(model_cfg, "embed_dim", 512)),
                              num_parts=int(_cfg_get(model_cfg, "num_parts", 4)),
                              pretrained=bool(_cfg_get(model_cfg, "pretrained", True)),
                              weights=str(_cfg_get(model_cfg, "weights", "") or ""))
    encoder.weights_report = encoder.backbone.weights_report
    return encoder


_BACKBONE_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")


def map_official_eid_state(state: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename an official GCL / JVTC ``ft_net`` state dict to this module's names.

    Those files use bare torchvision names for the backbone plus ``feat``/``feat_bn`` (and a
    ``classifier`` this encoder does not have). Returns ``(mapped, dropped)``: backbone keys get the
    ``backbone.`` prefix, ``feat.*``/``feat_bn.*`` are kept, a ``module.`` prefix is stripped, and
    every other key (``classifier.*``, ``fc.*``, ...) is listed in ``dropped`` for the caller to report.
    Load ``mapped`` with :func:`gclreid.checkpoint.load_model_state` to get a strict check.
    """
    mapped: Dict[str, torch.Tensor] = {}
    dropped: List[str] = []
    for key, value in state.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if name.startswith(_BACKBONE_PREFIXES):
            mapped["backbone." + name] = value
        elif name.startswith(("feat.", "feat_bn.", "backbone.")):
            mapped[name] = value
        else:
            dropped.append(key)
    return mapped, dropped

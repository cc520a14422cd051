"""Building blocks of GCL's view generator and discriminator (the MUNIT / DG-Net family).

Written from the layer-by-layer description of the official GCL code
(``shared/reference/gcl-official-code.md`` §1); parameter names are this package's own.

* :class:`Conv2dBlock` — padding layer → ``Conv2d`` (bias, no built-in padding) → norm → activation.
* :class:`ResBlock` — two 3×3 ``Conv2dBlock`` s (the second without activation) plus the identity;
  no activation after the add.
* :class:`AdaINResBlock` — the same with adaptive instance normalisation; its scales and shifts are
  **arguments of forward**, not module attributes assigned before the call (the official code's
  pattern, which breaks under DataParallel and is not re-entrant).
* :class:`AdaptiveInstanceNorm2d`, :class:`LayerNorm` (MUNIT's: per-sample, unbiased std, eps added to
  the std), :class:`ASPP` (the official structure encoder's atrous block), :class:`MLP`.
* :func:`init_weights` — the MUNIT-style initialisers (``gaussian``, ``kaiming``, ``xavier``,
  ``orthogonal``, ``default``) applied to every Conv/Linear weight, biases set to 0.
"""
from __future__ import annotations

import math
from typing import Iterable, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError

__all__ = ["ACTIVATIONS", "NORMS", "PAD_TYPES", "INITS", "make_activation", "make_padding", "LayerNorm",
           "AdaptiveInstanceNorm2d", "Conv2dBlock", "ResBlock", "res_blocks", "AdaINResBlock", "ASPP", "MLP", "init_weights"]

ACTIVATIONS = ("lrelu", "relu", "prelu", "selu", "tanh", "none")
NORMS = ("none", "in", "ln", "bn")
PAD_TYPES = ("reflect", "replicate", "zero")
INITS = ("gaussian", "kaiming", "xavier", "orthogonal", "default")


def make_activation(name: str) -> nn.Module:
    """``lrelu`` is LeakyReLU(0.2), as everywhere in MUNIT/DG-Net/GCL; ``none`` is the identity."""
    if name == "lrelu":
        return nn.LeakyReLU(0.2)
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return nn.PReLU()
    if name == "selu":
        return nn.SELU()
    if name == "tanh":
        return nn.Tanh()
    if name == "none":
        return nn.Identity()
    raise ConfigError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")


def make_padding(pad_type: str, padding: int) -> nn.Module:
    if pad_type == "reflect":
        return nn.ReflectionPad2d(padding)
    if pad_type == "replicate":
        return nn.ReplicationPad2d(padding)
    if pad_type == "zero":
        return nn.ZeroPad2d(padding)
    raise ConfigError(f"unknown padding type {pad_type!r}; expected one of {', '.join(PAD_TYPES)}")


class LayerNorm(nn.Module):
    """MUNIT's layer norm: per sample, over all of C·H·W, ``(x − mean) / (std + eps)`` with the
    *unbiased* std and eps added to the std (not to the variance), then a per-channel affine.
    gamma starts ~U(0, 1) and beta at 0, as in the official code (``init_weights`` leaves them alone)."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.num_features, self.eps, self.affine = num_features, eps, affine
        if affine:
            self.gamma = nn.Parameter(torch.empty(num_features).uniform_())
            self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, x.dim()))  # reduce in place: no flattened copy of a channels-last input
        mean = x.mean(dims, keepdim=True)
        std = x.std(dims, keepdim=True)
        x = (x - mean) / (std + self.eps)
        if self.affine:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            x = x * self.gamma.view(shape) + self.beta.view(shape)
        return x

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


class AdaptiveInstanceNorm2d(nn.Module):
    """Instance normalisation (biased variance, eps 1e-5) followed by a per-sample, per-channel affine
    whose ``weight`` and ``bias`` (B×C each) are given to :meth:`forward`. Numerically the official
    ``F.batch_norm`` on the (1, B·C, H, W) view in training mode. The weight is used as it comes out of
    the MLP: no ``1 +`` offset, no activation. No parameters."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.eps = num_features, eps

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        expected = (x.shape[0], self.num_features)
        if tuple(weight.shape) != expected or tuple(bias.shape) != expected:
            raise ValueError(f"AdaIN over {self.num_features} channels expects weight and bias of shape "
                             f"{expected}, got {tuple(weight.shape)} and {tuple(bias.shape)}")
        out = F.instance_norm(x, eps=self.eps)
        return out * weight[:, :, None, None] + bias[:, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _make_norm(norm: str, channels: int) -> nn.Module:
    if norm == "none":
        return nn.Identity()
    if norm == "in":
        return nn.InstanceNorm2d(channels)  # affine=False, no running statistics (as the official code)
    if norm == "ln":
        return LayerNorm(channels)
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "adain":
        raise ConfigError("norm 'adain' needs its parameters at call time: use AdaINResBlock")
    raise ConfigError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")


class Conv2dBlock(nn.Module):
    """Padding layer → ``Conv2d`` (bias=True, no built-in padding) → norm → activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 norm: str = "none", activation: str = "lrelu", pad_type: str = "reflect", dilation: int = 1):
        super().__init__()
        self.pad = make_padding(pad_type, padding)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, dilation=dilation, bias=True)
        self.norm = _make_norm(norm, out_channels)
        self.activation = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(self.pad(x))))


class ResBlock(nn.Module):
    """``x + conv2(conv1(x))`` with 3×3 convolutions; conv1 has the activation, conv2 none, and there
    is no activation after the add (MUNIT's 'basic' block)."""

    def __init__(self, dim: int, norm: str = "in", activation: str = "lrelu", pad_type: str = "reflect"):
        super().__init__()
        self.conv1 = Conv2dBlock(dim, dim, 3, 1, 1, norm, activation, pad_type)
        self.conv2 = Conv2dBlock(dim, dim, 3, 1, 1, norm, "none", pad_type)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


def res_blocks(n: int, dim: int, norm: str, activation: str, pad_type: str) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(dim, norm, activation, pad_type) for _ in range(n)])


class AdaINResBlock(nn.Module):
    """:class:`ResBlock` whose two normalisations are AdaIN. ``forward(x, weights, biases)`` takes the
    parameters of its two AdaIN layers: ``weights = (w1, w2)``, ``biases = (b1, b2)``, each B×dim."""

    def __init__(self, dim: int, activation: str = "lrelu", pad_type: str = "reflect"):
        super().__init__()
        self.conv1 = Conv2dBlock(dim, dim, 3, 1, 1, "none", "none", pad_type)
        self.norm1 = AdaptiveInstanceNorm2d(dim)
        self.act1 = make_activation(activation)
        self.conv2 = Conv2dBlock(dim, dim, 3, 1, 1, "none", "none", pad_type)
        self.norm2 = AdaptiveInstanceNorm2d(dim)

    def forward(self, x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]) -> torch.Tensor:
        out = self.act1(self.norm1(self.conv1(x), weights[0], biases[0]))
        out = self.norm2(self.conv2(out), weights[1], biases[1])
        return x + out


class ASPP(nn.Module):
    """The official structure encoder's atrous spatial pyramid block (not in the paper).

    Four branches of ``dim // 2`` channels: a 1×1 conv + norm; and for each dilation d a 1×1 conv
    (norm, activation) followed by a 3×3 conv with dilation d and padding d (norm, no activation).
    Concatenated and fused by a 1×1 conv to ``2·dim`` channels (norm, no activation).
    """

    def __init__(self, dim: int, norm: str = "in", activation: str = "lrelu", pad_type: str = "reflect",
                 dilations: Iterable[int] = (3, 6, 9)):
        super().__init__()
        part = dim // 2
        self.dilations = tuple(dilations)
        self.conv1 = Conv2dBlock(dim, part, 1, 1, 0, norm, "none", pad_type)
        self.atrous = nn.ModuleList(
            nn.Sequential(Conv2dBlock(dim, part, 1, 1, 0, norm, activation, pad_type),
                          Conv2dBlock(part, part, 3, 1, d, norm, "none", pad_type, dilation=d))
            for d in self.dilations)
        self.fuse = Conv2dBlock(part * (1 + len(self.dilations)), 2 * dim, 1, 1, 0, norm, "none", pad_type)
        self.out_channels = 2 * dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.conv1(x)] + [branch(x) for branch in self.atrous]
        return self.fuse(torch.cat(branches, dim=1))


class MLP(nn.Module):
    """``n_blk`` Linear layers: in → hidden (activation), hidden → hidden (activation) × (n_blk − 2),
    hidden → out (no activation). ``norm`` ∈ {none, bn} applies to the hidden layers."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, n_blk: int = 3, norm: str = "none",
                 activation: str = "lrelu"):
        super().__init__()
        if n_blk < 1:
            raise ConfigError(f"MLP needs at least one layer, got n_blk={n_blk}")
        if norm not in ("none", "bn"):
            raise ConfigError(f"unknown MLP norm {norm!r}; expected none or bn")
        layers: List[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (n_blk - 1) + [out_dim]
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < n_blk - 1:
                if norm == "bn":
                    layers.append(nn.BatchNorm1d(b))
                layers.append(make_activation(activation))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.flatten(1))


@torch.no_grad()
def init_weights(module: nn.Module, kind: str) -> nn.Module:
    """Initialise every Conv*/Linear weight of ``module`` (MUNIT's ``weights_init``) and zero its bias.

    ``gaussian``: N(0, 0.02) (the discriminator); ``kaiming``: Kaiming-normal, fan_in, a=0 (the
    generator); ``xavier`` / ``orthogonal``: gain √2; ``default``: PyTorch's own initialisation.
    Norm layers are not touched (the MUNIT LayerNorm keeps gamma ~U(0, 1)).
    """
    if kind not in INITS:
        raise ConfigError(f"unknown init {kind!r}; expected one of {', '.join(INITS)}")
    if kind == "default":
        return module
    for m in module.modules():
        if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            continue
        if kind == "gaussian":
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif kind == "kaiming":
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
        elif kind == "xavier":
            nn.init.xavier_normal_(m.weight, gain=math.sqrt(2))
        elif kind == "orthogonal":
            nn.init.orthogonal_(m.weight, gain=math.sqrt(2))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return module


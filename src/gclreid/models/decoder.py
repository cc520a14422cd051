"""The decoder G, the MLPs that turn identity features into AdaIN parameters, and :class:`Generator`.

Decoder at the paper configuration (input the 128×64×32 structure code; 1,455,555 parameters):
Dropout(p=0) → 4 × AdaIN ResBlock(128) (8 AdaIN layers) → [Upsample ×2 (nearest) → conv 5×5
128→64, LN, LeakyReLU] → [Upsample ×2 → conv 5×5 64→32, LN, LeakyReLU] → conv 3×3 32→32, LeakyReLU →
conv 3×3 32→32, LeakyReLU → conv 1×1 32→3. There is **no tanh**: the output lives in the
ImageNet-normalised space of the images it reconstructs.

AdaIN parameters (:class:`AdaINParamMLPs`): the flattened identity feature (8192-d, channel-major,
see :func:`gclreid.models.flatten_parts`) is cut into ``num_chunks`` contiguous chunks (4 × 2048);
chunk k feeds one MLP for the scales (``mlp_w[k]``) and one for the shifts (``mlp_b[k]``), each
2048 → 512 → 512 → 256 (1,443,072 parameters; 11,544,576 for the eight). The concatenated outputs
are handed to the decoder's AdaIN layers in module order, ``C`` values per layer: AdaIN layer j (the
two layers of residual block k are j = 2k, 2k+1) takes ``weights[:, jC:(j+1)C]`` and
``biases[:, jC:(j+1)C]``. So MLP k drives both AdaIN layers of residual block k. Because of the
channel-major flatten, chunk k holds channels 512k…512k+511 of *all* stripes, not stripe k.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..config import ConfigError
from .blocks import MLP, AdaINResBlock, Conv2dBlock, init_weights, make_activation
from .identity_encoder import flatten_parts
from .structure_encoder import StructureEncoder

__all__ = ["Decoder", "AdaINParamMLPs", "Generator", "build_generator", "cfg_value"]


def cfg_value(cfg: Any, key: str, default: Any) -> Any:
    """``cfg.key`` for a dataclass / DictConfig, ``cfg[key]`` for a mapping, else ``default``."""
    if cfg is None:
        return default
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


class Decoder(nn.Module):
    """G: structure code (B×C×h×w) + AdaIN parameters → image (B×out_channels×h·2^u×w·2^u).

    Args:
        in_channels: channels of the structure code (128 at the paper configuration).
        n_res: AdaIN residual blocks (2 AdaIN layers each).
        n_upsample: ×2 nearest up-sampling steps, each followed by a 5×5 conv halving the channels.
        out_channels: image channels.
        up_norm: norm of the up-sampling convs (``ln`` = MUNIT LayerNorm; ``in``/``none`` also work).
        dropout: Dropout before the residual blocks (0 in GCL, kept for the official layer order).
        tanh: squash the output (off for GCL/DG-Net, whose outputs are ImageNet-normalised images).
    """

    def __init__(self, in_channels: int = 128, n_res: int = 4, n_upsample: int = 2, out_channels: int = 3,
                 activation: str = "lrelu", pad_type: str = "reflect", up_norm: str = "ln",
                 dropout: float = 0.0, tanh: bool = False):
        super().__init__()
        if n_res < 1:
            raise ConfigError(f"generator.dec_n_res must be >= 1 (the identity enters through AdaIN), got {n_res}")
        if in_channels % (2 ** n_upsample):
            raise ConfigError(f"decoder input channels {in_channels} must be divisible by 2**dec_n_upsample "
                              f"= {2 ** n_upsample}")
        self.in_channels, self.n_res = in_channels, n_res
        self.dropout = nn.Dropout(dropout)
        self.res_blocks = nn.ModuleList(AdaINResBlock(in_channels, activation, pad_type) for _ in range(n_res))
        up: List[nn.Module] = []
        d = in_channels
        for _ in range(n_upsample):
            up += [nn.Upsample(scale_factor=2, mode="nearest"),
                   Conv2dBlock(d, d // 2, 5, 1, 2, up_norm, activation, pad_type)]
            d //= 2
        up += [Conv2dBlock(d, d, 3, 1, 1, "none", activation, pad_type),
               Conv2dBlock(d, d, 3, 1, 1, "none", activation, pad_type),
               Conv2dBlock(d, out_channels, 1, 1, 0, "none", "none", pad_type)]
        if tanh:
            up.append(make_activation("tanh"))
        self.up = nn.Sequential(*up)

    @property
    def num_adain_layers(self) -> int:
        return 2 * self.n_res

    @property
    def num_adain_params(self) -> int:
        """Scales (and, separately, shifts) needed per image: 2 · n_res · in_channels (1024)."""
        return self.num_adain_layers * self.in_channels

    def split_adain(self, values: torch.Tensor) -> List[torch.Tensor]:
        """B×num_adain_params → one B×C tensor per AdaIN layer, in module order."""
        if values.dim() != 2 or values.shape[1] != self.num_adain_params:
            raise ValueError(f"decoder expects B×{self.num_adain_params} AdaIN parameters, got {tuple(values.shape)}")
        return list(values.split(self.in_channels, dim=1))

    def forward(self, structure_code: torch.Tensor, weights: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
        """``weights``/``biases``: B×num_adain_params (AdaIN scales and shifts, layer j at ``[:, jC:(j+1)C]``)."""
        w, b = self.split_adain(weights), self.split_adain(biases)
        x = self.dropout(structure_code)
        for k, block in enumerate(self.res_blocks):
            x = block(x, w[2 * k:2 * k + 2], b[2 * k:2 * k + 2])
        return self.up(x)


class AdaINParamMLPs(nn.Module):
    """Identity feature → AdaIN scales and shifts, one MLP pair per contiguous chunk of the feature.

    ``forward(id_flat)`` returns ``(weights, biases)``, each B×``num_adain_params``: the
    concatenation of ``mlp_w[k](chunk_k)`` (resp. ``mlp_b``) over k.
    """

    def __init__(self, id_dim: int, num_adain_params: int, num_chunks: int = 4, hidden_dim: int = 512,
                 n_blk: int = 3, activation: str = "lrelu", norm: str = "none"):
        super().__init__()
        if num_chunks < 1 or id_dim % num_chunks:
            raise ConfigError(f"identity feature length {id_dim} must split into generator.id_chunks="
                              f"{num_chunks} equal chunks")
        if num_adain_params % num_chunks:
            raise ConfigError(f"the decoder's {num_adain_params} AdaIN parameters (2 x dec_n_res x channels) must "
                              f"split into generator.id_chunks={num_chunks} equal parts")
        self.id_dim, self.num_chunks = id_dim, num_chunks
        chunk_in, chunk_out = id_dim // num_chunks, num_adain_params // num_chunks
        self.mlp_w = nn.ModuleList(MLP(chunk_in, chunk_out, hidden_dim, n_blk, norm, activation)
                                   for _ in range(num_chunks))
        self.mlp_b = nn.ModuleList(MLP(chunk_in, chunk_out, hidden_dim, n_blk, norm, activation)
                                   for _ in range(num_chunks))

    def forward(self, id_flat: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if id_flat.dim() != 2 or id_flat.shape[1] != self.id_dim:
            raise ValueError(f"AdaIN MLPs expect a B×{self.id_dim} identity feature, got {tuple(id_flat.shape)}")
        chunks = id_flat.chunk(self.num_chunks, dim=1)
        weights = torch.cat([mlp(c) for mlp, c in zip(self.mlp_w, chunks)], dim=1)
        biases = torch.cat([mlp(c) for mlp, c in zip(self.mlp_b, chunks)], dim=1)
        return weights, biases


class Generator(nn.Module):
    """Structure encoder + decoder + AdaIN MLPs (the official ``AdaINGen``; 13,380,675 parameters at the
    paper configuration).

    ``generator(structure, part_features)`` = ``decode(encode_structure(structure), part_features)``.
    ``part_features`` is either the identity encoder's B×C×P×1 part tensor (flattened channel-major
    here) or an already flattened B×(C·P) vector.
    """

    def __init__(self, structure_encoder: StructureEncoder, decoder: Decoder, adain_mlps: AdaINParamMLPs):
        super().__init__()
        self.structure_encoder, self.decoder, self.adain_mlps = structure_encoder, decoder, adain_mlps

    @property
    def id_dim(self) -> int:
        return self.adain_mlps.id_dim

    def encode_structure(self, structure: torch.Tensor) -> torch.Tensor:
        return self.structure_encoder(structure)

    def adain_params(self, part_features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(weights, biases)`` for the decoder's AdaIN layers, each B×num_adain_params."""
        flat = flatten_parts(part_features) if part_features.dim() == 4 else part_features
        return self.adain_mlps(flat)

    def decode(self, structure_code: torch.Tensor, part_features: torch.Tensor) -> torch.Tensor:
        weights, biases = self.adain_params(part_features)
        return self.decoder(structure_code, weights, biases)

    def forward(self, structure: torch.Tensor, part_features: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode_structure(structure), part_features)


def build_generator(gen_cfg: Any = None, id_dim: Optional[int] = None) -> Generator:
    """Build the :class:`Generator` from a :class:`gclreid.config.GeneratorConfig` (or a mapping with its keys).

    ``id_dim`` is the length of the flattened identity feature (``IdentityEncoder.part_dim``: 8192 for
    ResNet-50 with 4 stripes, 2048 for ResNet-18). It overrides ``gen_cfg.id_dim``; one of the two
    must be given, and when both are they must agree. Weights are initialised with ``gen_cfg.init``.
    """
    get = lambda key, default: cfg_value(gen_cfg, key, default)  # noqa: E731
    cfg_id_dim = int(get("id_dim", 0) or 0)
    if id_dim is None:
        id_dim = cfg_id_dim
    elif cfg_id_dim and cfg_id_dim != id_dim:
        raise ConfigError(f"generator.id_dim={cfg_id_dim} does not match the identity encoder's part feature "
                          f"length {id_dim} (channels x model.num_parts); set generator.id_dim=0 to follow it")
    if not id_dim or id_dim < 1:
        raise ConfigError("the generator needs the identity feature length: pass id_dim (IdentityEncoder.part_dim) "
                          "or set generator.id_dim")
    activation, pad_type = get("activation", "lrelu"), get("pad_type", "reflect")
    encoder = StructureEncoder(int(get("input_channels", 1)), int(get("dim", 16)), int(get("n_downsample", 2)),
                               int(get("n_res", 4)), bool(get("aspp", True)), "in", activation, pad_type)
    decoder = Decoder(encoder.out_channels, int(get("dec_n_res", 4)), int(get("dec_n_upsample", 2)),
                      int(get("out_channels", 3)), activation, pad_type, "ln", float(get("dec_dropout", 0.0)),
                      bool(get("dec_tanh", False)))
    mlps = AdaINParamMLPs(int(id_dim), decoder.num_adain_params, int(get("id_chunks", 4)), int(get("mlp_dim", 512)),
                          int(get("mlp_blocks", 3)), activation)
    generator = init_weights(Generator(encoder, decoder, mlps), str(get("init", "kaiming")))
    return generator.to(memory_format=torch.channels_last) if get("channels_last", True) else generator

"""Parameter counts of GCL's and DG-Net's networks, per module (what ``gclreid summary`` prints).

The networks are built on PyTorch's ``meta`` device: shapes only, no memory and no initialisation
cost, so counting the 39 M parameters of the paper configuration takes a fraction of a second.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

import torch
from omegaconf import OmegaConf
from torch import nn

from .decoder import Generator, build_generator
from .discriminator import MultiScaleDiscriminator, build_discriminator
from .identity_encoder import IdentityEncoder, build_identity_encoder

__all__ = ["SUMMARY_KEYS", "DGNET_SUMMARY_KEYS", "count_parameters", "child_parameter_counts", "build_gcl_networks",
           "gcl_parameter_details", "gcl_parameter_counts", "build_dgnet_networks", "dgnet_parameter_counts",
           "dgnet_parameter_details", "parameter_counts", "parameter_details", "format_parameter_table"]

# The order (and the JSON keys) of `gclreid summary`.
SUMMARY_KEYS = ("identity_encoder", "structure_encoder", "decoder", "adain_mlps", "discriminator")
# The same for a DG-Net config (train.method: dgnet): Ea instead of Eid.
DGNET_SUMMARY_KEYS = ("appearance_encoder", "structure_encoder", "decoder", "adain_mlps", "discriminator")


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def child_parameter_counts(module: nn.Module) -> Dict[str, int]:
    """Parameters of each direct child module, by name (children without parameters are left out)."""
    counts = {name: count_parameters(child) for name, child in module.named_children()}
    return {name: n for name, n in counts.items() if n}


def _model_section(cfg: Any) -> Any:
    """The config's ``model`` section with ImageNet loading switched off (counting needs no weights)."""
    model = cfg.model
    if OmegaConf.is_config(model):
        model = OmegaConf.to_container(model, resolve=True)
    model = dict(model) if isinstance(model, dict) else copy.copy(vars(model))
    model["pretrained"] = False
    return model


def build_gcl_networks(cfg: Any, device: Any = "cpu") -> Tuple[IdentityEncoder, Generator, MultiScaleDiscriminator]:
    """Eid, the generator and D as configured by ``cfg`` (a :class:`gclreid.config.Config`), without
    ImageNet weights. ``device="meta"`` builds them without allocating or initialising anything."""
    with torch.device(device):
        eid = build_identity_encoder(_model_section(cfg))
        generator = build_generator(cfg.generator, eid.part_dim)
        discriminator = build_discriminator(cfg.generator)
    return eid, generator, discriminator


def gcl_parameter_counts(cfg: Any) -> Dict[str, int]:
    """``{identity_encoder, structure_encoder, decoder, adain_mlps, discriminator, total}`` parameter counts."""
    return _module_counts("identity_encoder", *build_gcl_networks(cfg, device="meta"))


def _module_counts(encoder_key: str, encoder: nn.Module, generator: Generator,
                   discriminator: MultiScaleDiscriminator) -> Dict[str, int]:
    """Parameter counts of the encoder (under `encoder_key`) and of the generator's parts and D, with the total."""
    counts = {encoder_key: count_parameters(encoder),
              "structure_encoder": count_parameters(generator.structure_encoder),
              "decoder": count_parameters(generator.decoder),
              "adain_mlps": count_parameters(generator.adain_mlps),
              "discriminator": count_parameters(discriminator)}
    counts["total"] = sum(counts.values())
    return counts


def gcl_parameter_details(cfg: Any) -> Dict[str, Dict[str, int]]:
    """Per summary key, the parameters of that module's direct children."""
    eid, generator, discriminator = build_gcl_networks(cfg, device="meta")
    return {"identity_encoder": child_parameter_counts(eid), **_generator_details(generator, discriminator)}


def _generator_details(generator: Generator, discriminator: MultiScaleDiscriminator) -> Dict[str, Dict[str, int]]:
    """Children counts of the structure encoder, decoder, AdaIN MLPs and D (shared by GCL and DG-Net)."""
    decoder = {**{f"res_blocks.{k}": v for k, v in child_parameter_counts(generator.decoder.res_blocks).items()},
               **{f"up.{k}": v for k, v in child_parameter_counts(generator.decoder.up).items()}}
    mlps = {f"{kind}.{k}": v for kind in ("mlp_w", "mlp_b")
            for k, v in child_parameter_counts(getattr(generator.adain_mlps, kind)).items()}
    return {"structure_encoder": child_parameter_counts(generator.structure_encoder.model), "decoder": decoder,
            "adain_mlps": mlps, "discriminator": child_parameter_counts(discriminator.scales)}


def _dgnet_num_classes(cfg: Any) -> int:
    from ..config import ConfigError
    n = int(cfg.dgnet.num_classes)
    if n < 2:
        raise ConfigError(f"dgnet.num_classes={n}: counting DG-Net's parameters needs the number of training "
                          "identities (751 for Market-1501); set dgnet.num_classes")
    return n


def build_dgnet_networks(cfg: Any, device: Any = "cpu") -> Tuple[nn.Module, Generator, MultiScaleDiscriminator]:
    """Ea, the generator and D of a DG-Net config (``dgnet.num_classes`` classes), without ImageNet weights.
    The generator and D are GCL's modules; Ea's appearance code is the generator's identity input."""
    from .appearance_encoder import build_appearance_encoder
    with torch.device(device):
        ea = build_appearance_encoder(_model_section(cfg), cfg.dgnet, _dgnet_num_classes(cfg))
        generator = build_generator(cfg.generator, ea.part_dim)
        discriminator = build_discriminator(cfg.generator)
    return ea, generator, discriminator


def dgnet_parameter_counts(cfg: Any) -> Dict[str, int]:
    """``{appearance_encoder, structure_encoder, decoder, adain_mlps, discriminator, total}`` for DG-Net."""
    return _module_counts("appearance_encoder", *build_dgnet_networks(cfg, device="meta"))


def dgnet_parameter_details(cfg: Any) -> Dict[str, Dict[str, int]]:
    """Per DG-Net summary key, the parameters of that module's direct children."""
    ea, generator, discriminator = build_dgnet_networks(cfg, device="meta")
    return {"appearance_encoder": child_parameter_counts(ea), **_generator_details(generator, discriminator)}


def _is_dgnet(cfg: Any) -> bool:
    train = getattr(cfg, "train", None)
    return getattr(train, "method", None) == "dgnet"


def parameter_counts(cfg: Any) -> Dict[str, int]:
    """:func:`dgnet_parameter_counts` for a DG-Net config (``train.method: dgnet``), else GCL's."""
    return dgnet_parameter_counts(cfg) if _is_dgnet(cfg) else gcl_parameter_counts(cfg)


def parameter_details(cfg: Any) -> Dict[str, Dict[str, int]]:
    return dgnet_parameter_details(cfg) if _is_dgnet(cfg) else gcl_parameter_details(cfg)


def format_parameter_table(counts: Dict[str, int], details: Optional[Dict[str, Dict[str, int]]] = None) -> str:
    """A two-column text table (module, parameters), optionally with each module's children indented."""
    rows: List[Tuple[str, int]] = []
    for key in [*[k for k in counts if k != "total"], "total"]:
        if key not in counts:
            continue
        rows.append((key, counts[key]))
        for child, n in (details or {}).get(key, {}).items():
            rows.append((f"  {child}", n))
    width = max(len(name) for name, _ in rows)
    lines = [f"{'module':<{width}}  {'parameters':>12}", f"{'-' * width}  {'-' * 12}"]
    lines += [f"{name:<{width}}  {n:>12,}" for name, n in rows]
    return "\n".join(lines)

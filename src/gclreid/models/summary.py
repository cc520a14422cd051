"""Parameter counts of GCL's networks, per module (what ``gclreid summary`` prints).

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

__all__ = ["SUMMARY_KEYS", "count_parameters", "child_parameter_counts", "build_gcl_networks", "gcl_parameter_details",
           "gcl_parameter_counts", "format_parameter_table"]

# The order (and the JSON keys) of `gclreid summary`.
SUMMARY_KEYS = ("identity_encoder", "structure_encoder", "decoder", "adain_mlps", "discriminator")


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
    eid, generator, discriminator = build_gcl_networks(cfg, device="meta")
    counts = {"identity_encoder": count_parameters(eid),
              "structure_encoder": count_parameters(generator.structure_encoder),
              "decoder": count_parameters(generator.decoder),
              "adain_mlps": count_parameters(generator.adain_mlps),
              "discriminator": count_parameters(discriminator)}
    counts["total"] = sum(counts.values())
    return counts


def gcl_parameter_details(cfg: Any) -> Dict[str, Dict[str, int]]:
    """Per summary key, the parameters of that module's direct children."""
    eid, generator, discriminator = build_gcl_networks(cfg, device="meta")
    modules = {"identity_encoder": eid, "structure_encoder": generator.structure_encoder.model,
               "decoder": generator.decoder, "adain_mlps": generator.adain_mlps, "discriminator": discriminator.scales}
    details = {key: child_parameter_counts(module) for key, module in modules.items()}
    details["decoder"] = {**{f"res_blocks.{k}": v for k, v in child_parameter_counts(generator.decoder.res_blocks).items()},
                          **{f"up.{k}": v for k, v in child_parameter_counts(generator.decoder.up).items()}}
    details["adain_mlps"] = {f"{kind}.{k}": v for kind in ("mlp_w", "mlp_b")
                             for k, v in child_parameter_counts(getattr(generator.adain_mlps, kind)).items()}
    return details


def format_parameter_table(counts: Dict[str, int], details: Optional[Dict[str, Dict[str, int]]] = None) -> str:
    """A two-column text table (module, parameters), optionally with each module's children indented."""
    rows: List[Tuple[str, int]] = []
    for key in [*SUMMARY_KEYS, "total"]:
        if key not in counts:
            continue
        rows.append((key, counts[key]))
        for child, n in (details or {}).get(key, {}).items():
            rows.append((f"  {child}", n))
    width = max(len(name) for name, _ in rows)
    lines = [f"{'module':<{width}}  {'parameters':>12}", f"{'-' * width}  {'-' * 12}"]
    lines += [f"{name:<{width}}  {n:>12,}" for name, n in rows]
    return "\n".join(lines)

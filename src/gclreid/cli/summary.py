"""`gclreid summary`: parameter counts of GCL's networks (Eid, Estr, decoder, AdaIN MLPs, D) or, for a DG-Net
config, DG-Net's (Ea instead of Eid)."""
from __future__ import annotations

import argparse
import json

from .common import add_config_arguments, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "summary", help="parameter counts of the identity (or DG-Net appearance) encoder, generator and discriminator",
        description="Build GCL's networks as the config describes them (model.* for the identity encoder, "
                    "generator.* for the structure encoder, decoder, AdaIN MLPs and discriminator) and print "
                    "their parameter counts. With train.method=dgnet the identity encoder is DG-Net's appearance "
                    "encoder (two classifier heads of dgnet.num_classes identities). Nothing is loaded or "
                    "allocated: the networks are built on the meta device.",
        epilog="examples:\n  gclreid summary --config configs/gcl_market1501.yaml --json\n"
               "  gclreid summary --config configs/dgnet_market1501.yaml\n"
               "  gclreid summary model.arch=resnet18 generator.dim=8 generator.mlp_dim=128 --detail",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--detail", action="store_true", help="also list each module's direct children (table only)")
    add_config_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..models.summary import format_parameter_table, parameter_counts, parameter_details

    cfg = config_from_args(args)
    counts = parameter_counts(cfg)
    if args.json:
        print(json.dumps(counts))
        return 0
    if cfg.train.method == "dgnet":
        print(f"DG-Net appearance encoder: {cfg.model.arch}, last stride {cfg.model.last_stride}, {cfg.model.num_parts} "
              f"parts (max-pooled), heads {cfg.dgnet.bottleneck}-d x {cfg.dgnet.num_classes} identities; images "
              f"{cfg.data.height}x{cfg.data.width}")
    else:
        print(f"identity encoder: {cfg.model.arch}, last stride {cfg.model.last_stride}, {cfg.model.num_parts} parts, "
              f"embedding {cfg.model.embed_dim}; images {cfg.data.height}x{cfg.data.width}")
    print(format_parameter_table(counts, parameter_details(cfg) if args.detail else None))
    return 0

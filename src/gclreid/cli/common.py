"""Argument helpers shared by subcommands."""
from __future__ import annotations

import argparse

from ..config import load_config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config FILE` plus trailing `key.sub=value` overrides."""
    parser.add_argument("--config", metavar="FILE", help="YAML config (may inherit with `_base_:`)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. data.root=/data/market eval.flip=true")


def config_from_args(args: argparse.Namespace, extra_overrides=()):
    return load_config(args.config, [*extra_overrides, *args.overrides])

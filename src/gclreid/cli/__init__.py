"""The `gclreid` command. Each subcommand lives in its own module in this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a function taking the parsed
arguments and returning an exit code. Subcommands are thin: they call into the library modules."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from .. import __version__
from ..errors import GclreidError

# Module names under gclreid.cli, in the order they appear in --help.
COMMANDS: list = ["demo", "synth", "datasets", "train", "evaluate", "embed", "search", "export", "fid", "generate", "summary", "plot", "structures", "weights"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gclreid",
        description="Person re-identification without identity labels: GCL, TMP, cluster contrast, DG-Net.",
    )
    parser.add_argument("--version", action="version", version=f"gclreid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except GclreidError as exc:
        print(f"gclreid {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gclreid {args.command}: interrupted", file=sys.stderr)
        return 130

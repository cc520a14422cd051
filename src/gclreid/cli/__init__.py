"""The `gclreid` command. Each subcommand lives in its own module in this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a function taking the parsed
arguments and returning an exit code. Subcommands are thin: they call into the library modules."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
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
        with _logging_on_stderr():
            return int(args.func(args) or 0)
    except GclreidError as exc:
        print(f"gclreid {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gclreid {args.command}: interrupted", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _logging_on_stderr():
    """gclreid's log lines (training progress, evaluation, warnings) on stderr with a timestamp while a
    command runs — unless the process already configured logging (the root logger has handlers, e.g. a
    program calling :func:`main`, or pytest), which then receives them, as with ``logging.basicConfig``."""
    from ..progress import disable_logging, enable_logging
    if logging.getLogger().handlers or any(getattr(h, "_gclreid", False) for h in logging.getLogger("gclreid").handlers):
        yield
        return
    enable_logging("INFO")
    try:
        yield
    finally:
        disable_logging()

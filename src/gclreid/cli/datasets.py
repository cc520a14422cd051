"""`gclreid datasets`: list the dataset readers, or read a dataset and print its statistics."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Dict, List

from ..errors import GclreidError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "datasets", help="list dataset readers, or print images/ids/cameras per split of a dataset",
        description="Read a dataset as released and print the number of images, identities and cameras "
                    "of its train, query and gallery splits.",
        epilog="examples:\n  gclreid datasets --list\n"
               "  gclreid datasets --name market1501 --root /data/Market-1501-v15.09.15\n"
               "  gclreid datasets --name msmt17 --root /data/msmt17 --option version=1 --option include_val=false\n"
               "  gclreid datasets --name folder --root /data/mine --option unlabeled=true --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="list the registered dataset names and their options")
    parser.add_argument("--name", help="dataset name (see --list)")
    parser.add_argument("--root", help="dataset folder")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="reader option, repeatable (e.g. include_val=false, pattern=..., unlabeled=true)")
    parser.add_argument("--json", action="store_true",
                        help='print {"train": {...}, "query": {...}, "gallery": {...}} as JSON')
    parser.add_argument("--check-images", action="store_true",
                        help="also decode every image and report those that do not decode (exit code 1 if any)")
    parser.set_defaults(func=run)


def parse_options(items: List[str]) -> Dict[str, str]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise GclreidError(f"--option {item!r} must look like key=value")
        options[key.strip()] = value
    return options


def run(args: argparse.Namespace) -> int:
    from ..data import build_dataset, check_images, dataset_aliases, dataset_options, get_dataset_class, list_datasets

    if args.list:
        for name in list_datasets():
            cls = get_dataset_class(name)
            aliases = dataset_aliases(name)
            options = ", ".join(f"{k}={p.default!r}" for k, p in dataset_options(cls).items()
                                if p.default is not p.empty)
            doc = (cls.__doc__ or "").strip().splitlines()[0].replace("``", "") if cls.__doc__ else ""
            print(f"{name}{' (' + ', '.join(aliases) + ')' if aliases else ''}: {doc}")
            if options:
                print(f"    options: {options}")
        return 0
    if not args.name or not args.root:
        raise GclreidError("give --name and --root (or --list to see the dataset names)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = build_dataset(args.name, args.root, **parse_options(args.option))
    for w in caught:
        print(f"gclreid datasets: warning: {w.message}", file=sys.stderr)
    stats = dataset.stats()
    if args.json:
        print(json.dumps(stats))
    else:
        print(f"{dataset.name} at {dataset.dataset_dir}")
        print(f"{'split':<8} {'images':>8} {'ids':>6} {'cams':>5}")
        for split, row in stats.items():
            print(f"{split:<8} {row['images']:>8} {row['ids']:>6} {row['cams']:>5}")
        dropped = {s: n for s, n in dataset.dropped.items() if n}
        if dropped:
            print("dropped (junk, pid -1): " + ", ".join(f"{s} {n}" for s, n in dropped.items()))
    if args.check_images:
        records = dataset.train + dataset.query + dataset.gallery
        bad = check_images([r.path for r in records], progress=sys.stderr.isatty())
        for _, path, reason in bad:
            print(f"gclreid datasets: bad image: {reason}", file=sys.stderr)
        print(f"checked {len(records)} images: {len(bad)} do not decode", file=sys.stderr)
        return 1 if bad else 0
    return 0

"""`gclreid synth`: generate a SynthReID dataset (Market-1501 layout + structure maps + true views)."""
from __future__ import annotations

import argparse
import json
import os

from ..errors import GclreidError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth", help="generate SynthReID, a synthetic multi-camera person dataset with 3D ground truth",
        description="Generate SynthReID in Market-1501 layout (bounding_box_train/, query/, bounding_box_test/) "
                    "with grey structure maps at 0..315 degrees, true novel views, synthreid.json and a "
                    "contact sheet. The same seed gives byte-identical files.",
        epilog="examples:\n  gclreid synth --out data/synthreid-demo --preset demo\n"
               "  gclreid synth --out data/synthreid --preset market --workers 8\n"
               "  gclreid synth --out /tmp/s --preset demo --train-ids 20 --test-ids 10 --cams 3 "
               "--height 256 --width 128\n"
               "read it with: gclreid datasets --name synthreid --root DIR",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (must be empty or absent unless --overwrite)")
    parser.add_argument("--preset", default="demo", help="demo (small, CPU-friendly) or market (Market-1501 scale)")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--train-ids", type=int, help="number of training identities")
    parser.add_argument("--test-ids", type=int, help="number of test identities (query + gallery)")
    parser.add_argument("--cams", type=int, help="number of cameras, 1..9 (Market names have one camera digit)")
    parser.add_argument("--distractors", type=int, help="gallery images of other people, named 0000_…")
    parser.add_argument("--images-per-id", type=float, help="mean images per identity (train and test)")
    parser.add_argument("--height", type=int, help="image height (2 x width; default 128)")
    parser.add_argument("--width", type=int, help="image width (default 64)")
    parser.add_argument("--ssaa", type=int, help="supersampling of the colour renders, 1..4 (default 2)")
    parser.add_argument("--no-views", action="store_true", help="do not write the true novel views")
    parser.add_argument("--workers", type=int, default=0,
                        help="worker processes (default 0: one per CPU core, at most 8)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the SynthReID outputs of an existing folder (other files are left alone)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..synth import generate, preset
    from ..synth.writer import tune_malloc

    if (args.height is None) != (args.width is None):
        raise GclreidError("synth: give --height and --width together (2:1, e.g. --height 256 --width 128)")
    per_id = args.images_per_id
    cfg = preset(args.preset, seed=args.seed, train_ids=args.train_ids, test_ids=args.test_ids, cams=args.cams,
                 distractors=args.distractors, height=args.height, width=args.width, ssaa=args.ssaa,
                 train_images_per_id=per_id, test_images_per_id=per_id,
                 views=False if args.no_views else None)
    workers = args.workers
    if workers is None or workers < 0:
        raise GclreidError(f"synth: --workers {workers} is invalid: expected 0 (auto) or a positive integer")
    if workers == 0:
        workers = max(1, min(8, os.cpu_count() or 1))
    tune_malloc()  # a command-line process: keep freed render buffers (fewer page faults)
    summary = generate(cfg, args.out, workers=workers, overwrite=args.overwrite, progress=not args.no_progress)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"SynthReID written to {summary['out']}: {summary['train']} train images "
              f"({summary['train_ids']} ids), {summary['query']} query, {summary['gallery']} gallery "
              f"({summary['distractors']} distractors), {cfg.cams} cameras, {cfg.height}x{cfg.width}; "
              f"{summary['seconds']:.1f} s, {summary['images_per_second']:.0f} images/s with {workers} worker(s)")
        print(f"contact sheet: {os.path.join(summary['out'], 'contact_sheet.png')}")
    return 0

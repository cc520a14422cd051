"""`gclreid structures`: make (or check) the grey structure maps of a dataset in the GCL layout."""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys

from ..errors import GclreidError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "structures", help="structure maps (0° and 45…315°) for a dataset: estimate, SMPL, SynthReID truth, or check",
        description="Write grey structure maps for every image of a dataset in the GCL layout "
                    "(<out>/<train|test>/render[_<deg>]/<relative image path>), with a per-image record "
                    "(structures.jsonl), a summary and a contact sheet. Resumable: images whose maps all exist "
                    "are skipped. --source precomputed only checks an existing folder (e.g. the released GCL meshes).",
        epilog="examples:\n"
               "  gclreid structures --dataset market1501 --root data/market --out data/market/structures\n"
               "  gclreid structures --dataset synthreid --root data/synth --out /tmp/s --source synth\n"
               "  gclreid structures --dataset market1501 --root data/market --out /tmp/m --source smpl \\\n"
               "      --smpl-model SMPL_NEUTRAL.pkl --smpl-params hmr_market.npz\n"
               "  gclreid structures --dataset market1501 --root data/market --out gcl_meshes/market --source precomputed",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="dataset name (see `gclreid datasets`)")
    parser.add_argument("--root", required=True, help="dataset root folder")
    parser.add_argument("--out", required=True, help="structure root to write (or, for precomputed, to check)")
    parser.add_argument("--source", default="estimate", choices=("estimate", "smpl", "synth", "precomputed"),
                        help="estimate from the image (default), SMPL parameters + model, SynthReID ground truth, or check "
                             "a precomputed folder")
    parser.add_argument("--estimator", default="auto", choices=("auto", "mediapipe", "fallback"),
                        help="for --source estimate: MediaPipe Pose (a separate Python with mediapipe, made by "
                             "`make pose-env`) with the silhouette fallback for images it misses or whose checks fail, "
                             "or the fallback alone; auto = MediaPipe if an interpreter is found (the command says "
                             "which one runs)")
    parser.add_argument("--pose-python", metavar="PYTHON",
                        help="a Python interpreter that has mediapipe==0.10.14 (default: $GCLREID_POSE_PYTHON, or this "
                             "one if it has mediapipe); `make pose-env` makes .venv-pose/bin/python")
    parser.add_argument("--smpl-params", metavar="FILE", help="for --source smpl: .npz of per-image camera, pose, shape")
    parser.add_argument("--smpl-model", metavar="FILE", help="for --source smpl: SMPL model file (.npz or .pkl)")
    parser.add_argument("--smpl-missing", default="error", choices=("error", "fallback"),
                        help="for --source smpl: images without parameters stop the run (default) or get the "
                             "silhouette fallback (counted as fallback)")
    parser.add_argument("--angles", default="45,90,135,180,225,270,315", help="rotation angles besides 0 (default 45…315)")
    parser.add_argument("--split", default="all", choices=("train", "test", "all"),
                        help="train images, test images (query + gallery), or all (default)")
    parser.add_argument("--height", type=int, default=128, help="map height (2 x width; default 128)")
    parser.add_argument("--width", type=int, default=64, help="map width (default 64)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--batch", type=int, default=32, help="images per rendering batch (default 32)")
    parser.add_argument("--limit", type=int, help="only the first N images (for a quick look)")
    parser.add_argument("--contact-rows", type=int, default=8,
                        help="rows of the contact sheet grid, 4 images each (0: none)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="dataset reader option")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def _records(args: argparse.Namespace):
    from ..data import build_dataset
    options = {}
    for item in args.option:
        if "=" not in item:
            raise GclreidError(f"structures: --option {item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        options[key] = value
    ds = build_dataset(args.dataset, args.root, **options)
    records = []
    if args.split in ("train", "all"):
        records += list(ds.train)
    if args.split in ("test", "all"):
        records += list(ds.query) + list(ds.gallery)
    if args.limit is not None:
        records = records[:max(0, args.limit)]
    return records


def run(args: argparse.Namespace) -> int:
    from ..body import check_size
    from ..structures import parse_angles
    from ..structures.sources import make_source, validate_precomputed
    from ..structures.writer import write_structures

    try:
        angles = parse_angles(args.angles)
    except ValueError as exc:
        raise GclreidError(f"structures: --angles {args.angles!r}: {exc}") from None
    check_size(args.height, args.width)
    if args.workers < 1:
        raise GclreidError(f"structures: --workers {args.workers} is invalid: expected a positive integer")
    if args.batch < 1:
        raise GclreidError(f"structures: --batch {args.batch} is invalid: expected a positive integer")
    records = _records(args)
    if args.source == "precomputed":
        report = validate_precomputed(args.out, records, angles)
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            print(f"{report['root']}: {report['complete']}/{report['images']} images have all "
                  f"{1 + len(angles)} maps; {report['files_missing']} files missing")
            for folder, n in sorted(report["missing_per_folder"].items()):
                print(f"  missing in {folder}: {n}")
            for path in report["first_missing"]:
                print(f"  e.g. {path}")
            for line in report["bad_files"]:
                print(f"  bad: {line}")
        return 0 if report["ok"] else 1
    options = {"estimator": args.estimator, "pose_python": args.pose_python,
               "smpl_params": args.smpl_params, "smpl_model": args.smpl_model, "smpl_missing": args.smpl_missing}
    factory = functools.partial(make_source, args.source, os.path.abspath(args.root), **options)
    source = factory()  # fail early, in this process, on bad options or missing files
    try:
        if hasattr(source, "check_records"):  # e.g. smpl: images without parameters
            source.check_records(records)
        describe = getattr(source, "description", None)
        if describe:
            print(f"structures: {describe}", file=sys.stderr, flush=True)
            if getattr(source, "estimator", None) == "fallback" and args.estimator == "auto":
                # The workers must not try (and fail) to start MediaPipe again.
                factory = functools.partial(make_source, args.source, os.path.abspath(args.root),
                                            **{**options, "estimator": "fallback"})
    finally:
        source.close()
    summary = write_structures(records, args.out, factory, angles, args.height, args.width, workers=args.workers,
                               batch=args.batch, progress=not args.no_progress, contact_rows=args.contact_rows,
                               describe=describe)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        rate = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        speed = summary["images_per_second"]
        print(f"structures written to {summary['out']}: {summary['processed']} images made, {summary['skipped']} "
              f"already complete; counts {summary['counts']}; detection rate {rate(summary['detection_rate'])}, "
              f"fallback rate {rate(summary['fallback_rate'])}; "
              + (f"{speed:.1f} images/s" if speed else "nothing to do"))
        if summary.get("reasons"):
            print("reasons: " + ", ".join(f"{k} {v}" for k, v in summary["reasons"].items()))
        if summary.get("contact_sheet"):
            print(f"contact sheet: {summary['contact_sheet']}")
    return 0

"""`gclreid embed`: features of a folder, a dataset split or a list of images → one .npz file."""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path
from typing import List, Tuple


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed", help="embed a folder, a dataset split or a list of images with a checkpoint → features .npz",
        description="Embed images with the ReID encoder of a gclreid checkpoint (any method and backbone), "
                    "preprocessed as in evaluation (the checkpoint's image size, ImageNet normalisation, its "
                    "eval.flip unless --flip/--no-flip), and write one .npz: features (float32 N×D, "
                    "L2-normalised), paths (absolute), pids and camids (from the dataset reader; -1 where "
                    "unknown) and meta (JSON: checkpoint, weights hash, preprocessing, source). "
                    "`gclreid search` ranks such a file. See docs/inference.md.",
        epilog="examples:\n"
               "  gclreid embed --checkpoint runs/gcl/last.pt --images crops/ --out gallery.npz\n"
               "  gclreid embed --checkpoint last.pt --dataset market1501 --root data/market --split gallery "
               "--out market_gallery.npz\n"
               "  gclreid embed --checkpoint last.pt --list images.txt --out feats.npz --batch-size 128 --no-flip",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="gclreid checkpoint holding the encoder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR", help="every image (jpg/jpeg/png/bmp/webp) under DIR, recursively, "
                                                     "in sorted path order")
    src.add_argument("--dataset", metavar="NAME", help="a dataset reader (see `gclreid datasets --list`); with "
                                                       "--root and --split")
    src.add_argument("--list", metavar="FILE", help="a text file with one image path per line (relative paths are "
                                                    "relative to the file's folder; blank lines and # comments "
                                                    "ignored)")
    p.add_argument("--root", metavar="DIR", help="dataset root (with --dataset)")
    p.add_argument("--split", default="gallery", choices=("train", "query", "gallery"),
                   help="dataset split to embed (with --dataset; default gallery)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset reader option, repeatable (with --dataset), as for `gclreid datasets`")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="output file (written atomically)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average each image's features with its mirror's (default: the checkpoint's eval.flip)")
    p.add_argument("--model-key", default=None,
                   help="model inside the checkpoint (default identity_encoder, or appearance_encoder for DG-Net)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--workers", type=int, default=2, help="image-decoding worker processes (default 2; 0: none)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="decode every image first and leave out (and list in meta) those that do not decode, "
                        "instead of stopping at the first one")
    p.set_defaults(func=run)


def image_list(args: argparse.Namespace) -> Tuple[List[str], List[int], List[int], dict]:
    """(paths, pids, camids, source description) of what --images / --dataset / --list name."""
    from ..data import build_dataset, find_images
    from ..errors import DatasetError, GclreidError
    from .datasets import parse_options

    if args.images:
        folder = Path(args.images)
        if not folder.is_dir():
            raise DatasetError(f"--images {folder}: not a folder")
        paths = [os.path.abspath(folder / rel) for rel in find_images(str(folder), recursive=True)]
        if not paths:
            raise DatasetError(f"--images {folder}: no image files (jpg/jpeg/png/bmp/webp) under it")
        return paths, [-1] * len(paths), [-1] * len(paths), {"kind": "images", "folder": os.path.abspath(folder)}
    if args.dataset:
        if not args.root:
            raise GclreidError("--dataset needs --root DIR")
        options = parse_options(args.option)
        ds = build_dataset(args.dataset, args.root, **options)
        records = getattr(ds, args.split)
        if not records:
            raise DatasetError(f"dataset {args.dataset!r} at {ds.root} has no {args.split} images")
        return ([os.path.abspath(r.path) for r in records], [int(r.pid) for r in records],
                [int(r.camid) for r in records],
                {"kind": "dataset", "dataset": args.dataset, "root": ds.root, "split": args.split, "options": options})
    listing = Path(args.list)
    try:
        lines = listing.read_text().splitlines()
    except OSError as exc:
        raise DatasetError(f"--list {listing}: cannot read it ({exc.strerror or exc})") from None
    base = listing.resolve().parent
    paths = [os.path.abspath(base / line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not paths:
        raise DatasetError(f"--list {listing}: no image paths in it")
    return paths, [-1] * len(paths), [-1] * len(paths), {"kind": "list", "file": str(listing.resolve())}


def run(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..data import check_images
    from ..errors import GclreidError
    from ..inference import Encoder, save_embeddings

    if args.batch_size < 1 or args.workers < 0:
        raise GclreidError(f"--batch-size {args.batch_size} / --workers {args.workers}: expected >= 1 / >= 0")
    if args.dataset is None and (args.option or args.root):
        raise GclreidError("--root and --option only apply with --dataset")
    encoder = Encoder.from_checkpoint(args.checkpoint, device=args.device, flip=args.flip, model_key=args.model_key)
    paths, pids, camids, source = image_list(args)
    skipped = []
    if args.skip_bad_images:
        bad = check_images(paths, progress=sys.stderr.isatty())
        if bad:
            drop = {pos for pos, _, _ in bad}
            skipped = [{"path": path, "reason": reason} for _, path, reason in bad]
            keep = [i for i in range(len(paths)) if i not in drop]
            paths, pids, camids = [paths[i] for i in keep], [pids[i] for i in keep], [camids[i] for i in keep]
            print(f"gclreid embed: skipping {len(bad)} image(s) that do not decode: "
                  + ", ".join(s["path"] for s in skipped[:3]) + (", …" if len(bad) > 3 else ""), file=sys.stderr)
            if not paths:
                raise GclreidError("no image decodes; nothing to embed")
    features = encoder.embed(paths, batch_size=args.batch_size, workers=args.workers, progress=True)
    meta = {"checkpoint": encoder.checkpoint, "model_key": encoder.model_key, "method": encoder.method,
            "arch": encoder.arch, "weights_sha256": encoder.weights_sha256, "preprocessing": encoder.preprocessing,
            "normalized": True, "source": source, "skipped": skipped, "gclreid_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    out = save_embeddings(args.out, features, paths, pids, camids, meta)
    print(f"embedded {len(paths)} images ({features.shape[1]}-d, flip {'on' if encoder.flip else 'off'}) → {out}")
    return 0

"""`gclreid generate`: write the generated images of a trained GCL or DG-Net model to a folder (for FID)."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate", help="write a GCL / DG-Net checkpoint's generated test images to a folder (for `gclreid fid`)",
        description="Generate images from test (or training) images with the generator of a GCL (stage 2 or 3) or "
                    "DG-Net checkpoint, built from the checkpoint's own config plus KEY=VALUE overrides. GCL: the "
                    "novel view at each angle, OUT/<angle>/<stem>.png (structure maps from gcl.structure_root, "
                    "default <data.root>/structures; default angles: every one of 45..315 whose maps exist). "
                    "DG-Net: each image's appearance with the structure of a random other image of a different "
                    "identity (--seed), OUT/generated/<stem>_from_<stem2>.png. Both write the inputs resized to the "
                    "training size to OUT/real/ and a record to OUT/generate.json.",
        epilog="examples:\n"
               "  gclreid generate --checkpoint runs/gcl/last.pt --out gen/gcl\n"
               "  gclreid fid gen/gcl/real gen/gcl/90 --inception-weights pt_inception-2015-12-05-6726825d.pth\n"
               "  gclreid generate --checkpoint runs/gcl/last.pt --out gen/q --angles 90 180 --count 500\n"
               "  gclreid generate --checkpoint runs/dgnet/last.pt --out gen/dgnet --split gallery --seed 1\n"
               "  gclreid generate --checkpoint last.pt --out gen data.root=/new/place/market   # data moved",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="gclreid checkpoint of a gcl or dgnet run")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--split", default="query", choices=("query", "gallery", "train"),
                   help="images to generate from (default query: both papers generate from the test set)")
    p.add_argument("--count", type=int, default=None, metavar="N",
                   help="N images spread evenly over the split (default: all of them)")
    p.add_argument("--seed", type=int, default=0, help="DG-Net: seed of the structure partners (default 0)")
    p.add_argument("--angles", type=int, nargs="+", metavar="DEG",
                   help="GCL: angles to generate (45, 90, ..., 315; 0 = reconstruction from the original map); "
                        "default every angle of 45..315 whose structure maps exist for all selected images "
                        "(KEY=VALUE overrides go before --angles)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete images an earlier run left in the output folders (else that is an error)")
    p.add_argument("--json", action="store_true", help="print generate.json instead of a summary")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides on the checkpoint's config, e.g. data.root=/data/market data.workers=4")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import GclreidError
    from ..evaluation.generate import generate_images
    from ..runtime import resolve_device

    try:
        device = resolve_device(args.device)
    except (ValueError, RuntimeError) as exc:
        raise GclreidError(f"--device {args.device}: {exc}") from None
    report = generate_images(args.checkpoint, args.out, split=args.split, count=args.count, seed=args.seed,
                             angles=args.angles, device=device, overrides=args.overrides,
                             batch_size=args.batch_size, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(report))
        return 0
    folders = ", ".join(f"{f}/ ({report['files'][k]})" for k, f in report["folders"].items())
    print(f"{report['method']}: {report['images']} {report['split']} images of {report['dataset']} → {args.out}: "
          f"{folders}")
    first = next(k for k in report["folders"] if k != "real")
    print(f"FID: gclreid fid {args.out}/real {args.out}/{report['folders'][first]} --inception-weights FILE")
    return 0

"""`gclreid train`: run a training method from a config on the shared loop."""
from __future__ import annotations

import argparse
import logging
import sys

from .common import add_config_arguments, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a method (tmp, cluster_contrast, supervised, gcl, dgnet) from a config",
        description="Train with the method named by train.method. Each epoch: pseudo labels (unsupervised "
                    "methods) → training → evaluation → checkpoint <run.out>/last.pt. Writes config.yaml, "
                    "metrics.jsonl, results.json and TensorBoard scalars in run.out. dgnet first trains its "
                    "teacher (a supervised run) into <run.out>/teacher/ unless dgnet.teacher names one.",
        epilog="examples:\n  gclreid train --config configs/tmp_synthreid.yaml\n"
               "  gclreid train --config configs/dgnet_synthreid.yaml   # teacher, then DG-Net\n"
               "  gclreid train --config configs/cluster_contrast_market1501.yaml data.root=/data run.out=runs/cc\n"
               "  gclreid train --config configs/tmp_synthreid.yaml --resume   # continue from run.out/last.pt",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                   help="resume from CHECKPOINT, or from <run.out>/last.pt when no path is given")
    add_config_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.loop import train
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    cfg = config_from_args(args)
    record = train(cfg, resume=args.resume)
    ev = record.get("eval")
    if ev:
        print(f"final: mAP {100 * ev['mAP']:.2f}%  rank-1 {100 * ev['rank1']:.2f}%  (run folder {cfg.run.out})")
    else:
        print(f"finished; run folder {cfg.run.out}")
    return 0

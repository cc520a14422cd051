"""`gclreid train`: run a training method from a config on the shared loop."""
from __future__ import annotations

import argparse
import logging
import os
import warnings

from .common import add_config_arguments, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a method (tmp, cluster_contrast, supervised, gcl, dgnet) from a config",
        description="Train with the method named by train.method. Each epoch: pseudo labels (unsupervised "
                    "methods) → training → evaluation → checkpoint <run.out>/last.pt. Writes config.yaml, "
                    "metrics.jsonl, results.json and TensorBoard scalars in run.out. dgnet first trains its "
                    "teacher (a supervised run) into <run.out>/teacher/ unless dgnet.teacher names one. "
                    "A run.out that already holds a run (last.pt, metrics.jsonl or results.json) is refused "
                    "unless --resume continues it or --overwrite replaces it (docs/safety.md).",
        epilog="examples:\n  gclreid train --config configs/tmp_synthreid.yaml\n"
               "  gclreid train --config configs/dgnet_synthreid.yaml   # teacher, then DG-Net\n"
               "  gclreid train --config configs/cluster_contrast_market1501.yaml data.root=/data run.out=runs/cc\n"
               "  gclreid train --config configs/tmp_synthreid.yaml --resume   # continue from run.out/last.pt\n"
               "  gclreid train --config configs/tmp_synthreid.yaml --resume train.epochs=400   # train longer\n"
               "  gclreid train --config configs/tmp_synthreid.yaml --resume --allow-changes optim.lr=0.1\n"
               "  gclreid train --config configs/tmp_synthreid.yaml --overwrite   # start the run over\n"
               "  torchrun --nproc_per_node 4 -m gclreid train --config configs/cluster_contrast_market1501.yaml"
               "   # 4 GPUs (docs/training.md)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resume", nargs="?", const="last", default=None, metavar="CHECKPOINT",
                   help="resume from CHECKPOINT, or from <run.out>/last.pt when no path is given (an error "
                        "when there is none); a KEY=VALUE right after --resume is an override, not a path")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in a run.out that already holds one; its files are replaced once the "
                        "new run writes its first checkpoint")
    p.add_argument("--allow-changes", action="store_true",
                   help="with --resume: continue with settings that differ from the checkpoint's (applied, "
                        "optimiser settings included, and recorded in config_history.jsonl); without it such "
                        "a resume is refused with the differing keys listed")
    add_config_arguments(p)
    p.set_defaults(func=run)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    logging.getLogger("gclreid").warning("warning: %s", str(message).replace("\n", " "))


def _is_override(value: str) -> bool:
    """KEY=VALUE with a dotted-identifier key (a checkpoint path is never taken for one: it exists, or
    its part before '=' is not such a key)."""
    key = value.split("=", 1)[0]
    return "=" in value and not os.path.exists(value) and all(part.isidentifier() for part in key.split("."))


def run(args: argparse.Namespace) -> int:
    from ..engine.loop import train
    from ..errors import GclreidError
    if args.resume not in (None, "last") and _is_override(args.resume):
        # `--resume train.epochs=80`: argparse took the override for the optional CHECKPOINT
        args.overrides.insert(0, args.resume)
        args.resume = "last"
    if args.allow_changes and not args.resume:
        raise GclreidError("--allow-changes applies to a resumed run; add --resume (or drop --allow-changes)")
    cfg = config_from_args(args)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning  # dataset count warnings and the like: one log line each
        record = train(cfg, resume=args.resume, overwrite=args.overwrite, allow_changes=args.allow_changes)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports for all processes
        return 0
    ev = record.get("eval")
    if ev:
        print(f"final: mAP {100 * ev['mAP']:.2f}%  rank-1 {100 * ev['rank1']:.2f}%  (run folder {cfg.run.out})")
    else:
        print(f"finished; run folder {cfg.run.out}")
    return 0

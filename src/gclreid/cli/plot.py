"""`gclreid plot`: (re)draw a run's training curves from its metrics.jsonl, or overlay several runs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot", help="draw a run's training curves (curves.png) or compare the mAP of several runs",
        description="With one RUN_DIR: draw RUN_DIR/curves.png from RUN_DIR/metrics.jsonl, as training does "
                    "after every epoch: evaluation mAP and rank-1, losses, training accuracy, cluster count and "
                    "outlier share, cluster quality against the true identities, novel-view SSIM (GCL) or SSIM "
                    "diversity (DG-Net), learning rate; each panel only when the run has its data. With several "
                    "RUN_DIRs: their mAP and rank-1 curves overlaid, one line per run labelled with its folder "
                    "name. A RUN_DIR may also be given as its metrics.jsonl file. A run still training (or "
                    "killed) is drawn up to its last complete epoch.",
        epilog="examples:\n  gclreid plot runs/demo/stage3\n"
               "  gclreid plot runs/demo/stage1 runs/demo/stage3 --out compare.png\n"
               "  gclreid plot runs/cc/metrics.jsonl --out /tmp/cc.png",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folder(s) holding metrics.jsonl")
    p.add_argument("--out", metavar="FILE",
                   help="PNG to write (default: RUN_DIR/curves.png for one run, curves_compare.png in the "
                        "current folder for several)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.plots import METRICS_FILE, read_records, write_comparison_plot, write_training_plot
    from ..errors import GclreidError

    for d in args.run_dirs:
        path = Path(d)
        metrics = path if path.is_file() else path / METRICS_FILE
        if not path.exists():
            raise GclreidError(f"{d}: no such run folder")
        if not metrics.is_file():
            raise GclreidError(f"{d}: no {METRICS_FILE} in this folder (expected a gclreid train run folder)")
        if not read_records(metrics):
            raise GclreidError(f"{metrics}: no complete epoch record yet")
    try:
        if len(args.run_dirs) == 1:
            written = write_training_plot(args.run_dirs[0], args.out, strict=True)
            if written is None:
                raise GclreidError(f"{args.run_dirs[0]}: the epoch records hold no numbers to draw")
        else:
            for d in args.run_dirs:
                path = Path(d)
                records = read_records(path if path.is_file() else path / METRICS_FILE)
                if not any(isinstance(r.get("eval"), dict) for r in records):
                    print(f"gclreid plot: note: {d} has no evaluation record; left out of the comparison",
                          file=sys.stderr)
            written = write_comparison_plot(args.run_dirs, args.out or "curves_compare.png", strict=True)
            if written is None:
                raise GclreidError("none of the runs has an evaluation record (mAP) to compare; draw them one by "
                                   "one instead")
    except ImportError as exc:
        raise GclreidError(f"drawing needs matplotlib ({exc}); install it with `pip install matplotlib`") from exc
    except OSError as exc:
        raise GclreidError(f"cannot write {args.out or 'the plot'}: {exc}") from exc
    print(written)
    return 0

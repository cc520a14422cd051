"""`gclreid demo`: the main job on built-in synthetic data, end to end, with a results table."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run the pipeline on synthetic data: SynthReID → evaluation (results table + JSON)",
        description="Generate the SynthReID `demo` dataset in OUT/data (reused when already complete), "
                    "evaluate the identity encoder configured in configs/data_synthreid.yaml before any "
                    "training, and print a results table. Writes OUT/results.json.")
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset and of the runs")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--workers", type=int, default=2, help="processes for data generation and loading")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import format_results, run_demo
    results = run_demo(args.out, seed=args.seed, device=args.device, workers=args.workers)
    print(format_results(results))
    return 0

"""`gclreid demo`: the main job on built-in synthetic data, end to end, with a results table."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from ..demo import STAGE_KEYS, STAGES
    stage_list = "; ".join(f"{st.key} = {st.label} (configs/{st.config}{''.join(' ' + x for x in st.settings)}"
                           f"{', from ' + st.init_from if st.init_from else ''})" for st in STAGES)
    p = sub.add_parser(
        "demo", help="the whole pipeline on synthetic data: SynthReID → stage 1 → stage 2 → stage 3 (and the contrast-only "
             "control) → results table",
        description="Generate the SynthReID `demo` dataset in OUT/data (reused when already complete), "
                    "evaluate the untrained identity encoder, then run the training stages one after the "
                    f"other, each initialised from an earlier one's checkpoint: {stage_list}. Each stage "
                    "writes its run folder OUT/<stage>/ (config, metrics, checkpoints, TensorBoard, image grids); "
                    "the table of mAP / rank-1 after each stage is printed and written to OUT/results.json.")
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset and of the runs")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--workers", type=int, default=2, help="processes for data generation and loading")
    p.add_argument("--stages", default=",".join(STAGE_KEYS),
                   help=f"comma-separated training stages to run, some of {','.join(STAGE_KEYS)}, each with the stage "
                        "it starts from (default: all; empty: only data and the untrained encoder)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="STAGE:KEY=VALUE",
                   help="config override for one stage, e.g. stage1:train.epochs=4 (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import format_results, run_demo
    from ..errors import GclreidError
    overrides: dict = {}
    for item in args.sets:
        stage, sep, override = item.partition(":")
        if not sep or "=" not in override:
            raise GclreidError(f"demo --set {item!r}: expected STAGE:KEY=VALUE, e.g. stage1:train.epochs=4")
        overrides.setdefault(stage, []).append(override)
    stages = [s for s in args.stages.split(",") if s]
    results = run_demo(args.out, seed=args.seed, device=args.device, workers=args.workers, stages=stages,
                       overrides=overrides)
    print(format_results(results))
    return 0

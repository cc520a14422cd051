"""Issue 15's experiment on SynthReID `demo`: does GCL's generated view earn its place?

For each seed: stage 1 (cluster contrast, `configs/cluster_contrast_synthreid.yaml`), stage 2 (the
generator warm-up, `configs/gcl_stage2_synthreid.yaml`), then from those checkpoints the rows below,
each trained for the same two extra epochs with the same seed:

    cc_more        stage 1 continued (cluster contrast, train.epochs=2)
    contrast_only  GCL stage 3 without generation (gcl.losses=[contrast_only])
    generated      GCL stage 3, the method (gcl.views=generated)
    true_view      GCL stage 3 with SynthReID's true novel view as x'_new (the oracle)
    flip           GCL stage 3 with the mirrored input as x'_new
    input          GCL stage 3 with the input itself as x'_new (not in the default set)

Every run is an ordinary `gclreid train` run in `<out>/seed<s>/<row>/`; a run whose results.json
exists is not run again, so the script resumes where it stopped. At the end it writes
`<out>/summary.json` and `<out>/summary.md`: mean ± std (over seeds) of mAP and rank-1 per row, and
the stage-2 generator's novel-view quality against the copy and flip baselines.

    python bench/gcl_views_experiment.py --out runs/views_exp --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from gclreid.config import load_config
from gclreid.data import build_dataset
from gclreid.demo import ensure_synthreid
from gclreid.engine.loop import train

ROWS = {
    "cc_more": ("cluster_contrast_synthreid.yaml", "train.init", ["train.epochs=2"]),
    "contrast_only": ("gcl_synthreid.yaml", "gcl.init", ["gcl.losses=[contrast_only]"]),
    "generated": ("gcl_synthreid.yaml", "gcl.init", ["gcl.views=generated"]),
    "true_view": ("gcl_synthreid.yaml", "gcl.init", ["gcl.views=true_view"]),
    "flip": ("gcl_synthreid.yaml", "gcl.init", ["gcl.views=flip"]),
    "input": ("gcl_synthreid.yaml", "gcl.init", ["gcl.views=input"]),
}
DEFAULT_ROWS = ["cc_more", "contrast_only", "generated", "true_view", "flip"]
VIEW_KEYS = ("ssim", "copy_ssim", "flip_ssim", "body_ssim", "body_copy_ssim", "body_flip_ssim",
             "psnr", "copy_psnr", "flip_psnr", "recon_ssim")


def run_once(config: str, out: Path, overrides, dataset) -> dict:
    """Train one run into `out` unless it finished before; its final record."""
    done = out / "results.json"
    if done.is_file():
        return json.loads(done.read_text())
    t = time.time()
    record = train(load_config(config, [*overrides, f"run.out={out}"]), dataset=dataset, progress=False,
                   overwrite=True)
    record["wall_seconds"] = round(time.time() - t, 1)
    (out / "wall_seconds.txt").write_text(f"{record['wall_seconds']}\n")
    return record


def mean_std(values):
    return (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(out: Path, seeds, rows) -> dict:
    """Mean ± std over the seeds of every row (and stage 1 / 2), with the paired differences (same seed)
    against stage 1 and against contrast_only; written to summary.json and summary.md."""
    table, per_seed = {}, {}
    for name in ["stage1", "stage2", *rows]:
        found = {s: json.loads(p.read_text()) for s in seeds if (p := out / f"seed{s}" / name / "results.json").is_file()}
        if not found:
            continue
        per_seed[name] = {s: 100 * r["eval"]["mAP"] for s, r in found.items()}
        entry = {"seeds": len(found),
                 "mAP": mean_std(list(per_seed[name].values())),
                 "rank1": mean_std([100 * r["eval"]["rank1"] for r in found.values()]),
                 "per_seed_mAP": [round(v, 2) for v in per_seed[name].values()]}
        gens = [r["generation"] for r in found.values() if r.get("generation")]
        if gens:
            entry["generation"] = {k: mean_std([g[k] for g in gens]) for k in VIEW_KEYS if all(k in g for g in gens)}
        table[name] = entry
    for name, entry in table.items():  # paired: the same seed's run of the base row
        for base in ("stage1", "contrast_only"):
            common = [s for s in per_seed[name] if s in per_seed.get(base, {})]
            if base != name and common:
                entry[f"vs_{base}"] = mean_std([per_seed[name][s] - per_seed[base][s] for s in common])
    fmt = lambda ms: f"{ms[0]:+.2f} ± {ms[1]:.2f}" if ms else "–"  # noqa: E731
    lines = ["| row | seeds | mAP (mean ± std) | R-1 (mean ± std) | mAP per seed | vs stage1 (paired) | vs contrast_only (paired) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, e in table.items():
        lines.append(f"| {name} | {e['seeds']} | {e['mAP'][0]:.2f} ± {e['mAP'][1]:.2f} | "
                     f"{e['rank1'][0]:.2f} ± {e['rank1'][1]:.2f} | {', '.join(map(str, e['per_seed_mAP']))} | "
                     f"{fmt(e.get('vs_stage1'))} | {fmt(e.get('vs_contrast_only'))} |")
    for name in ("stage2", "generated", "true_view"):
        g = table.get(name, {}).get("generation")
        if g:
            lines += ["", f"novel views after {name} (mean ± std over seeds):", "",
                      "| metric | value |", "| --- | --- |"]
            lines += [f"| {k} | {v[0]:.3f} ± {v[1]:.3f} |" for k, v in g.items()]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps(table, indent=2))
    return table


def synth_settings(items) -> dict:
    """``["cams=3", …]`` → ``{"cams": 3, …}`` for the SynthReID preset (integers; the preset names a bad key)."""
    settings = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key or not value.lstrip("-").isdigit():
            raise SystemExit(f"--synth-set {item!r}: expected KEY=INTEGER, e.g. cams=3")
        settings[key] = int(value)
    return settings


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/views_exp")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=sorted(ROWS))
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the SynthReID demo set (shared by all runs)")
    parser.add_argument("--stage2-set", nargs="*", default=[], help="extra overrides for stage 2 (e.g. train.epochs=10)")
    parser.add_argument("--synth-set", nargs="*", default=[], metavar="KEY=INT",
                        help="SynthReID settings that differ from the demo preset, e.g. cams=3 (3 cameras: one sees "
                             "fronts, one backs, one sides)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    out = Path(args.out)
    data = out / "data"
    ensure_synthreid(data, args.data_seed, args.workers, progress=False, **synth_settings(args.synth_set))
    dataset = build_dataset("synthreid", str(data))
    for seed in args.seeds:
        common = [f"data.root={data}", f"run.seed={seed}", f"data.workers={args.workers}"]
        base = out / f"seed{seed}"
        run_once("cluster_contrast_synthreid.yaml", base / "stage1", common, dataset)
        run_once("gcl_stage2_synthreid.yaml", base / "stage2",
                 [*common, f"train.init={base / 'stage1' / 'last.pt'}", *args.stage2_set], dataset)
        for row in args.rows:
            config, init_key, extra = ROWS[row]
            init = base / ("stage1" if init_key == "train.init" else "stage2") / "last.pt"
            run_once(config, base / row, [*common, f"{init_key}={init}", *extra], dataset)
            summarise(out, args.seeds, args.rows)
            print(f"seed {seed} {row} done", flush=True)
    print((out / "summary.md").read_text())


if __name__ == "__main__":
    main()

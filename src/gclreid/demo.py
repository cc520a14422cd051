"""The demo pipeline on SynthReID: data → untrained encoder → stage 1 → stage 2 → stage 3, one table.

Each training stage is an ordinary `gclreid train` run with a shipped config, in its own sub-folder
of the run folder (config, metrics.jsonl, checkpoints, TensorBoard, grids), initialised from the
previous stage's checkpoint; each adds a row (mAP / rank-1 after the stage, and for the generator
stages the SSIM of generated novel views against SynthReID's true views) to `results.json`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .config import load_config, save_config, validate_config


@dataclasses.dataclass(frozen=True)
class Stage:
    key: str
    label: str  # the row of the results table
    config: str  # shipped config
    init_key: Optional[str] = None  # the setting that names the checkpoint it starts from …
    init_from: Optional[str] = None  # … the last.pt of this earlier stage
    settings: tuple = ()  # overrides that make the stage what it is


STAGES = (
    Stage("stage1", "stage 1: cluster contrast", "cluster_contrast_synthreid.yaml"),
    Stage("stage2", "stage 2: generator warm-up", "gcl_stage2_synthreid.yaml", "train.init", "stage1"),
    Stage("stage3", "stage 3: GCL joint", "gcl_synthreid.yaml", "gcl.init", "stage2"),
    # The control beside the method (the paper's Table 3 "L_vi w/o GAN"): stage 3 from the same
    # checkpoint with the same schedule, the memory contrast alone, no generated views.
    Stage("contrast", "stage 3 without generation", "gcl_synthreid.yaml", "gcl.init", "stage2",
          ("gcl.losses=[contrast_only]",)),
)
STAGE_KEYS = tuple(stage.key for stage in STAGES)


def ensure_synthreid(out: Path, seed: int, workers: int, progress: bool = True, **overrides) -> Dict[str, Any]:
    """Generate the `demo` preset (with `overrides`, e.g. train_ids) into `out`, or reuse a complete
    copy made with the same settings."""
    from .synth import generate, preset
    from .synth.writer import INCOMPLETE, METADATA
    cfg = preset("demo", seed=seed, **overrides)
    meta_path = out / METADATA
    if meta_path.is_file() and not (out / INCOMPLETE).exists():
        settings = json.loads(meta_path.read_text()).get("settings", {})
        wanted = json.loads(json.dumps(dataclasses.asdict(cfg)))
        if all(settings.get(k) == v for k, v in wanted.items()):
            return {"reused": True, "out": str(out)}
    return generate(cfg, str(out), workers=max(1, workers), overwrite=True, progress=progress)


def _row(stage: str, result: Dict[str, Any], seconds: float, generation: Optional[dict] = None) -> Dict[str, Any]:
    """A table row from evaluate_model's result (cmc) or a training run's eval record (rankN)."""
    rank = (lambda r: float(result["cmc"][r - 1])) if "cmc" in result else (lambda r: float(result[f"rank{r}"]))
    row = {"stage": stage, "mAP": float(result["mAP"]), "rank1": rank(1), "rank5": rank(5),
           "mINP": float(result["mINP"]), "seconds": round(seconds, 1)}
    if generation:
        row["novel_view_ssim"] = float(generation["ssim"])
    return row


def run_demo(out: os.PathLike, seed: int = 0, device: str = "auto", workers: int = 2,
             progress: bool = True, synth_overrides: Optional[Dict[str, Any]] = None,
             stages: Sequence[str] = STAGE_KEYS, overrides: Optional[Dict[str, List[str]]] = None) -> Dict[str, Any]:
    """Run the demo into `out`.

    `stages`: which training stages to run, in pipeline order (each needs the one before it).
    `overrides`: extra config overrides per stage key (e.g. ``{"stage1": ["train.epochs=2"]}``);
    `synth_overrides` change the dataset preset (tests use a tiny one)."""
    from .data import build_dataset
    from .engine.loop import train
    from .errors import GclreidError
    from .evaluation.pipeline import evaluate_model
    from .models import build_identity_encoder
    from .runtime import resolve_device, seed_everything

    unknown = [s for s in stages if s not in STAGE_KEYS]
    if unknown:
        raise GclreidError(f"demo: unknown stage(s) {unknown}; expected some of {list(STAGE_KEYS)}")
    wanted = [stage for stage in STAGES if stage.key in stages]
    missing = [f"{stage.key} needs {stage.init_from}" for stage in wanted
               if stage.init_from and stage.init_from not in stages]
    if missing:
        raise GclreidError(f"demo: stages {list(stages)} skip one ({'; '.join(missing)}): each stage starts from "
                           f"an earlier one's checkpoint")
    bad = set(overrides or {}) - set(STAGE_KEYS)
    if bad:
        raise GclreidError(f"demo: overrides for unknown stage(s) {sorted(bad)}; expected some of {list(STAGE_KEYS)}")

    out = Path(out)
    data_dir = out / "data"
    common = [f"data.root={data_dir}", f"run.seed={seed}", f"run.device={device}", f"data.workers={workers}"]
    # Every stage's config is built and checked before any work (an unknown key in --set, a bad value).
    stage_cfgs = {}
    for stage in wanted:
        stage_overrides = common + [f"run.out={out / stage.key}", *stage.settings]
        if stage.init_key:
            stage_overrides.append(f"{stage.init_key}={out / stage.init_from / 'last.pt'}")
        try:
            stage_cfgs[stage.key] = load_config(stage.config, stage_overrides + list((overrides or {}).get(stage.key, [])))
            validate_config(stage_cfgs[stage.key])
        except GclreidError as exc:
            raise GclreidError(f"{stage.key} (configs/{stage.config}): {exc}") from None
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    synth = ensure_synthreid(data_dir, seed, workers, progress, **(synth_overrides or {}))
    cfg = load_config("data_synthreid.yaml", common + [f"run.out={out}"])
    save_config(cfg, out / "config.yaml")
    dataset = build_dataset(cfg.data.name, cfg.data.root, **cfg.data.options)
    rows = []
    results = {"dataset": str(data_dir), "stats": dataset.stats(), "synth": synth, "rows": rows,
               "path": str(out / "results.json"), "runs": {}}

    def save() -> None:
        results["seconds"] = round(time.time() - started, 1)
        (out / "results.json").write_text(json.dumps(results, indent=2))

    t = time.time()
    seed_everything(cfg.run.seed)
    encoder = build_identity_encoder(cfg.model)
    result = evaluate_model(encoder, dataset, cfg.data, cfg.eval, resolve_device(cfg.run.device),
                            progress=logging.getLogger("gclreid") if progress else False,
                            desc="untrained encoder eval")
    rows.append(_row("untrained encoder", result, time.time() - t))
    save()

    for stage in wanted:
        t = time.time()
        # The demo re-runs its stages: a stage folder from an earlier demo is replaced (once the new
        # stage has its first checkpoint), as `gclreid train --overwrite` does.
        record = train(stage_cfgs[stage.key], dataset=dataset, progress=progress, overwrite=True)
        rows.append(_row(stage.label, record["eval"], time.time() - t, record.get("generation")))
        results["runs"][stage.key] = {"config": stage.config, "settings": list(stage.settings),
                                      "out": str(out / stage.key), "clusters": record.get("clusters", {})}
        save()
    return results


def format_results(results: Dict[str, Any]) -> str:
    lines = [f"SynthReID demo ({results['dataset']}): mAP / rank-1 / rank-5 / mINP in %; SSIM of generated novel views",
             f"{'stage':<30}{'mAP':>7}{'R-1':>7}{'R-5':>7}{'mINP':>7}{'SSIM':>7}{'time s':>9}"]
    for r in results["rows"]:
        ssim = f"{r['novel_view_ssim']:7.3f}" if "novel_view_ssim" in r else f"{'':>7}"
        lines.append(f"{r['stage']:<30}{100 * r['mAP']:7.2f}{100 * r['rank1']:7.2f}{100 * r['rank5']:7.2f}"
                     f"{100 * r['mINP']:7.2f}{ssim}{r['seconds']:9.1f}")
    lines.append(f"total {results['seconds']:.0f} s; results: {results['path']}")
    return "\n".join(lines)

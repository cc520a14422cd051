"""The demo pipeline on SynthReID: data → evaluation of each stage → one results table.

Each stage writes into its own sub-folder of the run folder and adds a row to `results.json`.
Today's stages: the dataset and the untrained identity encoder; the training stages join as the
methods land (see the issues).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional


from .config import load_config, save_config


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


def _row(stage: str, result: Dict[str, Any], seconds: float) -> Dict[str, Any]:
    cmc = result["cmc"]
    return {"stage": stage, "mAP": float(result["mAP"]), "rank1": float(cmc[0]), "rank5": float(cmc[4]),
            "mINP": float(result["mINP"]), "seconds": round(seconds, 1)}


def run_demo(out: os.PathLike, seed: int = 0, device: str = "auto", workers: int = 2,
             progress: bool = True, synth_overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Run the demo into `out`; `synth_overrides` change the dataset preset (tests use a tiny one)."""
    from .data import build_dataset
    from .evaluation.pipeline import evaluate_model
    from .models import build_identity_encoder
    from .runtime import resolve_device, seed_everything

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    data_dir = out / "data"
    synth = ensure_synthreid(data_dir, seed, workers, progress, **(synth_overrides or {}))
    cfg = load_config("data_synthreid.yaml", [f"data.root={data_dir}", f"run.seed={seed}", f"run.device={device}",
                                              f"data.workers={workers}", f"run.out={out}"])
    save_config(cfg, out / "config.yaml")
    dataset = build_dataset(cfg.data.name, cfg.data.root, **cfg.data.options)
    rows = []

    t = time.time()
    seed_everything(cfg.run.seed)
    encoder = build_identity_encoder(cfg.model)
    result = evaluate_model(encoder, dataset, cfg.data, cfg.eval, resolve_device(cfg.run.device), progress=False)
    rows.append(_row("untrained encoder", result, time.time() - t))

    results = {"dataset": str(data_dir), "stats": dataset.stats(), "synth": synth, "rows": rows,
               "seconds": round(time.time() - started, 1), "path": str(out / "results.json")}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def format_results(results: Dict[str, Any]) -> str:
    lines = [f"SynthReID demo ({results['dataset']}): mAP / rank-1 / rank-5 / mINP in %",
             f"{'stage':<28}{'mAP':>7}{'R-1':>7}{'R-5':>7}{'mINP':>7}{'time s':>9}"]
    for r in results["rows"]:
        lines.append(f"{r['stage']:<28}{100 * r['mAP']:7.2f}{100 * r['rank1']:7.2f}{100 * r['rank5']:7.2f}"
                     f"{100 * r['mINP']:7.2f}{r['seconds']:9.1f}")
    lines.append(f"total {results['seconds']:.0f} s; results: {results['path']}")
    return "\n".join(lines)

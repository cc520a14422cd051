"""The one training loop every method runs on.

Each epoch: ``method.start_epoch`` (pseudo labels, memories) → ``method.step`` over
``method.loader`` with the lr schedule applied every iteration → evaluation (when due and the
dataset has a query/gallery split) → checkpoint (``<run.out>/last.pt``, atomically). Resuming
from ``last.pt`` restores models, optimisers, method state, epoch and RNG states, so a resumed
run continues exactly as the uninterrupted one would (CPU, same seed, deterministic mode).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ..checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from ..config import save_config, to_dict
from ..errors import CheckpointError
from ..runtime import resolve_device, seed_everything, set_rng_state
from .logger import RunLogger, trim_metrics
from .method import build_method
from .optim import apply_lr_schedule

log = logging.getLogger("gclreid")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def train(cfg, resume: Optional[str] = None, dataset=None, progress: bool = True) -> Dict[str, Any]:
    """Train cfg.train.method; return the final record (last epoch's clusters and evaluation).

    `resume`: a checkpoint path, or "auto" for ``<run.out>/last.pt`` (starting fresh when absent).
    """
    from ..data import dataset_from_config
    from ..evaluation.pipeline import evaluate_model

    out = Path(cfg.run.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    device = resolve_device(cfg.run.device)
    # data.val_identities > 0: query/gallery are the validation split carved out of the training identities.
    dataset = dataset if dataset is not None else dataset_from_config(cfg.data, for_training=True)
    method = build_method(cfg, dataset, device)

    start_epoch, step = 0, 0
    ckpt_path = out / "last.pt"
    if resume == "auto":
        resume = str(ckpt_path) if ckpt_path.is_file() else None
    if resume:
        payload = read_checkpoint(resume, map_location=device)
        saved_method = payload.get("config", {}).get("train", {}).get("method")
        if saved_method and saved_method != cfg.train.method:
            raise CheckpointError(f"{resume} was written by method {saved_method!r}, not {cfg.train.method!r}")
        load_checkpoint(resume, models=method.models, optimizers=method.optimizers, payload=payload)
        method.load_state(payload["extra"])
        start_epoch, step = payload["epoch"], payload["iteration"]
        if payload.get("rng"):
            set_rng_state(payload["rng"])
        trim_metrics(out / "metrics.jsonl", start_epoch)
        log.info("resumed from %s after epoch %d", resume, start_epoch)
    elif (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()  # a fresh run in an old folder starts a fresh record
    save_config(cfg, out / "config.yaml")

    epochs = cfg.train.epochs
    logger = RunLogger(out)
    evaluable = bool(dataset.query) and bool(dataset.gallery)
    # Taken from the dataset, not the config, so a dataset passed in (DG-Net's teacher) is labelled right.
    validation = getattr(dataset, "validation", None)
    eval_split = "val" if validation else "test"
    if validation:
        log.info("evaluating during training on the validation split: %d training identities held out "
                 "(seed %d) -> %d query / %d gallery images; the test split is not used",
                 validation["held_out_ids"], validation["seed"], validation["query"], validation["gallery"])
    elif cfg.data.val_identities:
        log.warning("data.val_identities=%d is ignored: train() was given a dataset without a validation split "
                    "(make it with gclreid.data.dataset_from_config(cfg.data, for_training=True))",
                    cfg.data.val_identities)
    if evaluable and not validation:
        log.info("evaluating during training on the dataset's query/gallery (test) split")
    record: Dict[str, Any] = {}
    started, done_before = time.time(), step
    try:
        for epoch in range(start_epoch, epochs):
            for m in method.models.values():
                m.eval()
            cluster_stats = method.start_epoch(epoch)
            if cluster_stats:
                log.info("epoch %d/%d clusters: %s", epoch + 1, epochs,
                         ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in cluster_stats.items()))
            loader = method.loader(epoch)
            iters = len(loader)
            total_steps = step + iters * (epochs - epoch)
            method.train_mode()
            epoch_losses: Dict[str, float] = {}
            for it, batch in enumerate(loader):
                for opt in method.optimizers.values():
                    apply_lr_schedule(opt, cfg.optim, epoch + it / iters, epochs)
                lr = next(iter(method.optimizers.values())).param_groups[0]["lr"]
                logger.accumulate(method.step(batch))
                step += 1
                if (it + 1) % cfg.train.log_every == 0 or it + 1 == iters:
                    losses = logger.flush_losses()
                    epoch_losses = losses
                    if progress:
                        logger.progress(epoch, epochs, it + 1, iters, step, losses, lr, started, done_before, total_steps)
            extra = method.end_epoch(epoch)
            record = {"epoch": epoch + 1, "iterations": iters, "losses": epoch_losses, "clusters": cluster_stats, **extra}
            last = epoch + 1 == epochs
            if evaluable and ((cfg.train.eval_every and (epoch + 1) % cfg.train.eval_every == 0) or last):
                result = evaluate_model(method.encoder, dataset, cfg.data, cfg.eval, device, progress=False)
                record["eval"] = {"mAP": result["mAP"], "mINP": result["mINP"],
                                  **{f"rank{r}": float(result["cmc"][r - 1]) for r in (1, 5, 10) if r <= len(result["cmc"])}}
                log.info("epoch %d/%d eval (%s): mAP %.2f%%  rank-1 %.2f%%", epoch + 1, epochs, eval_split,
                         100 * result["mAP"], 100 * result["cmc"][0])
            if any(k == "eval" or k.startswith("eval_") for k in record):  # also DG-Net's eval_prim, eval_teacher …
                record["eval_split"] = eval_split
            record = _jsonable(record)
            logger.epoch_record(record)
            save_checkpoint(ckpt_path, models=method.models, optimizers=method.optimizers, extra=method.state(),
                            epoch=epoch + 1, iteration=step, config=to_dict(cfg))
    finally:
        logger.close()
    if record:
        (out / "results.json").write_text(json.dumps(record, indent=2))
    return record

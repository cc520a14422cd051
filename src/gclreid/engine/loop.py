"""The one training loop every method runs on.

Each epoch: ``method.start_epoch`` (pseudo labels, memories) → ``method.step`` over
``method.loader`` with the lr schedule applied every iteration → evaluation (when due and the
dataset has a query/gallery split) → checkpoint (``<run.out>/last.pt``, atomically). Resuming
from ``last.pt`` restores models, optimisers, method state, epoch and RNG states, so a resumed
run continues exactly as the uninterrupted one would (CPU, same seed, deterministic mode).

What a run may do with its folder (refuse an existing run, resume rules, config history) is
:mod:`gclreid.engine.runfolder`; a loss that is not finite or exploding weights stop the run with a
:class:`~gclreid.errors.TrainingDivergedError` before anything is saved, so ``last.pt`` stays the
last good checkpoint.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ..checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from ..config import save_config, to_dict, validate_config
from ..errors import RunFolderError, TrainingDivergedError
from ..progress import format_seconds, quiet
from ..runtime import resolve_device, seed_everything, set_rng_state
from . import distributed
from .logger import RunLogger, TrainClock, read_metrics, trim_metrics
from .method import build_method
from .optim import apply_lr_schedule
from .plots import write_training_plot
from .runfolder import (FREE_ON_RESUME, HISTORY, RunLock, after_checkpoint, apply_hyperparameters,
                        clean_stale_temp_files, describe, iter_parameters, optimizer_hyperparameters,
                        os_error_message, plan_run, write_text_atomic)

log = logging.getLogger("gclreid")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def train(cfg, resume: Optional[str] = None, dataset=None, progress: bool = True, *, overwrite: bool = False,
          allow_changes: bool = False) -> Dict[str, Any]:
    """Train cfg.train.method; return the final record (last epoch's clusters and evaluation).

    `resume`: a checkpoint path, ``"last"`` for ``<run.out>/last.pt`` (an error when it does not
    exist; what ``gclreid train --resume`` does), or ``"auto"`` for ``<run.out>/last.pt`` when it
    exists and a new run (with a warning in the log) when it does not.
    `overwrite`: a new run may replace the run that ``run.out`` already holds (its record stays until
    this run's first checkpoint is written). `allow_changes`: a resume may change settings other than
    :data:`~gclreid.engine.runfolder.FREE_ON_RESUME`; they are applied (optimiser settings included) and
    recorded in ``config_history.jsonl``. Config values are checked before any work
    (:func:`~gclreid.config.validate_config`); run-folder rules: docs/safety.md.

    Started by ``torchrun`` with several processes, every process calls this: they join a process group
    (:mod:`gclreid.engine.distributed`), ``train.batch_size`` is split over them, and rank 0 alone
    clusters, evaluates and writes the run folder (docs/training.md, "Multi-GPU and multi-node").
    """
    warnings = validate_config(cfg)
    started = distributed.setup(cfg)  # torchrun with several processes: join the process group
    clean = False
    try:
        for warning in warnings:
            log.warning("%s", warning)
        world = distributed.world_size()
        cfg.run.world_size, cfg.run.batch_per_rank = world, cfg.train.batch_size // world  # recorded in config.yaml
        device = distributed.run_device(resolve_device(cfg.run.device))
        lock = RunLock(Path(cfg.run.out))
        # Refusals before any work; under torchrun rank 0 decides and the other ranks follow (or stop with it).
        plan = distributed.on_main(lambda: _prepare_run_folder(cfg, resume, overwrite, allow_changes, device, lock),
                                   share=lambda p: dataclasses.replace(p, payload=None, old_files={}))
        if plan.resuming and plan.payload is None:  # ranks > 0 read the checkpoint rank 0 chose
            plan.payload = read_checkpoint(plan.resume_from, map_location=device)
        progress = progress and distributed.is_main()
        try:
            with quiet(not progress):  # feature extraction / evaluation progress follows `progress` too
                result = _train(cfg, plan, dataset, progress, device)
            clean = True
            return result
        except OSError as exc:
            if exc.errno in _WRITE_ERRNOS:  # disk full, permission denied …: one line, not a traceback
                raise RunFolderError(f"training stopped: {os_error_message(exc, 'a file')}") from None
            raise
        finally:
            lock.release()
    finally:
        if started:
            distributed.shutdown(clean)


def _prepare_run_folder(cfg, resume, overwrite: bool, allow_changes: bool, device, lock: RunLock):
    """The run plan (refusals before any work), the folder, and its lock."""
    plan = plan_run(cfg, resume, overwrite, allow_changes, map_location=device)
    try:
        plan.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(os_error_message(exc, f"run folder {plan.out}")) from None
    lock.acquire()
    return plan


# errno values that mean "the run cannot write here" rather than a bug.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def _train(cfg, plan, dataset, progress: bool, device) -> Dict[str, Any]:
    from ..data import dataset_from_config
    from ..evaluation.pipeline import evaluate_model, valid_query_count

    out = plan.out
    ckpt_path = out / "last.pt"

    def start_folder() -> None:
        clean_stale_temp_files(out)
        if not plan.resuming and not plan.replace_previous:
            save_config(cfg, out / "config.yaml")  # the folder holds no run: nothing to keep consistent with
    distributed.on_main(start_folder)
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    # data.val_identities > 0: query/gallery are the validation split carved out of the training identities.
    dataset = dataset if dataset is not None else dataset_from_config(cfg.data, for_training=True)
    world = distributed.world_size()
    processes = "" if world == 1 else (f" ({world} processes, batch {cfg.run.batch_per_rank} per process of "
                                       f"train.batch_size={cfg.train.batch_size})")
    log.info("train %s on %s (%d training images) on %s into %s%s", cfg.train.method, dataset.name,
             len(dataset.train), device, out, processes)
    method = build_method(cfg, dataset, device)
    if cfg.train.sync_bn and world > 1:
        log.info("train.sync_bn: %d BatchNorm layers normalise over the global batch",
                 distributed.convert_sync_bn(method.models))

    start_epoch, step = 0, 0
    if plan.resuming:
        payload = plan.payload
        fresh = optimizer_hyperparameters(method.optimizers)
        load_checkpoint(plan.resume_from, models=method.models, optimizers=method.optimizers, payload=payload)
        method.load_state(payload["extra"])
        start_epoch, step = payload["epoch"], payload["iteration"]
        if payload.get("rng"):
            set_rng_state(payload["rng"])
        if plan.same_run:
            distributed.on_main(lambda: trim_metrics(out / "metrics.jsonl", start_epoch))
        log.info("resumed from %s after epoch %d (iteration %d)", plan.resume_from, start_epoch, step)
        if plan.changes:
            log.warning("resumed with changed settings from epoch %d on: %s (recorded in %s)", start_epoch + 1,
                        describe(plan.changes), HISTORY)
        if any(k not in FREE_ON_RESUME for k in plan.changes):
            applied = apply_hyperparameters(method.optimizers, fresh)
            if applied:
                log.warning("optimiser settings now: %s", "; ".join(applied))
    distributed.broadcast_models(method.models)  # torchrun: every rank starts from rank 0's weights

    epochs = cfg.train.epochs
    if start_epoch >= epochs:
        log.warning("the checkpoint %s is already at epoch %d of train.epochs=%d: nothing to train (raise "
                    "train.epochs to continue)", plan.resume_from, start_epoch, epochs)
        records = read_metrics(out / "metrics.jsonl")
        return records[-1] if records else {}
    logger = RunLogger(out, enable_tensorboard=distributed.is_main(), purge_step=step if plan.same_run else None)
    evaluable = bool(dataset.query) and bool(dataset.gallery)
    if evaluable and valid_query_count(dataset) == 0:
        log.warning("no query of %s has a valid match in its gallery (same identity, another camera): training "
                    "runs without evaluation", dataset.name)
        evaluable = False
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
    clock, done_before = TrainClock(), step
    # The last good checkpoint and its epoch (for the message when training diverges).
    good = (plan.resume_from, start_epoch) if plan.resuming else (None, None)
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, epochs):
            clock.epoch_started()
            distributed.reseed_rank(cfg.run.seed, epoch)  # ranks > 0: their own augmentation draws
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
            clock.iterations_start()
            if progress:
                log.info("epoch %d/%d: %d iterations (a line every %d; prepared in %s)", epoch + 1, epochs, iters,
                         cfg.train.log_every, format_seconds(clock.before_seconds[-1]))
            shown = method.logged_optimizer()
            for it, batch in enumerate(loader):
                for opt in method.optimizers.values():
                    apply_lr_schedule(opt, cfg.optim, epoch + it / iters, epochs)
                lr = shown.param_groups[0]["lr"]
                logger.accumulate(method.step(batch))
                step += 1
                if (it + 1) % cfg.train.log_every == 0 or it + 1 == iters:
                    losses = logger.flush_losses(reduce=distributed.mean_values)
                    check_weights(method.models, cfg.train.max_weight_norm)
                    epoch_losses = losses
                    if progress:
                        rate = clock.rate(step - done_before)
                        logger.progress(epoch, epochs, it + 1, iters, step, losses, lr, rate,
                                        clock.eta(rate, total_steps - step, epochs - epoch - 1))
            clock.iterations_end()
            if not cfg.train.sync_bn:  # torchrun: each rank's BN running statistics -> their mean over the ranks
                distributed.average_buffers(method.models)
            check_weights(method.models, cfg.train.max_weight_norm)  # never evaluate or save diverged weights

            def finish_epoch() -> Dict[str, Any]:  # under torchrun: rank 0 only, the others get the record
                extra = method.end_epoch(epoch)
                record = {"epoch": epoch + 1, "iterations": iters, "losses": epoch_losses, "clusters": cluster_stats,
                          **extra}
                last = epoch + 1 == epochs
                if evaluable and ((cfg.train.eval_every and (epoch + 1) % cfg.train.eval_every == 0) or last):
                    result = evaluate_model(method.encoder, dataset, cfg.data, cfg.eval, device, progress=log,
                                            desc=f"epoch {epoch + 1}/{epochs} eval")
                    record["eval"] = {"mAP": result["mAP"], "mINP": result["mINP"],
                                      **{f"rank{r}": float(result["cmc"][r - 1]) for r in (1, 5, 10)
                                         if r <= len(result["cmc"])}}
                    log.info("epoch %d/%d eval (%s): mAP %.2f%%  rank-1 %.2f%%", epoch + 1, epochs, eval_split,
                             100 * result["mAP"], 100 * result["cmc"][0])
                if any(k == "eval" or k.startswith("eval_") for k in record):  # also DG-Net's eval_prim, eval_teacher …
                    record["eval_split"] = eval_split
                record = _jsonable(record)
                _save_epoch(plan, cfg, method, logger, record, ckpt_path, epoch + 1, step)
                write_training_plot(out)  # curves.png from metrics.jsonl; never raises
                return record

            record = distributed.on_main(finish_epoch)
            good = (ckpt_path, epoch + 1)
            clock.epoch_ended()
    except TrainingDivergedError as exc:
        raise TrainingDivergedError(_diverged_message(exc, plan, cfg, good, epoch, epochs, step)) from None
    finally:
        logger.close()
    if record:
        distributed.on_main(lambda: write_text_atomic(out / "results.json", json.dumps(record, indent=2)))
    return record


def _save_epoch(plan, cfg, method, logger, record, ckpt_path: Path, epoch: int, step: int) -> None:
    """metrics.jsonl line + checkpoint + config record. The metrics line goes first (a resume drops lines
    past its checkpoint), except for the first checkpoint of a run that replaces another: then the old
    record stays until the new checkpoint exists."""
    def save() -> None:
        try:
            save_checkpoint(ckpt_path, models=method.models, optimizers=method.optimizers, extra=method.state(),
                            epoch=epoch, iteration=step, config=to_dict(cfg))
        except OSError as exc:
            kept = " (the previous checkpoint is unchanged)" if ckpt_path.is_file() else ""
            raise RunFolderError(os_error_message(exc, f"checkpoint {ckpt_path}") + kept) from None

    try:
        if plan.pending_record and plan.replace_previous:
            save()
            logger.epoch_record(record, replace=True)
        else:
            logger.epoch_record(record)
            save()
        after_checkpoint(plan, cfg)
    except OSError as exc:
        raise RunFolderError(os_error_message(exc, f"the run record in {plan.out}")) from None


def check_weights(models: Dict[str, Any], max_norm: float) -> None:
    """Raise TrainingDivergedError when a parameter is not finite or (max_norm > 0) its L2 norm exceeds
    max_norm, or a floating-point buffer (BatchNorm running statistics) is not finite: exploding weights
    are divergence even while the losses still look finite. One device synchronisation each for the
    parameters and the buffers."""
    import torch
    named = [(name, p) for name, p in iter_parameters(models)]
    if not named:
        return
    norms = torch.stack([torch.linalg.vector_norm(p.detach().float()) for _, p in named])
    bad = ~torch.isfinite(norms)
    if max_norm > 0:
        bad |= norms > max_norm
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        value = float(norms[i])
        what = "is not finite" if not math.isfinite(value) else f"has norm {value:.3g} > train.max_weight_norm={max_norm:g}"
        raise TrainingDivergedError(f"the weights exploded: parameter {named[i][0]} {what}")
    # BatchNorm running statistics are not parameters but the test features use them
    buffers = [(f"{m}.{n}", b) for m, model in models.items() for n, b in model.named_buffers() if b.is_floating_point()]
    if buffers:
        finite = torch.stack([torch.isfinite(b).all() for _, b in buffers])
        if not bool(finite.all()):
            raise TrainingDivergedError(f"the weights exploded: buffer {buffers[int((~finite).nonzero()[0])][0]} "
                                        "(a BatchNorm running statistic) is not finite")


def _diverged_message(exc: Exception, plan, cfg, good, epoch: int, epochs: int, step: int) -> str:
    where = f"training diverged in epoch {epoch + 1}/{epochs} (iteration {step}): {exc}"
    lr = cfg.optim.lr
    path, saved_epoch = good
    if path is not None:
        resume = "--resume" if Path(path).resolve() == (plan.out / "last.pt").resolve() else f"--resume {path}"
        keep = (f"nothing was saved after epoch {saved_epoch}: {path} is the last good checkpoint; continue it "
                f"with other settings, e.g. `gclreid train --config … {resume} --allow-changes optim.lr={lr / 10:g}` "
                "(or train.max_grad_norm=5)")
    else:
        previous = " (the run that was in the folder is unchanged)" if plan.replace_previous else ""
        keep = (f"no checkpoint was written{previous}; start again with other settings, e.g. optim.lr={lr / 10:g} or "
                "train.max_grad_norm=5, or check the input data")
    return f"{where}; {keep}"

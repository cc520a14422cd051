"""Run folders that cannot be lost: what a training run may do with ``run.out`` and when.

Rules (docs/safety.md, "Run folders and resume"):

- A folder *holds a run* when it has ``last.pt``, ``metrics.jsonl`` or ``results.json``. A new run
  into such a folder is refused unless it resumes it or ``overwrite`` is given.
- A new run never deletes or rewrites an existing record before its own first checkpoint exists:
  with ``overwrite`` the previous ``metrics.jsonl``, ``results.json``, ``config.yaml``,
  ``config_history.jsonl``, TensorBoard events and image grids stay until the new run's first
  ``last.pt`` is written, and are replaced right after it.
- The record always describes ``last.pt``: ``config.yaml`` and ``config_history.jsonl`` are
  (re)written right after a checkpoint (and at the start of a run into a folder without a run).
- A resume compares the requested config with the checkpoint's. Keys that do not change what is
  learned (:data:`FREE_ON_RESUME`) may differ; any other difference is refused with the keys listed
  unless ``allow_changes`` is given, and then the new values are applied (optimiser hyperparameters
  included) and recorded in ``config_history.jsonl`` with the epoch they apply from.
- One run at a time per folder (an advisory lock on ``<run.out>/.lock`` where the OS has ``fcntl``);
  temporary files of a checkpoint write that was killed (``.last.pt.*.tmp``) are removed at the start.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..errors import RunFolderError

log = logging.getLogger("gclreid")

RUN_FILES = ("last.pt", "metrics.jsonl", "results.json")
RECORD_FILES = ("metrics.jsonl", "results.json", "config.yaml", "config_history.jsonl", "curves.png")
RECORD_DIRS = ("tensorboard", "grids")
HISTORY = "config_history.jsonl"
LOCK = ".lock"

# Keys that may differ between a checkpoint and the resumed run without --allow-changes: they change
# how long the run goes, where things are and how often it reports, not what a step computes.
# (train.epochs also moves the end of a cosine schedule: that is what "train longer" means.)
FREE_ON_RESUME = (
    "train.epochs", "train.eval_every", "train.log_every", "train.max_weight_norm",
    "data.root", "data.workers", "eval.batch_size", "eval.query_chunk",
    "run.out", "run.device", "run.dist_timeout",
)


def holds_run(out: Path) -> List[str]:
    """The run files present in `out` (empty: the folder holds no run)."""
    return [name for name in RUN_FILES if (Path(out) / name).is_file()]


# Free-form mappings of the schema: compared as one value, not key by key.
_WHOLE = ("data.options",)


def flatten(config: Any, prefix: str = "") -> Dict[str, Any]:
    """Nested dicts -> ``{"a.b": value}`` (lists, scalars and free-form mappings are leaves)."""
    flat: Dict[str, Any] = {}
    if isinstance(config, dict):
        for k, v in config.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and key not in _WHOLE:
                flat.update(flatten(v, f"{key}."))
            else:
                flat[key] = v
    return flat


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b and type(a) is type(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def config_changes(saved: Dict[str, Any], requested: Dict[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    """``{key: (checkpoint value, requested value)}`` for every key whose value differs. Keys the
    checkpoint does not record (written by an older gclreid, before the key existed) are not compared;
    keys only the checkpoint has (no longer in the schema) are ignored."""
    old, new = flatten(saved), flatten(requested)
    return {k: (old[k], new[k]) for k in sorted(new) if k in old and not _same(old[k], new[k])}


def describe(changes: Dict[str, Tuple[Any, Any]], limit: int = 12) -> str:
    items = [f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()]
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename: never a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def stale_temp_files(out: Path, name: str = "last.pt") -> List[Path]:
    """Temporary files of interrupted writes of `name` (``.last.pt.XXXX.tmp``, from save_checkpoint)
    and of the record files."""
    out = Path(out)
    found = list(out.glob(f".{name}.*.tmp"))
    for record in RECORD_FILES:
        found += list(out.glob(f".{record}.*.tmp"))
    return sorted(set(found))


def clean_stale_temp_files(out: Path) -> None:
    for tmp in stale_temp_files(out):
        try:
            size = tmp.stat().st_size
            tmp.unlink()
            log.info("removed %s (%.1f MB), left by a write that was interrupted", tmp, size / 2**20)
        except FileNotFoundError:
            pass


def _snapshot(out: Path) -> Dict[Path, int]:
    """Files under the record folders (TensorBoard, grids) with their mtime, to tell old from new."""
    files: Dict[Path, int] = {}
    for sub in RECORD_DIRS:
        folder = Path(out) / sub
        if folder.is_dir():
            for path in folder.rglob("*"):
                if path.is_file():
                    files[path] = path.stat().st_mtime_ns
    return files


class RunLock:
    """An advisory exclusive lock on ``<run.out>/.lock`` for the duration of a run (no-op without fcntl)."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK
        self.handle = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # not on POSIX: no lock
            return self
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise RunFolderError(f"run folder {self.path.parent} is in use by another training run (process "
                                 f"{holder}); wait for it to end or choose another run.out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is not None:
            try:
                import fcntl
                fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            finally:
                self.handle.close()
                self.handle = None


def os_error_message(exc: OSError, what: str) -> str:
    """One line for an OSError while writing the run folder: the reason first (disk full, permission)."""
    reason = {errno.ENOSPC: "no space left on device (disk full)", errno.EDQUOT: "disk quota exceeded",
              errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
              errno.EROFS: "read-only file system"}.get(exc.errno, exc.strerror or str(exc))
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return f"could not write {what}{where}: {reason}"


@dataclass
class RunPlan:
    """What a call to train() does with its run folder; decided before any work starts."""
    out: Path
    resume_from: Optional[Path] = None  # checkpoint to continue from
    payload: Optional[Dict[str, Any]] = None  # that checkpoint, already read
    changes: Dict[str, Tuple[Any, Any]] = field(default_factory=dict)  # checkpoint value -> requested
    replace_previous: bool = False  # overwrite: the folder's previous record goes at the first checkpoint
    old_files: Dict[Path, int] = field(default_factory=dict)  # TensorBoard / grid files present at the start
    pending_record: bool = True  # config.yaml / history / replacement still due at the next checkpoint

    same_run: bool = False  # resuming this folder's own run (its metrics.jsonl is continued)

    @property
    def resuming(self) -> bool:
        return self.resume_from is not None


def plan_run(cfg, resume: Optional[str], overwrite: bool, allow_changes: bool, map_location="cpu") -> RunPlan:
    """Check what `train` was asked to do with ``cfg.run.out`` against what the folder holds; read the
    checkpoint to resume from and compare configs. Raises RunFolderError / CheckpointError before any
    file is touched."""
    from ..checkpoint import read_checkpoint
    from ..config import to_dict
    from ..errors import CheckpointError

    out = Path(cfg.run.out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"run.out={out} exists and is not a folder")
    own = out / "last.pt"
    present = holds_run(out)
    if resume in ("auto", "last"):
        if own.is_file():
            resume = str(own)
        elif resume == "last":
            extra = (f"; it holds {', '.join(present)} but no checkpoint: start over with --overwrite"
                     if present else "; drop --resume to start a new run")
            raise RunFolderError(f"--resume: there is no checkpoint to resume in {out} ({own} does not exist){extra}")
        else:
            log.warning("resume='auto': %s does not exist, so this is a NEW run, not a resumed one", own)
            resume = None
    plan = RunPlan(out)
    if resume:
        path = Path(resume)
        if not path.exists():
            raise CheckpointError(f"--resume {path}: checkpoint does not exist")
        payload = read_checkpoint(path, map_location=map_location)
        saved = payload.get("config") or {}
        saved_method = (saved.get("train") or {}).get("method")
        if saved_method and saved_method != cfg.train.method:
            raise CheckpointError(f"{path} was written by method {saved_method!r}, not {cfg.train.method!r}")
        # The same run: this folder's last.pt, or another checkpoint (a copy, a backup) of the run whose
        # run.out is this folder. Anything else continues another run's checkpoint into this folder.
        saved_out = (saved.get("run") or {}).get("out")
        same_run = path.resolve() == own.resolve() or (saved_out is not None
                                                       and Path(saved_out).resolve() == out.resolve())
        into_other = not same_run
        if into_other and present and not overwrite:
            raise RunFolderError(f"run folder {out} already holds a run ({', '.join(present)}), and --resume {path} "
                                 "would continue another run's checkpoint into it: choose another run.out, or "
                                 "pass --overwrite to replace that run (once the resumed run's first checkpoint "
                                 "is written)")
        changes = config_changes(saved, to_dict(cfg))
        refused = {k: v for k, v in changes.items() if k not in FREE_ON_RESUME}
        if refused and not allow_changes:
            raise RunFolderError(
                f"--resume: the requested config differs from the checkpoint's ({path}) in {describe(refused)}: to "
                f"continue with the new values pass --allow-changes (they are applied and recorded in {HISTORY}); to "
                "continue as the checkpoint was trained, drop these overrides")
        plan.resume_from, plan.payload, plan.changes, plan.same_run = path, payload, changes, same_run
        plan.replace_previous = into_other and bool(present)
    elif present:
        if not overwrite:
            raise RunFolderError(f"run folder {out} already holds a run ({', '.join(present)}): continue it with "
                                 "--resume, replace it with --overwrite (its record is kept until the new run's first "
                                 "checkpoint is written), or choose another run.out")
        plan.replace_previous = True
        log.warning("--overwrite: the run in %s (%s) will be replaced when this run writes its first checkpoint",
                    out, ", ".join(present))
    if not plan.resuming or plan.replace_previous:
        plan.old_files = _snapshot(out)
    return plan


def after_checkpoint(plan: RunPlan, cfg) -> None:
    """The record, right after a checkpoint: config.yaml (every time, atomically); at the first
    checkpoint of this call also the config history entry and, for a replaced run, the removal of its
    old record."""
    out = plan.out
    from omegaconf import OmegaConf
    write_text_atomic(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if not plan.pending_record:
        return
    plan.pending_record = False
    if plan.replace_previous or not plan.resuming:
        for path, mtime in plan.old_files.items():  # old TensorBoard events and grids not rewritten since
            try:
                if path.stat().st_mtime_ns == mtime:
                    path.unlink()
            except FileNotFoundError:
                pass
    if plan.replace_previous:
        for name in ("results.json", HISTORY):
            (out / name).unlink(missing_ok=True)
    if plan.resuming and plan.changes:
        entry = {"epoch": int(plan.payload.get("epoch", 0)), "iteration": int(plan.payload.get("iteration", 0)),
                 "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "resumed_from": str(plan.resume_from),
                 "changes": {k: {"from": old, "to": new} for k, (old, new) in plan.changes.items()}}
        with open(out / HISTORY, "a") as fh:
            fh.write(json.dumps(entry) + "\n")


def optimizer_hyperparameters(optimizers: Dict[str, Any]) -> Dict[str, List[Dict[str, Any]]]:
    """Each param group's settings (lr, weight decay, momentum, betas …) as built from the config."""
    return {name: [{k: v for k, v in group.items() if k not in ("params", "base_lr")} for group in opt.param_groups]
            for name, opt in optimizers.items()}


def apply_hyperparameters(optimizers: Dict[str, Any], fresh: Dict[str, List[Dict[str, Any]]]) -> List[str]:
    """After loading a checkpoint's optimiser state (which brings the checkpoint's lr, weight decay …),
    put back the values built from the requested config, so a changed optim.* is really trained with.
    The lr schedule works from each group's ``base_lr``, so that is what the new lr becomes. Returns
    what changed, for the log."""
    changed = []
    for name, opt in optimizers.items():
        groups = fresh.get(name, [])
        if len(groups) != len(opt.param_groups):
            raise RunFolderError(f"optimizer {name!r}: the checkpoint has {len(opt.param_groups)} parameter groups, "
                                 f"the requested config builds {len(groups)}; such a change cannot be resumed")
        for i, (group, new) in enumerate(zip(opt.param_groups, groups)):
            for key, value in new.items():
                old = group.get("base_lr", group.get(key)) if key == "lr" else group.get(key)
                if key == "lr":
                    group["base_lr"] = value
                    group["lr"] = value
                else:
                    group[key] = value
                if not _same(old, value):
                    changed.append(f"{name}[{i}].{key} {old!r} -> {value!r}")
    return changed


def iter_parameters(models: Dict[str, Any]) -> Iterable[Tuple[str, Any]]:
    for model_name, model in models.items():
        for name, p in model.named_parameters():
            yield f"{model_name}.{name}", p

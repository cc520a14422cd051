"""Run logging: a line per `log_every` iterations with rate and ETA, per-epoch JSON lines
(metrics.jsonl), and TensorBoard scalars (tensorboard/ in the run folder)."""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from ..errors import RunFolderError, TrainingDivergedError
from ..progress import format_seconds

log = logging.getLogger("gclreid")


class TrainClock:
    """Iteration rate and ETA of a run.

    The rate counts only the time spent in training iterations (data loading included), not the
    per-epoch work around them (feature extraction, clustering, evaluation, checkpoints): that work is
    measured apart and added to the ETA per epoch still to come, so the first line of a run whose epoch
    began with minutes of clustering shows the real it/s."""

    def __init__(self) -> None:
        self.iter_seconds = 0.0
        self.iterations = 0
        self.before_seconds: list = []  # per epoch: start_epoch (features, clustering) up to the first iteration
        self.after_seconds: list = []  # per epoch: end_epoch, evaluation, checkpoint
        self._since: Optional[float] = None
        self._phase: Optional[float] = None

    # the phases of an epoch, in order
    def epoch_started(self) -> None:
        self._phase = time.monotonic()

    def iterations_start(self) -> None:
        now = time.monotonic()
        self.before_seconds.append(now - (self._phase if self._phase is not None else now))
        self._since = now

    def iterations_end(self) -> None:
        now = time.monotonic()
        if self._since is not None:
            self.iter_seconds += now - self._since
        self._since, self._phase = None, now

    def epoch_ended(self) -> None:
        now = time.monotonic()
        self.after_seconds.append(now - (self._phase if self._phase is not None else now))
        self._phase = None

    def rate(self, iterations: int) -> float:
        """Iterations per second over `iterations` done since the clock started."""
        seconds = self.iter_seconds + (time.monotonic() - self._since if self._since is not None else 0.0)
        return iterations / seconds if seconds > 0 and iterations > 0 else 0.0

    def eta(self, rate: float, iterations_left: int, epochs_left: int) -> float:
        """Seconds to the end: iterations at `rate`, plus the mean work around an epoch measured so far for
        the `epochs_left` epochs after the current one (and the end of the current one)."""
        if rate <= 0:
            return float("nan")
        before = sum(self.before_seconds) / len(self.before_seconds) if self.before_seconds else 0.0
        after = sum(self.after_seconds) / len(self.after_seconds) if self.after_seconds else 0.0
        return iterations_left / rate + epochs_left * before + (epochs_left + 1) * after


class RunLogger:
    def __init__(self, out: Path, enable_tensorboard: bool = True, purge_step: Optional[int] = None):
        """`purge_step`: on resume, the iteration of the checkpoint; TensorBoard then hides the events a
        killed run wrote after it."""
        self.out = Path(out)
        self.metrics_path = self.out / "metrics.jsonl"
        self.writer = None
        if enable_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=purge_step)
            except ImportError as exc:  # tensorboard is a dependency; keep training if it is broken
                log.warning("TensorBoard logging disabled: %s", exc)
        self._sums: Dict[str, torch.Tensor] = {}
        self._count = 0

    def scalars(self, values: Dict[str, float], step: int, prefix: str = "") -> None:
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(float(v)):
                    self.writer.add_scalar(f"{prefix}{k}", float(v), step)

    def accumulate(self, losses: Dict[str, torch.Tensor]) -> None:
        """Add one step's losses (tensors stay on the device: no synchronisation per iteration)."""
        for k, v in losses.items():
            v = v.detach().float() if torch.is_tensor(v) else torch.tensor(float(v))
            self._sums[k] = self._sums[k] + v if k in self._sums else v
        self._count += 1

    def flush_losses(self, reduce: Optional[Callable[[Dict[str, float]], Dict[str, float]]] = None) -> Dict[str, float]:
        """Mean of the accumulated losses since the last flush, as floats (one sync). ``reduce`` combines
        them with other processes' before the divergence check (torchrun: the mean over the ranks, so
        every rank stops together)."""
        means = {k: float(v) / max(self._count, 1) for k, v in self._sums.items()}
        if reduce is not None:
            means = reduce(means)
        self._sums, self._count = {}, 0
        bad = [k for k, v in means.items() if not math.isfinite(v)]
        if bad:
            raise TrainingDivergedError(f"loss {', '.join(bad)} became {means[bad[0]]}")
        return means

    def progress(self, epoch: int, epochs: int, it: int, iters: int, step: int, losses: Dict[str, float],
                 lr: float, rate: float, eta: float) -> None:
        """The iteration line (`rate`: iterations per second; `eta`: seconds left, NaN when unknown) and the
        train/* scalars."""
        loss_text = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
        log.info("epoch %d/%d  it %d/%d  %s  lr %.2e  %.2f it/s  eta %s", epoch + 1, epochs, it, iters, loss_text,
                 lr, rate, format_seconds(eta) if math.isfinite(eta) else "?")
        self.scalars({**losses, "lr": lr}, step, prefix="train/")

    def epoch_record(self, record: Dict, replace: bool = False) -> None:
        """Append the epoch's record to metrics.jsonl (`replace`: start the file anew with it, atomically)."""
        self.out.mkdir(parents=True, exist_ok=True)
        if replace:
            from .runfolder import write_text_atomic
            write_text_atomic(self.metrics_path, json.dumps(record) + "\n")
        else:
            with open(self.metrics_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        step = record.get("epoch", 0)
        # Every dict-valued entry (clusters, eval, a method's end_epoch extras such as GCL's
        # `generation`) becomes scalars `<key>/<name>`, nested dicts `<key>/<name>/<sub>`. Epoch losses
        # are skipped: they are already logged per iteration as train/*.
        for key, value in record.items():
            if isinstance(value, dict) and key != "losses":
                self.scalars(flatten_scalars(value), step, prefix=f"{key}/")

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            try:
                writer.close()
            except OSError as exc:  # e.g. disk full: the run's own error says it; do not stack a second one
                log.warning("TensorBoard events could not be flushed: %s", exc.strerror or exc)


def flatten_scalars(values: Dict, prefix: str = "") -> Dict[str, float]:
    """Nested dicts → ``{"a/b": number}``; non-numeric leaves (lists, strings, booleans) are left out."""
    flat: Dict[str, float] = {}
    for k, v in values.items():
        if isinstance(v, dict):
            flat.update(flatten_scalars(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            flat[f"{prefix}{k}"] = v
    return flat


def read_metrics(path: Path) -> list:
    """The records of metrics.jsonl ([] when there is none). A damaged last line is the partial write of
    an interrupted append (e.g. disk full): it is dropped with a warning. A damaged line before it is a
    RunFolderError."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = [(n, line) for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if line.strip()]
    records = []
    for i, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif i == len(lines) - 1:
            log.warning("%s: dropped its damaged last line %d (an interrupted write)", path, number)
        else:
            raise RunFolderError(f"{path}: line {number} is not a JSON record; fix or delete that line")
    return records


def trim_metrics(path: Path, keep_epochs: int) -> None:
    """On resume, drop records of epochs after the checkpoint so metrics.jsonl has no duplicates."""
    records = [r for r in read_metrics(path) if r.get("epoch", 0) <= keep_epochs]
    if Path(path).is_file():
        from .runfolder import write_text_atomic
        write_text_atomic(Path(path), "".join(json.dumps(r) + "\n" for r in records))

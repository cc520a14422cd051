"""How gclreid reports on long jobs: :class:`Progress` (a tqdm bar on a terminal, plain lines with rate
and ETA in logs and pipes) and :func:`enable_logging` (the ``gclreid`` log lines — training progress,
cluster statistics, evaluation — on stderr for Python API users, as the command line shows them).

Every long step (feature extraction, evaluation, training, ``synth``, ``structures``, ``generate``,
``fid``, ``embed``) reports through :class:`Progress`; nothing else in gclreid draws progress bars.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import time
from typing import Iterator, Optional, TextIO, Union

__all__ = ["Progress", "enable_logging", "disable_logging", "quiet", "is_quiet", "format_seconds", "DEFAULT_EVERY"]

#: Seconds between two progress lines when the output is not a terminal (a line at the start and one at the
#: end are always written).
DEFAULT_EVERY = 10.0

LOG_FORMAT = "%(asctime)s %(message)s"
LOG_DATEFMT = "%H:%M:%S"

_QUIET: contextvars.ContextVar = contextvars.ContextVar("gclreid_progress_quiet", default=False)


def format_seconds(s: float) -> str:
    """``h:mm:ss``."""
    s = int(max(s, 0))
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


_fmt_seconds = format_seconds  # the old private name


@contextlib.contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """Within the block (this thread / task), every :class:`Progress` is silent (``train(progress=False)``)."""
    token = _QUIET.set(bool(on) or _QUIET.get())
    try:
        yield
    finally:
        _QUIET.reset(token)


def is_quiet() -> bool:
    """Whether a surrounding :func:`quiet` block silences progress."""
    return bool(_QUIET.get())


class Progress:
    """Counts items of a job of known size (`total`; None when unknown).

    On a terminal (``stream.isatty()``) it draws a tqdm bar; otherwise it writes one line at the start,
    then at most one every `every` seconds (default :data:`DEFAULT_EVERY`), and one at the end:
    ``embed: 3200/10000 images (32%), 85.1 images/s, eta 0:01:20`` — readable in a log file, no
    carriage returns. ``enabled=False`` (or a surrounding :func:`quiet`) writes nothing.

    `log`: write the lines through this logger at INFO instead of to `stream` (training's progress, so
    that it carries the log's timestamps and goes where the log goes); nothing at all is shown when the
    logger is not enabled for INFO (see :func:`enable_logging`). The bar on a terminal still goes to
    `stream` (default ``sys.stderr``).

    Use it as a context manager, or call :meth:`close` at the end (writes the final line if the count
    fell short of `total`, e.g. images skipped)."""

    def __init__(self, total: Optional[int], desc: str = "embed", unit: str = "images", enabled: bool = True,
                 stream: Optional[TextIO] = None, every: Optional[float] = None,
                 log: Optional[logging.Logger] = None) -> None:
        self.total = None if total is None else int(total)
        self.desc, self.unit = desc, unit
        self.every = DEFAULT_EVERY if every is None else float(every)
        self.stream = stream or sys.stderr
        self.log = log
        self.enabled = bool(enabled) and not _QUIET.get() and (log is None or log.isEnabledFor(logging.INFO))
        self.done = 0
        self.started = self.last = time.monotonic()
        self._bar = None
        self._final = False
        if not self.enabled:
            return
        if getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm
            self._bar = tqdm(total=self.total, desc=desc, unit=unit[:-1] if unit.endswith("s") else unit,
                             file=self.stream, dynamic_ncols=True)
        else:
            self._line(f"{self.desc}: {self.total} {self.unit}" if self.total is not None
                       else f"{self.desc}: started")

    def _line(self, text: str) -> None:
        if self.log is not None:
            self.log.info("%s", text)
        else:
            print(text, file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(int(n))
            return
        now = time.monotonic()
        if (self.total is not None and self.done >= self.total) or now - self.last >= self.every:
            self._report(now)

    def _report(self, now: float) -> None:
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        finished = self.total is not None and self.done >= self.total
        if self.total is None:
            count = f"{self.done} {self.unit}"
            tail = ""
        else:
            count = f"{self.done}/{self.total} {self.unit} ({100.0 * self.done / max(self.total, 1):.0f}%)"
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            tail = ", eta " + (format_seconds(eta) if eta != float("inf") else "?")
        if finished or self._closing:
            tail = ", took " + format_seconds(elapsed)
            self._final = True
        self._line(f"{self.desc}: {count}, {rate:.1f} {self.unit}/s{tail}")

    _closing = False

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and not self._final and self.done > 0:
            self._closing = True
            self._report(time.monotonic())
        self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        elif self._bar is not None:
            self._bar.close()
            self._bar = None


class _StderrHandler(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record is written (it may be replaced, e.g. by tests)."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        logging.Handler.__init__(self, level)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr


def enable_logging(level: Union[int, str] = "INFO", stream: Optional[TextIO] = None,
                   fmt: str = LOG_FORMAT, datefmt: str = LOG_DATEFMT) -> logging.Handler:
    """Show gclreid's log lines (logger ``gclreid``) on `stream` (default: ``sys.stderr``), formatted as
    ``gclreid train`` prints them: ``12:03:41 epoch 1/50  it 100/400  loss 4.1  lr 3.50e-04  6.21 it/s
    eta 0:52:10``, feature extraction and evaluation progress, cluster statistics, warnings.

    ``from gclreid.engine import train; enable_logging(); train(cfg)`` then prints what the command line
    does. Calling it again replaces the handler it added. The lines also propagate to the root logger as
    usual: if your application configures logging itself (``logging.basicConfig(level=logging.INFO)``),
    that alone is enough — do not do both, or each line appears twice. Returns the handler;
    :func:`disable_logging` removes it."""
    logger = logging.getLogger("gclreid")
    disable_logging()
    handler: logging.Handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(fmt, datefmt))
    handler._gclreid = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.getLevelName(level.upper()) if isinstance(level, str) else int(level))
    return handler


def disable_logging() -> None:
    """Remove the handler :func:`enable_logging` added and reset the ``gclreid`` logger's level."""
    logger = logging.getLogger("gclreid")
    mine = [h for h in logger.handlers if getattr(h, "_gclreid", False)]
    for h in mine:
        logger.removeHandler(h)
    if mine:
        logger.setLevel(logging.NOTSET)

"""Progress on stderr for long jobs: a tqdm bar on a terminal, plain lines in logs and pipes."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def _fmt_seconds(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """Counts items of a job of known size.

    On a terminal (``stream.isatty()``) it draws a tqdm bar; otherwise it writes one line at the start,
    then at most one every `every` seconds, and one at the end: ``embed: 3200/10000 images (32%),
    85.1 images/s, eta 0:01:20`` — readable in a log file, no carriage returns. ``enabled=False``
    writes nothing."""

    def __init__(self, total: int, desc: str = "embed", unit: str = "images", enabled: bool = True,
                 stream: Optional[TextIO] = None, every: float = 10.0) -> None:
        self.total, self.desc, self.unit, self.every = int(total), desc, unit, float(every)
        self.stream = stream or sys.stderr
        self.enabled = bool(enabled)
        self.done = 0
        self.started = self.last = time.monotonic()
        self._bar = None
        if not self.enabled:
            return
        if getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm
            self._bar = tqdm(total=self.total, desc=desc, unit=unit[:-1] if unit.endswith("s") else unit,
                             file=self.stream, dynamic_ncols=True)
        else:
            self._line(f"{self.desc}: {self.total} {self.unit}")

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def update(self, n: int) -> None:
        self.done += int(n)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(int(n))
            return
        now = time.monotonic()
        if self.done >= self.total or now - self.last >= self.every:
            self.last = now
            elapsed = max(now - self.started, 1e-9)
            rate = self.done / elapsed
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            pct = 100.0 * self.done / max(self.total, 1)
            self._line(f"{self.desc}: {self.done}/{self.total} {self.unit} ({pct:.0f}%), {rate:.1f} {self.unit}/s, "
                       f"{'eta ' + _fmt_seconds(eta) if self.done < self.total else 'took ' + _fmt_seconds(elapsed)}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

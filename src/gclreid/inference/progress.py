"""Progress on stderr for long jobs: moved to :mod:`gclreid.progress` (kept here for existing imports)."""
from __future__ import annotations

from ..progress import Progress, format_seconds as _fmt_seconds

__all__ = ["Progress"]

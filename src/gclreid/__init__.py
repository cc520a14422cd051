"""gclreid: person re-identification without identity labels (GCL, TMP, cluster contrast, DG-Net)."""
import os as _os

# OpenMP threads that spin while waiting make PyTorch on a busy CPU many times slower (measured:
# a ResNet-18 step 6.1 s instead of 0.5 s on 2 shared cores, docs/benchmarks.md). Passive waiting
# costs little on an idle machine. It only takes effect when set before torch is first imported;
# an explicit OMP_WAIT_POLICY in the environment wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

from .progress import disable_logging, enable_logging  # noqa: E402  (no torch import)

"""Exceptions for bad user input. The CLI prints these as one clear line instead of a traceback."""

import re


class GclreidError(Exception):
    """Base class: something the user gave (a path, a file, a value) is not what was expected."""

    def __init__(self, *args):
        # An error raised in a DataLoader worker comes back to the main process re-created from torch's
        # "Caught X in DataLoader worker process N.\nOriginal Traceback ...": keep it one line.
        if len(args) == 1 and isinstance(args[0], str) and _WORKER.match(args[0]):
            args = (_from_worker(args[0]),)
        super().__init__(*args)


_WORKER = re.compile(r"Caught (\w+) (in DataLoader worker process \d+|in pin memory thread[^.]*)\.\n")


def _from_worker(message: str) -> str:
    """The original error message of a DataLoader worker's traceback, plus where it happened."""
    where = _WORKER.match(message).group(2)
    lines = [line for line in message.splitlines() if line.strip()]
    last = lines[-1] if lines else message
    # The traceback's last line is "module.Class: message".
    text = re.sub(r"^[\w.]+(Error|Exception|Warning)\w*: ", "", last.strip())
    return f"{text} ({where})"


class DatasetError(GclreidError, ValueError):
    """A dataset root, layout, list file or image that does not match what the reader expects."""


class ImageDecodeError(DatasetError):
    """An image file that exists but does not decode."""


class CheckpointError(GclreidError, ValueError):
    """A checkpoint file that is missing, corrupt, or does not fit the model it is loaded into."""


class UnsafeFileError(CheckpointError):
    """A checkpoint or weights file whose pickle needs objects the safe loader does not build
    (``torch.load(weights_only=True)`` with gclreid's allow-list): loading it could run code."""


class WeightsNotFoundError(GclreidError, FileNotFoundError):
    """Pretrained weights that are not on disk (nothing is downloaded at run time)."""


class EvaluationError(GclreidError, ValueError):
    """An evaluation that cannot give a number: no query has a valid match in the gallery, or features
    that are not finite (a model whose weights or BatchNorm statistics are NaN/Inf)."""


class RunFolderError(GclreidError):
    """A run folder (``run.out``) that a training run may not write into as asked: it holds another run
    (without ``--resume`` / ``--overwrite``), a resume whose config differs from the checkpoint's, a
    folder in use by another run, or a write that failed (disk full, permission denied)."""


class TrainingDivergedError(GclreidError, FloatingPointError):
    """Training diverged (a loss became NaN/infinite, or the weights exploded); the last good checkpoint
    is kept."""

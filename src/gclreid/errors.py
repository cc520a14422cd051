"""Exceptions for bad user input. The CLI prints these as one clear line instead of a traceback."""


class GclreidError(Exception):
    """Base class: something the user gave (a path, a file, a value) is not what was expected."""


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

"""Image loading that names the file it fails on, and the torch dataset over image records."""
from __future__ import annotations

import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from PIL import Image
from torch.utils.data import Dataset

from ..errors import DatasetError, ImageDecodeError
from ..progress import Progress
from .records import ImageRecord


_log = logging.getLogger("gclreid")


class BadImageWarning(UserWarning):
    """Undecodable images were skipped (only with ``skip_bad_images=True``)."""


def load_image(path: os.PathLike) -> Image.Image:
    """Decode an image file fully and return it as RGB.

    Raises :class:`DatasetError` when the file is missing or cannot be read (permission denied, a
    folder) and :class:`ImageDecodeError` (a DatasetError) when it exists but does not decode (corrupt,
    truncated, not an image).
    """
    try:
        with open(path, "rb") as handle:
            image = Image.open(handle)
            image.load()  # decode now, while the file is open, so truncation is caught here
            return image.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(f"image file {os.fspath(path)} does not exist") from None
    except IsADirectoryError:
        raise DatasetError(f"image file {os.fspath(path)} is a folder, not an image") from None
    except PermissionError as exc:
        raise DatasetError(f"image file {os.fspath(path)} cannot be read: permission denied "
                           f"({exc.strerror or exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"image {os.fspath(path)} does not decode: {exc}") from None


def check_images(paths: Sequence[str], workers: Optional[int] = None,
                 progress: Union[bool, logging.Logger] = False) -> List[Tuple[int, str, str]]:
    """Decode every file; return ``(position, path, reason)`` for those that fail, in input order.
    `progress`: :class:`gclreid.progress.Progress` on stderr (true) or through a logger.

    Threads overlap the decoding (Pillow releases the GIL while decoding)."""
    def probe(item: Tuple[int, str]) -> Optional[Tuple[int, str, str]]:
        try:
            load_image(item[1])
        except DatasetError as exc:
            return item[0], item[1], str(exc)
        return None

    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        bad = []
        with Progress(len(paths), desc="checking images", unit="images", enabled=bool(progress),
                      log=progress if isinstance(progress, logging.Logger) else None) as bar:
            for r in pool.map(probe, enumerate(paths), chunksize=64):
                bar.update(1)
                if r is not None:
                    bad.append(r)
        return bad


class ImageDataset(Dataset):
    """Images of a list of :class:`ImageRecord` as ``{"image", "pid", "camid", "index"}`` dicts.

    ``index`` is the item's position in this dataset (``self.records[index]``). ``labels``, when
    given (one per record, e.g. relabelled or pseudo labels), adds a ``"label"`` entry.
    ``transform`` maps the RGB PIL image to what ``"image"`` holds (None: the PIL image itself).

    By default an undecodable image raises :class:`ImageDecodeError` naming its path when it is
    reached. With ``skip_bad_images=True`` every file is decoded once up front; the ones that fail
    are dropped from ``records`` (and ``labels``), listed in ``skipped`` as ``(path, reason)``,
    counted in ``num_skipped``, and a :class:`BadImageWarning` says how many and which.
    ``kept_indices[i]`` is the position in the input list of ``self.records[i]``.
    """

    def __init__(self, records: Sequence[ImageRecord], transform: Optional[Callable[[Image.Image], Any]] = None,
                 skip_bad_images: bool = False, labels: Optional[Sequence[int]] = None) -> None:
        records = list(records)
        if labels is not None and len(labels) != len(records):
            raise DatasetError(f"ImageDataset: {len(labels)} labels for {len(records)} images")
        self.transform = transform
        self.skipped: List[Tuple[str, str]] = []
        self.kept_indices = list(range(len(records)))
        if skip_bad_images and records:
            bad = check_images([r.path for r in records], progress=_log if len(records) >= 5000 else False)
            if bad:
                bad_pos = {pos for pos, _, _ in bad}
                self.kept_indices = [i for i in self.kept_indices if i not in bad_pos]
                self.skipped = [(path, reason) for _, path, reason in bad]
                shown = ", ".join(p for p, _ in self.skipped[:3]) + (", …" if len(bad) > 3 else "")
                warnings.warn(f"skipped {len(bad)} of {len(records)} images that do not decode: {shown}",
                              BadImageWarning, stacklevel=2)
        self.records = [records[i] for i in self.kept_indices]
        self.labels = None if labels is None else [int(labels[i]) for i in self.kept_indices]

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.records[index]
        image = load_image(record.path)
        item = {"image": self.transform(image) if self.transform is not None else image,
                "pid": record.pid, "camid": record.camid, "index": index}
        if self.labels is not None:
            item["label"] = self.labels[index]
        return item

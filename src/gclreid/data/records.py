"""Image records and the dataset container that every reader returns."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..errors import DatasetError

SPLITS: Tuple[str, ...] = ("train", "query", "gallery")
IMAGE_SUFFIXES: Tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split.

    ``pid`` is the raw identity as written in the file name or list (-1 when unknown);
    ``camid`` is 0-based (-1 when unknown); ``relpath`` is the path relative to the split's image
    folder, with ``/`` separators (structure maps and other per-image files are keyed by it).
    """
    path: str
    pid: int
    camid: int
    relpath: str
    split: str


class DatasetCountWarning(UserWarning):
    """A released dataset whose image or identity counts differ from the published ones."""


def split_stats(records: Sequence[ImageRecord]) -> Dict[str, int]:
    """``{"images", "ids", "cams"}`` of one split; unknown identities and cameras (-1) are not counted."""
    return {
        "images": len(records),
        "ids": len({r.pid for r in records if r.pid >= 0}),
        "cams": len({r.camid for r in records if r.camid >= 0}),
    }


def find_images(folder: str, recursive: bool = True) -> List[str]:
    """Relative paths (``/`` separators, sorted) of the image files under ``folder``."""
    found: List[str] = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            rel = os.path.relpath(dirpath, folder)
            for fname in filenames:
                if fname.lower().endswith(IMAGE_SUFFIXES):
                    found.append(fname if rel == "." else f"{rel}/{fname}".replace(os.sep, "/"))
    else:
        with os.scandir(folder) as entries:
            found = [e.name for e in entries if e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file()]
    return sorted(found)


class ReIDDataset:
    """Train / query / gallery lists of :class:`ImageRecord`, each sorted by ``relpath``.

    A reader subclasses this and implements :meth:`load`, returning the three lists; options are
    keyword arguments of its ``__init__``, which stores them and then calls ``super().__init__(root)``.
    Register it with :func:`gclreid.data.register_dataset` to make it available by name.
    An unlabeled dataset has training images with ``pid == -1`` and empty query and gallery.
    """

    name: str = "dataset"  # set by register_dataset

    def __init__(self, root: os.PathLike) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.dataset_dir = self.root  # where the images were found; readers may point deeper
        # Images dropped while reading (e.g. Market-1501 junk, pid -1), per split.
        self.dropped: Dict[str, int] = {s: 0 for s in SPLITS}
        train, query, gallery = self.load()
        self._set_splits(train, query, gallery)

    @classmethod
    def from_records(cls, root: os.PathLike, train: Iterable[ImageRecord], query: Iterable[ImageRecord] = (),
                     gallery: Iterable[ImageRecord] = (), name: Optional[str] = None) -> "ReIDDataset":
        """Build a dataset from records made elsewhere (no reading from disk)."""
        obj = cls.__new__(cls)
        obj.root = os.path.abspath(os.fspath(root))
        obj.dataset_dir = obj.root
        obj.dropped = {s: 0 for s in SPLITS}
        if name is not None:
            obj.name = name
        obj._set_splits(list(train), list(query), list(gallery))
        return obj

    def load(self) -> Tuple[List[ImageRecord], List[ImageRecord], List[ImageRecord]]:
        """Read the dataset under ``self.root``; return (train, query, gallery)."""
        raise NotImplementedError(f"{type(self).__name__} must implement load()")

    def _set_splits(self, train: List[ImageRecord], query: List[ImageRecord], gallery: List[ImageRecord]) -> None:
        lists = {"train": train, "query": query, "gallery": gallery}
        for split, records in lists.items():
            seen = set()
            for r in records:
                if r.split != split:
                    raise DatasetError(f"{self.name}: record {r.path} is marked split={r.split!r} "
                                       f"but was returned in the {split} list")
                if r.relpath in seen:
                    raise DatasetError(f"{self.name}: {r.relpath} appears twice in the {split} split "
                                       f"(dataset at {self.dataset_dir})")
                seen.add(r.relpath)
            records.sort(key=lambda r: r.relpath)
        if not train:
            raise DatasetError(f"{self.name}: the train split under {self.dataset_dir} is empty")
        if bool(query) != bool(gallery):
            empty = "query" if not query else "gallery"
            raise DatasetError(f"{self.name}: the {empty} split under {self.dataset_dir} is empty "
                               "(query and gallery must both have images, or both be absent)")
        self.train, self.query, self.gallery = train, query, gallery

    def stats(self) -> Dict[str, Dict[str, int]]:
        """``{"train": {"images", "ids", "cams"}, "query": …, "gallery": …}``."""
        return {s: split_stats(getattr(self, s)) for s in SPLITS}

    def train_labels(self) -> List[int]:
        """Training identities relabelled to 0..N-1 in increasing raw-pid order (pid -1 stays -1)."""
        pids = sorted({r.pid for r in self.train if r.pid >= 0})
        relabel = {pid: i for i, pid in enumerate(pids)}
        return [relabel.get(r.pid, -1) for r in self.train]

    @property
    def num_train_ids(self) -> int:
        return len({r.pid for r in self.train if r.pid >= 0})

    @property
    def unlabeled(self) -> bool:
        return all(r.pid < 0 for r in self.train)

    def __repr__(self) -> str:
        parts = ", ".join(f"{s}={v['images']} images/{v['ids']} ids/{v['cams']} cams" for s, v in self.stats().items())
        return f"{type(self).__name__}(name={self.name!r}, root={self.dataset_dir!r}, {parts})"


def warn_if_counts_differ(name: str, where: str, splits: Mapping[str, Sequence[ImageRecord]],
                          published: Mapping[str, Tuple[int, Optional[int]]]) -> None:
    """Warn (not fail) once, in one line, listing each split whose images/identities differ from the
    published release."""
    differences = []
    for split, (images, ids) in published.items():
        got = split_stats(splits[split])
        if got["images"] != images:
            differences.append(f"the {split} split has {got['images']} images, the published release has {images}")
        if ids is not None and got["ids"] != ids:
            differences.append(f"the {split} split has {got['ids']} identities, the published release has {ids}")
    if differences:
        warnings.warn(f"{name} at {where}: " + "; ".join(differences), DatasetCountWarning, stacklevel=2)

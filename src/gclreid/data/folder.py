"""A generic reader for the user's own data: identities and cameras from file names or a CSV.

Pattern mode: ``<root>/train/``, ``<root>/query/``, ``<root>/gallery/`` (names configurable),
images found recursively; ``pattern`` is a regular expression searched in each image's path
relative to its split folder, with a named group ``pid`` (an integer) and optionally ``camid``.
CSV mode: ``csv`` names a file with a header ``path,pid[,camid][,split]``; paths are relative to
``root`` (or absolute); without a ``split`` column every row is a training image.
Unlabeled mode: only training images (``<root>/train/`` if present, else everything under
``root``); pid is -1, cameras come from ``pattern``'s ``camid`` group or the CSV when given.

Camera values may be any integers or names; they are relabelled to 0..C-1 in sorted order over
all splits (numbers numerically), so 0-based, 1-based and sparse numberings all work. Integers are
compared by value: ``1``, ``01`` and ``1.0`` are one camera.
Negative pids are junk and dropped (as Market-1501's -1), counted in ``dataset.dropped``.
"""
from __future__ import annotations

import csv as csvlib
import os
import re
from decimal import Decimal
from typing import Dict, List, Optional, Tuple

from ..errors import DatasetError
from .records import SPLITS, ImageRecord, ReIDDataset, find_images
from .registry import register_dataset

DEFAULT_PATTERN = r"(?P<pid>-?\d+)_c(?P<camid>\d+)"
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")

# (relpath, raw pid or None, raw camera or None, path) per split, before cameras are relabelled.
_Raw = Tuple[str, Optional[int], Optional[str], str]


@register_dataset("folder", aliases=("custom",))
class FolderDataset(ReIDDataset):
    """Your own images: identities/cameras from a file-name ``pattern`` or a ``csv``; ``unlabeled`` mode."""

    def __init__(self, root: os.PathLike, pattern: Optional[str] = None, csv: Optional[str] = None,
                 unlabeled: bool = False, train_dir: str = "train", query_dir: str = "query",
                 gallery_dir: str = "gallery") -> None:
        self.pattern_text = pattern
        self.csv = csv
        self.unlabeled_mode = unlabeled
        self.split_dirs = {"train": train_dir, "query": query_dir, "gallery": gallery_dir}
        self.camera_names: List[str] = []  # camid -> the camera value in the file name / CSV (integers as "1", not "01")
        super().__init__(root)

    def load(self) -> Tuple[List[ImageRecord], List[ImageRecord], List[ImageRecord]]:
        if not os.path.isdir(self.root):
            raise DatasetError(f"folder: dataset root {self.root} does not exist or is not a folder")
        raw = self._read_csv() if self.csv else self._read_pattern()
        cams = sorted({cam for rows in raw.values() for _, _, cam, _ in rows if cam is not None},
                      key=lambda c: (0, int(c), c) if _is_int(c) else (1, 0, c))
        self.camera_names = cams
        cam_index = {c: i for i, c in enumerate(cams)}
        out: Dict[str, List[ImageRecord]] = {}
        for split in SPLITS:
            out[split] = []
            for relpath, pid, cam, path in raw.get(split, []):
                if pid is not None and pid < 0:
                    self.dropped[split] += 1
                    continue
                out[split].append(ImageRecord(path, -1 if pid is None else pid,
                                              -1 if cam is None else cam_index[cam], relpath, split))
            if raw.get(split) and not out[split]:
                raise DatasetError(f"folder: every image of the {split} split under {self.root} has a "
                                   "negative (junk) identity")
        return out["train"], out["query"], out["gallery"]

    # -- pattern mode -------------------------------------------------------------------------
    def _compile(self) -> Optional["re.Pattern[str]"]:
        text = self.pattern_text if self.pattern_text is not None else (None if self.unlabeled_mode else DEFAULT_PATTERN)
        if text is None:
            return None
        try:
            rule = re.compile(text)
        except re.error as exc:
            raise DatasetError(f"folder: pattern {text!r} is not a valid regular expression: {exc}") from None
        if not self.unlabeled_mode and "pid" not in rule.groupindex:
            raise DatasetError(f"folder: pattern {text!r} needs a named group (?P<pid>...) for the identity "
                               "(or use unlabeled=true)")
        return rule

    def _read_pattern(self) -> Dict[str, List[_Raw]]:
        rule = self._compile()
        folders = {s: os.path.join(self.root, d) for s, d in self.split_dirs.items()}
        if self.unlabeled_mode:
            folders = {"train": folders["train"] if os.path.isdir(folders["train"]) else self.root}
        elif not os.path.isdir(folders["train"]):
            raise DatasetError(f"folder: no training folder {folders['train']} (expected {self.split_dirs['train']}/, "
                               f"{self.split_dirs['query']}/, {self.split_dirs['gallery']}/ under {self.root}; "
                               "use unlabeled=true for a plain folder of images)")
        else:
            present = [s for s in ("query", "gallery") if os.path.isdir(folders[s])]
            if len(present) == 1:
                other = "gallery" if present == ["query"] else "query"
                raise DatasetError(f"folder: {folders[present[0]]} exists but {folders[other]} does not "
                                   "(query and gallery go together)")
            folders = {s: f for s, f in folders.items() if os.path.isdir(f)}
        raw: Dict[str, List[_Raw]] = {}
        for split, folder in folders.items():
            names = find_images(folder)
            if not names:
                raise DatasetError(f"folder: the {split} folder {folder} has no images")
            raw[split] = [self._parse(rule, relpath, os.path.join(folder, relpath)) for relpath in names]
        return raw

    def _parse(self, rule: Optional["re.Pattern[str]"], relpath: str, path: str) -> _Raw:
        if rule is None:
            return relpath, None, None, path
        match = rule.search(relpath)
        if match is None:
            raise DatasetError(f"folder: {path} does not match the pattern {rule.pattern!r} "
                               "(searched in the path relative to the split folder)")
        groups = match.groupdict()
        pid = None
        if not self.unlabeled_mode:
            pid = _parse_pid(groups["pid"], path)
        return relpath, pid, _parse_camera(groups.get("camid"), path), path

    # -- CSV mode -----------------------------------------------------------------------------
    def _read_csv(self) -> Dict[str, List[_Raw]]:
        path = self.csv if os.path.isabs(self.csv) else os.path.join(self.root, self.csv)
        if not os.path.isfile(path):
            raise DatasetError(f"folder: CSV file {path} does not exist")
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: Excel writes a BOM
            reader = csvlib.DictReader(handle)
            columns = {c.strip().lower(): c for c in (reader.fieldnames or [])}
            needed = ["path"] if self.unlabeled_mode else ["path", "pid"]
            missing = [c for c in needed if c not in columns]
            if missing:
                raise DatasetError(f"folder: CSV file {path} has no column {', '.join(missing)} "
                                   f"(header must be path,pid[,camid][,split]; got {reader.fieldnames})")
            raw: Dict[str, List[_Raw]] = {}
            absent = []
            for lineno, row in enumerate(reader, 2):
                cell = {k: (row.get(orig) or "").strip() for k, orig in columns.items()}
                where = f"{path} line {lineno}"
                split = cell.get("split", "").lower() or "train"
                if split not in SPLITS:
                    raise DatasetError(f"folder: {where}: split {cell['split']!r}; expected train, query or gallery")
                if self.unlabeled_mode and split != "train":
                    raise DatasetError(f"folder: {where}: split={split} but unlabeled mode reads training images only")
                relpath = cell["path"].replace("\\", "/")
                if not relpath:
                    raise DatasetError(f"folder: {where}: empty path")
                image = relpath if os.path.isabs(relpath) else os.path.join(self.root, relpath)
                if not os.path.isfile(image):
                    absent.append(image)
                pid = None if self.unlabeled_mode else _parse_pid(cell["pid"], where)
                cam = _parse_camera(cell.get("camid") or None, where)
                raw.setdefault(split, []).append((relpath, pid, cam, os.path.abspath(image)))
        if absent:
            raise DatasetError(f"folder: {len(absent)} images listed in {path} do not exist, e.g. {', '.join(absent[:3])}")
        if not raw.get("train"):
            raise DatasetError(f"folder: CSV file {path} lists no training images")
        if bool(raw.get("query")) != bool(raw.get("gallery")):
            raise DatasetError(f"folder: CSV file {path} lists {'query' if raw.get('query') else 'gallery'} "
                               "images but no " + ("gallery" if raw.get("query") else "query") + " images")
        return raw


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _parse_pid(text: Optional[str], where: str) -> int:
    if text is None or not _is_int(text.strip()):
        raise DatasetError(f"folder: {where}: identity {text!r} is not an integer")
    return int(text)


def _parse_camera(text: Optional[str], where: str) -> Optional[str]:
    """A camera name, or an integer in canonical form: ``01`` and ``1.0`` (pandas writes floats when a
    column has gaps) must not be cameras apart from ``1``."""
    if text is None or not _NUMBER.fullmatch(text):
        return text
    value = Decimal(text)
    if value != value.to_integral_value():
        raise DatasetError(f"folder: {where}: camera {text!r} is a number but not an integer")
    return str(int(value))

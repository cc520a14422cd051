"""MSMT17 V1 and V2, read from the list files of the release.

V1: ``MSMT17_V1/{train,test}/<pid>/<name>.jpg``; V2: ``MSMT17_V2/{mask_train_v2,mask_test_v2}/…``.
Both ship ``list_train.txt``, ``list_val.txt``, ``list_query.txt`` and ``list_gallery.txt`` whose
lines are ``0000/0000_000_01_0303morning_0015_0.jpg 0`` (path relative to the image folder, pid).
The camera is the third field of the file name (01..15). Train and val images live in the train
folder and share identities; as in GCL, train = list_train + list_val unless ``include_val=False``.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

from ..errors import DatasetError
from .records import ImageRecord, ReIDDataset, find_images, warn_if_counts_differ
from .registry import register_dataset

_NAME_RULE = re.compile(r"^(\d+)_(\d+)_(\d+)_")
_IMAGE_DIRS = {1: ("train", "test"), 2: ("mask_train_v2", "mask_test_v2")}
_CANDIDATES = ("", "MSMT17_V1", "MSMT17_V2", "msmt17/MSMT17_V1", "msmt17/MSMT17_V2", "msmt17")
_RELEASE_DIRS = ("MSMT17_V1", "MSMT17_V2")
_NUM_CAMS = 15
_EXAMPLE_LINE = "0000/0000_000_01_0303morning_0015_0.jpg 0"


@register_dataset("msmt17", aliases=("msmt",))
class MSMT17(ReIDDataset):
    """MSMT17 as released: 1,041 training identities, 15 cameras. ``version`` 1 or 2 (None: detect)."""

    def __init__(self, root: os.PathLike, version: Optional[int] = None, include_val: bool = True,
                 verify_counts: bool = True) -> None:
        if version not in (None, 1, 2):
            raise DatasetError(f"msmt17: version={version!r}; expected 1, 2 or unset (detected from the folders)")
        self.version = version
        self.include_val = include_val
        self.verify_counts = verify_counts
        super().__init__(root)

    def load(self) -> Tuple[List[ImageRecord], List[ImageRecord], List[ImageRecord]]:
        self.dataset_dir, self.version = self._find_dataset_dir()
        train_dir, test_dir = (os.path.join(self.dataset_dir, d) for d in _IMAGE_DIRS[self.version])
        train = self._read_list("list_train.txt", train_dir, "train")
        if self.include_val:
            train += self._read_list("list_val.txt", train_dir, "train")
        query = self._read_list("list_query.txt", test_dir, "query")
        gallery = self._read_list("list_gallery.txt", test_dir, "gallery")
        self._check_files_exist(train_dir, train)
        self._check_files_exist(test_dir, query + gallery)
        if self.verify_counts and os.path.basename(self.dataset_dir) in _RELEASE_DIRS:
            published = {"train": (32621, 1041) if self.include_val else (30248, 1041),
                         "query": (11659, 3060), "gallery": (82161, 3060)}
            warn_if_counts_differ(self.name, self.dataset_dir, {"train": train, "query": query, "gallery": gallery},
                                  published)
        return train, query, gallery

    def _find_dataset_dir(self) -> Tuple[str, int]:
        if not os.path.isdir(self.root):
            raise DatasetError(f"msmt17: dataset root {self.root} does not exist or is not a folder")
        found, looked = [], []
        for sub in _CANDIDATES:
            folder = os.path.normpath(os.path.join(self.root, sub))
            looked.append(folder)
            for version, dirs in _IMAGE_DIRS.items():
                if all(os.path.isdir(os.path.join(folder, d)) for d in dirs) and (folder, version) not in found:
                    found.append((folder, version))
        matching = [f for f in found if self.version in (None, f[1])]
        if not matching:
            want = {None: "train/ + test/ (V1) or mask_train_v2/ + mask_test_v2/ (V2)",
                    1: "train/ + test/ (V1)", 2: "mask_train_v2/ + mask_test_v2/ (V2)"}[self.version]
            also = f" (found only {', '.join(f'V{v} at {d}' for d, v in found)})" if found else ""
            raise DatasetError(f"msmt17: no MSMT17 layout found: expected image folders {want} and the "
                               f"list_*.txt files in one of {', '.join(looked)}{also}")
        if len({v for _, v in matching}) > 1:
            raise DatasetError(f"msmt17: both V1 and V2 found under {self.root} "
                               f"({', '.join(d for d, _ in matching)}); choose one with version=1 or version=2")
        return matching[0]

    def _read_list(self, list_name: str, image_dir: str, split: str) -> List[ImageRecord]:
        path = os.path.join(self.dataset_dir, list_name)
        if not os.path.isfile(path):
            raise DatasetError(f"msmt17: list file {path} is missing; the release ships list_train.txt, "
                               f"list_val.txt, list_query.txt and list_gallery.txt next to "
                               f"{', '.join(d + '/' for d in _IMAGE_DIRS[self.version])}")
        records = []
        with open(path, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                    raise DatasetError(f"msmt17: {path} line {lineno}: {line.strip()!r} is not "
                                       f"'<relative path> <pid>' (expected like {_EXAMPLE_LINE!r})")
                relpath, pid = fields[0].replace("\\", "/"), int(fields[1])
                match = _NAME_RULE.match(os.path.basename(relpath))
                if match is None:
                    raise DatasetError(f"msmt17: {path} line {lineno}: file name {relpath} does not match "
                                       "<pid>_<index>_<camera>_… (expected like 0000_000_01_0303morning_0015_0.jpg)")
                cam = int(match.group(3))
                if not 1 <= cam <= _NUM_CAMS:
                    raise DatasetError(f"msmt17: {path} line {lineno}: {relpath} has camera {cam}; "
                                       f"expected 1..{_NUM_CAMS}")
                records.append(ImageRecord(os.path.join(image_dir, relpath), pid, cam - 1, relpath, split))
        if not records:
            raise DatasetError(f"msmt17: list file {path} lists no images ({split} split would be empty)")
        return records

    def _check_files_exist(self, image_dir: str, records: List[ImageRecord]) -> None:
        on_disk = set(find_images(image_dir))  # one walk instead of a stat per listed file
        missing = [r.path for r in records if r.relpath not in on_disk]
        if missing:
            raise DatasetError(f"msmt17: {len(missing)} images named in the list files are not in {image_dir}, "
                               f"e.g. {', '.join(missing[:3])}")

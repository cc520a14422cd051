"""Readers for the Market-1501 layout: Market-1501, DukeMTMC-reID and SynthReID.

The layout is three flat folders of images, ``bounding_box_train/``, ``query/`` and
``bounding_box_test/`` (the gallery), with identity and camera in the file name:
``0002_c1s1_000451_03.jpg`` (Market: pid 0002, camera 1) or ``0001_c2_f0046182.jpg`` (Duke).
Junk images (pid -1, Market's gallery) are dropped; distractors (pid 0000) are kept.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Tuple

from ..errors import DatasetError
from .records import SPLITS, ImageRecord, ReIDDataset, find_images, warn_if_counts_differ
from .registry import register_dataset

_NAME_RULE = re.compile(r"^(-?\d+)_c(\d+)")


class MarketLayoutDataset(ReIDDataset):
    """Base reader for datasets in Market-1501 layout; subclasses set the class attributes."""

    split_dirs: Dict[str, str] = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    # Sub-folders of the given root where the three split folders may be found, in order.
    candidates: Tuple[str, ...] = ("",)
    # Folder names of the full release: when the images are found in such a folder, counts are
    # compared with ``published`` ({split: (images, ids)}) and differences are warned about.
    release_dirs: Tuple[str, ...] = ()
    published: Dict[str, Tuple[int, Optional[int]]] = {}
    num_cams: Optional[int] = None  # cameras are 1..num_cams in file names; None: any >= 1
    example = "0002_c1s1_000451_03.jpg"
    title = "Market-1501 layout"

    def __init__(self, root: os.PathLike, verify_counts: bool = True) -> None:
        self.verify_counts = verify_counts
        super().__init__(root)

    def load(self) -> Tuple[List[ImageRecord], List[ImageRecord], List[ImageRecord]]:
        self.dataset_dir = self._find_dataset_dir()
        splits = {s: self._read_split(s) for s in SPLITS}
        if self.verify_counts and self.published and os.path.basename(self.dataset_dir) in self.release_dirs:
            warn_if_counts_differ(self.name, self.dataset_dir, splits, self.published)
        return splits["train"], splits["query"], splits["gallery"]

    def _find_dataset_dir(self) -> str:
        if not os.path.isdir(self.root):
            raise DatasetError(f"{self.name}: dataset root {self.root} does not exist or is not a folder")
        wanted = list(self.split_dirs.values())
        looked = []
        for sub in self.candidates:
            folder = os.path.normpath(os.path.join(self.root, sub))
            present = [d for d in wanted if os.path.isdir(os.path.join(folder, d))]
            if len(present) == len(wanted):
                return folder
            if present:
                missing = ", ".join(f"{d}/" for d in wanted if d not in present)
                raise DatasetError(f"{self.name}: {folder} has {', '.join(p + '/' for p in present)} but not "
                                   f"{missing} (expected the {self.title}: {', '.join(d + '/' for d in wanted)})")
            looked.append(folder)
        raise DatasetError(f"{self.name}: no {self.title} found: expected folders "
                           f"{', '.join(d + '/' for d in wanted)} in one of {', '.join(looked)}")

    def _read_split(self, split: str) -> List[ImageRecord]:
        folder = os.path.join(self.dataset_dir, self.split_dirs[split])
        names = find_images(folder, recursive=False)
        if not names:
            raise DatasetError(f"{self.name}: the {split} folder {folder} has no images "
                               f"(expected files named like {self.example})")
        records = []
        for fname in names:
            pid, camid = self._parse_name(os.path.join(folder, fname), fname)
            if pid == -1:  # junk: neither a match nor a distractor
                self.dropped[split] += 1
                continue
            records.append(ImageRecord(os.path.join(folder, fname), pid, camid, fname, split))
        if not records:
            raise DatasetError(f"{self.name}: the {split} folder {folder} has only junk images (pid -1)")
        return records

    def _parse_name(self, path: str, fname: str) -> Tuple[int, int]:
        match = _NAME_RULE.match(fname)
        if match is None:
            raise DatasetError(f"{self.name}: file name {path} does not match the naming rule "
                               f"<pid>_c<camera>… (expected names like {self.example})")
        pid, cam = int(match.group(1)), int(match.group(2))
        if pid < -1:
            raise DatasetError(f"{self.name}: file name {path} has identity {pid}; expected -1 (junk) or >= 0")
        top = self.num_cams if self.num_cams is not None else float("inf")
        if not 1 <= cam <= top:
            wanted = f"1..{self.num_cams}" if self.num_cams is not None else ">= 1"
            raise DatasetError(f"{self.name}: file name {path} has camera c{cam}; expected {wanted}")
        return pid, cam - 1


@register_dataset("market1501", aliases=("market", "market-1501"))
class Market1501(MarketLayoutDataset):
    """Market-1501 as released (``Market-1501-v15.09.15/``): 751 training identities, 6 cameras."""
    candidates = ("", "Market-1501-v15.09.15", "market1501", "market1501/Market-1501-v15.09.15")
    release_dirs = ("Market-1501-v15.09.15", "market1501")
    published = {"train": (12936, 751), "query": (3368, 750), "gallery": (15913, 751)}
    num_cams = 6
    title = "Market-1501 layout"


@register_dataset("dukemtmc", aliases=("dukemtmc-reid", "duke"))
class DukeMTMCreID(MarketLayoutDataset):
    """DukeMTMC-reID as released (``DukeMTMC-reID/``): 702 training identities, 8 cameras."""
    candidates = ("", "DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID", "dukemtmc-reid", "dukemtmc")
    release_dirs = ("DukeMTMC-reID",)
    published = {"train": (16522, 702), "query": (2228, 702), "gallery": (17661, 1110)}
    num_cams = 8
    example = "0001_c2_f0046182.jpg"
    title = "DukeMTMC-reID layout"


@register_dataset("synthreid")
class SynthReID(MarketLayoutDataset):
    """SynthReID, the project's synthetic dataset, written in Market-1501 layout and names."""
    title = "SynthReID (Market-1501 layout)"

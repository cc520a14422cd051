"""The training dataset of GCL: each item is an image, its structure map at 0° and at a new angle."""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DatasetError
from .layout import ANGLES, missing_structures, structure_path

log = logging.getLogger(__name__)


def load_structure(path: os.PathLike, height: int, width: int) -> torch.Tensor:
    """A grey structure map as a 1×H×W tensor in [−1, 1] (resized bicubic when its size differs)."""
    try:
        with Image.open(path) as im:
            im = im.convert("L")
            if im.size != (width, height):
                im = im.resize((width, height), Image.BICUBIC)
            arr = np.asarray(im, dtype=np.float32)
    except OSError as exc:
        raise DatasetError(f"structure map {path} does not decode: {exc}") from exc
    return torch.from_numpy(arr / 127.5 - 1.0)[None]


def is_blank(structure: torch.Tensor) -> bool:
    """True for a map of one grey value: no body at all (e.g. a rotated body that left the frame).
    Such a map must not reach the generator: its instance norms see zero variance in every channel and
    the gradient is multiplied by 1/sqrt(eps) at each of them, up to inf within a few iterations."""
    return bool(structure.max() == structure.min())


class StructureDataset(Dataset):
    """Items ``{"image", "structure", "structure_new", "angle", "pid", "camid", "index"}``.

    ``index`` is the item's position in `records` (the memory-bank row in GCL's stage 3). The new
    angle is drawn uniformly from `angles` for every item with Python's `random` (seeded per worker by
    the project's loaders). With ``flip_p`` > 0 the image and both structure maps are mirrored
    together. Every structure file is checked when the dataset is built: a missing one is an error
    naming the image and the path expected. A blank map (:func:`is_blank`) at 0° is an error naming
    the file; a blank map at the drawn new angle is replaced by the next angle of `angles` with a body
    (a warning names the file once per worker; `gclreid structures` should be re-run for it), and an
    image whose maps are blank at every angle is an error.

    With `view_path` (GCL's ``gcl.views=true_view``) items also hold ``view_new``: the true novel view at the
    item's (final) ``angle``, through `view_transform`; every such file is checked when the dataset is
    built (with `check`) and again when loaded, a missing one an error naming it.
    """

    def __init__(self, records: Sequence, structure_root: os.PathLike, image_transform, height: int, width: int,
                 angles: Sequence[int] = ANGLES, flip_p: float = 0.0, check: bool = True,
                 view_path: Optional[Callable[[Any, int], os.PathLike]] = None, view_transform=None) -> None:
        self.records = list(records)
        self.root = structure_root
        self.image_transform = image_transform
        self.height, self.width = height, width
        self.angles = tuple(angles)
        self.flip_p = flip_p
        self._warned: set = set()  # blank maps already reported (per process)
        # True novel views (GCL's gcl.views=true_view): view_path(record, angle) -> file, loaded with view_transform.
        self.view_path, self.view_transform = view_path, view_transform
        if view_path is not None and view_transform is None:
            raise ValueError("StructureDataset: view_path needs a view_transform")
        if check:
            missing = missing_structures(structure_root, self.records, self.angles)
            if missing:
                shown = "; ".join(f"{rec.path} → {path}" for rec, path in missing[:3])
                raise DatasetError(
                    f"{len(missing)} structure maps missing under {structure_root} (image → expected file): {shown}"
                    f"{' …' if len(missing) > 3 else ''}. Make them with `gclreid structures` or point "
                    "gcl.structure_root at the folder holding <train|test>/render[_deg]/")
        if check and view_path is not None:
            missing_views = [(rec, view_path(rec, a)) for rec in self.records for a in self.angles
                             if not Path(view_path(rec, a)).is_file()]
            if missing_views:
                shown = "; ".join(f"{rec.path} → {path}" for rec, path in missing_views[:3])
                raise DatasetError(f"{len(missing_views)} true novel views missing (image → expected file): {shown}"
                                   f"{' …' if len(missing_views) > 3 else ''}")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        from ..data import load_image
        record = self.records[index]
        angle = random.choice(self.angles)
        image = self.image_transform(load_image(record.path))
        s0 = self._load(record, 0)
        if is_blank(s0):
            raise DatasetError(f"structure map {structure_path(self.root, record, 0)} is blank (no body) for "
                               f"{record.path}; re-make it with `gclreid structures`")
        s1, angle = self._new_view(record, angle)
        extra = {}
        if self.view_path is not None:  # the true view at the angle of s1 (draws no random numbers)
            path = Path(self.view_path(record, angle))
            if not path.is_file():
                raise DatasetError(f"true novel view {path} (of {record.path} at {angle}°) does not exist")
            extra["view_new"] = self.view_transform(load_image(path))
        if self.flip_p > 0 and random.random() < self.flip_p:
            image, s0, s1 = image.flip(-1), s0.flip(-1), s1.flip(-1)
            extra = {k: v.flip(-1) for k, v in extra.items()}
        return {"image": image, "structure": s0, "structure_new": s1, "angle": angle, "pid": record.pid,
                "camid": record.camid, "index": index, **extra}

    def _load(self, record, angle: int) -> torch.Tensor:
        return load_structure(structure_path(self.root, record, angle), self.height, self.width)

    def _new_view(self, record, angle: int):
        """The map at `angle`, or, when it is blank, at the following angles of ``self.angles`` in turn."""
        start = self.angles.index(angle)
        for k in range(len(self.angles)):
            candidate = self.angles[(start + k) % len(self.angles)]
            structure = self._load(record, candidate)
            if not is_blank(structure):
                return structure, candidate
            path = structure_path(self.root, record, candidate)
            if path not in self._warned:
                self._warned.add(path)
                log.warning("structure map %s is blank (no body): another angle is used; re-make it with "
                            "`gclreid structures`", path)
        raise DatasetError(f"every structure map of {record.path} at angles {list(self.angles)} under {self.root} is "
                           "blank (no body); re-make them with `gclreid structures`")

"""The training dataset of GCL: each item is an image, its structure map at 0° and at a new angle."""
from __future__ import annotations

import os
import random
from typing import Any, Dict, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DatasetError
from .layout import ANGLES, missing_structures, structure_path


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


class StructureDataset(Dataset):
    """Items ``{"image", "structure", "structure_new", "angle", "pid", "camid", "index"}``.

    ``index`` is the item's position in `records` (the memory-bank row in GCL's stage 3). The new
    angle is drawn uniformly from `angles` for every item with Python's `random` (seeded per worker by
    the project's loaders). With ``flip_p`` > 0 the image and both structure maps are mirrored
    together. Every structure file is checked when the dataset is built: a missing one is an error
    naming the image and the path expected.
    """

    def __init__(self, records: Sequence, structure_root: os.PathLike, image_transform, height: int, width: int,
                 angles: Sequence[int] = ANGLES, flip_p: float = 0.0, check: bool = True) -> None:
        self.records = list(records)
        self.root = structure_root
        self.image_transform = image_transform
        self.height, self.width = height, width
        self.angles = tuple(angles)
        self.flip_p = flip_p
        if check:
            missing = missing_structures(structure_root, self.records, self.angles)
            if missing:
                shown = "; ".join(f"{rec.path} → {path}" for rec, path in missing[:3])
                raise DatasetError(
                    f"{len(missing)} structure maps missing under {structure_root} (image → expected file): {shown}"
                    f"{' …' if len(missing) > 3 else ''}. Make them with `gclreid structures` or point "
                    "gcl.structure_root at the folder holding <train|test>/render[_deg]/")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        from ..data import load_image
        record = self.records[index]
        angle = random.choice(self.angles)
        image = self.image_transform(load_image(record.path))
        s0 = load_structure(structure_path(self.root, record, 0), self.height, self.width)
        s1 = load_structure(structure_path(self.root, record, angle), self.height, self.width)
        if self.flip_p > 0 and random.random() < self.flip_p:
            image, s0, s1 = image.flip(-1), s0.flip(-1), s1.flip(-1)
        return {"image": image, "structure": s0, "structure_new": s1, "angle": angle, "pid": record.pid,
                "camid": record.camid, "index": index}

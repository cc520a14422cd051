"""Where structure maps live on disk, compatible with the released GCL meshes::

    <root>/<train|test>/render/<image path relative to its split folder>        0°, the original view
    <root>/<train|test>/render_<deg>/<same relative path>                       the body turned by deg

`train` holds the training split's maps, `test` those of query and gallery. File names are the
image's own, `.jpg` kept (MSMT17 keeps its identity sub-folders in the relative path). The mapping
image → structure is explicit (split + relative path), never a string replacement of absolute paths.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple

ANGLES: Tuple[int, ...] = (45, 90, 135, 180, 225, 270, 315)
# The official GCL code draws randint(1, 7) * 45, so 315 never occurs in its training.
OFFICIAL_ANGLES: Tuple[int, ...] = (45, 90, 135, 180, 225, 270)


def structure_split(record) -> str:
    return "train" if record.split == "train" else "test"


def angle_folder(angle: int) -> str:
    return "render" if angle % 360 == 0 else f"render_{int(angle) % 360}"


def structure_path(root: os.PathLike, record, angle: int = 0) -> Path:
    """The structure map of `record` (an ImageRecord) turned by `angle` degrees."""
    return Path(root) / structure_split(record) / angle_folder(angle) / record.relpath


def parse_angles(angles: Iterable) -> Tuple[int, ...]:
    """Angles from a list or a comma-separated string; each a multiple of 45 in 45…315."""
    if isinstance(angles, str):
        angles = [a for a in angles.replace(" ", "").split(",") if a]
    out = []
    for a in angles:
        try:
            value = int(a)
        except (TypeError, ValueError):
            raise ValueError(f"structure angle {a!r} is not an integer") from None
        if value % 45 or not 45 <= value <= 315:
            raise ValueError(f"structure angle {value} must be one of 45, 90, …, 315")
        out.append(value)
    if not out:
        raise ValueError("no structure angles given")
    return tuple(sorted(set(out)))


def missing_structures(root: os.PathLike, records: Sequence, angles: Sequence[int]) -> List[Tuple[object, Path]]:
    """(record, path) of every structure map that is not on disk, for angle 0 and `angles`."""
    missing = []
    for record in records:
        for angle in (0, *angles):
            path = structure_path(root, record, angle)
            if not path.is_file():
                missing.append((record, path))
    return missing

"""Image grids for a person to look at: generated views next to their inputs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageDraw


def _to_image(x: torch.Tensor) -> Image.Image:
    """C×H×W → PIL. 3 channels: ImageNet-normalised image; 1 channel: a structure map in [−1, 1]."""
    from ..data import tensor_to_pil
    return tensor_to_pil(x) if x.shape[0] == 3 else tensor_to_pil((x + 1) / 2, normalized=False)


def save_image_grid(columns: Sequence[torch.Tensor], titles: Sequence[str], path: os.PathLike, pad: int = 2) -> Path:
    """One row per sample, one column per tensor in `columns` (each B×C×H×W, same H×W), with titles."""
    if len(columns) != len(titles) or not columns:
        raise ValueError("save_image_grid needs one title per column")
    b, _, h, w = columns[0].shape
    title_h = 12
    grid = Image.new("RGB", (len(columns) * (w + pad) + pad, title_h + b * (h + pad) + pad), (24, 24, 24))
    draw = ImageDraw.Draw(grid)
    for c, (images, title) in enumerate(zip(columns, titles)):
        x0 = pad + c * (w + pad)
        draw.text((x0, 0), title[: max(1, w // 6)], fill=(230, 230, 120))
        for r in range(b):
            grid.paste(_to_image(images[r]), (x0, title_h + pad + r * (h + pad)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path

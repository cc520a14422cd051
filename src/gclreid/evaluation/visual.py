"""Image grids for a person to look at: generated views next to their inputs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw


def _to_rgb_array(x: torch.Tensor) -> np.ndarray:
    """C×H×W → H×W×3 uint8. 3 channels: ImageNet-normalised; 1 channel: a structure map in [−1, 1]."""
    from ..data import denormalize
    x = x.detach().float().cpu()
    x = denormalize(x) if x.shape[0] == 3 else ((x + 1) / 2).clamp(0, 1).expand(3, -1, -1)
    return (x.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


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
            grid.paste(Image.fromarray(_to_rgb_array(images[r])), (x0, title_h + pad + r * (h + pad)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path

"""High-level rendering: grey structure maps (GCL style), depth and part-id maps, shading.

The main entry point for structure maps is :func:`render_structure`: bodies × angles → grey uint8
maps, the bodies turned about the vertical axis through the pelvis and drawn with the camera that
frames the original (0°) view.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..errors import GclreidError
from .camera import OrthoCamera, frame_camera
from .model import Body, Segments
from .raster import Surface, decode_keys, prepare, rasterize, surface

STRUCTURE_ANGLES: Tuple[int, ...] = (0, 45, 90, 135, 180, 225, 270, 315)
# Light direction (towards the light) in view space (X right, Y down, Z away): from the camera,
# a little above and to the left, like the frontal light of a mesh viewer.
LIGHT = (-0.3, -0.3, -1.0)


class RenderSizeError(GclreidError, ValueError):
    """A render size that is not a positive 2:1 (height = 2 × width) pair of integers."""


def check_size(height: int, width: int) -> None:
    """Renders are 2:1 (height = 2 × width), like ReID crops (128×64, 256×128)."""
    if not (isinstance(height, int) and isinstance(width, int)) or height <= 0 or width <= 0:
        raise RenderSizeError(f"render size must be positive integers, got {height}x{width}")
    if height != 2 * width:
        raise RenderSizeError(f"render size {height}x{width} is not 2:1 (height = 2 x width), e.g. 128x64 or 256x128")


def lambert(normal: Tensor, ambient: float = 0.32, diffuse: float = 0.68, light=LIGHT) -> Tensor:
    """Ambient + diffuse shading in [0, 1] for unit normals [3, M] (view space, component-major)."""
    norm = sum(c * c for c in light) ** 0.5
    lx, ly, lz = (c / norm for c in light)
    cos = normal[0] * lx + normal[1] * ly + normal[2] * lz
    return cos.clamp_(0.0, 1.0).mul_(diffuse).add_(ambient).clamp_(0.0, 1.0)


def grey_from_surface(surf: Surface, shape: Tuple[int, int, int], device=None) -> Tensor:
    """uint8 [N, H, W] grey shaded image: black background, shaded body."""
    out = torch.zeros(shape[0] * shape[1] * shape[2], dtype=torch.uint8, device=device)
    # floor(x + 0.5) rounds like round() for x >= 0 and is much faster on CPU.
    value = lambert(surf.normal).mul_(255.0).add_(0.5).floor_().to(torch.uint8)
    out[surf.index] = value
    return out.view(*shape)


def _view_segments(bodies: Body, camera: OrthoCamera, segments: Optional[Segments] = None) -> Segments:
    seg = bodies.segments() if segments is None else segments
    return camera.project(seg, bodies.yaw)


def render_grey(bodies: Body, camera: OrthoCamera, height: int, width: int,
                segments: Optional[Segments] = None, chunk: int = 64) -> Tensor:
    """Grey shaded renders [N, H, W] uint8 of ``bodies`` (at their own yaw) through ``camera``.

    ``segments`` may replace the body's own primitives (e.g. with accessories added); it must be
    in the body frame. Work is split into chunks of ``chunk`` bodies to stay in cache.
    """
    check_size(height, width)
    n = len(bodies)
    seg = bodies.segments() if segments is None else segments
    outs = []
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        view = camera.select(sl).project(seg.select(sl), bodies.yaw[sl])
        prep = prepare(view)
        keys = rasterize(view, height, width, prep)
        outs.append(grey_from_surface(surface(view, keys, prep, full=False), keys.shape, keys.device))
    return torch.cat(outs) if outs else torch.zeros(0, height, width, dtype=torch.uint8)


def render_structure(bodies: Body, angles: Sequence[float] = STRUCTURE_ANGLES, height: int = 256, width: int = 128,
                     camera: Optional[OrthoCamera] = None, elevation=0.0, fill: float = 0.9,
                     chunk: int = 64) -> Tensor:
    """Grey structure maps [N, len(angles), H, W] uint8: each body turned by each angle (degrees).

    Without ``camera``, each body is framed from its original view (``fill`` of the image height,
    centred); the rotated renders use that same camera (same scale and vertical placement), so
    angle 0 is the original view and e.g. 180 shows the body from behind.
    """
    check_size(height, width)
    n, k = len(bodies), len(angles)
    seg = bodies.segments()
    if camera is None:
        camera = frame_camera(seg, bodies.yaw, height, width, elevation=elevation, fill=fill)
    ang = torch.as_tensor(list(angles), dtype=bodies.yaw.dtype, device=bodies.yaw.device)
    yaw = (bodies.yaw[:, None] + ang[None]).reshape(-1)
    rep = Body(bodies.pose.repeat_interleave(k, 0), bodies.shape.repeat_interleave(k, 0), yaw,
               bodies.trans.repeat_interleave(k, 0))
    # Segments depend on pose and shape only (yaw is applied by the camera): reuse them per angle.
    rep_seg = seg.select(torch.arange(n, device=seg.a.device).repeat_interleave(k))
    grey = render_grey(rep, camera.repeat_interleave(k), height, width, segments=rep_seg, chunk=chunk)
    return grey.view(n, k, height, width)


def render_maps(bodies: Body, camera: OrthoCamera, height: int, width: int,
                segments: Optional[Segments] = None) -> Tuple[Tensor, Tensor]:
    """Depth (float32 pixels, ``inf`` = background) and part-id (long, 0 = background) maps [N, H, W]."""
    check_size(height, width)
    seg = bodies.segments() if segments is None else segments
    view = camera.project(seg, bodies.yaw)
    keys = rasterize(view, height, width)
    covered, slot, depth = decode_keys(keys)
    part = torch.where(covered, view.part[slot.clamp_min(0)], torch.zeros_like(slot))
    return depth, part

"""Orthographic camera, rotation about the vertical axis and framing.

View space is the renderer's: ``X`` = image column, ``Y`` = image row (down), ``Z`` = depth away
from the camera, all in pixels. The camera sits in front of the body frame's +z axis, looks down
by ``elevation`` degrees, and maps the body-frame origin (the pelvis, which is also the axis of
every rotation) to pixel ``(cx, cy)``. Rotated views reuse the camera of the original, so they keep
its scale and vertical placement, as the GCL structure maps do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import torch
from torch import Tensor

from .model import Segments
from .rotation import rot_y


@dataclass
class OrthoCamera:
    """Per-body orthographic camera: ``scale`` px/m, pelvis at pixel (``cx``, ``cy``), ``elevation`` deg."""
    scale: Tensor
    cx: Tensor
    cy: Tensor
    elevation: Tensor

    def __post_init__(self) -> None:
        ref = torch.as_tensor(self.scale, dtype=torch.float32)
        n = ref.reshape(-1).shape[0]
        for name in ("cx", "cy", "elevation"):
            n = max(n, torch.as_tensor(getattr(self, name)).reshape(-1).shape[0])
        for name in ("scale", "cx", "cy", "elevation"):
            value = torch.as_tensor(getattr(self, name), dtype=torch.float32).reshape(-1)
            setattr(self, name, value.expand(n).clone())

    def __len__(self) -> int:
        return self.scale.shape[0]

    def select(self, index) -> "OrthoCamera":
        return OrthoCamera(self.scale[index], self.cx[index], self.cy[index], self.elevation[index])

    def repeat_interleave(self, k: int) -> "OrthoCamera":
        return OrthoCamera(*(t.repeat_interleave(k, 0) for t in (self.scale, self.cx, self.cy, self.elevation)))

    def view_rotation(self, yaw_deg: Tensor) -> Tensor:
        """Rotation [N, 3, 3] from the body frame to view axes (X right, Y down, Z away)."""
        yaw_deg = torch.as_tensor(yaw_deg, dtype=torch.float32)
        el = self.elevation.to(yaw_deg.device) * (math.pi / 180.0)
        c, s = torch.cos(el), torch.sin(el)
        one, zero = torch.ones_like(c), torch.zeros_like(c)
        # Rows: image right = x; image down = -(y cos e - z sin e); depth = -(y sin e + z cos e).
        view = torch.stack((one, zero, zero, zero, -c, s, zero, -s, -c), -1).reshape(-1, 3, 3)
        return view @ rot_y(yaw_deg * (math.pi / 180.0))

    def project(self, segments: Segments, yaw_deg: Tensor) -> Segments:
        """Body-frame segments → view-space segments (pixels)."""
        rot = self.view_rotation(yaw_deg).to(segments.a.device)
        offset = torch.stack((self.cx, self.cy, torch.zeros_like(self.cx)), -1).to(segments.a.device)
        return segments.transform(rot, self.scale.to(segments.a.device), offset)


def segment_bounds(view: Segments) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Exact per-slot image bounds of view-space segments: (x0, x1, y0, y1), each [N, P].

    A round cone is the convex hull of its two end ellipsoids, so its bounding box is the union of
    theirs; an ellipsoid with semi-axes ``r * scale_i`` along frame rows ``e_i`` extends
    ``r * sqrt(sum_i (scale_i e_i[c])^2)`` along coordinate ``c``.
    """
    frame = local_frame(view)  # [N, P, 3, 3] rows: side, axis, forward
    ext = ((view.scale[..., :, None] * frame) ** 2).sum(-2).sqrt()  # [N, P, 3] per unit radius
    ea = view.ra[..., None] * ext
    eb = view.rb[..., None] * ext
    lo = torch.minimum(view.a - ea, view.b - eb)
    hi = torch.maximum(view.a + ea, view.b + eb)
    return lo[..., 0], hi[..., 0], lo[..., 1], hi[..., 1]


def local_frame(seg: Segments) -> Tensor:
    """Orthonormal frame rows (side, axis, forward) [N, P, 3, 3] of each primitive.

    ``axis`` points from ``a`` to ``b``; ``forward`` is ``fwd`` made perpendicular to it. For a
    sphere-like slot (a == b) the axis falls back to the frame's up direction.
    """
    axis = seg.b - seg.a
    length = axis.norm(dim=-1, keepdim=True)
    up = torch.cross(seg.fwd, torch.tensor([1.0, 0.0, 0.0], device=seg.a.device).expand_as(seg.fwd), dim=-1)
    axis = torch.where(length > 1e-9, axis / length.clamp_min(1e-12), up / up.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    fwd = seg.fwd - (seg.fwd * axis).sum(-1, keepdim=True) * axis
    fwd_norm = fwd.norm(dim=-1, keepdim=True)
    # fwd parallel to the axis: pick any perpendicular direction.
    alt = torch.cross(axis, torch.tensor([0.0, 0.0, 1.0], device=seg.a.device).expand_as(axis), dim=-1)
    alt = torch.where(alt.norm(dim=-1, keepdim=True) > 1e-6, alt,
                      torch.cross(axis, torch.tensor([1.0, 0.0, 0.0], device=seg.a.device).expand_as(axis), dim=-1))
    fwd = torch.where(fwd_norm > 1e-6, fwd / fwd_norm.clamp_min(1e-12), alt / alt.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    side = torch.cross(axis, fwd, dim=-1)
    return torch.stack((side, axis, fwd), dim=-2)


def frame_camera(segments: Segments, yaw_deg: Tensor, height: int, width: int, elevation=0.0,
                 fill: float = 0.9, center: str = "box") -> OrthoCamera:
    """A camera that frames body-frame ``segments`` seen at ``yaw_deg`` in a ``height``×``width`` image.

    The body's projected height fills ``fill`` of the image height and is centred vertically;
    horizontally the bounding box is centred (``center="box"``) or the pelvis is put on the
    middle column (``center="pelvis"``, which makes a view and its 180° rotation exact mirrors).
    Only active slots count.
    """
    n = segments.num_bodies
    unit = OrthoCamera(torch.ones(n), torch.zeros(n), torch.zeros(n), elevation)
    view = unit.project(segments, yaw_deg)
    x0, x1, y0, y1 = segment_bounds(view)
    big = torch.finfo(x0.dtype).max
    act = segments.active
    x0 = torch.where(act, x0, big).amin(1)
    y0 = torch.where(act, y0, big).amin(1)
    x1 = torch.where(act, x1, -big).amax(1)
    y1 = torch.where(act, y1, -big).amax(1)
    scale = fill * height / (y1 - y0).clamp_min(1e-6)
    cy = height / 2 - scale * (y0 + y1) / 2
    if center == "pelvis":
        cx = torch.full_like(scale, width / 2)
    elif center == "box":
        cx = width / 2 - scale * (x0 + x1) / 2
    else:
        raise ValueError(f"center must be 'box' or 'pelvis', got {center!r}")
    return OrthoCamera(scale, cx, cy, unit.elevation.to(scale.device))

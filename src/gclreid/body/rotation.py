"""Batched rotation helpers (torch). Angles are in radians unless a name says ``deg``.

Conventions used by the whole body package: right-handed frames, rotation matrices act on column
vectors (``p' = R @ p``), and ``rot_y`` is the rotation about the vertical axis.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _axis_rotation(angle: Tensor, axis: int) -> Tensor:
    """Rotation matrices [..., 3, 3] about coordinate axis ``axis`` (0=x, 1=y, 2=z)."""
    angle = torch.as_tensor(angle)
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    if axis == 0:
        rows = (one, zero, zero, zero, c, -s, zero, s, c)
    elif axis == 1:
        rows = (c, zero, s, zero, one, zero, -s, zero, c)
    else:
        rows = (c, -s, zero, s, c, zero, zero, zero, one)
    return torch.stack(rows, dim=-1).reshape(*angle.shape, 3, 3)


def rot_x(angle: Tensor) -> Tensor:
    """Rotation about x by ``angle`` (radians), any batch shape."""
    return _axis_rotation(angle, 0)


def rot_y(angle: Tensor) -> Tensor:
    """Rotation about y (the vertical axis) by ``angle`` (radians)."""
    return _axis_rotation(angle, 1)


def rot_z(angle: Tensor) -> Tensor:
    """Rotation about z by ``angle`` (radians)."""
    return _axis_rotation(angle, 2)


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """Rodrigues' formula: axis-angle vectors [..., 3] (direction = axis, norm = angle) → [..., 3, 3]."""
    angle = aa.norm(dim=-1)[..., None, None]
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack((zero, -z, y, z, zero, -x, -y, x, zero), dim=-1).reshape(*aa.shape[:-1], 3, 3)
    # sin(a)/a and (1-cos a)/a^2 with their limits 1 and 1/2 for tiny angles (no division by zero).
    small = angle < 1e-6
    safe = torch.where(small, torch.ones_like(angle), angle)
    c1 = torch.where(small, 1.0 - angle ** 2 / 6, torch.sin(safe) / safe)
    c2 = torch.where(small, 0.5 - angle ** 2 / 24, (1 - torch.cos(safe)) / safe ** 2)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device)
    return eye + c1 * k + c2 * (k @ k)


def matrix_to_axis_angle(mat: Tensor) -> Tensor:
    """Inverse of :func:`axis_angle_to_matrix` for rotation matrices [..., 3, 3] → [..., 3].

    Uses the quaternion route, which is stable for all angles including ones close to pi.
    """
    m = mat
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # Four candidate quaternions (Shepperd's method); pick the best-conditioned one per matrix.
    qw = torch.stack((1 + trace, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                      1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
                      1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]), dim=-1)
    best = qw.argmax(dim=-1)
    r = torch.sqrt(qw.clamp_min(1e-12))
    w0 = torch.stack((r[..., 0] ** 2, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                      m[..., 1, 0] - m[..., 0, 1]), dim=-1) / (2 * r[..., 0:1])
    w1 = torch.stack((m[..., 2, 1] - m[..., 1, 2], r[..., 1] ** 2, m[..., 0, 1] + m[..., 1, 0],
                      m[..., 0, 2] + m[..., 2, 0]), dim=-1) / (2 * r[..., 1:2])
    w2 = torch.stack((m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], r[..., 2] ** 2,
                      m[..., 1, 2] + m[..., 2, 1]), dim=-1) / (2 * r[..., 2:3])
    w3 = torch.stack((m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0],
                      m[..., 1, 2] + m[..., 2, 1], r[..., 3] ** 2), dim=-1) / (2 * r[..., 3:4])
    quats = torch.stack((w0, w1, w2, w3), dim=-2)
    q = torch.gather(quats, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0)  # w >= 0: angle in [0, pi]
    q = q / q.norm(dim=-1, keepdim=True)
    vec = q[..., 1:]
    sin_half = vec.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, q[..., :1])
    scale = torch.where(sin_half < 1e-8, 2.0 / q[..., :1].clamp_min(1e-8), angle / sin_half.clamp_min(1e-12))
    return vec * scale


def rotation_between(src: Tensor, dst: Tensor) -> Tensor:
    """The smallest rotation taking unit direction(s) ``src`` [..., 3] onto ``dst`` [..., 3].

    Antiparallel inputs get a half turn about an axis perpendicular to ``src``.
    """
    src = src / src.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    dst = dst / dst.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cross = torch.cross(src, dst, dim=-1)
    dot = (src * dst).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    sin = cross.norm(dim=-1, keepdim=True)
    angle = torch.atan2(sin, dot)
    axis = cross / sin.clamp_min(1e-12)
    # Antiparallel: any axis perpendicular to src.
    helper = torch.where(src[..., :1].abs() < 0.9, torch.tensor([1.0, 0.0, 0.0], dtype=src.dtype, device=src.device),
                         torch.tensor([0.0, 1.0, 0.0], dtype=src.dtype, device=src.device))
    perp = torch.cross(src, helper, dim=-1)
    perp = perp / perp.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    axis = torch.where((sin < 1e-7) & (dot < 0), perp, axis)
    return axis_angle_to_matrix(axis * angle)

"""Body geometry: the :class:`Body` parameter set and its primitives (tapered, elliptic capsules).

A body segment is a *round cone*: the convex hull of two spheres (centres ``a`` and ``b``, radii
``ra`` and ``rb``), optionally squashed by per-axis scales in a local frame (side, along the
axis, forward) so that a torso gets an elliptic cross-section and a head an egg shape. Round
cones join smoothly at shared joints, have an exact ray intersection, and look like a smooth
mesh when shaded, which is what the GCL structure encoder was trained on.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .pose import walking_pose
from .skeleton import JOINT_INDEX, NUM_JOINTS, NUM_SHAPE, SHAPE_FIELDS, default_shape, forward_kinematics

# Part ids of the part-id maps (0 = background). Accessory parts are drawn only in colour renders
# (structure maps show the body alone, as an SMPL mesh would).
PART_NAMES: Tuple[str, ...] = (
    "background", "head", "neck", "chest", "pelvis", "shoulders",
    "l_upper_arm", "l_forearm", "l_hand", "r_upper_arm", "r_forearm", "r_hand",
    "l_thigh", "l_shin", "l_foot", "r_thigh", "r_shin", "r_foot",
    "hair", "skirt", "backpack", "bag", "strap", "hat",
)
PART_INDEX: Dict[str, int] = {name: i for i, name in enumerate(PART_NAMES)}
BODY_PARTS: Tuple[int, ...] = tuple(range(1, PART_INDEX["hair"]))
# Left <-> right part swap (used to compare a view with its mirror).
PART_MIRROR: Tuple[int, ...] = tuple(
    PART_INDEX[{"l_": "r_", "r_": "l_"}[n[:2]] + n[2:]] if n[:2] in ("l_", "r_") else i
    for i, n in enumerate(PART_NAMES))

_X, _Y, _Z = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)


@dataclass
class Segments:
    """A batch of round-cone primitives: N bodies × P slots (slot p has the same meaning in every body).

    Points and radii are in the body frame (metres) or, after :meth:`transform`, in view space
    (pixels). ``fwd`` is a reference direction fixing the local frame (cross-section axes and
    texture orientation); ``scale`` squashes the primitive along (side, axis, forward).
    """
    a: Tensor       # [N, P, 3]
    b: Tensor       # [N, P, 3]
    ra: Tensor      # [N, P]
    rb: Tensor      # [N, P]
    fwd: Tensor     # [N, P, 3] unit
    scale: Tensor   # [N, P, 3]
    part: Tensor    # [P] long
    active: Tensor  # [N, P] bool

    @property
    def num_bodies(self) -> int:
        return self.a.shape[0]

    @property
    def num_slots(self) -> int:
        return self.a.shape[1]

    def cat(self, other: "Segments") -> "Segments":
        """Slots of ``self`` followed by those of ``other`` (same bodies)."""
        return Segments(*(torch.cat([getattr(self, f.name), getattr(other, f.name)],
                                    dim=0 if f.name == "part" else 1) for f in fields(self)))

    def select(self, index) -> "Segments":
        """Bodies ``index`` (anything that indexes dim 0)."""
        return Segments(*(getattr(self, f.name) if f.name == "part" else getattr(self, f.name)[index]
                          for f in fields(self)))

    def select_slots(self, index) -> "Segments":
        """Slots ``index`` (a slice or index list) of every body."""
        return Segments(*(getattr(self, f.name)[index] if f.name == "part" else getattr(self, f.name)[:, index]
                          for f in fields(self)))

    def transform(self, rot: Tensor, scale: Tensor, offset: Tensor) -> "Segments":
        """Apply ``x -> scale * rot @ x + offset`` per body (rot [N,3,3], scale [N], offset [N,3])."""
        s = scale[:, None, None]
        a = s * torch.einsum("nij,npj->npi", rot, self.a) + offset[:, None]
        b = s * torch.einsum("nij,npj->npi", rot, self.b) + offset[:, None]
        fwd = torch.einsum("nij,npj->npi", rot, self.fwd)
        return replace(self, a=a, b=b, ra=self.ra * scale[:, None], rb=self.rb * scale[:, None], fwd=fwd)


def _frame_dir(rots: Tensor, joint: str, axis: Tuple[float, float, float]) -> Tensor:
    v = torch.tensor(axis, dtype=rots.dtype, device=rots.device)
    return rots[:, JOINT_INDEX[joint]] @ v


def _point(joints: Tensor, rots: Tensor, joint: str, offset: Tuple[float, float, float], height: Tensor) -> Tensor:
    """Joint position plus an offset given in the joint's frame, as a fraction of the stature."""
    off = torch.tensor(offset, dtype=joints.dtype, device=joints.device)
    return joints[:, JOINT_INDEX[joint]] + (rots[:, JOINT_INDEX[joint]] @ off) * height[:, None]


# Body segments: (part, joint a, offset a, joint b, offset b, ra, rb (fractions of stature),
# radius factor, frame joint, frame forward axis, scales (side, axis, forward)).
_ShapeFn = Callable[[Dict[str, Tensor]], Tensor]
_SEGMENTS: List[Tuple] = [
    ("pelvis", "pelvis", (0, -0.02, 0), "spine", (0, 0, 0), 0.092, 0.083,
     lambda s: 0.6 * s["hip"] + 0.4 * s["girth"], "pelvis", _Z, (1.0, 0.5, 0.64)),
    ("chest", "spine", (0, 0, 0), "chest", (0, 0.05, 0), 0.084, 0.091,
     lambda s: 0.3 * s["shoulder"] + 0.7 * s["girth"], "chest", _Z, (1.0, 0.55, 0.62)),
    ("shoulders", "l_shoulder", (-0.012, 0, 0), "r_shoulder", (0.012, 0, 0), 0.031, 0.031,
     lambda s: s["girth"] ** 0.5, "chest", _Z, (0.8, 1.0, 1.0)),
    ("neck", "neck", (0, -0.01, 0), "head", (0, 0.01, 0), 0.029, 0.027,
     lambda s: s["girth"] ** 0.3, "neck", _Z, (1.0, 1.0, 1.0)),
    ("head", "head", (0, 0.04, 0.008), "head", (0, 0.07, 0.008), 0.05, 0.049,
     lambda s: s["head"], "head", _Z, (0.88, 1.0, 1.1)),
]
for _side in ("l", "r"):
    _SEGMENTS += [
        (f"{_side}_upper_arm", f"{_side}_shoulder", (0, 0, 0), f"{_side}_elbow", (0, 0, 0), 0.034, 0.024,
         lambda s: s["limb"], f"{_side}_shoulder", _Z, (1.0, 1.0, 1.0)),
        (f"{_side}_forearm", f"{_side}_elbow", (0, 0, 0), f"{_side}_wrist", (0, 0, 0), 0.024, 0.017,
         lambda s: s["limb"], f"{_side}_elbow", _Z, (1.0, 1.0, 1.0)),
        (f"{_side}_hand", f"{_side}_wrist", (0, 0, 0), f"{_side}_hand", (0, 0, 0), 0.019, 0.016,
         lambda s: s["limb"] ** 0.5, f"{_side}_wrist", _Z, (0.6, 1.0, 1.0)),
        (f"{_side}_thigh", f"{_side}_hip", (0, 0, 0), f"{_side}_knee", (0, 0, 0), 0.058, 0.035,
         lambda s: s["limb"], f"{_side}_hip", _Z, (1.0, 1.0, 1.0)),
        (f"{_side}_shin", f"{_side}_knee", (0, 0, 0), f"{_side}_ankle", (0, 0, 0), 0.035, 0.021,
         lambda s: s["limb"], f"{_side}_knee", _Z, (1.0, 1.0, 1.0)),
        (f"{_side}_foot", f"{_side}_ankle", (0, 0, -0.005), f"{_side}_toe", (0, 0, 0), 0.024, 0.021,
         lambda s: s["limb"] ** 0.3, f"{_side}_ankle", _Y, (1.0, 1.0, 0.62)),
    ]
BODY_SEGMENT_NAMES: Tuple[str, ...] = tuple(seg[0] for seg in _SEGMENTS)


def body_segments(joints: Tensor, rots: Tensor, shape: Tensor) -> Segments:
    """The body's primitives in the body frame from FK output (joints [N,J,3], rots [N,J,3,3])."""
    n = joints.shape[0]
    s = {name: shape[:, i] for i, name in enumerate(SHAPE_FIELDS)}
    h = s["height"]
    a, b, ra, rb, fwd, scale, part = [], [], [], [], [], [], []
    for name, ja, oa, jb, ob, r0, r1, factor, fjoint, faxis, sc in _SEGMENTS:
        f = factor(s) * h
        a.append(_point(joints, rots, ja, oa, h))
        b.append(_point(joints, rots, jb, ob, h))
        ra.append(r0 * f)
        rb.append(r1 * f)
        fwd.append(_frame_dir(rots, fjoint, faxis))
        scale.append(torch.tensor(sc, dtype=joints.dtype, device=joints.device).expand(n, 3))
        part.append(PART_INDEX[name])
    return Segments(a=torch.stack(a, 1), b=torch.stack(b, 1), ra=torch.stack(ra, 1), rb=torch.stack(rb, 1),
                    fwd=torch.stack(fwd, 1), scale=torch.stack(scale, 1),
                    part=torch.tensor(part, dtype=torch.long, device=joints.device),
                    active=torch.ones(n, len(part), dtype=torch.bool, device=joints.device))


@dataclass
class Body:
    """The parameters of a batch of N bodies: what an estimator fills and the renderer draws.

    ``pose`` [N, J, 3] axis-angle joint rotations (see :mod:`gclreid.body.skeleton`), ``shape``
    [N, S] (see ``SHAPE_FIELDS``), ``yaw`` [N] degrees (0 = facing the camera, 90 = facing image
    right, 180 = back to the camera), ``trans`` [N, 3] pelvis offset in metres (walking bob).
    """
    pose: Tensor
    shape: Tensor
    yaw: Tensor
    trans: Optional[Tensor] = None

    def __post_init__(self) -> None:
        n = self.pose.shape[0]
        if self.pose.shape != (n, NUM_JOINTS, 3):
            raise ValueError(f"Body.pose must be [N, {NUM_JOINTS}, 3], got {tuple(self.pose.shape)}")
        if self.shape.shape != (n, NUM_SHAPE):
            raise ValueError(f"Body.shape must be [{n}, {NUM_SHAPE}], got {tuple(self.shape.shape)}")
        self.yaw = torch.as_tensor(self.yaw, dtype=self.pose.dtype, device=self.pose.device).expand(n).clone()
        if self.trans is None:
            self.trans = torch.zeros(n, 3, dtype=self.pose.dtype, device=self.pose.device)

    def __len__(self) -> int:
        return self.pose.shape[0]

    def select(self, index) -> "Body":
        return Body(self.pose[index], self.shape[index], self.yaw[index], self.trans[index])

    def repeat_interleave(self, k: int) -> "Body":
        """Each body ``k`` times in a row (used to render several angles of one body)."""
        return Body(*(t.repeat_interleave(k, 0) for t in (self.pose, self.shape, self.yaw, self.trans)))

    def rotated(self, angle_deg) -> "Body":
        """The same bodies turned about the vertical axis through the pelvis by ``angle_deg``."""
        return replace(self, yaw=self.yaw + torch.as_tensor(angle_deg, dtype=self.yaw.dtype, device=self.yaw.device))

    def joints(self) -> Tuple[Tensor, Tensor]:
        """Forward kinematics: joint positions [N, J, 3] and global rotations (body frame, no yaw)."""
        return forward_kinematics(self.pose, self.shape, self.trans)

    def segments(self) -> Segments:
        """The body primitives in the body frame (metres, before yaw and camera)."""
        joints, rots = self.joints()
        return body_segments(joints, rots, self.shape)

    @staticmethod
    def standing(n: int = 1, yaw=0.0, shape: Optional[Tensor] = None) -> "Body":
        """``n`` bodies in the rest pose."""
        shape = default_shape(n) if shape is None else shape
        return Body(torch.zeros(n, NUM_JOINTS, 3), shape, yaw)

    @staticmethod
    def walking(phase, yaw=0.0, shape: Optional[Tensor] = None, **gait) -> "Body":
        """Bodies at walking-cycle ``phase`` [N] (see :func:`gclreid.body.pose.walking_pose`)."""
        phase = torch.as_tensor(phase, dtype=torch.float32).reshape(-1)
        pose, trans = walking_pose(phase, **gait)
        shape = default_shape(len(phase)) if shape is None else shape
        return Body(pose, shape, yaw, trans)

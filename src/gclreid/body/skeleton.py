"""The skeleton of the parametric body: joints, shape parameters, rest pose and forward kinematics.

Body frame (metres): origin at the pelvis, ``x`` to the person's left, ``y`` up, ``z`` forward
(the way the person faces). Pose = one local rotation per joint as an axis-angle vector (SMPL-like);
all zeros is the rest pose: standing upright, arms hanging slightly away from the sides.
Joint ``j``'s rotation turns the bones from ``j`` to its children, so a hip rotation swings the
whole leg. Leaf joints (hand, toe, head top) are end sites: their rotations have no effect.
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import torch
from torch import Tensor

from .rotation import axis_angle_to_matrix

JOINTS: Tuple[str, ...] = (
    "pelvis", "spine", "chest", "neck", "head",
    "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
    "l_hip", "l_knee", "l_ankle", "r_hip", "r_knee", "r_ankle",
    "l_hand", "r_hand", "l_toe", "r_toe", "head_top",
)
JOINT_INDEX: Dict[str, int] = {name: i for i, name in enumerate(JOINTS)}
PARENTS: Tuple[int, ...] = (
    -1, 0, 1, 2, 3,
    2, 5, 6, 2, 8, 9,
    0, 11, 12, 0, 14, 15,
    7, 10, 13, 16, 4,
)
NUM_JOINTS = len(JOINTS)

# Shape parameters. `height` is the stature in metres of a body with all factors at 1; the other
# entries are multiplicative factors on the average proportions (1 = average).
SHAPE_FIELDS: Tuple[str, ...] = (
    "height",    # metres
    "leg",       # thigh and shin length
    "arm",       # upper arm, forearm and hand length
    "torso",     # pelvis-to-neck length
    "shoulder",  # shoulder width
    "hip",       # hip width
    "girth",     # torso width and depth (build / weight)
    "limb",      # arm and leg thickness
    "head",      # head size
)
SHAPE_INDEX: Dict[str, int] = {name: i for i, name in enumerate(SHAPE_FIELDS)}
NUM_SHAPE = len(SHAPE_FIELDS)
DEFAULT_SHAPE: Tuple[float, ...] = (1.70, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)

# Mirror map: index of the joint on the other side (for left/right tests and mirrored poses).
MIRROR: Tuple[int, ...] = tuple(
    JOINT_INDEX[{"l_": "r_", "r_": "l_"}[n[:2]] + n[2:]] if n[:2] in ("l_", "r_") else i
    for i, n in enumerate(JOINTS))


def default_shape(n: int = 1, dtype=torch.float32, device=None) -> Tensor:
    """A batch of ``n`` average shapes, [n, NUM_SHAPE]."""
    return torch.tensor(DEFAULT_SHAPE, dtype=dtype, device=device).expand(n, NUM_SHAPE).clone()


def rest_offsets(shape: Tensor) -> Tensor:
    """Bone offsets of the rest pose in the parent's frame, metres, [N, J, 3].

    Proportions are fractions of stature from standard anthropometric tables (pelvis at 0.53 of
    the height above the ground, knee 0.285, shoulder 0.805, ...), scaled by the shape factors.
    """
    s = {name: shape[:, i] for i, name in enumerate(SHAPE_FIELDS)}
    h = s["height"]
    zero = torch.zeros_like(h)
    sin5, cos5 = math.sin(math.radians(5.0)), math.cos(math.radians(5.0))

    def vec(x, y, z) -> Tensor:
        return torch.stack([torch.as_tensor(c, dtype=h.dtype, device=h.device).expand_as(h) for c in (x, y, z)], -1)

    torso, arm, leg = s["torso"], s["arm"], s["leg"]
    off: List[Tensor] = [None] * NUM_JOINTS  # type: ignore[list-item]
    off[JOINT_INDEX["pelvis"]] = vec(zero, zero, zero)
    off[JOINT_INDEX["spine"]] = vec(zero, 0.09 * torso, -0.005 + zero)
    off[JOINT_INDEX["chest"]] = vec(zero, 0.10 * torso, zero)
    off[JOINT_INDEX["neck"]] = vec(zero, 0.095 * torso, -0.01 + zero)
    off[JOINT_INDEX["head"]] = vec(zero, 0.065 * s["head"], 0.012 + zero)
    off[JOINT_INDEX["head_top"]] = vec(zero, 0.12 * s["head"], zero)
    for side, sign in (("l", 1.0), ("r", -1.0)):
        off[JOINT_INDEX[f"{side}_shoulder"]] = vec(sign * 0.115 * s["shoulder"], 0.085 * torso, -0.01 + zero)
        off[JOINT_INDEX[f"{side}_elbow"]] = vec(sign * 0.185 * sin5 * arm, -0.185 * cos5 * arm, zero)
        off[JOINT_INDEX[f"{side}_wrist"]] = vec(zero, -0.150 * arm, 0.003 * arm)
        off[JOINT_INDEX[f"{side}_hand"]] = vec(zero, -0.095 * arm, zero)
        off[JOINT_INDEX[f"{side}_hip"]] = vec(sign * 0.055 * s["hip"], -0.03 + zero, zero)
        off[JOINT_INDEX[f"{side}_knee"]] = vec(zero, -0.215 * leg, zero)
        off[JOINT_INDEX[f"{side}_ankle"]] = vec(zero, -0.24 * leg, -0.005 * leg)
        off[JOINT_INDEX[f"{side}_toe"]] = vec(zero, -0.028 + zero, 0.125 + zero)
    return torch.stack(off, dim=1) * h[:, None, None]


def forward_kinematics(pose: Tensor, shape: Tensor, trans: Tensor = None) -> Tuple[Tensor, Tensor]:
    """Joint positions [N, J, 3] (body frame, metres) and global joint rotations [N, J, 3, 3].

    ``pose`` is [N, J, 3] axis-angle (local, in the parent's frame); ``trans`` [N, 3] moves the
    pelvis (e.g. the vertical bob of a walk); the body frame's origin stays the rest pelvis.
    """
    n = pose.shape[0]
    if pose.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"pose must be [N, {NUM_JOINTS}, 3], got {tuple(pose.shape)}")
    if shape.shape != (n, NUM_SHAPE):
        raise ValueError(f"shape must be [N, {NUM_SHAPE}] with N={n}, got {tuple(shape.shape)}")
    local = axis_angle_to_matrix(pose)
    offsets = rest_offsets(shape)
    rots: List[Tensor] = []
    pos: List[Tensor] = []
    for j, parent in enumerate(PARENTS):
        if parent < 0:
            rots.append(local[:, j])
            root = offsets[:, j] if trans is None else offsets[:, j] + trans
            pos.append(root)
        else:
            rots.append(rots[parent] @ local[:, j])
            pos.append(pos[parent] + (rots[parent] @ offsets[:, j, :, None])[..., 0])
    return torch.stack(pos, dim=1), torch.stack(rots, dim=1)


def bone_lengths(joints: Tensor) -> Tensor:
    """Length of the bone from each joint's parent to the joint, [N, J] (0 for the root)."""
    parents = torch.tensor([max(p, 0) for p in PARENTS], device=joints.device)
    lengths = (joints - joints[:, parents]).norm(dim=-1)
    lengths[:, 0] = 0
    return lengths

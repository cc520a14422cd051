"""Poses: the rest pose, a parametric walking cycle, and joint positions → pose (simple IK).

Sign conventions (body frame: x left, y up, z forward): a *flexion* by a positive angle swings a
hip, shoulder or elbow forward and bends a knee backward; *abduction* moves a limb away from the
body's mid-plane; *twist* turns the pelvis or torso about the vertical (positive = towards the left).
"""
from __future__ import annotations

import math
from typing import Tuple, Union

import torch
from torch import Tensor

from .rotation import matrix_to_axis_angle, rot_x, rot_y, rot_z, rotation_between
from .skeleton import JOINT_INDEX, NUM_JOINTS, PARENTS, forward_kinematics, rest_offsets

Number = Union[float, Tensor]


def rest_pose(n: int = 1, dtype=torch.float32, device=None) -> Tensor:
    """All-zero pose [n, J, 3]: standing, arms down."""
    return torch.zeros(n, NUM_JOINTS, 3, dtype=dtype, device=device)


def _as_batch(value: Number, n: int, ref: Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=ref.dtype, device=ref.device).expand(n).clone()


def walking_pose(phase: Tensor, stride: Number = 25.0, arm_swing: Number = 20.0, knee: Number = 55.0,
                 elbow: Number = 20.0, arm_out: Number = 6.0, lean: Number = 3.0, head_turn: Number = 0.0,
                 bob: Number = 0.02) -> Tuple[Tensor, Tensor]:
    """A walking-cycle pose for each phase in [0, 1) (angles in degrees, one value or one per body).

    ``stride``: hip swing amplitude; ``arm_swing``: shoulder swing amplitude (arms swing opposite to
    the legs); ``knee``: peak knee flexion in the swing phase; ``elbow``: mean elbow flexion;
    ``arm_out``: arm abduction; ``lean``: forward torso lean; ``head_turn``: head yaw; ``bob``:
    vertical pelvis bob in metres (twice per cycle). Phase 0: left leg passing the right, moving
    forward. Returns (pose [N, J, 3] axis-angle, trans [N, 3]). ``stride=0, arm_swing=0, knee=0``
    gives a standing pose.
    """
    phase = torch.as_tensor(phase, dtype=torch.float32)
    n = phase.shape[0]
    deg = math.pi / 180.0
    stride, arm_swing, knee = (_as_batch(v, n, phase) * deg for v in (stride, arm_swing, knee))
    elbow, arm_out, lean, head_turn = (_as_batch(v, n, phase) * deg for v in (elbow, arm_out, lean, head_turn))
    bob = _as_batch(bob, n, phase)
    eye = torch.eye(3, dtype=phase.dtype, device=phase.device)
    local = eye.expand(n, NUM_JOINTS, 3, 3).clone()
    two_pi = 2 * math.pi
    for side, offset, sign in (("l", 0.0, 1.0), ("r", 0.5, -1.0)):
        p = phase + offset
        swing = torch.sin(two_pi * p)  # +1: leg fully forward
        hip = stride * swing
        # The knee bends during the swing (leg moving forward): peak just before mid-swing.
        k = 0.08 * knee + knee * torch.clamp(torch.cos(two_pi * (p + 0.07)), min=0.0) ** 2
        ankle = 0.3 * stride * torch.sin(two_pi * (p - 0.15))
        local[:, JOINT_INDEX[f"{side}_hip"]] = rot_x(-hip)
        local[:, JOINT_INDEX[f"{side}_knee"]] = rot_x(k)
        local[:, JOINT_INDEX[f"{side}_ankle"]] = rot_x(-ankle + 0.3 * k)
        # Arms swing against the leg of the same side; elbows bend a little more on the forward swing.
        shoulder = -arm_swing * swing
        local[:, JOINT_INDEX[f"{side}_shoulder"]] = rot_z(sign * arm_out) @ rot_x(-shoulder)
        local[:, JOINT_INDEX[f"{side}_elbow"]] = rot_x(-(elbow * (1.0 + 0.6 * torch.clamp(-swing, min=0.0))))
    twist = 0.25 * stride * torch.sin(two_pi * phase)
    local[:, JOINT_INDEX["pelvis"]] = rot_y(twist)
    local[:, JOINT_INDEX["spine"]] = rot_x(lean) @ rot_y(-0.7 * twist)
    local[:, JOINT_INDEX["chest"]] = rot_y(-0.5 * twist)
    local[:, JOINT_INDEX["head"]] = rot_y(head_turn) @ rot_x(-0.5 * lean)
    pose = matrix_to_axis_angle(local)
    trans = torch.zeros(n, 3, dtype=phase.dtype, device=phase.device)
    trans[:, 1] = bob * torch.cos(2 * two_pi * phase)
    return pose, trans


def pose_from_joints(joints: Tensor, shape: Tensor) -> Tensor:
    """Swing-only inverse kinematics: a pose whose bones point where ``joints`` [N, J, 3] says.

    Each joint gets the smallest rotation that turns its (first) child bone from the rest
    direction onto the target direction; twist about a bone is not observable from positions and
    is left at zero. Bone *lengths* come from ``shape``. Where a joint has several children (the
    pelvis, the chest) only the first (spine, neck) is aimed, so positions made by
    :func:`forward_kinematics` are reproduced exactly when the pelvis, spine and chest are not
    twisted (limb and neck rotations may be anything).
    """
    n = joints.shape[0]
    offsets = rest_offsets(shape)
    # The first child of each joint defines the bone it orients (the spine for the pelvis, etc.).
    first_child = {}
    for j, p in enumerate(PARENTS):
        if p >= 0 and p not in first_child:
            first_child[p] = j
    glob = [None] * NUM_JOINTS
    local = torch.eye(3, dtype=joints.dtype, device=joints.device).expand(n, NUM_JOINTS, 3, 3).clone()
    for j, parent in enumerate(PARENTS):
        parent_rot = glob[parent] if parent >= 0 else torch.eye(3, dtype=joints.dtype, device=joints.device).expand(n, 3, 3)
        child = first_child.get(j)
        if child is not None:
            rest_dir = (parent_rot @ offsets[:, child, :, None])[..., 0]
            target = joints[:, child] - joints[:, j]
            swing = rotation_between(rest_dir, target)  # in the global frame
            local[:, j] = parent_rot.transpose(-1, -2) @ swing @ parent_rot
        glob[j] = parent_rot @ local[:, j]
    return matrix_to_axis_angle(local)


def mirror_pose(pose: Tensor) -> Tensor:
    """The left-right mirrored pose (reflection through the body's mid-plane x = 0)."""
    from .skeleton import MIRROR
    mirrored = pose[:, list(MIRROR)].clone()
    # Reflecting x negates the y and z components of an axis-angle vector (it is a pseudo-vector).
    mirrored[..., 1:] = -mirrored[..., 1:]
    return mirrored


__all__ = ["rest_pose", "walking_pose", "pose_from_joints", "mirror_pose", "forward_kinematics"]

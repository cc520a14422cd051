"""Leg poses that fit what is seen: standing, walking, riding a bicycle.

MediaPipe's 3D landmarks of a small crop put knees and feet at plausible places in the picture but
often at implausible depths — a walker then becomes a crouch once turned by 90°. The legs of an
estimate are therefore chosen from a small library (:func:`leg_library`) of standing, walking
(16 phases × 3 strides) and cycling (8 pedal phases) poses: the one whose knees, ankles and toes,
projected at the estimated yaw, best match the 2D landmarks (:func:`fit_legs`), with a little
weight on the landmarks' depth order. Which kinds compete is decided by the caller: cycling poses
only where the knees are at about hip height (:func:`gclreid.structures.landmarks.knees_high`),
standing and walking ones otherwise.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..body import OrthoCamera, forward_kinematics, walking_pose
from ..body.rotation import matrix_to_axis_angle, rot_x, rot_z
from ..body.skeleton import JOINT_INDEX, NUM_JOINTS, default_shape

# MediaPipe index → body joint for the leg fit (toes ← foot index).
LEG_LANDMARKS: Tuple[Tuple[int, str], ...] = ((25, "l_knee"), (26, "r_knee"), (27, "l_ankle"), (28, "r_ankle"),
                                              (31, "l_toe"), (32, "r_toe"))
LEG_JOINTS: Tuple[str, ...] = ("l_hip", "l_knee", "l_ankle", "l_toe", "r_hip", "r_knee", "r_ankle", "r_toe")
FIT_ELEVATION = 12.0   # degrees: surveillance cameras look down (the forward foot appears lower)
# Added to the mean squared residual (torso lengths²) of cycling poses when the caller does not say
# which kinds compete. On Market-1501 the leg fit alone does not separate riders from walkers
# (skirts and bags fit pedalling legs better than walking ones), so cycling is off by default
# (None); the MediaPipe estimate asks for cycling poses only when the knees are at hip height.
CYCLING_PENALTY = None
DEPTH_WEIGHT = 0.15     # weight of the landmarks' (noisy) depth against the 2D residual
# MediaPipe's legs are shorter against its torso than the body model's (hip landmarks sit low): on
# 126 Market-1501 crops the median ankle-below-hip / hip-below-shoulder ratio is 1.24, the model's
# 1.49 standing. Observed leg offsets are scaled by the ratio before they are compared.
LEG_SCALE = 1.49 / 1.24


def cycling_pose(phase: torch.Tensor, lean: float = 20.0, hip: float = 70.0, hip_amp: float = 22.0,
                 knee: float = 80.0, knee_amp: float = 30.0, reach: float = 45.0, elbow: float = 25.0) -> torch.Tensor:
    """Seated on a bicycle at pedal ``phase`` [N] in [0, 1): hips flexed ``hip`` ± ``hip_amp``°,
    knees ``knee`` ± ``knee_amp``° (more bent when the thigh is up), torso leaning forward, hands
    forward on the handlebar. Returns the pose [N, J, 3] (axis-angle)."""
    phase = torch.as_tensor(phase, dtype=torch.float32).reshape(-1)
    n = phase.shape[0]
    deg = math.pi / 180.0
    local = torch.eye(3).expand(n, NUM_JOINTS, 3, 3).clone()
    for side, offset, sign in (("l", 0.0, 1.0), ("r", 0.5, -1.0)):
        c = torch.cos(2 * math.pi * (phase + offset))
        f = (hip + hip_amp * c) * deg
        k = (knee + knee_amp * c) * deg
        local[:, JOINT_INDEX[f"{side}_hip"]] = rot_x(-f)
        local[:, JOINT_INDEX[f"{side}_knee"]] = rot_x(k)
        local[:, JOINT_INDEX[f"{side}_ankle"]] = rot_x(f - k)
        local[:, JOINT_INDEX[f"{side}_shoulder"]] = rot_z(torch.full((n,), sign * 8 * deg)) @ rot_x(torch.full((n,), -reach * deg))
        local[:, JOINT_INDEX[f"{side}_elbow"]] = rot_x(torch.full((n,), -elbow * deg))
    local[:, JOINT_INDEX["spine"]] = rot_x(torch.full((n,), lean * deg))
    local[:, JOINT_INDEX["head"]] = rot_x(torch.full((n,), -0.6 * lean * deg))
    return matrix_to_axis_angle(local)


@lru_cache(maxsize=1)
def leg_library() -> Tuple[List[Tuple[str, float, float]], torch.Tensor]:
    """(labels, joints [K, J, 3]): standing, walking and cycling bodies of the default shape, body
    frame (pelvis at the origin). Labels are (kind, phase, stride)."""
    labels: List[Tuple[str, float, float]] = [("standing", 0.0, 0.0)]
    poses = [walking_pose(torch.zeros(1), stride=0.0, arm_swing=0.0, knee=0.0, bob=0.0)[0]]
    phases = torch.arange(16, dtype=torch.float32) / 16
    for stride in (12.0, 20.0, 28.0):
        pose, _ = walking_pose(phases, stride=stride, knee=55.0 * min(1.0, stride / 25.0), bob=0.0)
        poses.append(pose)
        labels += [("walking", float(p), stride) for p in phases]
    pedal = torch.arange(8, dtype=torch.float32) / 8
    poses.append(cycling_pose(pedal))
    labels += [("cycling", float(p), 0.0) for p in pedal]
    pose = torch.cat(poses)
    joints, _ = forward_kinematics(pose, default_shape(len(pose)))
    return labels, joints


def _normalise(points: np.ndarray, hip_mid: np.ndarray, torso: float) -> np.ndarray:
    return (points - hip_mid) / max(torso, 1e-6)


def fit_legs(image: np.ndarray, yaw: float, aspect: float = 0.5, world_body: Optional[np.ndarray] = None,
             cycling_penalty: Optional[float] = CYCLING_PENALTY,
             kinds: Optional[Sequence[str]] = None) -> Tuple[Tuple[str, float, float], np.ndarray, float]:
    """The library pose whose legs best match the 2D landmarks ``image`` [33, ≥3] (x, y fractions of
    the crop, visibility) for a body at ``yaw``. ``world_body`` [33, 3] (optional): the landmarks in
    the body frame (x left, y up, z forward) for a weak depth term. ``kinds`` (optional): only
    library poses of these kinds compete (the caller decided, e.g. riding from knees at hip height);
    ``cycling_penalty`` applies when ``kinds`` is None.

    Returns (label, leg joints [len(LEG_JOINTS), 3] in the body frame relative to the pelvis,
    normalised residual).
    """
    labels, joints = leg_library()
    k = joints.shape[0]
    cam = OrthoCamera(torch.ones(k), torch.zeros(k), torch.zeros(k), FIT_ELEVATION)
    rot = cam.view_rotation(torch.full((k,), float(yaw)))
    view = torch.einsum("kij,kpj->kpi", rot, joints).numpy().astype(np.float64)  # x right, y down
    j = JOINT_INDEX
    c_hip = (view[:, j["l_hip"], :2] + view[:, j["r_hip"], :2]) / 2
    c_sh = (view[:, j["l_shoulder"], :2] + view[:, j["r_shoulder"], :2]) / 2
    c_torso = np.linalg.norm(c_sh - c_hip, axis=1)
    im = np.asarray(image, dtype=np.float64)
    pts = im[:, :2] * (aspect, 1.0)
    o_hip = (pts[23] + pts[24]) / 2
    o_torso = float(np.linalg.norm((pts[11] + pts[12]) / 2 - o_hip))
    obs = _normalise(pts[[m for m, _ in LEG_LANDMARKS]], o_hip, o_torso) * LEG_SCALE            # [6, 2]
    cand = (view[:, [j[n] for _, n in LEG_LANDMARKS], :2] - c_hip[:, None]) / c_torso[:, None, None]  # [K, 6, 2]
    vis = np.clip(im[[m for m, _ in LEG_LANDMARKS], 2], 0.2, 1.0) if im.shape[1] > 2 else np.ones(len(LEG_LANDMARKS))
    res = (((cand - obs[None]) ** 2).sum(-1) * vis[None]).sum(-1) / vis.sum()
    if world_body is not None:
        wb = np.asarray(world_body, dtype=np.float64)
        w_hip = (wb[23] + wb[24]) / 2
        w_torso = float(np.linalg.norm((wb[11] + wb[12]) / 2 - w_hip))
        oz = (wb[[m for m, _ in LEG_LANDMARKS], 2] - w_hip[2]) / max(w_torso, 1e-6) * LEG_SCALE
        jb = joints.numpy().astype(np.float64)
        b_hip = (jb[:, j["l_hip"]] + jb[:, j["r_hip"]]) / 2
        b_torso = np.linalg.norm((jb[:, j["l_shoulder"]] + jb[:, j["r_shoulder"]]) / 2 - b_hip, axis=1)
        cz = (jb[:, [j[n] for _, n in LEG_LANDMARKS], 2] - b_hip[:, 2:3]) / b_torso[:, None]
        res = res + DEPTH_WEIGHT * (((cz - oz[None]) ** 2) * vis[None]).sum(-1) / vis.sum()
    if kinds is not None:
        res = res + np.array([0.0 if lab[0] in kinds else np.inf for lab in labels])
    else:
        penalty = np.inf if cycling_penalty is None else cycling_penalty
        res = res + np.array([penalty if lab[0] == "cycling" else 0.0 for lab in labels])
    best = int(np.argmin(res))
    legs = joints[best, [j[n] for n in LEG_JOINTS]].numpy().astype(np.float64)
    return labels[best], legs, float(res[best])

"""MediaPipe evidence → a checked body estimate, or the reason it was not trusted.

The MediaPipe server (:mod:`gclreid.structures.mediapipe_pose`) sends, per crop, the pose landmarks
of the crop and of its mirror image and the pose model's person mask. Here:

1. **Sanity checks** (:func:`check_view`) on every landmark set: landmarks off the crop, shoulder and
   hip visibility, body span (head top to feet) against the crop height, an upright torso with the
   head above the shoulders. Each gives a factor in [0, 1]; their product is the view's quality,
   and a failed hard check names the reason (``off_crop``, ``low_visibility``, ``too_small``,
   ``too_large``, ``not_upright``).
2. **Left/right consistency**: the mirrored crop's landmarks, mirrored back, should land where the
   crop's own do. The largest group of views that agree is averaged (less noise, and a yaw that
   is not biased to one side); a view that disagrees lowers the quality (``views_disagree``).
3. **Facing** (:func:`decide_facing`): the yaw comes from the shoulder and hip lines; whether the
   person faces the camera or turns their back — the ambiguity of a skeleton (θ and 180° − θ
   project alike, with left and right swapped) — is decided by the votes of all views, and every
   view is turned to that side before they are averaged.
4. **Framing** (:func:`body_extent`): the body is drawn from the head top to the feet that the
   person mask (else the landmarks) shows, with the pelvis on the hips' column — not at
   MediaPipe's metric scale.
5. **Pose** (:func:`body_from_world`): the 2D landmarks with the 3D ones' depth
   (:func:`image_depth_landmarks`), stood upright (:func:`upright_world`), turned into the body
   frame → inverse kinematics for torso, head and arms; the legs are the standing or walking pose
   that fits the 2D leg landmarks best (:func:`gclreid.structures.poses.fit_legs`), so a walker
   never becomes a crouch; knees at hip height (:func:`knees_high`) make a seated rider instead.
   Arms are kept anatomical (upper arm at most :data:`MAX_ARM_RAISE` from hanging, forearm at
   most :data:`MAX_FOREARM_OUT` outwards).

Legs cut by the crop (:func:`legs_cut`: feet landmarks well below the crop, everything from the
hips up on it) are not an off-crop skeleton; the body then keeps its size, feet below the crop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .mediapipe_pose import (L_ANK, L_EAR, L_EL, L_EYE, L_FOOT, L_HEEL, L_HIP, L_IDX, L_KNEE, L_SH, L_WR, NOSE,
                             R_ANK, R_EAR, R_EL, R_EYE, R_FOOT, R_HEEL, R_HIP, R_IDX, R_KNEE, R_SH, R_WR, SWAP,
                             decode_mask)

# Landmarks that count for "off the crop": nose, ears and the 22 body points.
BODY_LANDMARKS: Tuple[int, ...] = (NOSE, L_EAR, R_EAR) + tuple(range(11, 33))
FEET_LANDMARKS: Tuple[int, ...] = (L_ANK, R_ANK, L_HEEL, R_HEEL, L_FOOT, R_FOOT)
# Check thresholds.
OFF_CROP_MAX = 0.24            # more than this fraction of body landmarks off the crop → off_crop
VISIBILITY_MIN = 0.5           # mean shoulder/hip visibility below this → low_visibility
SPAN_MIN, SPAN_MAX = 0.5, 1.45  # body span (head top → feet) / crop height outside → too_small/too_large
TILT_MAX = 40.0                # torso more than this many degrees from vertical → not_upright
ACCEPT = 0.4                   # a view of lower quality is not used
FLIP_AGREE = 0.06              # mirrored views agree when core landmarks are this close (crop heights)
# Proportions (fractions of the stature): head top above the eye/ear line, relative to the
# eye/ear line → shoulder line distance; sole below the lowest foot landmark.
HEAD_TOP_FACTOR = 0.62
SOLE = 0.012
CORE = (NOSE, L_SH, R_SH, L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANK, R_ANK)


@dataclass
class ViewCheck:
    """The checks of one landmark set: ``quality`` in [0, 1], ``reason`` ("ok" or the worst failure)."""
    quality: float
    reason: str
    factors: Dict[str, float]
    top: float
    bottom: float
    pelvis_x: float


@dataclass
class Rejected:
    """MediaPipe's answer for an image that is not trusted: why, and what may still help the fallback."""
    reason: str
    quality: float
    mask: Optional[np.ndarray] = None


def mirror_image_landmarks(image: np.ndarray) -> np.ndarray:
    """Image landmarks found on the mirrored crop → the crop's frame (x → 1 − x, left ↔ right)."""
    out = np.array(image, dtype=np.float64)[list(SWAP)]
    out[:, 0] = 1.0 - out[:, 0]
    return out


def mirror_world_landmarks(world: np.ndarray) -> np.ndarray:
    """World landmarks of the mirrored crop → the crop's frame (x → −x, left ↔ right)."""
    out = np.array(world, dtype=np.float64)[list(SWAP)]
    out[:, 0] = -out[:, 0]
    return out


def extent(image: np.ndarray) -> Tuple[float, float]:
    """(head top, sole) rows of the body as fractions of the crop height, from the landmarks.

    Head top: above the eye/ear line by :data:`HEAD_TOP_FACTOR` × its distance to the shoulder line.
    Feet: the lowest ankle/heel/toe landmark plus a sole.
    """
    im = np.asarray(image, dtype=np.float64)
    head_y = float(im[[L_EYE, R_EYE, L_EAR, R_EAR], 1].mean())
    head_y = min(head_y, float(im[NOSE, 1]))
    sh_y = float(im[[L_SH, R_SH], 1].mean())
    top = head_y - HEAD_TOP_FACTOR * max(sh_y - head_y, 0.02)
    bottom = float(im[list(FEET_LANDMARKS), 1].max()) + SOLE
    return top, bottom


# Person-mask extent: rows where at least MASK_MIN_PIXELS pixels of the (view-averaged) mask of the
# pose model exceed MASK_THRESHOLD. On 150 labelled Market-1501 crops the mask's head top and feet
# are within 10 % of the crop height of the labels for 99 % and 96 % of the crops, the landmarks'
# for 95 % and 84 % (MediaPipe often puts the ankles on the shins of small people).
MASK_THRESHOLD, MASK_MIN_PIXELS = 0.3, 2


def mask_extent(mask: np.ndarray) -> Optional[Tuple[float, float]]:
    """(top, bottom) rows of a person mask as fractions of its height, or None when it is empty."""
    rows = np.nonzero((np.asarray(mask) > MASK_THRESHOLD).sum(1) >= MASK_MIN_PIXELS)[0]
    if len(rows) == 0:
        return None
    return rows[0] / mask.shape[0], (rows[-1] + 1) / mask.shape[0]


def body_extent(image: np.ndarray, mask: Optional[np.ndarray]) -> Tuple[float, float, str]:
    """(top, bottom, source): the person mask's extent when it is there and not much shorter than
    the landmarks' (a mask that lost part of the body), else the landmarks'."""
    top, bottom = extent(image)
    if mask is not None:
        found = mask_extent(mask)
        if found is not None and found[1] - found[0] >= max(0.35, 0.6 * (bottom - top)):
            if legs_cut(image) and found[1] >= 0.95:
                # The crop cuts the legs: the feet stay where the landmarks put them, below the crop,
                # so the body keeps its size instead of being squeezed into the visible part.
                return found[0], max(found[1], bottom), "mask+cut"
            return found[0], found[1], "mask"
    return top, bottom, "landmarks"


# Legs cut by the crop: a detector crop often ends at the knees or shins (the person near the
# camera, or the box clipped by the frame). MediaPipe then extrapolates the legs below the crop
# (with a low visibility): that is the crop cutting the person, not an off-crop (zoomed) skeleton,
# as long as head, shoulders and hips are on the crop and the torso is no longer than a person cut
# at the knees would show (hip centre at most CUT_HIP_MAX down the crop, torso at most CUT_TORSO_MAX
# of its height: the views of the 151 labelled Market-1501 crops have a torso of 0.16–0.36 of the
# height, 5th–95th percentile).
CUT_HIP_MAX, CUT_TORSO_MAX = 0.9, 0.5


def legs_cut(image: np.ndarray) -> bool:
    """Whether the landmarks describe a person whose legs are cut by the crop's bottom edge: at least
    half the ankle/heel/toe landmarks clearly below the crop (where the off-crop check starts
    counting), everything from the hips up on it."""
    im = np.asarray(image, dtype=np.float64)
    below = int((im[list(FEET_LANDMARKS), 1] > 1.08).sum())
    upper = im[[NOSE, L_SH, R_SH, L_HIP, R_HIP], :2]
    on_crop = bool(((upper[:, 0] > -0.1) & (upper[:, 0] < 1.1) & (upper[:, 1] > -0.05) & (upper[:, 1] < 1.0)).all())
    hip_y = float(im[[L_HIP, R_HIP], 1].mean())
    torso = hip_y - float(im[[L_SH, R_SH], 1].mean())
    return below >= 3 and on_crop and hip_y <= CUT_HIP_MAX and 0.0 < torso <= CUT_TORSO_MAX


def check_view(image: np.ndarray, world: np.ndarray, aspect: float = 0.5) -> ViewCheck:
    """Sanity checks of one landmark set (``image`` [33, ≥2] fractions of the crop, ``world`` [33, 4]).

    ``aspect`` = crop width / height (turns x fractions into crop heights for angles).
    """
    im = np.asarray(image, dtype=np.float64)
    pts = im[list(BODY_LANDMARKS), :2]
    inside = (pts[:, 0] > -0.15) & (pts[:, 0] < 1.15) & (pts[:, 1] > -0.06) & (pts[:, 1] < 1.08)
    sh = im[[L_SH, R_SH], :2].mean(0)
    hip = im[[L_HIP, R_HIP], :2].mean(0)
    cut = legs_cut(im)
    if cut:
        # Legs below the crop's bottom edge are the crop cutting the person, not a bad fit.
        inside = inside | ((pts[:, 1] >= 1.08) & (pts[:, 0] > -0.15) & (pts[:, 0] < 1.15))
    off = 1.0 - float(inside.mean())
    vis = float(np.asarray(world, dtype=np.float64)[[L_SH, R_SH, L_HIP, R_HIP], 3].mean())
    top, bottom = extent(im)
    span = bottom - top
    torso = (sh - hip) * (aspect, 1.0)
    tilt = math.degrees(math.atan2(abs(torso[0]), -torso[1]))  # 0 = upright, 180 = upside down
    head_up = float(im[NOSE, 1] < sh[1] + 0.02)
    factors = {
        "off_crop": float(np.clip(1.0 - max(off - 0.08, 0.0) / (OFF_CROP_MAX - 0.08), 0.0, 1.0)),
        "visibility": float(np.clip((vis - 0.3) / (0.8 - 0.3), 0.0, 1.0)),
        "span": float(np.clip(min((span - 0.35) / (0.75 - 0.35), (1.7 - span) / (1.7 - 1.25)), 0.0, 1.0)),
        "upright": float(np.clip((TILT_MAX + 15.0 - tilt) / 30.0, 0.0, 1.0)) * (0.4 + 0.6 * head_up),
    }
    if off > OFF_CROP_MAX:
        reason = "off_crop"
    elif vis < VISIBILITY_MIN:
        reason = "low_visibility"
    elif tilt > TILT_MAX or not head_up:
        reason = "not_upright"
    elif span < SPAN_MIN:
        reason = "too_small"
    elif span > SPAN_MAX:
        reason = "too_large"
    else:
        reason = "ok"
    quality = float(np.prod(list(factors.values())))
    if reason != "ok":
        quality = min(quality, ACCEPT * 0.99)
    pelvis_x = float(hip[0])
    return ViewCheck(quality, reason, factors, top, bottom, pelvis_x)


def view_distance(a: np.ndarray, b: np.ndarray, aspect: float = 0.5) -> float:
    """Median distance (crop heights) between the core landmarks of two landmark sets."""
    d = (np.asarray(a)[list(CORE), :2] - np.asarray(b)[list(CORE), :2]) * (aspect, 1.0)
    return float(np.median(np.linalg.norm(d, axis=1)))


def yaw_from_world(world: np.ndarray) -> float:
    """Facing in degrees (0 = the camera, 90 = image right) from the shoulder and hip lines."""
    w = np.asarray(world, dtype=np.float64)
    across = (w[L_SH, :3] - w[R_SH, :3]) + (w[L_HIP, :3] - w[R_HIP, :3])
    return float(np.degrees(np.arctan2(across[2], across[0])) % 360.0)


def twin_world(world: np.ndarray) -> np.ndarray:
    """The front/back twin of a 3D landmark set: depth reflected, left ↔ right (same 2D picture,
    yaw θ → 180° − θ)."""
    out = np.array(world, dtype=np.float64)[list(SWAP)]
    out[:, 2] = -out[:, 2]
    return out


def twin_image(image: np.ndarray) -> np.ndarray:
    return np.array(image, dtype=np.float64)[list(SWAP)]


def facing_votes(worlds: Sequence[np.ndarray]) -> List[float]:
    """Evidence for facing the camera (> 0) or turning away (< 0): one vote in [−1, 1] per landmark
    set, the front/back of its shoulder and hip lines (cos yaw, saturating at ±60°)."""
    return [float(np.clip(math.cos(math.radians(yaw_from_world(w))) / 0.5, -1.0, 1.0)) for w in worlds]


# Facing the camera or turning away is decided by the votes of every view that passed its checks.
# On 106 labelled Market-1501 crops that face the camera or away, the crop's and its mirror's
# landmarks put 94 % in the right hemisphere. The short-range face detector of the wheel was
# tried as a further vote: on the head region (2× and 3× its size, upscaled to 128 px) it fires
# for 36 % of the people who face the camera and for 14 % of those who turn away, and every weight
# given to it made the decision worse, so it is not used. No prior either: 44 % of that set turn
# their back to the camera, 33 % face it.
FACING_PRIOR = 0.0


def decide_facing(votes: Sequence[float]) -> float:
    """Signed score: > 0 faces the camera (cos yaw > 0), < 0 faces away."""
    return FACING_PRIOR + float(sum(votes))


def to_hemisphere(world: np.ndarray, image: np.ndarray, front: bool) -> Tuple[np.ndarray, np.ndarray, bool]:
    """The landmark set, or its front/back twin, whose yaw lies in the chosen hemisphere."""
    c = math.cos(math.radians(yaw_from_world(world)))
    if (c > 0) != front and abs(c) > 1e-3:
        return twin_world(world), twin_image(image), True
    return world, image, False


MAX_ROLL = 12.0  # degrees of sideways lean kept from the landmarks


def upright_world(world: np.ndarray) -> np.ndarray:
    """3D landmarks turned so the torso (hip centre → shoulder centre) stands upright: its lean
    towards or away from the camera (which small crops get badly wrong, and which the renderer's
    own elevation re-creates) is removed, a sideways lean is kept up to :data:`MAX_ROLL`."""
    w = np.array(world, dtype=np.float64)
    pts = w[:, :3]
    up = (pts[L_SH] + pts[R_SH]) / 2 - (pts[L_HIP] + pts[R_HIP]) / 2   # camera axes, y down
    a = math.atan2(-up[2], -up[1])      # pitch: rotate about x so that up has no depth
    c, s = math.cos(a), math.sin(a)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])
    pts = pts @ rx.T
    up = rx @ up
    roll = math.degrees(math.atan2(up[0], -up[1]))
    excess = math.radians(roll - float(np.clip(roll, -MAX_ROLL, MAX_ROLL)))
    c, s = math.cos(excess), math.sin(excess)
    rz = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    w[:, :3] = pts @ rz.T
    return w


MAX_ARM_RAISE = 60.0     # degrees an upper arm is raised from hanging, at most
MAX_FOREARM_OUT = 15.0   # degrees a forearm points outwards, at most (the elbow's carrying angle is 5–15°)
MAX_HEAD_TILT = 25.0  # degrees between the neck→ears direction and the torso (small crops exaggerate it)


def _limit_angle(v: np.ndarray, ref: np.ndarray, max_deg: float) -> np.ndarray:
    """``v`` turned towards ``ref`` until the angle between them is at most ``max_deg`` (length kept)."""
    n, r = float(np.linalg.norm(v)), float(np.linalg.norm(ref))
    if n < 1e-9 or r < 1e-9:
        return v
    a, b = v / n, ref / r
    ang = math.acos(float(np.clip(a @ b, -1.0, 1.0)))
    lim = math.radians(max_deg)
    if ang <= lim:
        return v
    perp = a - (a @ b) * b
    pn = float(np.linalg.norm(perp))
    perp = perp / pn if pn > 1e-9 else np.array([0.0, 0.0, 1.0])
    return n * (math.cos(lim) * b + math.sin(lim) * perp)


def world_in_body_frame(world: np.ndarray, yaw: float, elevation: float = 0.0) -> np.ndarray:
    """Camera-axis landmarks (x right, y down, z away) → body frame (x left, y up, z forward)."""
    from ..body import OrthoCamera
    view = OrthoCamera(1.0, 0.0, 0.0, elevation).view_rotation(torch.tensor([yaw]))[0].double().numpy()
    return np.asarray(world, dtype=np.float64)[:, :3] @ view  # rows: view = R @ body → body = R^T @ view


def body_from_world(world: np.ndarray, elevation: float = 0.0, legs: Optional[np.ndarray] = None):
    """(pose [J, 3], shape [S], yaw) from 3D landmarks (metric, camera axes: x right, y down, z away).

    Yaw from the left→right shoulder and hip vectors; the landmarks turned into the body frame give
    joint positions (spine/chest between hips and shoulders, head from the ears, hands from the
    index fingers, toes from the foot tips) → :func:`gclreid.body.pose_from_joints`; limb lengths
    relative to the model's proportions (normalised by the torso) give the shape factors. ``legs``
    (optional, [8, 3] body frame relative to the pelvis, in :data:`gclreid.structures.poses.LEG_JOINTS`
    order) replaces the landmarks' hips, knees, ankles and toes.
    """
    from ..body import pose_from_joints
    from ..body.skeleton import DEFAULT_SHAPE, JOINT_INDEX, NUM_JOINTS, SHAPE_INDEX
    yaw = yaw_from_world(world)
    body = world_in_body_frame(world, yaw, elevation)
    h = DEFAULT_SHAPE[0]
    hip_mid = (body[L_HIP] + body[R_HIP]) / 2
    sh_mid = (body[L_SH] + body[R_SH]) / 2
    up = sh_mid - hip_mid
    pelvis = hip_mid + np.array([0.0, 0.03 * h, 0.0])
    trunk = sh_mid - pelvis
    j = np.zeros((NUM_JOINTS, 3))
    name = JOINT_INDEX
    j[name["pelvis"]] = pelvis
    j[name["spine"]] = pelvis + trunk * (0.09 / 0.275)
    j[name["chest"]] = pelvis + trunk * (0.19 / 0.275)
    j[name["neck"]] = sh_mid + up / max(np.linalg.norm(up), 1e-6) * 0.01 * h
    ear_mid = (body[L_EAR] + body[R_EAR]) / 2
    head_dir = _limit_angle(ear_mid - j[name["neck"]], up, MAX_HEAD_TILT)
    j[name["head"]] = j[name["neck"]] + head_dir * 0.6
    j[name["head_top"]] = j[name["head"]] + head_dir / max(np.linalg.norm(head_dir), 1e-6) * 0.12 * h
    for side, (sh, el, wr, idx, hip, kn, an, ft) in (("l", (L_SH, L_EL, L_WR, L_IDX, L_HIP, L_KNEE, L_ANK, L_FOOT)),
                                                       ("r", (R_SH, R_EL, R_WR, R_IDX, R_HIP, R_KNEE, R_ANK, R_FOOT))):
        for joint, k in (("shoulder", sh), ("elbow", el), ("wrist", wr), ("hand", idx), ("hip", hip),
                         ("knee", kn), ("ankle", an), ("toe", ft)):
            j[name[f"{side}_{joint}"]] = body[k]
    for side in ("l", "r"):
        # Upper arms at most MAX_ARM_RAISE from hanging: small crops put elbows far out (hands on
        # backpack straps become arms held up and out); the elbow, wrist and hand move together.
        sh_j, el_j = j[name[f"{side}_shoulder"]], j[name[f"{side}_elbow"]]
        moved = sh_j + _limit_angle(el_j - sh_j, np.array([0.0, -1.0, 0.0]), MAX_ARM_RAISE) - el_j
        for joint in ("elbow", "wrist", "hand"):
            j[name[f"{side}_{joint}"]] = j[name[f"{side}_{joint}"]] + moved
        # Forearms point at most MAX_FOREARM_OUT away from the body's side (elbows bend forwards,
        # not outwards): MediaPipe's wrists of small crops often stick out sideways.
        el_j, wr_j = j[name[f"{side}_elbow"]], j[name[f"{side}_wrist"]]
        out = np.array([1.0 if side == "l" else -1.0, 0.0, 0.0])  # body frame: x is the person's left
        fore = wr_j - el_j
        n = float(np.linalg.norm(fore))
        lim = math.sin(math.radians(MAX_FOREARM_OUT))
        if n > 1e-9 and fore @ out > lim * n:
            rest = fore - (fore @ out) * out
            rn = float(np.linalg.norm(rest))
            rest = rest / rn if rn > 1e-9 else np.array([0.0, -1.0, 0.0])
            moved = el_j + n * (math.cos(math.radians(MAX_FOREARM_OUT)) * rest + lim * out) - wr_j
            for joint in ("wrist", "hand"):
                j[name[f"{side}_{joint}"]] = j[name[f"{side}_{joint}"]] + moved
    dist = lambda a, b: float(np.linalg.norm(body[a] - body[b]))  # noqa: E731
    leg = (dist(L_HIP, L_KNEE) + dist(L_KNEE, L_ANK) + dist(R_HIP, R_KNEE) + dist(R_KNEE, R_ANK)) / 2
    arm = (dist(L_SH, L_EL) + dist(L_EL, L_WR) + dist(R_SH, R_EL) + dist(R_EL, R_WR)) / 2
    torso = float(np.linalg.norm(trunk))
    shape = torch.tensor(DEFAULT_SHAPE, dtype=torch.float32)
    refs = {"leg": leg / ((0.215 + 0.24) * h), "arm": arm / ((0.185 + 0.15) * h),
            "shoulder": dist(L_SH, R_SH) / (0.23 * h), "hip": dist(L_HIP, R_HIP) / (0.11 * h)}
    torso_f = torso / (0.275 * h)
    for key, value in refs.items():
        shape[SHAPE_INDEX[key]] = float(np.clip(value / max(torso_f, 1e-3), 0.8, 1.25))
    if legs is not None:
        from .poses import LEG_JOINTS
        for k, joint in enumerate(LEG_JOINTS):
            j[name[joint]] = pelvis + legs[k]
    joints = torch.tensor(j, dtype=torch.float32)[None]
    pose = pose_from_joints(joints, shape[None])[0]
    return pose, shape, yaw


def image_depth_landmarks(image: np.ndarray, world: np.ndarray, aspect: float = 0.5) -> np.ndarray:
    """3D landmarks [33, 4] that keep the 2D landmarks' picture and take only depth from the 3D ones.

    MediaPipe's metric "world" landmarks of a small crop often disagree with its own 2D landmarks
    (arms held out in 3D that hang by the body in the picture). Here x and y are the 2D landmarks
    (crop pixels, hip centre at the origin) scaled so the torso has the 3D landmarks' length, z is
    the 3D landmarks' depth, and the visibility is kept.
    """
    im = np.asarray(image, dtype=np.float64)
    w = np.asarray(world, dtype=np.float64)
    xy = im[:, :2] * (aspect, 1.0)
    hip2 = (xy[L_HIP] + xy[R_HIP]) / 2
    torso2 = float(np.linalg.norm((xy[L_SH] + xy[R_SH]) / 2 - hip2))
    hip3 = (w[L_HIP, :3] + w[R_HIP, :3]) / 2
    torso3 = float(np.linalg.norm((w[L_SH, :3] + w[R_SH, :3]) / 2 - hip3))
    out = np.empty((len(w), 4))
    out[:, :2] = (xy - hip2) * (torso3 / max(torso2, 1e-6))
    out[:, 2] = w[:, 2] - hip3[2]
    out[:, 3] = w[:, 3]
    return out


# A seated rider's thighs are about horizontal: the knees are near hip height. Standing and walking
# people have them 0.4–0.75 torso lengths below the hip centre (10th–90th percentile, 183 labelled
# Market-1501 crops of both labelled sets), none under 0.2. Of the labelled cyclists, 3 of 11 are
# flagged (knees at hip height), no walker or stander is; the other riders pedal with a leg down
# or are hidden by the bicycle and keep walking legs. (The leg library alone could not tell riders
# from walkers: poses.CYCLING_PENALTY.)
KNEES_HIGH = (-0.5, 0.2)


def knee_drop(image: np.ndarray, aspect: float = 0.5) -> float:
    """Height of the knees below the hip centre, in torso lengths (shoulder centre → hip centre):
    the two knees' mean weighted by their visibility (where the landmarks carry one), so that a
    hidden knee guessed at hip height counts little."""
    im = np.asarray(image, dtype=np.float64)
    xy = im[:, :2] * (aspect, 1.0)
    hip = (xy[L_HIP] + xy[R_HIP]) / 2
    torso = float(np.linalg.norm((xy[L_SH] + xy[R_SH]) / 2 - hip))
    w = np.clip(im[[L_KNEE, R_KNEE], 2], 0.1, 1.0) if im.shape[1] > 2 else np.ones(2)
    return float(((xy[[L_KNEE, R_KNEE], 1] - hip[1]) * w).sum() / w.sum()) / max(torso, 1e-6)


def knees_high(image: np.ndarray, aspect: float = 0.5) -> bool:
    """Whether the knees are at about hip height (:data:`KNEES_HIGH`): someone seated, on a bicycle."""
    lo, hi = KNEES_HIGH
    return lo < knee_drop(image, aspect) < hi


def estimate_from_evidence(evidence: dict, aspect: Optional[float] = None):
    """The server's evidence for one crop → :class:`~gclreid.structures.estimate.Estimate`
    (status ``detected``) or :class:`Rejected` (nobody found, or every view failed its checks)."""
    from .estimate import DEFAULT_ELEVATION, Estimate
    shape_hw = evidence.get("shape")
    if aspect is None:
        aspect = (shape_hw[1] / shape_hw[0]) if shape_hw else 0.5
    views = evidence.get("views") or []
    checked = []
    for v in views:
        image = np.asarray(v["image"], dtype=np.float64)
        world = np.asarray(v["world"], dtype=np.float64)
        m = decode_mask(v.get("mask"))
        if v.get("flip"):
            image, world = mirror_image_landmarks(image), mirror_world_landmarks(world)
            m = None if m is None else m[:, ::-1]
        check = check_view(image, world, aspect)
        world = image_depth_landmarks(image, world, aspect)
        checked.append((check, image, world, int(v.get("flip", 0)), m))
    if not checked:
        return Rejected("no_person", 0.0, None)
    good = [c for c in checked if c[0].reason == "ok" and c[0].quality >= ACCEPT]
    if not good:
        best = max(checked, key=lambda c: c[0].quality)
        reason = best[0].reason if best[0].reason != "ok" else "low_quality"
        return Rejected(reason, best[0].quality, best[4])
    masks = [c[4] for c in good if c[4] is not None]
    mask = np.mean(masks, axis=0) if masks else None
    notes: List[str] = []
    front = decide_facing(facing_votes([c[2] for c in good])) > 0
    aligned = []
    for c in good:
        world, image, _ = to_hemisphere(c[2], c[1], front)
        aligned.append((c[0], image, world))
    # The largest group of views that agree (2D landmarks within FLIP_AGREE of one view) is averaged.
    n = len(aligned)
    dist = np.array([[view_distance(a[1], b[1], aspect) for b in aligned] for a in aligned])
    support = (dist <= FLIP_AGREE).sum(1)
    centre = max(range(n), key=lambda i: (support[i], aligned[i][0].quality))
    group = [aligned[j] for j in range(n) if dist[centre, j] <= FLIP_AGREE]
    image = np.mean([g[1] for g in group], axis=0)
    world = np.mean([g[2] for g in group], axis=0)
    check = check_view(image, world, aspect)
    if n == 1:
        quality = check.quality * 0.9
        notes.append("one_view")
    else:
        quality = check.quality * (0.8 + 0.2 * (len(group) - 1) / (n - 1))
        if len(group) < n:
            notes.append("views_disagree")
    if math.cos(math.radians(yaw_from_world(world))) * math.cos(math.radians(yaw_from_world(good[0][2]))) < 0:
        notes.append("turned")
    world = upright_world(world)
    yaw = yaw_from_world(world)
    from .poses import fit_legs
    riding = knees_high(image, aspect)
    label, legs, _ = fit_legs(image, yaw, aspect, world_in_body_frame(world, yaw),
                              kinds=("cycling",) if riding else ("standing", "walking"))
    pose, shape, yaw = body_from_world(world, legs=legs)
    top, bottom, _ = body_extent(image, mask)
    px = check.pelvis_x
    return Estimate(pose, shape, yaw, (px - 0.25, top, px + 0.25, bottom), "detected", quality,
                    elevation=DEFAULT_ELEVATION, pelvis_x=px, quality=quality,
                    reason="ok" if not notes else ",".join(notes), kind=label[0])

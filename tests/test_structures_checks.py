"""MediaPipe evidence → checked estimate: sanity checks and their reasons, left/right consistency,
front/back, framing on the person, legs that walk, and the fallback taking over with the reason."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from gclreid.body import Body, OrthoCamera
from gclreid.body.skeleton import JOINT_INDEX
from gclreid.structures.estimate import Estimate
from gclreid.structures.landmarks import (FLIP_AGREE, Rejected, check_view, decide_facing, estimate_from_evidence,
                                          facing_votes, mirror_image_landmarks, mirror_world_landmarks, twin_world,
                                          view_distance, yaw_from_world)
from gclreid.structures.mediapipe_pose import SWAP
from gclreid.structures.poses import fit_legs, leg_library
from gclreid.structures.sources import EstimateSource, render_estimates

ANGLES = (45, 90, 135, 180, 225, 270, 315)


def landmarks(yaw=0.0, phase=0.3, top=0.04, bottom=0.97, cx=0.5, stride=25.0, aspect=0.5, elevation=10.0):
    """MediaPipe-style (image [33, 4], world [33, 4]) of a walking body seen by a camera looking down
    ``elevation`` degrees: image x, y as fractions of a ``aspect`` (w/h) crop in which the body spans
    rows ``top``…``bottom`` with the hips on column ``cx``; world in metres, camera axes."""
    body = Body.walking([phase], yaw=yaw, stride=stride)
    joints, _ = body.joints()
    view = OrthoCamera(1.0, 0.0, 0.0, elevation).view_rotation(body.yaw)[0]
    cam = (joints[0] @ view.T).numpy().astype(np.float64)
    j = {name: cam[i] for name, i in JOINT_INDEX.items()}
    side = j["l_shoulder"] - j["r_shoulder"]
    fwd = np.cross(side, np.array([0.0, -1.0, 0.0]))
    fwd = -fwd / np.linalg.norm(fwd) * 0.08  # towards where the face points
    head = j["head"]
    table = {0: head + fwd, 1: head + 0.6 * fwd + 0.1 * side, 2: head + 0.6 * fwd + 0.15 * side,
             3: head + 0.6 * fwd + 0.2 * side, 4: head + 0.6 * fwd - 0.1 * side, 5: head + 0.6 * fwd - 0.15 * side,
             6: head + 0.6 * fwd - 0.2 * side, 7: head + 0.35 * side, 8: head - 0.35 * side,
             9: head + fwd + np.array([0.03, 0.05, 0]), 10: head + fwd + np.array([-0.03, 0.05, 0])}
    for s, idx in (("l", (11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)), ("r", (12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32))):
        names = ("shoulder", "elbow", "wrist", "hand", "hand", "hand", "hip", "knee", "ankle", "ankle", "toe")
        for k, name in zip(idx, names):
            table[k] = j[f"{s}_{name}"] + (np.array([0.0, 0.04, 0.0]) if k in (29, 30) else 0.0)
    world = np.zeros((33, 4))
    world[:, 3] = 0.99
    for k, p in table.items():
        world[k, :3] = p
    world[:, :3] -= (world[23, :3] + world[24, :3]) / 2
    # Image: head top ≈ head + 0.1 m, soles ≈ lowest foot point; map that span onto top…bottom.
    y_top, y_bot = world[:, 1].min() - 0.06, world[:, 1].max() + 0.02
    s = (bottom - top) / (y_bot - y_top)
    image = np.zeros((33, 4))
    image[:, 0] = cx + world[:, 0] * s / aspect
    image[:, 1] = top + (world[:, 1] - y_top) * s
    image[:, 2] = image[:, 3] = 0.99
    return image, world


def evidence(image, world, mirrored=True, mask=None):
    views = [{"flip": 0, "scale": 0.5, "image": image.tolist(), "world": world.tolist(), "mask": mask}]
    if mirrored:
        # What the server would find on the mirrored crop.
        mi = mirror_image_landmarks(image)
        mw = mirror_world_landmarks(world)
        views.append({"flip": 1, "scale": 0.5, "image": mi.tolist(), "world": mw.tolist(), "mask": mask})
    return {"shape": [128, 64], "views": views}


def test_good_landmarks_pass_every_check():
    image, world = landmarks()
    check = check_view(image, world)
    assert check.reason == "ok" and check.quality > 0.9
    assert check.top == pytest.approx(0.04, abs=0.05) and check.bottom == pytest.approx(0.97, abs=0.05)


def test_landmarks_off_the_crop_are_rejected():
    image, world = landmarks()
    zoomed = image.copy()
    zoomed[:, :2] = 0.5 + (zoomed[:, :2] - 0.5) * 2.5  # a detection far too large
    check = check_view(zoomed, world)
    assert check.reason == "off_crop" and check.quality < 0.4
    est = estimate_from_evidence(evidence(zoomed, world))
    assert isinstance(est, Rejected) and est.reason == "off_crop"


@pytest.mark.parametrize("change, reason", [
    (lambda im, w: (im, np.concatenate([w[:, :3], np.full((33, 1), 0.2)], 1)), "low_visibility"),
    (lambda im, w: (np.stack([im[:, 0], 1.0 - im[:, 1], im[:, 2], im[:, 3]], 1), w), "not_upright"),
    (lambda im, w: (np.stack([0.5 + (im[:, 0] - 0.5) * 0.3, 0.6 + (im[:, 1] - 0.5) * 0.3, im[:, 2], im[:, 3]], 1), w),
     "too_small"),
])
def test_failed_checks_name_their_reason(change, reason):
    image, world = change(*landmarks())
    check = check_view(image, world)
    assert check.reason == reason and check.quality < 0.4
    est = estimate_from_evidence(evidence(image, world))
    assert isinstance(est, Rejected) and est.reason == reason


class _StubPose:
    """Stands in for the MediaPipe process: returns fixed evidence for every image."""
    version, python = "stub", "stub"

    def __init__(self, ev):
        self.ev = ev

    def estimate(self, images):
        return [estimate_from_evidence(self.ev) for _ in images]

    def close(self):
        pass


def test_rejected_estimates_fall_back_with_the_reason():
    image, world = landmarks()
    image[:, :2] = 0.5 + (image[:, :2] - 0.5) * 2.5
    source = EstimateSource("fallback")
    source.pose = _StubPose(evidence(image, world))
    crop = Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 64, 3), dtype=np.uint8))
    [est] = source.estimate([crop])
    assert est.status == "fallback" and est.reason.startswith("off_crop:")
    rec = est.record()
    assert rec["status"] == "fallback" and rec["reason"].startswith("off_crop") and "quality" in rec


@pytest.mark.parametrize("yaw", [0.0, 40.0, 90.0, 150.0, 200.0, 300.0])
def test_estimate_recovers_yaw_and_frames_the_body_on_the_person(yaw):
    image, world = landmarks(yaw=yaw, top=0.08, bottom=0.93, cx=0.55)
    est = estimate_from_evidence(evidence(image, world))
    assert isinstance(est, Estimate) and est.status == "detected" and est.reason == "ok"
    assert abs((est.yaw - yaw + 180) % 360 - 180) < 20
    grey = render_estimates([est], ANGLES, 128, 64)[0]
    rows = np.nonzero((grey[0] > 20).sum(1) >= 2)[0]
    assert rows[0] / 128 == pytest.approx(0.08, abs=0.04) and (rows[-1] + 1) / 128 == pytest.approx(0.93, abs=0.04)


def test_mirror_view_agrees_and_twin_is_the_front_back_ambiguity():
    image, world = landmarks(yaw=30.0)
    mi, mw = mirror_image_landmarks(mirror_image_landmarks(image)), mirror_world_landmarks(mirror_world_landmarks(world))
    assert np.allclose(mi, image) and np.allclose(mw, world)
    assert view_distance(image, mirror_image_landmarks(mirror_image_landmarks(image))) < FLIP_AGREE
    # The twin (depth reflected, left and right swapped) looks the same and faces 180° − θ.
    assert yaw_from_world(twin_world(world)) == pytest.approx(150.0, abs=1.0)
    assert np.allclose(twin_world(world)[:, :2], world[list(SWAP), :2])


def test_front_back_follows_the_majority_of_views():
    image, world = landmarks(yaw=20.0)
    votes = facing_votes([world, world, twin_world(world)])
    assert decide_facing(votes) > 0
    # One view that saw the person from the back is turned to agree with the other two.
    ev = evidence(image, world)
    ev["views"].append({"flip": 0, "scale": 0.65, "image": image[list(SWAP)].tolist(),
                        "world": twin_world(world).tolist(), "mask": None})
    est = estimate_from_evidence(ev)
    assert isinstance(est, Estimate) and abs((est.yaw - 20.0 + 180) % 360 - 180) < 20


def test_disagreeing_views_lower_the_quality_and_say_so():
    image, world = landmarks(yaw=10.0)
    other_image, other_world = landmarks(yaw=10.0, phase=0.8, cx=0.35)
    ev = evidence(image, world, mirrored=False)
    ev["views"].append({"flip": 0, "scale": 0.65, "image": other_image.tolist(), "world": other_world.tolist(),
                        "mask": None})
    est = estimate_from_evidence(ev)
    assert isinstance(est, Estimate) and "views_disagree" in est.reason and est.quality < 0.85
    agree = estimate_from_evidence(evidence(image, world))
    assert agree.reason == "ok" and agree.quality > est.quality


def test_person_mask_gives_the_extent():
    image, world = landmarks(top=0.05, bottom=0.8)  # landmarks whose feet stop short (on the shins)
    mask = np.zeros((64, 32), np.uint8)
    mask[2:63, 10:22] = 255  # the person mask reaches the feet
    import base64
    data = base64.b64encode(mask.tobytes()).decode("ascii")
    est = estimate_from_evidence(evidence(image, world, mask=data))
    assert isinstance(est, Estimate)
    assert est.box[1] == pytest.approx(2 / 64, abs=0.01) and est.box[3] == pytest.approx(63 / 64, abs=0.01)


def _knee_flexion(est):
    body = Body(est.pose[None], est.shape[None], torch.tensor([0.0]))
    joints, _ = body.joints()
    out = []
    for s in ("l", "r"):
        hip, knee, ankle = (joints[0, JOINT_INDEX[f"{s}_{n}"]] for n in ("hip", "knee", "ankle"))
        a, b = knee - hip, ankle - knee
        out.append(math.degrees(math.acos(float((a @ b) / (a.norm() * b.norm())))))
    return out


@pytest.mark.parametrize("yaw", [0.0, 90.0, 180.0, 250.0])
def test_a_walker_with_crouched_3d_legs_still_walks(yaw):
    image, world = landmarks(yaw=yaw, phase=0.1)
    # MediaPipe-like failure: the 3D knees pushed far forward (a crouch), the 2D picture unchanged.
    bent = world.copy()
    fwd = np.array([math.sin(math.radians(yaw)), 0.0, -math.cos(math.radians(yaw))])
    for k in (25, 26):
        bent[k, :3] += 0.35 * fwd
    est = estimate_from_evidence(evidence(image, bent))
    assert isinstance(est, Estimate) and est.kind in ("walking", "standing")
    assert max(_knee_flexion(est)) < 65.0


def test_leg_fit_tells_standing_from_walking_in_a_side_view():
    still, _ = landmarks(yaw=90.0, stride=0.0)
    walk, _ = landmarks(yaw=90.0, phase=0.25, stride=28.0)
    assert fit_legs(still, 90.0)[0][0] == "standing" or fit_legs(still, 90.0)[0][2] <= 12.0
    label = fit_legs(walk, 90.0)[0]
    assert label[0] == "walking" and label[2] >= 20.0
    labels, joints = leg_library()
    assert {lab[0] for lab in labels} == {"standing", "walking", "cycling"}
    # Cycling is in the library but off by default; with no penalty a seated pose can win.
    seated = [i for i, lab in enumerate(labels) if lab[0] == "cycling"]
    knee_up = joints[seated, JOINT_INDEX["l_knee"], 1].max()
    assert knee_up > joints[0, JOINT_INDEX["l_knee"], 1] + 0.2


def test_rejection_when_nobody_is_found():
    est = estimate_from_evidence({"shape": [128, 64], "views": []})
    assert isinstance(est, Rejected) and est.reason == "no_person"

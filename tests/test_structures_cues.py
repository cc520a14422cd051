"""Real-crop cues of the MediaPipe estimate (issue #14, second round): legs cut by the crop are not an
off-crop skeleton, knees at hip height ride a bicycle, arms are kept anatomical, a squashed skeleton
is retried at the server, and the fallback keeps its silhouette search to images whose mask matches
a body."""
import base64
import math

import numpy as np
import pytest
import torch
from PIL import Image

from gclreid.body import Body
from gclreid.body.skeleton import JOINT_INDEX
from gclreid.structures.estimate import Estimate, estimate_fallback
from gclreid.structures.landmarks import (MAX_ARM_RAISE, MAX_FOREARM_OUT, Rejected, body_from_world, check_view,
                                          estimate_from_evidence, knee_drop, knees_high, legs_cut)
from gclreid.structures.mediapipe_pose import L_HIP, L_KNEE, L_SH, R_HIP, R_KNEE, R_SH, _usable
from gclreid.structures.sources import render_estimates

from test_structures_checks import ANGLES, evidence, landmarks


def _cut(image):
    """The same person in a crop that ends at the thighs: landmarks stretched so the feet are far
    below the crop's bottom edge (head top at 0.1, soles at about 1.5)."""
    out = image.copy()
    out[:, 1] = 0.1 + (out[:, 1] - 0.04) * 1.5
    # MediaPipe gives landmarks outside the image a low visibility.
    out[out[:, 1] > 1.0, 2] = 0.05
    return out


def test_legs_cut_by_the_crop_pass_the_checks_and_keep_their_size():
    image, world = landmarks()
    cut = _cut(image)
    assert legs_cut(cut) and not legs_cut(image)
    check = check_view(cut, world)
    assert check.reason == "ok" and check.bottom > 1.2
    mask = np.zeros((64, 32), np.uint8)
    mask[6:64, 9:23] = 255  # the person mask runs out at the crop's bottom edge
    data = base64.b64encode(mask.tobytes()).decode("ascii")
    est = estimate_from_evidence(evidence(cut, world, mask=data))
    assert isinstance(est, Estimate) and est.status == "detected"
    # Head top from the mask, feet below the crop: the body is not squeezed into the visible part.
    assert est.box[1] == pytest.approx(6 / 64, abs=0.01) and est.box[3] > 1.2
    grey = render_estimates([est], ANGLES, 128, 64)[0]
    rows = np.nonzero((grey[0] > 20).sum(1) >= 2)[0]
    assert rows[0] / 128 == pytest.approx(6 / 64, abs=0.04) and rows[-1] == 127
    assert all((g > 20).mean() > 0.01 for g in grey)


def test_a_zoomed_skeleton_is_still_off_the_crop():
    image, world = landmarks()
    zoomed = image.copy()
    zoomed[:, :2] = 0.5 + (zoomed[:, :2] - 0.5) * 2.5  # head above the crop as well: not a cut
    assert not legs_cut(zoomed)
    assert check_view(zoomed, world).reason == "off_crop"
    # A torso longer than half the crop is a zoomed detection, not a crop that cut the legs.
    tall = image.copy()
    tall[:, 1] = -0.2 + (tall[:, 1] - 0.04) * 2.2
    tall[[0, 11, 12], 1] = np.clip(tall[[0, 11, 12], 1], 0.02, None)
    assert not legs_cut(tall)


def _seated(image):
    """Landmarks of a rider: the knees raised to hip height, in front of the hips."""
    out = image.copy()
    hip_y = out[[L_HIP, R_HIP], 1].mean()
    for k in (L_KNEE, R_KNEE):
        out[k, 1] = hip_y + 0.02
    return out


@pytest.mark.parametrize("yaw", [90.0, 270.0, 0.0])
def test_knees_at_hip_height_ride_a_bicycle(yaw):
    image, world = landmarks(yaw=yaw, phase=0.2)
    assert not knees_high(image) and knee_drop(image) > 0.4
    seated = _seated(image)
    assert knees_high(seated)
    est = estimate_from_evidence(evidence(seated, world))
    assert isinstance(est, Estimate) and est.kind == "cycling"
    walker = estimate_from_evidence(evidence(image, world))
    assert walker.kind in ("walking", "standing")


def test_a_hidden_knee_guessed_at_hip_height_does_not_make_a_rider():
    image, _ = landmarks(phase=0.2)
    one = image.copy()
    one[R_KNEE, 1] = one[[L_HIP, R_HIP], 1].mean()
    one[R_KNEE, 2] = 0.1  # not visible
    assert not knees_high(one)


def _arm_angles(est):
    body = Body(est.pose[None], est.shape[None], torch.tensor([0.0]))
    joints, _ = body.joints()
    j = joints[0]
    out = []
    for s, sign in (("l", 1.0), ("r", -1.0)):
        sh, el, wr = (j[JOINT_INDEX[f"{s}_{n}"]] for n in ("shoulder", "elbow", "wrist"))
        up = el - sh
        raise_deg = math.degrees(math.acos(float(-up[1] / up.norm())))
        fore = wr - el
        out_deg = math.degrees(math.asin(min(1.0, max(-1.0, float(sign * fore[0] / fore.norm())))))
        out.append((raise_deg, out_deg))
    return out


def test_arms_held_up_and_out_are_brought_back_to_the_body():
    image, world = landmarks(yaw=0.0)
    from gclreid.structures.landmarks import image_depth_landmarks, upright_world
    w = upright_world(image_depth_landmarks(image, world))
    # Elbows level with the shoulders and far out, wrists further out still (small-crop landmarks).
    for sh, el, wr, idx, side in ((11, 13, 15, 19, 1.0), (12, 14, 16, 20, -1.0)):
        w[el, :3] = w[sh, :3] + np.array([0.28 * side, 0.0, 0.0])
        w[wr, :3] = w[el, :3] + np.array([0.25 * side, 0.0, 0.0])
        w[idx, :3] = w[wr, :3] + np.array([0.05 * side, 0.0, 0.0])
    pose, shape, _ = body_from_world(w)
    est = Estimate(pose, shape, 0.0, (0.25, 0.05, 0.75, 0.95), "detected", 1.0)
    for raise_deg, out_deg in _arm_angles(est):
        assert raise_deg <= MAX_ARM_RAISE + 3.0
        assert out_deg <= MAX_FOREARM_OUT + 3.0


def _view(image):
    world = np.zeros((33, 4))
    world[:, 3] = 0.99
    return {"image": image.tolist(), "world": world.tolist()}


def test_server_retries_a_skeleton_squashed_into_the_upper_half():
    image, _ = landmarks()
    squashed = image.copy()
    # Head and shoulders where they are, hips, knees and feet folded up to the chest.
    top = squashed[[L_SH, R_SH], 1].mean()
    legs = [k for k in range(23, 33)]
    squashed[legs, 1] = top + (squashed[legs, 1] - top) * 0.3
    assert _usable(_view(image)) >= 0.9 > _usable(_view(squashed))


def _striped(amp):
    """A plain background with faint horizontal stripes: a border texture of about 0.0045 × amp."""
    img = np.full((128, 64, 3), 120, np.int16)
    rows = np.arange(128)
    img[(rows // 2) % 2 == 0] += amp
    img[(rows // 2) % 2 == 1] -= amp
    return img


def test_fallback_keeps_the_silhouette_search_to_masks_that_match_a_body():
    from gclreid.structures.estimate import SMOOTH_BACKGROUND, SMOOTH_CLEAR, background_texture
    # A borderline-smooth background (like a blurred real crop) whose mask is a thin horizontal bar
    # (a railing, not a person): the silhouette search would make it some side view; the
    # detector-crop prior is used instead.
    bar = _striped(6)
    bar[60:68, 4:60] = (200, 60, 60)
    crop = Image.fromarray(bar.astype(np.uint8))
    assert SMOOTH_CLEAR < background_texture(np.asarray(crop, np.float32) / 255) < SMOOTH_BACKGROUND
    est = estimate_fallback(crop)
    assert est.reason == "prior" and est.yaw in (0.0, 180.0)
    # The same background with a body-shaped mask keeps the silhouette search ...
    body = _striped(6)
    body[20:120, 24:40] = (200, 60, 60)
    body[8:20, 26:38] = (220, 170, 140)
    assert estimate_fallback(Image.fromarray(body.astype(np.uint8))).reason == "silhouette"
    # ... and so does a clearly smooth one (SynthReID), whatever the mask.
    clean = np.full((128, 64, 3), 120, np.uint8)
    clean[60:68, 4:60] = (200, 60, 60)
    assert estimate_fallback(Image.fromarray(clean)).reason == "silhouette"


def test_rejected_estimate_is_still_rejected_for_a_squashed_view():
    image, world = landmarks()
    squashed = image.copy()
    top = squashed[[L_SH, R_SH], 1].mean()
    squashed[23:33, 1] = top + (squashed[23:33, 1] - top) * 0.3
    est = estimate_from_evidence(evidence(squashed, world))
    assert isinstance(est, Rejected) and est.reason in ("too_small", "low_quality")

"""The estimators: silhouette fallback (mask, box, framing), MediaPipe landmark conversion, and
MediaPipe end to end when the optional extra is available."""
import numpy as np
import pytest
import torch
from PIL import Image

from gclreid.body import Body, OrthoCamera, frame_camera, render_maps
from gclreid.body.skeleton import JOINT_INDEX
from gclreid.structures.estimate import (Estimate, bodies_and_cameras, default_box, estimate_fallback, person_box,
                                         person_mask)
from gclreid.structures.sources import render_estimates


def _scene(yaw=0.0, phase=0.3, colour=(200, 60, 40), bg=(90, 140, 90)):
    """A 128x64 image of a flat-coloured body on a plain background, and its true silhouette."""
    body = Body.walking([phase], yaw=yaw)
    cam = frame_camera(body.segments(), body.yaw, 128, 64, elevation=15.0, fill=0.88)
    _, part = render_maps(body, cam, 128, 64)
    sil = (part[0] > 0).numpy()
    img = np.empty((128, 64, 3), np.uint8)
    img[:] = bg
    img[sil] = colour
    return Image.fromarray(img), sil


def test_person_mask_matches_silhouette():
    img, sil = _scene()
    mask, quality = person_mask(img, 128, 64)
    iou = (mask & sil).sum() / (mask | sil).sum()
    assert iou > 0.85 and quality > 0.5
    x0, y0, x1, y1 = person_box(mask)
    rows = np.nonzero(sil.any(1))[0]
    assert abs(y0 - rows[0] / 128) < 0.03 and abs(y1 - (rows[-1] + 1) / 128) < 0.03


def test_blank_image_gets_default_fallback():
    est = estimate_fallback(Image.new("RGB", (64, 128), (120, 120, 120)))
    assert est.status == "fallback" and est.confidence == 0.0 and est.box == default_box()
    maps = render_estimates([est], (90,), 128, 64)
    assert maps.shape == (1, 2, 128, 64) and (maps[0, 0] > 0).any()


def test_fallback_side_view_yaw_and_silhouette():
    img, sil = _scene(yaw=90.0)
    est = estimate_fallback(img)
    assert est.status == "fallback" and 0 < est.confidence <= 1
    # The silhouette search is coarse (30° steps, front/back from skin): a side-ish view, not a front one.
    assert min(abs(est.yaw - 90.0), abs(est.yaw - 270.0)) <= 60.0
    grey = render_estimates([est], (45,), 128, 64)[0, 0]
    iou = ((grey > 0) & sil).sum() / ((grey > 0) | sil).sum()
    assert iou > 0.5


def test_box_framing_puts_body_on_the_box():
    body = Body.walking([0.0])
    est = Estimate(body.pose[0], body.shape[0], 0.0, (0.3, 0.1, 0.7, 0.9), "fallback", 0.5, elevation=0.0,
                   trans=body.trans[0])
    bodies, cam = bodies_and_cameras([est], 128, 64)
    _, part = render_maps(bodies, cam, 128, 64)
    rows = np.nonzero((part[0] > 0).numpy().any(1))[0]
    assert abs(rows[0] - 12.8) <= 1.5 and abs(rows[-1] + 1 - 115.2) <= 1.5


def _fake_landmarks(body: Body):
    """MediaPipe-style world/image landmarks of a body (camera at elevation 0)."""
    joints, _ = body.joints()
    view = OrthoCamera(1.0, 0.0, 0.0, 0.0).view_rotation(body.yaw)[0]
    cam_pts = (joints[0] @ view.T).numpy()
    j = {name: cam_pts[i] for name, i in JOINT_INDEX.items()}
    world = np.zeros((33, 4), np.float32)
    world[:, 3] = 1.0
    side = cam_pts[JOINT_INDEX["l_shoulder"]] - cam_pts[JOINT_INDEX["r_shoulder"]]
    table = {0: j["head"], 7: j["head"] + 0.2 * side, 8: j["head"] - 0.2 * side}
    for s, pre in (("l", (11, 13, 15, 19, 23, 25, 27, 31)), ("r", (12, 14, 16, 20, 24, 26, 28, 32))):
        for idx, name in zip(pre, ("shoulder", "elbow", "wrist", "hand", "hip", "knee", "ankle", "toe")):
            table[idx] = j[f"{s}_{name}"]
    for idx, p in table.items():
        world[idx, :3] = p
    hip_mid = (world[23, :3] + world[24, :3]) / 2
    world[:, :3] -= hip_mid
    image = np.stack([0.5 + world[:, 0] * 0.45, 0.5 + world[:, 1] * 0.45], 1)
    return world, image.astype(np.float32)


@pytest.mark.parametrize("yaw", [0.0, 60.0, 150.0, 250.0])
def test_landmarks_to_estimate_recovers_yaw_and_pose(yaw):
    from gclreid.structures.mediapipe_pose import landmarks_to_estimate
    body = Body.walking([0.2], yaw=yaw)
    world, image = _fake_landmarks(body)
    est = landmarks_to_estimate(world, image)
    assert est.status == "detected"
    assert abs((est.yaw - yaw + 180) % 360 - 180) < 3.0
    # The rebuilt body has the same limb directions: knees and ankles land where they were.
    rebuilt = Body(est.pose[None], est.shape[None], torch.tensor([0.0]))
    a, _ = rebuilt.joints()
    b, _ = body.joints()
    for name in ("l_knee", "r_ankle", "l_wrist"):
        da = a[0, JOINT_INDEX[name]] - a[0, 0]
        db = b[0, JOINT_INDEX[name]] - b[0, 0]
        assert torch.nn.functional.cosine_similarity(da, db, dim=0) > 0.97


def test_mediapipe_end_to_end():
    from gclreid.structures.mediapipe_pose import find_pose_python
    python = find_pose_python()
    if python is None:
        pytest.skip("MediaPipe Pose not available: install the `pose` extra or set GCLREID_POSE_PYTHON "
                    "to an interpreter with mediapipe==0.10.14")
    from gclreid.structures.sources import EstimateSource
    source = EstimateSource("mediapipe", pose_python=python)
    try:
        images = [_scene(yaw=y, colour=(200, 150, 120))[0] for y in (0.0, 90.0)]
        ests = source.estimate(images)
    finally:
        source.close()
    assert len(ests) == 2 and all(e.status in ("detected", "fallback") for e in ests)
    maps = render_estimates(ests, (45, 90, 135, 180, 225, 270, 315), 128, 64)
    assert maps.shape == (2, 8, 128, 64) and (maps[:, 0] > 0).any(axis=(1, 2)).all()


def test_mediapipe_process_that_dies_is_a_clear_error_and_auto_falls_back(monkeypatch):
    import importlib.util
    import sys
    if importlib.util.find_spec("mediapipe") is not None:
        pytest.skip("mediapipe is installed in this environment")
    from gclreid.errors import GclreidError
    from gclreid.structures.mediapipe_pose import MediaPipeEstimator
    from gclreid.structures.sources import EstimateSource
    with pytest.raises(GclreidError, match="mediapipe"):
        MediaPipeEstimator(sys.executable)  # this interpreter has no mediapipe: the server stops at once
    source = EstimateSource("auto", pose_python=sys.executable)
    assert source.estimator == "fallback" and "did not start" in source.description
    assert "make pose-env" in source.description
    with pytest.raises(GclreidError, match="make pose-env"):
        EstimateSource("mediapipe", pose_python=sys.executable)


def test_mediapipe_chatter_stays_out_of_stderr(capfd):
    from gclreid.structures.mediapipe_pose import find_pose_python
    python = find_pose_python()
    if python is None:
        pytest.skip("MediaPipe Pose not available: set GCLREID_POSE_PYTHON to an interpreter with mediapipe==0.10.14")
    from gclreid.structures.sources import EstimateSource
    source = EstimateSource("mediapipe", pose_python=python)
    try:
        ests = source.estimate([_scene(yaw=0.0, colour=(200, 150, 120))[0]])
    finally:
        source.close()
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    rec = ests[0].record()
    assert rec["status"] in ("detected", "fallback") and "reason" in rec and "quality" in rec
    assert "estimator mediapipe" in source.description

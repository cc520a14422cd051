"""Rotated structure maps keep the whole body inside the frame; the fallback of real crops sizes the
body from the detector-crop prior and decides front/back from the head."""
import numpy as np
import pytest
import torch
from PIL import Image

from gclreid.body import Body, OrthoCamera, render_grey, render_structure
from gclreid.structures.estimate import (PRIOR_BOTTOM, PRIOR_TOP, Estimate, background_texture, bodies_and_cameras,
                                         estimate_fallback, head_front_score, turned_cameras)
from gclreid.structures.sources import render_estimates

ANGLES = (45, 90, 135, 180, 225, 270, 315)


def _estimate(yaw, pelvis_x, top=0.03, bottom=0.98, stride=35.0, phase=0.25, arm_swing=35.0):
    body = Body.walking([phase], yaw=yaw, stride=stride, arm_swing=arm_swing)
    return Estimate(body.pose[0], body.shape[0], yaw, (pelvis_x - 0.25, top, pelvis_x + 0.25, bottom), "detected",
                    1.0, elevation=15.0, trans=body.trans[0], pelvis_x=pelvis_x)


@pytest.mark.parametrize("yaw, pelvis_x", [(0.0, 0.25), (10.0, 0.75), (90.0, 0.5), (200.0, 0.3), (300.0, 0.7)])
def test_rotated_maps_keep_every_body_pixel_inside_the_frame(yaw, pelvis_x):
    est = _estimate(yaw, pelvis_x)
    maps = render_estimates([est], ANGLES, 128, 64)[0]
    body = maps > 0
    # Reference areas: each turned body at half scale, pelvis in the middle (nothing can be cut).
    bodies, cam = bodies_and_cameras([est], 128, 64)
    turned, cams = turned_cameras(bodies, cam, (0, *ANGLES), 128, 64)
    half = OrthoCamera(cams.scale / 2, torch.full_like(cams.cx, 32.0), torch.full_like(cams.cy, 64.0), cams.elevation)
    ref = (render_grey(turned, half, 128, 64) > 0).sum((1, 2)).numpy() * 4
    for k in range(1, len(maps)):
        # No body pixel on the left or right column, and the turned body is all there (not cut).
        assert body[k][:, 0].sum() == 0 and body[k][:, -1].sum() == 0, f"angle {ANGLES[k - 1]} cut"
        assert body[k].sum() > 0.85 * ref[k], f"angle {ANGLES[k - 1]}: {body[k].sum()} of {ref[k]} pixels"
    # The same body turned the plain way (one camera for every angle) does leave the frame.
    bodies, cam = bodies_and_cameras([est], 128, 64)
    plain = render_structure(bodies, (0, *ANGLES), 128, 64, camera=cam).numpy()[0] > 0
    assert any(plain[k][:, 0].sum() + plain[k][:, -1].sum() > 0 for k in range(1, len(plain)))


def test_turned_views_keep_scale_and_rows_when_they_fit():
    est = _estimate(0.0, 0.5, top=0.1, bottom=0.9, stride=15.0, arm_swing=10.0)
    bodies, cam = bodies_and_cameras([est], 128, 64)
    turned, cams = turned_cameras(bodies, cam, (0, *ANGLES), 128, 64)
    assert torch.allclose(cams.scale, cam.scale.expand(len(cams)))
    assert torch.allclose(cams.cy, cam.cy.expand(len(cams)))
    assert torch.allclose(turned.yaw, torch.tensor([0.0, *ANGLES]))
    maps = render_estimates([est], ANGLES, 128, 64)[0]
    rows = [np.nonzero(m.sum(1) > 0)[0] for m in maps]
    for r in rows[1:]:
        assert abs(int(r[0]) - int(rows[0][0])) <= 4 and abs(int(r[-1]) - int(rows[0][-1])) <= 4


def test_a_body_too_big_for_the_map_is_scaled_down_not_cut():
    est = _estimate(90.0, 0.5, top=0.0, bottom=1.0, stride=45.0, arm_swing=50.0)  # a long stride, side on
    bodies, cam = bodies_and_cameras([est], 128, 64)
    _, cams = turned_cameras(bodies, cam, (0, 90), 128, 64)
    assert cams.scale[0] == pytest.approx(float(cam.scale[0])) and cams.scale[1] < cam.scale[0]
    maps = render_estimates([est], (90,), 128, 64)[0]
    assert (maps[1][:, 0] > 0).sum() == 0 and (maps[1][:, -1] > 0).sum() == 0


def test_original_view_keeps_its_camera():
    # A body cut by the crop (pelvis near the edge) stays where the person is at 0°.
    est = _estimate(0.0, 0.02)
    bodies, cam = bodies_and_cameras([est], 128, 64)
    _, cams = turned_cameras(bodies, cam, (0, 90), 128, 64)
    assert cams.cx[0] == pytest.approx(float(cam.cx[0])) and cams.scale[0] == pytest.approx(float(cam.scale[0]))
    assert cams.cx[1] > cam.cx[0]  # the turned view is moved into the frame


def _crop(background: str, head: str, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    if background == "textured":
        img = rng.integers(60, 200, (128, 64, 3)).astype(np.uint8)
    else:
        img = np.full((128, 64, 3), (90, 140, 90), np.uint8)
    img[20:110, 22:42] = (40, 60, 150)  # a body
    img[4:20, 24:40] = (220, 170, 140) if head == "face" else (20, 18, 16)
    return Image.fromarray(img)


def test_fallback_on_a_textured_crop_uses_the_detector_prior():
    crop = _crop("textured", "face")
    assert background_texture(np.asarray(crop, np.float32) / 255) > 0.03
    est = estimate_fallback(crop)
    assert est.status == "fallback" and est.reason == "prior"
    assert est.box[1] == PRIOR_TOP and est.box[3] == PRIOR_BOTTOM
    assert est.yaw == 0.0  # skin in the head region: facing the camera
    back = estimate_fallback(_crop("textured", "hair"))
    assert back.reason == "prior" and back.yaw == 180.0
    maps = render_estimates([est, back], ANGLES, 128, 64)
    for m in maps:
        rows = np.nonzero((m[0] > 20).sum(1) >= 2)[0]
        assert rows[0] / 128 == pytest.approx(PRIOR_TOP, abs=0.03) and (rows[-1] + 1) / 128 == pytest.approx(PRIOR_BOTTOM, abs=0.03)


def test_head_front_score_separates_face_from_hair():
    face = np.asarray(_crop("plain", "face"), np.float32) / 255
    hair = np.asarray(_crop("plain", "hair"), np.float32) / 255
    assert head_front_score(face) > 0.05 > head_front_score(hair)


def test_fallback_on_a_smooth_background_keeps_the_silhouette_search():
    crop = _crop("plain", "face")
    assert background_texture(np.asarray(crop, np.float32) / 255) < 0.03
    assert estimate_fallback(crop).reason == "silhouette"


def test_fallback_takes_the_extent_of_a_mediapipe_person_mask():
    from gclreid.structures.landmarks import Rejected
    mask = np.zeros((64, 32), np.float32)
    mask[10:60, 8:24] = 1.0
    est = estimate_fallback(_crop("textured", "face"), hints=Rejected("off_crop", 0.1, mask))
    assert est.box[1] == pytest.approx(10 / 64) and est.box[3] == pytest.approx(60 / 64)

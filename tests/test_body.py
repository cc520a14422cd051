"""Body model and renderer: geometry invariants, exactness against brute-force references."""
import math

import numpy as np
import pytest
import torch

from gclreid.body import (JOINT_INDEX, NUM_JOINTS, PART_INDEX, SHAPE_INDEX, Body, RenderSizeError, Segments,
                          bone_lengths, decode_keys, default_shape, forward_kinematics, frame_camera, local_frame,
                          mirror_pose, pose_from_joints, rasterize, render_maps, render_structure, rest_offsets,
                          surface, walking_pose)
from gclreid.body.rotation import axis_angle_to_matrix, matrix_to_axis_angle, rotation_between
from gclreid.errors import GclreidError


def one_segment(a, b, ra, rb, fwd=(0.0, 0.0, -1.0), scale=(1.0, 1.0, 1.0)) -> Segments:
    t = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    return Segments(a=t(a)[None, None], b=t(b)[None, None], ra=t([[ra]]), rb=t([[rb]]), fwd=t(fwd)[None, None],
                    scale=t(scale)[None, None], part=torch.tensor([1]), active=torch.ones(1, 1, dtype=torch.bool))


def stack_segments(segs):
    return Segments(*(torch.cat([getattr(s, f) for s in segs], 0 if f == "part" else 1)
                      for f in ("a", "b", "ra", "rb", "fwd", "scale", "part", "active")))


# --- rotations -----------------------------------------------------------------------------------

def test_axis_angle_roundtrip_and_rotation_between():
    g = torch.Generator().manual_seed(0)
    aa = torch.randn(200, 3, generator=g)
    aa = aa / aa.norm(dim=-1, keepdim=True) * torch.rand(200, 1, generator=g) * 3.1
    mat = axis_angle_to_matrix(aa)
    assert torch.allclose(mat @ mat.transpose(1, 2), torch.eye(3).expand(200, 3, 3), atol=1e-5)
    assert torch.allclose(torch.det(mat), torch.ones(200), atol=1e-5)
    assert torch.allclose(matrix_to_axis_angle(mat), aa, atol=2e-4)
    src, dst = torch.randn(50, 3, generator=g), torch.randn(50, 3, generator=g)
    rot = rotation_between(src, dst)
    got = (rot @ (src / src.norm(dim=-1, keepdim=True))[..., None])[..., 0]
    assert torch.allclose(got, dst / dst.norm(dim=-1, keepdim=True), atol=1e-5)
    anti = rotation_between(torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.0, -1.0, 0.0]]))
    assert torch.allclose(anti @ torch.tensor([0.0, 1.0, 0.0]), torch.tensor([[0.0, -1.0, 0.0]]), atol=1e-6)


# --- skeleton and shape ---------------------------------------------------------------------------

def test_limb_lengths_follow_shape():
    n = 4
    pose, trans = walking_pose(torch.tensor([0.0, 0.2, 0.5, 0.9]))
    shape = default_shape(n)
    shape[1, SHAPE_INDEX["leg"]] = 1.5
    shape[2, SHAPE_INDEX["arm"]] = 0.8
    shape[3, SHAPE_INDEX["height"]] = 2 * shape[3, SHAPE_INDEX["height"]]
    joints, _ = forward_kinematics(pose, shape, trans)
    lengths = bone_lengths(joints)
    # Bone lengths do not depend on the pose: they are the rest offsets' lengths.
    assert torch.allclose(lengths[:, 1:], rest_offsets(shape).norm(dim=-1)[:, 1:], atol=1e-5)
    base = lengths[0]
    for j in ("l_knee", "r_ankle"):
        assert lengths[1, JOINT_INDEX[j]] == pytest.approx(1.5 * base[JOINT_INDEX[j]].item(), rel=1e-5)
    for j in ("l_elbow", "r_wrist", "l_hand"):
        assert lengths[2, JOINT_INDEX[j]] == pytest.approx(0.8 * base[JOINT_INDEX[j]].item(), rel=1e-5)
    assert torch.allclose(lengths[3], 2 * base, rtol=1e-5)
    # Standing stature (head top to the lowest ankle site) of the average shape is about 1.70 m
    # minus the foot and head radii that the primitives add.
    rest, _ = forward_kinematics(torch.zeros(1, NUM_JOINTS, 3), default_shape(1))
    span = rest[0, JOINT_INDEX["head_top"], 1] - rest[0, JOINT_INDEX["l_toe"], 1]
    assert 1.55 < span.item() < 1.70


def test_pose_from_joints_reproduces_positions():
    g = torch.Generator().manual_seed(1)
    pose = torch.zeros(3, NUM_JOINTS, 3)
    # Random rotations of the limbs and neck; the pelvis, spine and chest (whose twist would turn
    # several child bones at once) stay at rest.
    for name in ("l_shoulder", "l_elbow", "r_shoulder", "r_elbow", "l_hip", "l_knee", "r_hip", "r_knee", "neck",
                 "l_ankle"):
        pose[:, JOINT_INDEX[name]] = (torch.rand(3, 3, generator=g) - 0.5) * 1.2
    shape = default_shape(3)
    joints, _ = forward_kinematics(pose, shape)
    refit, _ = forward_kinematics(pose_from_joints(joints, shape), shape)
    assert torch.allclose(refit, joints, atol=2e-4)


def test_mirror_pose_mirrors_joints():
    pose, trans = walking_pose(torch.tensor([0.3]), stride=30, arm_swing=25, head_turn=20)
    shape = default_shape(1)
    joints, _ = forward_kinematics(pose, shape)
    mirrored, _ = forward_kinematics(mirror_pose(pose), shape)
    from gclreid.body.skeleton import MIRROR
    expect = joints[:, list(MIRROR)] * torch.tensor([-1.0, 1.0, 1.0])
    assert torch.allclose(mirrored, expect, atol=1e-5)


def test_walking_cycle_alternates_legs():
    pose, _ = walking_pose(torch.tensor([0.25, 0.75]), stride=25)
    joints, _ = forward_kinematics(pose, default_shape(2))
    l, r = JOINT_INDEX["l_ankle"], JOINT_INDEX["r_ankle"]
    # Phase 0.25: left foot forward (+z), right back; phase 0.75: the opposite.
    assert joints[0, l, 2] > 0.15 and joints[0, r, 2] < -0.15
    assert joints[1, r, 2] > 0.15 and joints[1, l, 2] < -0.15


# --- rotation about the vertical axis, framing ---------------------------------------------------

def test_rotation_by_360_is_identity_and_180_mirrors():
    b = Body.walking(phase=torch.tensor([0.1, 0.37, 0.8]), yaw=torch.tensor([0.0, 30.0, 75.0]))
    cam = frame_camera(b.segments(), b.yaw, 128, 64, center="pelvis")
    v0 = cam.project(b.segments(), b.yaw)
    v360 = cam.project(b.segments(), b.yaw + 360.0)
    assert torch.allclose(v0.a, v360.a, atol=1e-3) and torch.allclose(v0.b, v360.b, atol=1e-3)
    _, p0 = render_maps(b, cam, 128, 64)
    _, p360 = render_maps(b.rotated(360.0), cam, 128, 64)
    assert torch.equal(p0, p360)
    _, p180 = render_maps(b.rotated(180.0), cam, 128, 64)
    # Orthographic, no elevation, pelvis on the middle column: the silhouette is an exact mirror.
    assert torch.equal(p0 > 0, (p180 > 0).flip(-1))
    # Parts keep their side of the body, so they swap image sides: the mirrored 180° render shows
    # the same part labels wherever front and back occlusion agree.
    both = (p0 > 0) & (p180 > 0).flip(-1)
    assert (p180.flip(-1)[both] == p0[both]).float().mean() > 0.8
    # Standing, facing the camera: the left hand is on the image right; from behind, on the left.
    s = Body.standing(1)
    cam1 = frame_camera(s.segments(), s.yaw, 128, 64, center="pelvis")
    for yaw, left_on_right in ((0.0, True), (180.0, False)):
        _, p = render_maps(s.rotated(yaw), cam1, 128, 64)
        cols_l = torch.nonzero(p[0] == PART_INDEX["l_hand"])[:, 1].float().mean()
        cols_r = torch.nonzero(p[0] == PART_INDEX["r_hand"])[:, 1].float().mean()
        assert (cols_l > cols_r) == left_on_right
        assert cols_l + cols_r == pytest.approx(63.0, abs=1e-4)  # symmetric about the middle


def test_rotated_views_keep_scale_and_vertical_placement():
    b = Body.walking(phase=torch.tensor([0.2]), yaw=torch.tensor([20.0]))
    maps = render_structure(b, angles=(0, 90, 180), height=128, width=64)
    assert maps.shape == (1, 3, 128, 64) and maps.dtype == torch.uint8
    rows = [torch.nonzero(maps[0, i].sum(1) > 0)[:, 0] for i in range(3)]
    # fill=0.9: the original spans ~115 rows, centred; rotations keep top and bottom within a few px.
    assert 110 <= rows[0].max() - rows[0].min() + 1 <= 118
    for r in rows[1:]:
        assert abs(int(r.min()) - int(rows[0].min())) <= 4 and abs(int(r.max()) - int(rows[0].max())) <= 4


def test_render_size_must_be_two_to_one():
    b = Body.standing(1)
    with pytest.raises(RenderSizeError, match="not 2:1"):
        render_structure(b, height=100, width=64)
    with pytest.raises(GclreidError):
        render_structure(b, height=0, width=0)


# --- renderer exactness ---------------------------------------------------------------------------

def test_sphere_silhouette_area_and_depth():
    cx, cy, cz, r = 31.3, 60.7, 5.0, 20.0
    seg = one_segment((cx, cy, cz), (cx, cy, cz), r, r)
    keys = rasterize(seg, 128, 64)
    covered, slot, depth = decode_keys(keys)
    ys, xs = torch.meshgrid(torch.arange(128) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    d2 = (xs - cx) ** 2 + (ys - cy) ** 2
    reference = d2 <= r * r
    # Exactly the pixel centres inside the disc (up to float rounding right on the rim).
    assert (covered[0] != reference).sum() <= 2
    assert abs(int(covered.sum()) - math.pi * r * r) < 0.03 * math.pi * r * r
    expect = cz - torch.sqrt((r * r - d2).clamp_min(0))
    assert (depth[0][reference & covered[0]] - expect[reference & covered[0]]).abs().max() <= 1 / 16 + 1e-4
    assert bool((slot[0][covered[0]] == 0).all())


def _reference_depth(a, b, ra, rb, frame, scale, height, width, step=0.05):
    """Brute force: march each pixel's ray; a point is inside iff it is within r(s) of the axis point
    s (linearly interpolated radius) for the minimising s, in the primitive's local frame."""
    m = frame / scale[:, None]
    bl = m @ (b - a)
    length = np.linalg.norm(bl)
    e = bl / max(length, 1e-12)
    rr = ra - rb

    def inside(p):
        loc = (p - a) @ m.T
        ax = loc @ e
        rho = np.sqrt(np.maximum((loc * loc).sum(-1) - ax * ax, 0))
        if length > abs(rr):
            s = (ax - rr * rho / math.sqrt(length * length - rr * rr)) / length
        else:
            s = np.full_like(ax, 0.0 if ra >= rb else 1.0)
        s = np.clip(s, 0, 1)
        return np.sqrt((ax - s * length) ** 2 + rho ** 2) <= ra + s * (rb - ra)

    reach = max(ra, rb) * scale.max() + np.linalg.norm(b - a) + 2
    ts = np.arange((a[2] + b[2]) / 2 - reach, (a[2] + b[2]) / 2 + reach, step)
    depth = np.full((height, width), np.inf)
    for i in range(height):
        xs = np.arange(width) + 0.5
        pts = np.stack(np.broadcast_arrays(xs[:, None], np.full((width, 1), i + 0.5), ts[None, :]), -1)
        ins = inside(pts)
        for j in np.nonzero(ins.any(1))[0]:
            lo, hi = ts[ins[j].argmax()] - step, ts[ins[j].argmax()]
            for _ in range(20):
                mid = (lo + hi) / 2
                lo, hi = (lo, mid) if inside(np.array([xs[j], i + 0.5, mid])) else (mid, hi)
            depth[i, j] = hi
    return depth


@pytest.mark.parametrize("case", range(6))
def test_round_cone_matches_brute_force(case):
    rng = np.random.default_rng(case)
    a = np.array([rng.uniform(8, 16), rng.uniform(12, 28), rng.uniform(-5, 5)])
    d = rng.normal(size=3)
    d = {0: np.array([0, 0, 1.0]), 1: np.array([0, 0.02, 1.0])}.get(case, d)  # along / nearly along the view
    b = a + d / np.linalg.norm(d) * rng.uniform(4, 12)
    ra, rb = rng.uniform(1.5, 5), rng.uniform(1.5, 5)
    fwd = rng.normal(size=3)
    scale = rng.uniform(0.5, 1.3, size=3) if case >= 3 else np.ones(3)
    seg = one_segment(a, b, ra, rb, fwd / np.linalg.norm(fwd), scale)
    covered, _, depth = decode_keys(rasterize(seg, 40, 20))
    frame = local_frame(seg)[0, 0].double().numpy()
    ref = _reference_depth(a, b, ra, rb, frame, scale, 40, 20)
    hit = np.isfinite(ref)
    assert (covered[0].numpy() != hit).sum() <= 1
    both = hit & covered[0].numpy()
    assert np.abs(ref[both] - depth[0].numpy()[both]).max() < 1 / 16 + 0.01


def test_depth_ordering_of_overlapping_parts():
    near = one_segment((20.0, 30.0, -10.0), (20.0, 30.0, -10.0), 8.0, 8.0)
    far = one_segment((26.0, 30.0, 10.0), (26.0, 30.0, 10.0), 8.0, 8.0)
    for order in ((near, far), (far, near)):
        seg = stack_segments(list(order))
        seg.part = torch.tensor([1, 2]) if order[0] is near else torch.tensor([2, 1])
        _, slot, depth = decode_keys(rasterize(seg, 64, 32))
        near_slot = 0 if order[0] is near else 1
        # The overlap (between the two centres) shows the nearer sphere, whatever the slot order.
        assert int(slot[0, 30, 23]) == near_slot
        assert float(depth[0, 30, 23]) < 0
    # Body: an arm raised in front of the chest hides it.
    pose = torch.zeros(1, NUM_JOINTS, 3)
    pose[0, JOINT_INDEX["l_shoulder"], 0] = -1.0    # upper arm forward ~57°
    pose[0, JOINT_INDEX["l_elbow"], 2] = -1.6       # forearm bent across the front of the chest
    b = Body(pose, default_shape(1), 0.0)
    cam = frame_camera(b.segments(), b.yaw, 256, 128)
    depth, part = render_maps(b, cam, 256, 128)
    forearm = part[0] == PART_INDEX["l_forearm"]
    assert forearm.sum() > 50
    standing_part = render_maps(Body.standing(1), cam, 256, 128)[1]
    # Where the forearm now shows, the standing body showed the torso.
    assert (standing_part[0][forearm] == PART_INDEX["chest"]).float().mean() > 0.5
    assert bool((depth[0][forearm] < render_maps(Body.standing(1), cam, 256, 128)[0][0][forearm]).all())


def test_bounding_box_windows_equal_full_frame():
    b = Body.walking(phase=torch.tensor([0.15, 0.65, 0.3, 0.9]), yaw=torch.tensor([60.0, 200.0, 10.0, 290.0]))
    cam = frame_camera(b.segments(), b.yaw, 128, 64, elevation=15.0)
    view = cam.project(b.segments(), b.yaw)
    view.active[1, 3] = False          # an absent slot on one body (like an accessory)
    # Byte-identical: pixel centres and every per-pixel operation are exact, wherever a window starts.
    assert torch.equal(rasterize(view, 128, 64), rasterize(view, 128, 64, full_frame=True))


def test_batched_render_equals_one_by_one():
    b = Body.walking(phase=torch.tensor([0.05, 0.4, 0.7]), yaw=torch.tensor([10.0, 135.0, 250.0]))
    together = render_structure(b, height=128, width=64)
    apart = torch.cat([render_structure(b.select(slice(i, i + 1)), height=128, width=64) for i in range(3)])
    assert torch.equal(together, apart)


def test_structure_maps_look_like_grey_bodies():
    b = Body.walking(phase=torch.tensor([0.3]), yaw=torch.tensor([45.0]))
    maps = render_structure(b, height=256, width=128)[0]
    assert maps.shape == (8, 256, 128)
    for m in maps:
        body = m[m > 0].float()
        # Black background, body between 8% and 35% of the image, shaded (not flat) grey.
        assert 0.08 < body.numel() / m.numel() < 0.35
        assert 60 <= body.min() and body.max() >= 230 and body.std() > 15
        assert int(m[0, 0]) == 0 and int(m[-1, -1]) == 0


def test_surface_normals_are_unit_and_face_the_camera():
    b = Body.walking(phase=torch.tensor([0.6]), yaw=torch.tensor([300.0]))
    cam = frame_camera(b.segments(), b.yaw, 128, 64)
    view = cam.project(b.segments(), b.yaw)
    surf = surface(view, rasterize(view, 128, 64))
    assert torch.allclose(surf.normal.norm(dim=0), torch.ones(surf.normal.shape[1]), atol=1e-4)
    # Visible surfaces face the camera (view z points away from it), up to the silhouette's grazing normals.
    assert (surf.normal[2] <= 0.05).float().mean() > 0.99
    assert bool(((surf.axial >= 0) & (surf.axial <= 1)).all())
    # Offsets from the touching sphere are about one radius (depth is quantised to 1/16 px).
    assert 0.9 < surf.local.norm(dim=0).median() < 1.05 and surf.local.abs().max() <= 1.15


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_render_matches_cpu():
    b = Body.walking(phase=torch.tensor([0.1, 0.5]), yaw=torch.tensor([0.0, 120.0]))
    cpu = render_structure(b, height=128, width=64)
    dev = torch.device("cuda")
    bg = Body(b.pose.to(dev), b.shape.to(dev), b.yaw.to(dev), b.trans.to(dev))
    gpu = render_structure(bg, height=128, width=64)
    assert gpu.device.type == "cuda"
    assert (gpu.cpu().int() - cpu.int()).abs().max() <= 2
    assert ((gpu.cpu() > 0) == (cpu > 0)).float().mean() > 0.999

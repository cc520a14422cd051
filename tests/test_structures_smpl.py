"""`--source smpl`: model/parameter files, the SMPL forward against a numpy reference, turning,
the triangle rasteriser, and the command end to end — all with a fake SMPL-format model."""
import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import sparse
from scipy.spatial.transform import Rotation

from gclreid.body import lambert
from gclreid.body.rotation import matrix_to_axis_angle
from gclreid.cli import main
from gclreid.data import build_dataset
from gclreid.structures import ANGLES, structure_path
from gclreid.structures.smpl import (SmplError, facing_yaw, load_smpl_model, load_smpl_params, rasterize_mesh,
                                     render_mesh_grey, smpl_forward, turn_about_root, view_vertices)
from gclreid.structures.writer import read_records

PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
# A coarse humanoid (SMPL frame: y up, +x = the subject's left, facing +z), one box per joint.
JOINTS = np.array([
    (0, 0, 0), (.09, -.08, 0), (-.09, -.08, 0), (0, .1, 0), (.1, -.45, 0), (-.1, -.45, 0), (0, .22, 0),
    (.1, -.85, 0), (-.1, -.85, 0), (0, .3, 0), (.1, -.9, .1), (-.1, -.9, .1), (0, .5, 0), (.08, .42, 0),
    (-.08, .42, 0), (0, .62, 0), (.18, .42, 0), (-.18, .42, 0), (.45, .42, 0), (-.45, .42, 0), (.7, .42, 0),
    (-.7, .42, 0), (.78, .42, 0), (-.78, .42, 0)], dtype=np.float64)
UPRIGHT = np.array([np.pi, 0.0, 0.0])  # global orient of a person standing upright facing the camera


def _box(center, half):
    corners = np.array([[(i & 1) * 2 - 1, (i >> 1 & 1) * 2 - 1, (i >> 2 & 1) * 2 - 1] for i in range(8)], float)
    faces = []
    for axis in range(3):
        for side in (-1, 1):
            quad = [i for i in range(8) if corners[i, axis] == side]
            a, b, c, d = quad[0], quad[1], quad[3], quad[2]  # around the face
            for tri in ((a, b, c), (a, c, d)):
                n = np.cross(corners[tri[1]] - corners[tri[0]], corners[tri[2]] - corners[tri[0]])
                faces.append(tri if n[axis] * side > 0 else tri[::-1])  # outward, counter-clockwise
    return center + half * corners, np.array(faces)


def fake_model(seed=0, betas=10):
    rng = np.random.default_rng(seed)
    verts, faces, weights = [], [], np.zeros((24 * 8, 24))
    for j, center in enumerate(JOINTS):
        v, f = _box(center, 0.1 if j == 15 else 0.06)
        faces.append(f + 8 * j)
        verts.append(v)
        weights[8 * j:8 * j + 8, j] = 1.0
    v = np.concatenate(verts)
    regressor = np.zeros((24, len(v)))
    for j in range(24):
        regressor[j, 8 * j:8 * j + 8] = 1 / 8
    kintree = np.array([[2 ** 32 - 1] + PARENTS[1:], list(range(24))], dtype=np.uint32)
    return {"v_template": v, "shapedirs": rng.normal(0, 0.01, (len(v), 3, betas)),
            "posedirs": rng.normal(0, 0.002, (len(v), 3, 207)), "J_regressor": regressor, "weights": weights,
            "kintree_table": kintree, "f": np.concatenate(faces).astype(np.uint32)}


def reference_forward(m, pose, betas):
    """SMPL written out plainly: loops over joints and vertices, scipy's Rodrigues."""
    v = m["v_template"] + m["shapedirs"][:, :, :len(betas)] @ betas
    joints = m["J_regressor"] @ v
    rots = [Rotation.from_rotvec(pose[3 * i:3 * i + 3]).as_matrix() for i in range(24)]
    v = v + m["posedirs"] @ np.concatenate([(r - np.eye(3)).ravel() for r in rots[1:]])
    world = []
    for i in range(24):
        local = np.eye(4)
        local[:3, :3] = rots[i]
        local[:3, 3] = joints[i] - (joints[PARENTS[i]] if i else 0)
        world.append(local if i == 0 else world[PARENTS[i]] @ local)
    skin = []
    for i in range(24):
        g = world[i].copy()
        g[:3, 3] -= g[:3, :3] @ joints[i]
        skin.append(g)
    out = np.zeros_like(v)
    for k in range(len(v)):
        t = sum(m["weights"][k, j] * skin[j] for j in range(24))
        out[k] = t[:3, :3] @ v[k] + t[:3, 3]
    return out, np.array([w[:3, 3] for w in world])


@pytest.fixture(scope="module")
def model_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("smpl") / "model.npz"
    np.savez(path, **fake_model())
    return path


# --- model file -----------------------------------------------------------------------------------

def test_model_npz_and_pkl_with_sparse_regressor(model_npz, tmp_path):
    m = fake_model()
    model = load_smpl_model(model_npz)
    assert model.v_template.shape == (192, 3) and model.faces.shape == (288, 3) and model.num_betas == 10
    assert model.parents.tolist() == PARENTS
    pkl = tmp_path / "model.pkl"
    with open(pkl, "wb") as fh:
        pickle.dump({**m, "J_regressor": sparse.csc_matrix(m["J_regressor"]), "extra": "ignored"}, fh, protocol=2)
    other = load_smpl_model(pkl)
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "faces"):
        assert torch.equal(getattr(model, key), getattr(other, key))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_model_pkl_through_the_restricted_unpickler(model_npz, tmp_path, protocol):
    """Every pickle protocol, every sparse format (matrix and array classes), numpy scalars, sets and
    nested containers build; they are all a SMPL .pkl may hold."""
    m = fake_model()
    expected = load_smpl_model(model_npz)
    for i, build in enumerate((sparse.csc_matrix, sparse.csr_matrix, sparse.coo_matrix, sparse.csc_array,
                               sparse.coo_array)):
        path = tmp_path / f"model{i}.pkl"
        with open(path, "wb") as fh:
            pickle.dump({**m, "J_regressor": build(m["J_regressor"]), "bs_style": "lbs", "scale": np.float64(1.0),
                         "info": {"ids": {1, 2}, "pairs": [(1, np.int32(2))], "empty": np.zeros((0, 3))}},
                        fh, protocol=protocol)
        model = load_smpl_model(path)
        assert torch.equal(model.J_regressor, expected.J_regressor), (build, protocol)
        assert torch.equal(model.faces, expected.faces)


def test_model_pkl_with_chumpy_objects_without_chumpy(tmp_path, monkeypatch):
    """Distributed SMPL .pkl files hold chumpy Ch objects; without chumpy their state's ``x`` is used."""
    m = fake_model()
    fake = types.ModuleType("chumpy.ch")

    class Ch:  # pickled as chumpy.ch.Ch with its __dict__ as state, like chumpy's own objects
        def __init__(self, x):
            self.x = x
            self.dterms = ("x",)
    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    fake.Ch = Ch
    package = types.ModuleType("chumpy")
    package.ch = fake
    monkeypatch.setitem(sys.modules, "chumpy", package)
    monkeypatch.setitem(sys.modules, "chumpy.ch", fake)
    data = {k: (Ch(v) if k in ("v_template", "shapedirs", "posedirs", "weights") else v) for k, v in m.items()}
    path = tmp_path / "ch.pkl"
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=2)
    # Now as if chumpy were not installed (None in sys.modules makes the import fail).
    monkeypatch.setitem(sys.modules, "chumpy", None)
    monkeypatch.setitem(sys.modules, "chumpy.ch", None)
    model = load_smpl_model(path)
    assert np.allclose(model.shapedirs.numpy(), m["shapedirs"], atol=1e-7)
    assert np.allclose(model.v_template.numpy(), m["v_template"], atol=1e-7)


@pytest.mark.parametrize("key, value, message", [
    ("v_template", np.zeros((192, 2)), "'v_template' has shape (192, 2); expected (V, 3)"),
    ("shapedirs", np.zeros((192, 3, 5)), "'shapedirs' has shape (192, 3, 5); expected (192, 3, B) with B >= 10"),
    ("posedirs", np.zeros((192, 3, 200)), "'posedirs' has shape (192, 3, 200); expected (192, 3, 207)"),
    ("J_regressor", np.zeros((23, 192)), "'J_regressor' has shape (23, 192); expected (24, 192)"),
    ("weights", np.zeros((192, 23)), "'weights' has shape (192, 23); expected (192, 24)"),
    ("kintree_table", np.zeros((2, 23)), "'kintree_table' has shape (2, 23); expected (2, 24)"),
    ("f", np.zeros((10, 4)), "'f' has shape (10, 4); expected (F, 3)"),
    ("f", np.full((10, 3), 500), "'f' has vertex indices outside 0…191"),
    ("kintree_table", np.array([[0] + [5] * 23, list(range(24))]), "smaller index"),
])
def test_model_shape_errors_name_key_and_expected_shape(tmp_path, key, value, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **{**fake_model(), key: value})
    with pytest.raises(SmplError) as err:
        load_smpl_model(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_model_file_errors(tmp_path):
    with pytest.raises(SmplError, match="does not exist"):
        load_smpl_model(tmp_path / "none.pkl")
    m = fake_model()
    del m["posedirs"]
    np.savez(tmp_path / "m.npz", **m)
    with pytest.raises(SmplError, match="lacks posedirs"):
        load_smpl_model(tmp_path / "m.npz")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(SmplError, match="does not unpickle"):
        load_smpl_model(tmp_path / "junk.pkl")


# --- parameters -------------------------------------------------------------------------------------

def test_params_formats_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    theta = rng.normal(0, 0.1, (2, 85))
    theta[:, 0] = 0.9
    np.savez(tmp_path / "t.npz", names=np.array(["a.jpg", "train/0001/b.jpg"]), theta=theta)
    p = load_smpl_params(tmp_path / "t.npz")
    assert torch.allclose(p.cam, torch.tensor(theta[:, :3], dtype=torch.float32))
    assert torch.allclose(p.pose.reshape(2, 72), torch.tensor(theta[:, 3:75], dtype=torch.float32))
    assert p.betas.shape == (2, 10)
    rec = types.SimpleNamespace
    assert p.find(rec(split="query", relpath="a.jpg")) == 0
    assert p.find(rec(split="train", relpath="0001/b.jpg")) == 1          # <split>/<relpath>
    assert p.find(rec(split="gallery", relpath="x/b.jpg")) == 1           # unique file name
    assert p.find(rec(split="train", relpath="c.jpg")) is None
    mats = Rotation.from_rotvec(theta[:, 3:75].reshape(-1, 3)).as_matrix().reshape(2, 24, 3, 3)
    np.savez(tmp_path / "m.npz", names=np.array(["a", "b"]), pose=mats, betas=theta[:, 75:])
    assert torch.allclose(load_smpl_params(tmp_path / "m.npz").pose, p.pose, atol=1e-5)
    assert load_smpl_params(tmp_path / "m.npz").cam is None
    bad = [({"pose": np.zeros((2, 70)), "shape": np.zeros((2, 10))}, "'pose' has shape (2, 70); expected (2, 72)"),
           ({"pose": np.zeros((2, 72))}, "lack 'shape'"),
           ({"pose": np.zeros((2, 72)), "shape": np.zeros((3, 10))}, "'shape' has shape (3, 10); expected (2, 10)"),
           ({"pose": np.zeros((2, 72)), "shape": np.zeros((2, 10)), "cam": np.zeros((2, 2))}, "'cam' has shape (2, 2)"),
           ({"pose": np.zeros((2, 72)), "shape": np.zeros((2, 10)), "cam": np.zeros((2, 3))}, "must be positive"),
           ({"pose": np.full((2, 72), np.nan), "shape": np.zeros((2, 10))}, "finite")]
    for arrays, message in bad:
        np.savez(tmp_path / "bad.npz", names=np.array(["a", "b"]), **arrays)
        with pytest.raises(SmplError) as err:
            load_smpl_params(tmp_path / "bad.npz")
        assert message in str(err.value)
    np.savez(tmp_path / "dup.npz", names=np.array(["a", "a"]), pose=np.zeros((2, 72)), shape=np.zeros((2, 10)))
    with pytest.raises(SmplError, match="appears twice"):
        load_smpl_params(tmp_path / "dup.npz")
    np.savez(tmp_path / "obj.npz", names=np.array(["a", None], dtype=object), pose=np.zeros((2, 72)),
             shape=np.zeros((2, 10)))
    with pytest.raises(SmplError, match="string array"):
        load_smpl_params(tmp_path / "obj.npz")


# --- forward model and turning ----------------------------------------------------------------------

def test_forward_rest_pose_is_template_and_matches_reference(model_npz):
    m, model = fake_model(), load_smpl_model(model_npz)
    verts, joints = smpl_forward(model, torch.zeros(2, 72), torch.zeros(2, 10))
    assert torch.allclose(verts, model.v_template.expand(2, -1, -1), atol=1e-6)
    assert np.allclose(joints[0].numpy(), JOINTS, atol=1e-6)
    rng = np.random.default_rng(2)
    pose = rng.normal(0, 0.4, (3, 72))
    betas = rng.normal(0, 1.0, (3, 10))
    betas[2, 6:] = 0  # fewer components given = zeros
    verts, joints = smpl_forward(model, torch.tensor(pose, dtype=torch.float32),
                                 torch.tensor(betas[:, :10], dtype=torch.float32))
    short, _ = smpl_forward(model, torch.tensor(pose[2:], dtype=torch.float32), torch.tensor(betas[2:, :6], dtype=torch.float32))
    assert torch.allclose(short[0], verts[2], atol=1e-6)
    for i in range(3):
        ref_v, ref_j = reference_forward(m, pose[i], betas[i])
        assert np.abs(verts[i].numpy() - ref_v).max() < 2e-5
        assert np.abs(joints[i].numpy() - ref_j).max() < 2e-5


def test_turning_about_root_equals_turning_the_global_orient(model_npz):
    model = load_smpl_model(model_npz)
    rng = np.random.default_rng(3)
    pose = rng.normal(0, 0.2, (1, 72))
    pose[0, :3] = UPRIGHT
    betas = torch.tensor(rng.normal(0, 1, (1, 10)), dtype=torch.float32)
    verts, joints = smpl_forward(model, torch.tensor(pose, dtype=torch.float32), betas)
    assert facing_yaw(torch.tensor(pose, dtype=torch.float32)).item() == pytest.approx(0.0, abs=1e-3)
    for angle in (90.0, 45.0, 225.0):
        a = np.radians(angle)
        turn = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
        turned_pose = pose.copy()
        orient = torch.tensor(turn @ Rotation.from_rotvec(pose[0, :3]).as_matrix(), dtype=torch.float32)
        turned_pose[0, :3] = matrix_to_axis_angle(orient).numpy()
        expected, _ = smpl_forward(model, torch.tensor(turned_pose, dtype=torch.float32), betas)
        got = turn_about_root(verts, joints[:, 0], torch.tensor([angle]))
        assert torch.allclose(got, expected, atol=1e-5)
        assert facing_yaw(torch.tensor(turned_pose, dtype=torch.float32)).item() == pytest.approx(angle, abs=1e-3)
    # +90°: the point in front of the pelvis (towards the camera, -z) goes to image right (+x).
    point = torch.tensor([[[1.0, 2.0, 3.0 - 0.5]]])
    assert torch.allclose(turn_about_root(point, torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([90.0])),
                          torch.tensor([[[1.5, 2.0, 3.0]]]), atol=1e-6)


# --- rasteriser ------------------------------------------------------------------------------------

def _facing_quad(x0, y0, x1, y1, z):
    """Two triangles covering [x0, x1] × [y0, y1] at depth z, normals towards the camera (-z)."""
    v = torch.tensor([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=torch.float32)
    f = torch.tensor([[0, 3, 2], [0, 2, 1]])
    return v, f


def test_square_area_depth_order_and_shading():
    near_v, f = _facing_quad(10, 20, 30, 60, 5.0)
    far_v, _ = _facing_quad(20, 40, 50, 100, 9.0)
    verts = torch.cat((far_v, near_v))[None]  # far drawn first, then near: order must not matter
    faces = torch.cat((f, f + 4))
    for budget in (1 << 21, 7):
        keys, _ = rasterize_mesh(verts, faces, 128, 64, max_candidates=budget)
        tri = keys[0]
        near = (tri >= 2).sum().item()
        assert near == 20 * 40                                      # pixel centres in [10, 30] × [20, 60]
        assert ((tri >= 0) & (tri < 2)).sum().item() == 30 * 60 - 10 * 20  # far square minus the overlap
        assert (tri[40:60, 20:30] >= 2).all()                       # overlap: the nearer square wins
    swapped = torch.cat((near_v, far_v))[None]
    keys2, _ = rasterize_mesh(swapped, faces, 128, 64)
    assert ((keys2[0] >= 0) & (keys2[0] < 2)).sum().item() == 800
    # Back faces (clockwise seen from the camera) are culled unless asked otherwise.
    back = faces.flip(1)
    assert (rasterize_mesh(verts, back, 128, 64)[0] < 0).all()
    assert torch.equal(rasterize_mesh(verts, back, 128, 64, cull=False)[0] >= 0, keys >= 0)
    grey = render_mesh_grey(verts, faces, 128, 64)[0]
    front = int(np.floor(lambert(torch.tensor([[0.0], [0.0], [-1.0]]))[0].item() * 255 + 0.5))
    assert grey[30, 15].item() == front and grey[0, 0].item() == 0
    assert ((grey > 0).sum().item()) == 800 + 30 * 60 - 200


def test_triangle_matches_brute_force_coverage():
    rng = np.random.default_rng(4)
    for size in (2.5, 4, 6, 80, 80, 80):  # small ones take the fixed window, large ones their box
        pts = rng.uniform([-5, -5], [70, 133], 2) + rng.uniform(-size, size, (3, 2))
        verts = torch.tensor(np.c_[pts, rng.uniform(1, 2, 3)], dtype=torch.float32)[None]
        keys, _ = rasterize_mesh(verts, torch.tensor([[0, 1, 2]]), 128, 64, cull=False, window=4)
        ys, xs = np.mgrid[0:128, 0:64] + 0.5
        a, b, c = pts
        def edge(p, q):
            return (q[0] - p[0]) * (ys - p[1]) - (q[1] - p[1]) * (xs - p[0])
        e = np.stack((edge(a, b), edge(b, c), edge(c, a)))
        inside = (e >= 0).all(0) | (e <= 0).all(0)
        assert np.array_equal((keys[0] >= 0).numpy(), inside)


# --- end to end -----------------------------------------------------------------------------------

def _tiny_market(root: Path):
    names = {"bounding_box_train": ["0001_c1s1_000001_01.jpg", "0001_c2s1_000002_01.jpg", "0002_c1s1_000003_01.jpg"],
             "query": ["0003_c1s1_000004_01.jpg"], "bounding_box_test": ["0003_c2s1_000005_01.jpg"]}
    for folder, files in names.items():
        (root / folder).mkdir(parents=True)
        for name in files:
            Image.new("RGB", (64, 128), (90, 120, 150)).save(root / folder / name)
    return [n for files in names.values() for n in files]


def test_command_writes_all_maps(model_npz, tmp_path, capsys):
    root = tmp_path / "market"
    names = _tiny_market(root)
    rng = np.random.default_rng(5)
    pose = rng.normal(0, 0.1, (len(names), 72))
    pose[:, :3] = UPRIGHT
    yaw = np.radians(60.0)
    turn = np.array([[np.cos(yaw), 0, -np.sin(yaw)], [0, 1, 0], [np.sin(yaw), 0, np.cos(yaw)]])
    pose[1, :3] = Rotation.from_matrix(turn @ Rotation.from_rotvec(UPRIGHT).as_matrix()).as_rotvec()
    cam = np.tile([0.9, 0.0, -0.1], (len(names), 1))
    params = tmp_path / "hmr.npz"
    np.savez(params, names=np.array(names), pose=pose, shape=rng.normal(0, 1, (len(names), 10)), cam=cam)
    out = tmp_path / "out"
    args = ["structures", "--dataset", "market1501", "--root", str(root), "--out", str(out), "--no-progress",
            "--batch", "2", "--source", "smpl", "--smpl-model", str(model_npz), "--smpl-params", str(params)]
    assert main(args) == 0
    ds = build_dataset("market1501", root)
    records = list(ds.train) + list(ds.query) + list(ds.gallery)
    assert len(records) == 5
    for r in records:
        maps = []
        for angle in (0, *ANGLES):
            with Image.open(structure_path(out, r, angle)) as im:
                assert im.mode == "L" and im.size == (64, 128)
                maps.append(np.asarray(im))
        body = maps[0] > 20
        assert 300 < body.sum() < 0.6 * 128 * 64
        rows = np.nonzero(body.any(1))[0]
        # Camera: 0.9 * 64 px per metre; the fake person is about 1.7 m tall (boxes distorted by the blend shapes).
        assert 85 < rows[-1] - rows[0] + 1 < 115 and rows[0] > 0 and rows[-1] < 127
        assert not np.array_equal(maps[0] > 20, maps[2] > 20)  # 90° looks different
        # 180° mirrors 0° about the pelvis column: the same body width on every row.
        assert np.abs(body.sum(1) - (maps[4] > 20).sum(1)).sum() < 0.05 * body.sum()
    recs = read_records(out)
    assert {r["status"] for r in recs.values()} == {"smpl"}
    assert recs[("train", names[1])]["yaw"] == pytest.approx(60.0, abs=0.5)
    yaw0 = recs[("train", names[0])]["yaw"]
    assert min(yaw0, 360 - yaw0) < 0.5
    summary = json.loads((out / "structures_summary.json").read_text())
    assert summary["processed"] == 5 and summary["counts"] == {"smpl": 5}

    # An image without parameters: a one-line error naming it, or the counted fallback.
    np.savez(params, names=np.array(names[:-1]), pose=pose[:-1], shape=np.zeros((4, 10)), cam=cam[:-1])
    capsys.readouterr()
    args[args.index("--out") + 1] = str(tmp_path / "out2")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1 of 5 images have no row" in err and names[-1] in err and err.count("\n") == 1
    assert main(args + ["--smpl-missing", "fallback"]) == 0
    summary = json.loads((tmp_path / "out2" / "structures_summary.json").read_text())
    assert summary["counts"] == {"smpl": 4, "fallback": 1} and summary["fallback_rate"] == 0.2


def test_view_vertices_frames_like_the_original(model_npz):
    """Every angle uses the 0° camera: the pelvis stays on the same pixel and the height is kept."""
    model = load_smpl_model(model_npz)
    pose = torch.zeros(1, 72)
    pose[0, :3] = torch.tensor(UPRIGHT, dtype=torch.float32)
    verts, joints = smpl_forward(model, pose, torch.zeros(1, 10))
    pixels = (torch.tensor([50.0]), torch.tensor([32.0]), torch.tensor([50.0]), torch.tensor([70.0]))
    view = view_vertices(verts, joints[:, 0], (0, 90, 180), pixels)
    root = joints[0, 0]
    for k in range(3):
        assert view[k, :, 1].max() - view[k, :, 1].min() == pytest.approx((verts[0, :, 1].max() - verts[0, :, 1].min()).item() * 50, rel=1e-5)
    assert torch.allclose(view[:, :, :2].mean(1)[:, 1], view[0, :, 1].mean().expand(3), atol=1e-4)
    assert view[0, 0, 0].item() == pytest.approx(50 * verts[0, 0, 0].item() + 32, rel=1e-5)
    # 180° mirrors x about the pelvis column.
    assert torch.allclose(view[2, :, 0] - (50 * root[0] + 32), -(view[0, :, 0] - (50 * root[0] + 32)), atol=1e-3)

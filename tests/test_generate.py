"""`gclreid generate` on tiny GCL and DG-Net checkpoints (one training iteration, CPU): files per angle /
swap, their size, parity with the method's own generation code (GCL.generate, DGNet.swap_matrix on a
method built the normal way), determinism, clear errors, and `gclreid fid` on the written folders."""
import gclreid  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from gclreid.checkpoint import load_checkpoint, save_checkpoint
from gclreid.cli import main
from gclreid.config import load_config, to_dict
from gclreid.data import Resize, build_dataset, build_test_transform, denormalize, load_image
from gclreid.engine import build_method, train
from gclreid.errors import CheckpointError, DatasetError, GclreidError
from gclreid.evaluation.generate import GenerateError, dgnet_partners, generate_images, select_records
from gclreid.models import build_identity_encoder
from gclreid.structures import ANGLES, load_structure, structure_path

from conftest import add_body_structures, make_stripe_people
from test_dgnet_training import TINY as TINY_DGNET, fake_teacher
from test_gcl_training import TINY_GCL

H, W = 64, 32
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """Tiny Market-layout people with structure maps for every image and angle."""
    root = make_stripe_people(tmp_path_factory.mktemp("gen") / "people", train_ids=6, test_ids=3, per_cam=2,
                              cams=2, height=H, width=W)
    return add_body_structures(root, H, W)


@pytest.fixture(scope="module")
def gcl_run(people, tmp_path_factory):
    out = tmp_path_factory.mktemp("gcl_run")
    cfg = load_config(None, [*TINY_GCL, f"data.root={people}", f"run.out={out}", "gcl.stage=2", "gcl.losses=[gan]",
                             "train.epochs=1", "train.iters_per_epoch=1"])
    train(cfg, progress=False)
    return cfg, out / "last.pt"


@pytest.fixture(scope="module")
def dgnet_run(people, tmp_path_factory):
    out = tmp_path_factory.mktemp("dgnet_run")
    teacher = fake_teacher(out / "teacher.pt", people)
    cfg = load_config(None, [*TINY_DGNET, f"data.root={people}", f"run.out={out}", f"dgnet.teacher={teacher}",
                             "train.epochs=1", "train.iters_per_epoch=1", "dgnet.eval_features=[]",
                             "dgnet.eval_teacher=false"])
    train(cfg, progress=False)
    return cfg, out / "last.pt"


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def as_pixels(x: torch.Tensor) -> np.ndarray:
    """A normalised 3×H×W tensor as H×W×3 values in [0, 255] (before 8-bit rounding)."""
    return denormalize(x.float()).permute(1, 2, 0).numpy().astype(np.float64) * 255


def test_gcl_writes_every_angle_and_matches_the_method(people, gcl_run, tmp_path):
    cfg, ckpt = gcl_run
    out = tmp_path / "gen"
    assert main(["generate", "--checkpoint", str(ckpt), "--out", str(out), "--count", "4", "--device", "cpu"]) == 0
    report = json.loads((out / "generate.json").read_text())
    assert report["method"] == "gcl" and report["stage"] == 2 and report["split"] == "query"
    assert report["angles"] == list(ANGLES) and report["images"] == 4 and report["image_size"] == [H, W]
    ds = build_dataset("market1501", people)
    chosen = select_records(ds.query, 4)
    stems = sorted(f"{rec.relpath[:-4]}.png" for rec in chosen)
    for folder in ["real", *map(str, ANGLES)]:
        files = sorted(p.name for p in (out / folder).iterdir())
        assert files == stems, folder
        assert report["files"][folder] == 4
        assert Image.open(out / folder / files[0]).size == (W, H)
    # the real copies are the resized inputs, exactly
    rec = chosen[1]
    assert np.array_equal(png(out / "real" / f"{rec.relpath[:-4]}.png"),
                          np.asarray(Resize(H, W)(load_image(rec.path)), dtype=np.float64))
    # parity with GCL.generate of a method built and loaded as training does, up to 8-bit rounding
    method = build_method(cfg, ds, CPU)
    load_checkpoint(ckpt, models=method.models)
    x = torch.stack([build_test_transform(cfg.data)(load_image(r.path)) for r in chosen])
    root = people / "structures"
    s0 = torch.stack([load_structure(structure_path(root, r, 0), H, W) for r in chosen])
    for angle in (90, 315):
        s1 = torch.stack([load_structure(structure_path(root, r, angle), H, W) for r in chosen])
        with torch.no_grad(), method.eval_models():
            expected = method.generate(x, s0, s1, with_cycle=False)["x_new"]
        for k, r in enumerate(chosen):
            got = png(out / str(angle) / f"{r.relpath[:-4]}.png")
            assert np.abs(got - as_pixels(expected[k])).max() <= 0.5 + 1e-3, (angle, r.relpath)
    # FID (on the checkpoint's ReID features) runs end to end on the folders
    import io
    from contextlib import redirect_stdout
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["fid", str(out / "real"), str(out / "90"), "--reid-checkpoint", str(ckpt), "--json",
                     "--device", "cpu", "--workers", "0"]) == 0
    result = json.loads(buf.getvalue())
    assert result["num_real"] == result["num_fake"] == 4 and np.isfinite(result["fid"]) and result["fid"] > 0


def test_gcl_angles_missing_maps_and_output_folder_checks(people, gcl_run, tmp_path):
    _, ckpt = gcl_run
    # a structure root holding only the 0° and 90° maps of the test images
    partial = tmp_path / "partial"
    for folder in ("render", "render_90"):
        shutil.copytree(people / "structures" / "test" / folder, partial / "test" / folder)
    over = [f"gcl.structure_root={partial}"]
    report = generate_images(ckpt, tmp_path / "a", angles=None, overrides=over, split="gallery", count=3)
    assert report["angles"] == [90] and report["files"] == {"real": 3, "90": 3}
    assert set(report["skipped_angles"]) == {str(a) for a in ANGLES if a != 90}
    with pytest.raises(DatasetError, match=str(partial / "test" / "render_45")):
        generate_images(ckpt, tmp_path / "b", angles=[45, 90], overrides=over)
    report = generate_images(ckpt, tmp_path / "c", angles=[0, 180], count=2)
    assert report["autocast_bf16"] is False  # float32 on the CPU unless train.amp_cpu
    bf16 = generate_images(ckpt, tmp_path / "bf16", angles=[180], count=2, overrides=["train.amp_cpu=true"])
    assert bf16["autocast_bf16"] is True and bf16["files"] == {"real": 2, "180": 2}
    assert report["angles"] == [0, 180] and sorted(p.name for p in (tmp_path / "c").iterdir()) == \
        ["0", "180", "generate.json", "real"]
    with pytest.raises(GenerateError, match="--angles 30"):
        generate_images(ckpt, tmp_path / "d", angles=[30])
    # an earlier run's images are not mixed with new ones
    with pytest.raises(GenerateError, match="--overwrite"):
        generate_images(ckpt, tmp_path / "c", angles=[180], count=3)
    report = generate_images(ckpt, tmp_path / "c", angles=[180], count=3, overwrite=True)
    assert len(list((tmp_path / "c" / "180").iterdir())) == 3 and len(list((tmp_path / "c" / "real").iterdir())) == 3


def test_dgnet_swaps_are_deterministic_and_match_the_swap_matrix(people, dgnet_run, tmp_path):
    cfg, ckpt = dgnet_run
    out = tmp_path / "g0"
    assert main(["generate", "--checkpoint", str(ckpt), "--out", str(out), "--seed", "3", "--device", "cpu"]) == 0
    report = json.loads((out / "generate.json").read_text())
    ds = build_dataset("market1501", people)
    query = list(ds.query)
    assert report["method"] == "dgnet" and report["images"] == len(query) == 6
    assert report["files"] == {"real": 6, "generated": 6}
    names = {r.relpath[:-4]: r for r in query}
    pairs = [p.stem.split("_from_") for p in sorted((out / "generated").iterdir())]
    assert sorted(a for a, _ in pairs) == sorted(names)
    assert all(names[a].pid != names[b].pid for a, b in pairs)
    assert Image.open(next((out / "generated").iterdir())).size == (W, H)
    # the same seed gives the same files, byte for byte; another seed other partners
    generate_images(ckpt, tmp_path / "g1", seed=3)
    for p in (out / "generated").iterdir():
        assert (tmp_path / "g1" / "generated" / p.name).read_bytes() == p.read_bytes()
    generate_images(ckpt, tmp_path / "g2", seed=4)
    other = {p.name for p in (tmp_path / "g2" / "generated").iterdir()}
    assert other != {p.name for p in (out / "generated").iterdir()}
    # parity with DGNet.swap_matrix (cell (i, j) = G(s_j, f_i)) of the method built as training does
    method = build_method(cfg, ds, CPU)
    load_checkpoint(ckpt, models=method.models)
    order = [r.relpath[:-4] for r in query]
    swaps = method.swap_matrix(method._images(query))
    for a, b in pairs:
        got = png(out / "generated" / f"{a}_from_{b}.png")
        assert np.abs(got - as_pixels(swaps[order.index(a), order.index(b)])).max() <= 0.5 + 1e-3, (a, b)
    with pytest.raises(GenerateError, match="GCL checkpoints only"):
        generate_images(ckpt, tmp_path / "g3", angles=[90])


def test_partners_and_selection():
    pids = [1, 1, 2, 2, 3, -1]
    p = dgnet_partners(pids, seed=0)
    assert np.array_equal(p, dgnet_partners(pids, seed=0))
    assert all(j != i and (pids[i] < 0 or pids[j] != pids[i]) for i, j in enumerate(p))
    with pytest.raises(GenerateError, match="no partner"):
        dgnet_partners([5, 5, 5])
    assert select_records(range(10), 3) == [0, 4, 9]  # np.linspace → 0, 4.5, 9, rounded half to even
    assert len(select_records(range(10), 10)) == 10 and len(select_records(range(4), 99)) == 4
    with pytest.raises(GenerateError, match="--count 0"):
        select_records(range(4), 0)


def test_clear_errors(people, gcl_run, tmp_path, capsys):
    _, ckpt = gcl_run
    cc = tmp_path / "cc.pt"
    cfg = load_config(None, ["train.method=cluster_contrast", "model.arch=resnet18", "model.pretrained=false",
                             f"data.root={people}", "data.name=market1501"])
    save_checkpoint(cc, models={"identity_encoder": build_identity_encoder(cfg.model)}, config=to_dict(cfg))
    with pytest.raises(CheckpointError, match="'cluster_contrast'.*supports GCL.*DG-Net"):
        generate_images(cc, tmp_path / "x")
    assert main(["generate", "--checkpoint", str(cc), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "gclreid generate: error:" in err and "cluster_contrast" in err
    assert main(["generate", "--checkpoint", str(ckpt), "--out", str(tmp_path / "y"), "--count", "0"]) == 2
    assert "--count 0" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="data.root=DIR"):
        generate_images(ckpt, tmp_path / "z", overrides=[f"data.root={tmp_path / 'moved'}"])
    with pytest.raises(GclreidError):
        generate_images(ckpt, tmp_path / "z", overrides=["data.nosuchkey=1"])

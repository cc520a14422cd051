"""GCL on a tiny generated SynthReID: novel-view metrics against the true views, test grids, logging,
and the official compute pattern giving the same losses as ours."""
import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from gclreid.config import load_config
from gclreid.data import build_dataset, build_test_transform, denormalize, load_image
from gclreid.engine import build_method, train
from gclreid.engine.logger import RunLogger, flatten_scalars, read_metrics
from gclreid.evaluation.generation import image_metrics, ssim
from gclreid.structures.dataset import load_structure
from gclreid.structures import ANGLES, structure_path

from conftest import TINY_H, TINY_SYNTH_GCL, TINY_W, make_tiny_synth

H, W = TINY_H, TINY_W
TINY_GCL = TINY_SYNTH_GCL


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_tiny_synth(tmp_path_factory.mktemp("gclgen") / "synth")


def cfg_for(root, out, *extra):
    return load_config(None, [*TINY_GCL, f"data.root={root}", f"run.out={out}", *extra])


def test_stage2_epoch_records_novel_view_metrics_grids_and_scalars(synth, tmp_path):
    cfg = cfg_for(synth, tmp_path / "s2", "gcl.stage=2", "train.epochs=1", "train.iters_per_epoch=2",
                  "gcl.grid_every=2")
    record = train(cfg, progress=False)
    gen = record["generation"]
    n_query = len(build_dataset("synthreid", synth).query)
    assert gen["images"] == n_query  # fewer query images than the sample size: all of them
    for name in ("ssim", "psnr", "l1"):
        per_angle = [gen[f"{name}_{a}"] for a in ANGLES]
        assert gen[name] == pytest.approx(np.mean(per_angle), rel=1e-9)
        for key in (name, f"recon_{name}", f"copy_{name}"):
            assert np.isfinite(gen[key])
    assert all(-1 <= gen[k] <= 1 for k in gen if "ssim" in k)
    assert all(0 <= gen[k] <= 1 for k in gen if k.endswith("l1") or "l1_" in k)
    # the record lands in metrics.jsonl as it was returned
    assert read_metrics(tmp_path / "s2" / "metrics.jsonl")[-1]["generation"] == gen
    assert json.loads((tmp_path / "s2" / "results.json").read_text())["generation"]["ssim"] == gen["ssim"]
    cos = record["view_cos"]
    n_train = len(build_dataset("synthreid", synth).train)
    assert cos["images"] == len(set(np.linspace(0, n_train - 1, 16).astype(int))) and set(cos) == {"images", "novel", "recon", "mirror", "other",
                                               *(f"novel_{a}" for a in cfg.gcl.angles)}
    grids = tmp_path / "s2" / "grids"
    for name in ("epoch_001.png", "test_epoch_001.png", "iter_0000002.png", "test_iter_0000002.png"):
        assert (grids / name).is_file(), name
    # the test grid has 7 columns (with the true view) and one row per sampled image (at most 6)
    with Image.open(grids / "test_epoch_001.png") as im:
        assert im.size == (7 * (W + 2) + 2, 12 + min(6, n_query) * (H + 2) + 2)
    assert not (grids / "iter_0000001.png").exists()


def test_copy_baseline_matches_a_direct_computation_from_the_files(synth, tmp_path):
    # `copy_*` scores the input itself against the true views: recomputed here from the files directly,
    # which checks the view paths, the resizing and the [0, 1] conversion.
    cfg = cfg_for(synth, tmp_path / "m", "gcl.stage=2")
    ds = build_dataset("synthreid", synth)
    method = build_method(cfg, ds, torch.device("cpu"))
    metrics = method.generation_metrics()
    transform = build_test_transform(cfg.data)
    sums = {"ssim": 0.0, "psnr": 0.0, "l1": 0.0}
    flip_ssim = body_copy = body_flip = 0.0
    for rec in ds.query:
        x = denormalize(transform(load_image(rec.path)))[None]
        map0 = load_structure(structure_path(synth / "structures", rec, 0), H, W)
        for a in ANGLES:
            view = synth / "views" / "test" / f"view_{a}" / rec.relpath
            v = denormalize(transform(load_image(view)))[None]
            for k, val in image_metrics(x, v).items():
                sums[k] += float(val)
            flip_ssim += float(ssim(x.flip(-1), v))
            # the person: the body of either structure map (black off the body), grown by 2 pixels
            body = (map0 > -0.999) | (load_structure(structure_path(synth / "structures", rec, a), H, W) > -0.999)
            body = torch.nn.functional.max_pool2d(body.float()[None], 5, stride=1, padding=2)
            body_copy += float(ssim(x, v, mask=body))
            body_flip += float(ssim(x.flip(-1), v, mask=body))
    count = len(ds.query) * len(ANGLES)
    for k in sums:
        assert metrics[f"copy_{k}"] == pytest.approx(sums[k] / count, rel=1e-5)
    assert metrics["flip_ssim"] == pytest.approx(flip_ssim / count, rel=1e-5)
    assert metrics["body_copy_ssim"] == pytest.approx(body_copy / count, rel=1e-5)
    assert metrics["body_flip_ssim"] == pytest.approx(body_flip / count, rel=1e-5)
    # copying gets the background right for free: over the person alone it scores lower
    assert metrics["body_copy_ssim"] < metrics["copy_ssim"]
    # the metrics are those of the generator's outputs: recomputing gives the same numbers, and the
    # computation leaves the models' train/eval modes and the global RNG alone
    method.train_mode()
    state = torch.get_rng_state()
    assert method.generation_metrics() == metrics
    assert all(m.training for m in method.models.values() if m is not method.encoder)
    assert torch.equal(torch.get_rng_state(), state)


def test_view_recognition_matches_a_direct_computation(synth, tmp_path):
    # cos(Eid(x), Eid(G(x, s_angle))) per image and angle, recomputed here image by image from the files
    cfg = cfg_for(synth, tmp_path / "vr", "gcl.stage=2", "gcl.gen_eval_images=5")
    method = build_method(cfg, build_dataset("synthreid", synth), torch.device("cpu"))
    got = method.view_recognition(batch_size=2)  # batches of 2 over 5 images: a short last batch
    records = method.records
    picks = [records[i] for i in sorted(set(np.linspace(0, len(records) - 1, 5).astype(int)))]
    transform = build_test_transform(cfg.data)
    eid, gen = method.encoder.eval(), method.models["generator"].eval()
    cos = torch.nn.functional.cosine_similarity
    feats, novel, recon, mirror = [], {a: [] for a in cfg.gcl.angles}, [], []
    with torch.no_grad():
        for rec in picks:
            x = transform(load_image(rec.path))[None]
            out = eid(x)
            feats.append(out.embedding)
            mirror.append(float(cos(out.embedding, eid(x.flip(-1)).embedding)))
            for a in (0, *cfg.gcl.angles):
                s = load_structure(structure_path(synth / "structures", rec, a), H, W)[None]
                c = float(cos(out.embedding, eid(gen.decode(gen.encode_structure(s), out.parts)).embedding))
                (recon if a == 0 else novel[a]).append(c)
    f = torch.cat(feats)
    assert got["images"] == 5
    assert got["mirror"] == pytest.approx(np.mean(mirror), abs=1e-5)
    assert got["recon"] == pytest.approx(np.mean(recon), abs=1e-5)
    for a in cfg.gcl.angles:
        assert got[f"novel_{a}"] == pytest.approx(np.mean(novel[a]), abs=1e-5)
    assert got["novel"] == pytest.approx(np.mean([np.mean(v) for v in novel.values()]), abs=1e-5)
    assert got["other"] == pytest.approx(float(cos(f, f.roll(2, 0)).mean()), abs=1e-5)
    assert 0.9 < got["mirror"] <= 1 + 1e-6  # a mirrored person is the same person to any sane encoder


def test_without_views_metrics_are_skipped_quietly_but_the_test_grid_is_saved(synth, tmp_path, caplog):
    cfg = cfg_for(synth, tmp_path / "nv", "gcl.stage=2")
    method = build_method(cfg, build_dataset("synthreid", synth), torch.device("cpu"))
    method.views_root = lambda: tmp_path / "no-views"
    py_state, torch_state = random.getstate(), torch.get_rng_state()
    with caplog.at_level("WARNING", logger="gclreid"):
        record = method.end_epoch(0)
    assert not caplog.records
    # no true views: no `generation`, but whether the encoder recognises the views needs none
    assert set(record) == {"view_cos"}
    assert all(-1 <= v <= 1 for k, v in record["view_cos"].items() if k != "images")
    # grids and metrics draw no random numbers from the training streams
    assert random.getstate() == py_state and torch.equal(torch.get_rng_state(), torch_state)
    with Image.open(tmp_path / "nv" / "grids" / "test_epoch_001.png") as im:
        assert im.size[0] == 6 * (W + 2) + 2  # no `true` column


def test_logger_writes_nested_and_prefixed_scalars(tmp_path):
    logger = RunLogger(tmp_path, enable_tensorboard=False)
    seen = {}

    class Recorder:
        def add_scalar(self, tag, value, step):
            seen[tag] = (value, step)

    logger.writer = Recorder()
    logger.epoch_record({"epoch": 3, "losses": {"loss": 1.0}, "clusters": {"num_clusters": 5, "instance": True},
                         "eval": {"mAP": 0.5}, "generation": {"ssim": 0.4, "by_angle": {"45": 0.3}, "note": "x"}})
    assert seen == {"clusters/num_clusters": (5.0, 3), "eval/mAP": (0.5, 3), "generation/ssim": (0.4, 3),
                    "generation/by_angle/45": (0.3, 3)}
    assert flatten_scalars({"a": {"b": {"c": 1}}, "d": [1]}) == {"a/b/c": 1}


@pytest.mark.parametrize("stage", [2, 3])
def test_official_compute_pattern_gives_the_same_losses(synth, tmp_path, stage):
    """D(real) once vs per fake, fakes batched vs one by one, no Eid gradients in stage 2, channels-last
    generator and D vs NCHW: the same losses and gradients up to float rounding."""
    ds = build_dataset("synthreid", synth)
    methods = []
    for official in (False, True):
        # the official pattern also runs NCHW, ours (the default) the generator and D channels-last
        cfg = cfg_for(synth, tmp_path / f"p{official}", f"gcl.stage={stage}", f"gcl.share_real={not official}",
                      f"generator.channels_last={not official}")
        torch.manual_seed(0)
        m = build_method(cfg, ds, torch.device("cpu"))
        m.batch_fakes = m.stream_d_backward = m.freeze_encoder_grads = not official
        for name in ("generator", "discriminator"):
            fmt = torch.contiguous_format if official else torch.channels_last
            convs = [c.weight for c in m.models[name].modules() if isinstance(c, torch.nn.Conv2d)]
            assert all(w.is_contiguous(memory_format=fmt) for w in convs)
        if stage == 3:
            m.start_epoch(0)
        m.train_mode()
        methods.append(m)
    batch = next(iter(methods[0].loader(0)))
    results = []
    for m in methods:
        torch.manual_seed(1)  # the negatives drawn by the view-contrast loss
        results.append(m.step(batch))
    ours, official = results
    assert set(ours) == set(official)
    for k in ours:
        assert torch.allclose(ours[k], official[k], rtol=1e-4, atol=1e-6), (k, ours[k], official[k])
    enc_grads = [p.grad for p in methods[1].encoder.parameters()]
    if stage == 2:
        # the official pattern computes Eid's parameter gradients in stage 2 (ours does not); neither
        # changes Eid
        assert all(g is None for g in (p.grad for p in methods[0].encoder.parameters()))
        assert any(g is not None for g in enc_grads)
        for a, b in zip(methods[0].encoder.state_dict().values(), methods[1].encoder.state_dict().values()):
            assert torch.equal(a, b)
    # and the same gradients for D (its step) and the generator (+ Eid in stage 3) (its step), up to
    # rounding; parameters are not compared: Adam with beta1 = 0 turns rounding-level differences of
    # near-zero gradients into ±lr steps
    names = ("discriminator", "generator") + (("identity_encoder",) if stage == 3 else ())
    for name in names:
        ga = torch.cat([p.grad.flatten() for p in methods[0].models[name].parameters()])
        gb = torch.cat([p.grad.flatten() for p in methods[1].models[name].parameters()])
        assert float((ga - gb).norm() / ga.norm()) < 1e-3, name

"""GCL switches of issue #15: what plays x'_new in the view-invariant losses (`gcl.views`: the
generated view, SynthReID's true view, the flipped input, the input), the official code's Nesterov
SGD (`optim.nesterov`) and its stage-3 G/D learning rate (`gcl.gd_schedule`)."""
import random
import re
import shutil

import pytest
import torch

from gclreid.checkpoint import read_checkpoint
from gclreid.config import PACKAGE_CONFIGS, ConfigError, load_config, validate_config
from gclreid.data import build_dataset, build_test_transform, load_image
from gclreid.engine import build_method, train
from gclreid.engine.optim import apply_lr_schedule
from gclreid.errors import DatasetError
from gclreid.runtime import seed_everything

from conftest import TINY_H, TINY_SYNTH_GCL, TINY_W, add_body_structures, make_tiny_synth, make_stripe_people

H, W = TINY_H, TINY_W
TINY_GCL = [*TINY_SYNTH_GCL, "gcl.stage=3"]
CPU = torch.device("cpu")
GENERATION_LOSSES = ("d_total", "d_r1", "g_adv", "l_img", "l_feat")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_tiny_synth(tmp_path_factory.mktemp("gclviews") / "synth")


def cfg_for(root, out, *extra):
    return load_config(None, [*TINY_GCL, f"data.root={root}", f"run.out={out}", *extra])


def first_batch(cfg, ds):
    """A stage-3 method at its first iteration (memory filled, clustered) and its first batch."""
    seed_everything(0)
    method = build_method(cfg, ds, CPU)
    method.start_epoch(0)
    batch = next(iter(method.loader(0)))
    method.train_mode()
    return method, batch


def true_view(root, record, angle, cfg):
    path = root / "views" / "train" / f"view_{angle}" / record.relpath
    return build_test_transform(cfg.data)(load_image(path))


# -- gcl.views ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("views", ["input", "flip", "true_view"])
def test_the_positive_is_the_input_its_mirror_or_the_true_view_of_the_drawn_angle(synth, tmp_path, views):
    # traditional augmentation on: the positive is the augmented input tensor the encoder sees
    cfg = cfg_for(synth, tmp_path, f"gcl.views={views}", "gcl.augment=true")
    ds = build_dataset("synthreid", synth)
    method, batch = first_batch(cfg, ds)
    x = batch["image"]
    r = {"x": x, "x_new": torch.zeros_like(x)}
    got = method.view_positive(batch, r)
    if views == "input":
        assert torch.equal(got, x)
    elif views == "flip":
        assert torch.equal(got, x.flip(-1))
    else:
        for i, (index, angle) in enumerate(zip(batch["index"].tolist(), batch["angle"].tolist())):
            assert angle in cfg.gcl.angles
            assert torch.equal(got[i], true_view(synth, method.records[index], angle, cfg))
        assert not torch.equal(got, x)
    # the step feeds exactly that image through Eid and its embedding to the contrast as f'_new
    seen = {"encoded": [], "f_new": None, "positive": None}
    encode, positive, contrast = method.encode_generated, method.view_positive, method.contrast.forward

    def record_encode(images):
        out = encode(images)
        seen["encoded"].append((images, out.embedding))
        return out

    def record_positive(b, rr):
        seen["positive"] = positive(b, rr)
        return seen["positive"]

    def record_contrast(f, f_new, index, *args, **kwargs):
        seen["f_new"] = f_new
        return contrast(f, f_new, index, *args, **kwargs)

    method.encode_generated, method.view_positive, method.contrast.forward = \
        record_encode, record_positive, record_contrast
    losses = method.step(batch)
    assert {"lvi", "lvi2", "lvi3"} <= set(losses)
    (pos_in, pos_out), = [(i, o) for i, o in seen["encoded"] if i is seen["positive"]]
    assert seen["f_new"] is pos_out
    assert torch.equal(pos_in, got)


def test_views_change_only_the_contrast_same_generation_losses_and_random_numbers(synth, tmp_path):
    ds = build_dataset("synthreid", synth)
    results = {}
    for views in ("generated", "true_view", "flip", "input"):
        method, batch = first_batch(cfg_for(synth, tmp_path / views, f"gcl.views={views}"), ds)
        losses = method.step(batch)
        results[views] = (batch, losses, random.getstate(), torch.get_rng_state())
    base_batch, base, py_state, torch_state = results["generated"]
    for views, (batch, losses, py, tr) in results.items():
        # the same batch and angles (the angle is drawn whatever the switch) …
        assert torch.equal(batch["index"], base_batch["index"]) and torch.equal(batch["angle"], base_batch["angle"])
        assert torch.equal(batch["image"], base_batch["image"])
        # … the same generation losses (before any update) and the same random streams after the step
        for k in GENERATION_LOSSES:
            assert torch.allclose(losses[k], base[k], rtol=1e-5, atol=1e-7), (views, k)
        assert py == py_state and torch.equal(tr, torch_state), views
        if views != "generated":
            assert not torch.allclose(losses["lvi"], base["lvi"]), views


def test_missing_true_view_is_an_error_naming_the_file(synth, tmp_path):
    cfg = cfg_for(synth, tmp_path / "run", "gcl.views=true_view")
    ds = build_dataset("synthreid", synth)
    views = tmp_path / "views"
    shutil.copytree(synth / "views" / "train", views / "train")
    method = build_method(cfg, ds, CPU)
    method.views_root = lambda: views
    record = method.records[3]
    victim = views / "train" / "view_90" / record.relpath
    victim.unlink()
    # up front, when the training items are built
    with pytest.raises(DatasetError, match=re.escape(str(victim))):
        method.loader(0)
    # and when an item is loaded (a file gone after the check)
    shutil.copy(views / "train" / "view_45" / record.relpath, victim)
    method.labels[:] = 0  # as if clustered: every image is used
    method.loader(0)
    for angle in cfg.gcl.angles:
        (views / "train" / f"view_{angle}" / record.relpath).unlink()
    with pytest.raises(DatasetError, match=rf"view_\d+/{re.escape(record.relpath)} .* does not exist"):
        method._items[3]


def test_true_views_on_a_dataset_without_them_is_a_config_error_up_front(tmp_path):
    root = add_body_structures(make_stripe_people(tmp_path / "people", train_ids=4, test_ids=2, per_cam=2, cams=2,
                                                  height=H, width=W), H, W)
    ds = build_dataset("market1501", root)
    base = [f"data.root={root}", "data.name=market1501", f"run.out={tmp_path / 'run'}"]
    with pytest.raises(ConfigError, match=r"gcl.views=true_view .*views"):
        build_method(load_config(None, [*TINY_GCL, *base, "gcl.views=true_view"]), ds, CPU)
    # where the switch plays no part (stage 2: no view contrast) it is only a warning
    build_method(load_config(None, [*TINY_GCL, *base, "gcl.views=true_view", "gcl.stage=2", "gcl.losses=[gan]"]),
                 ds, CPU)
    with pytest.raises(ConfigError, match="gcl.views"):
        build_method(load_config(None, [*TINY_GCL, *base, "gcl.views=mirror"]), ds, CPU)
    with pytest.raises(ConfigError, match="the oracle is true_view"):  # `views: true` in YAML is a boolean
        build_method(load_config(None, [*TINY_GCL, *base, "gcl.views=true"]), ds, CPU)
    with pytest.raises(ConfigError, match="gcl.views='mirror' is not one of"):
        validate_config(load_config(None, [*TINY_GCL, *base, "gcl.views=mirror"]))


# -- optim.nesterov and gcl.gd_schedule ------------------------------------------------------------------

# -- gcl.generation_trains_encoder --------------------------------------------------------------------------

def test_generation_losses_can_be_kept_off_the_identity_encoder(synth, tmp_path):
    # With the switch off, Eid's step is the one the view-invariant losses alone would give: the same as
    # a run whose generation losses weigh nothing. The generator still learns from both.
    ds = build_dataset("synthreid", synth)
    after = {}
    for name, extra in (("off", ["gcl.generation_trains_encoder=false"]),
                        ("weightless", ["gcl.gan_weight=0", "gcl.lambda_img=0", "gcl.lambda_feat=0"]),
                        ("on", [])):
        method, batch = first_batch(cfg_for(synth, tmp_path / name, "optim.lr=0.05", *extra), ds)
        before = {k: v.clone() for k, v in method.encoder.state_dict().items()}
        gen_before = [p.detach().clone() for p in method.models["generator"].parameters()]
        losses = method.step(batch)
        after[name] = ({k: v.clone() for k, v in method.encoder.state_dict().items()},
                       [p.detach().clone() for p in method.models["generator"].parameters()], losses)
        assert any(not torch.equal(before[k], v) for k, v in after[name][0].items()), name  # Eid moved
        assert any(not torch.equal(a, b) for a, b in zip(gen_before, after[name][1])), name  # G moved
    off, weightless, on = after["off"], after["weightless"], after["on"]
    for k, v in off[0].items():
        assert torch.allclose(v.float(), weightless[0][k].float(), rtol=1e-5, atol=1e-7), k
    assert any(not torch.allclose(v.float(), on[0][k].float(), atol=1e-6) for k, v in off[0].items())
    # the generator's step differs from the weightless run (it does get the generation losses)
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(off[1], weightless[1]))
    # the same losses were computed: only where their gradients go changed
    for k in GENERATION_LOSSES + ("lvi", "lvi2", "lvi3"):
        assert torch.allclose(off[2][k], on[2][k], rtol=1e-5, atol=1e-7), k
    assert load_config(None).gcl.generation_trains_encoder is True  # paper and official code
    # logged beside the losses: the mean cosine of Eid(x) and Eid(x'_new), before the step
    assert -1 <= float(off[2]["view_cos"]) <= 1 and torch.equal(off[2]["view_cos"], on[2]["view_cos"])


def test_nesterov_reaches_the_identity_encoder_sgd(synth, tmp_path):
    ds = build_dataset("synthreid", synth)
    for flag in (True, False):
        method = build_method(cfg_for(synth, tmp_path, "optim.name=sgd", f"optim.nesterov={flag}"), ds, CPU)
        groups = method.optimizers["identity_encoder"].param_groups
        assert all(g["nesterov"] is flag for g in groups)
        assert all("nesterov" not in g for name in ("generator", "discriminator")
                   for g in method.optimizers[name].param_groups)  # Adam
    assert load_config(None).optim.nesterov is False  # the default
    assert load_config(PACKAGE_CONFIGS / "gcl_official.yaml").optim.nesterov is True


def test_progress_line_shows_the_identity_encoders_learning_rate(synth, tmp_path, caplog):
    # stage 3 has three optimisers (G and D first, Adam at gcl.lr_g); the line shows the one that
    # trains the encoder, also in contrast-only mode where G and D do not step
    ds = build_dataset("synthreid", synth)
    stage3 = build_method(cfg_for(synth, tmp_path, "optim.lr=3.5e-4", "gcl.lr_g=1e-4"), ds, CPU)
    assert stage3.logged_optimizer() is stage3.optimizers["identity_encoder"]
    stage2 = build_method(cfg_for(synth, tmp_path, "gcl.stage=2", "gcl.losses=[gan]"), ds, CPU)
    assert stage2.logged_optimizer() is stage2.optimizers["generator"]  # the encoder does not learn
    cfg = cfg_for(synth, tmp_path / "run", "gcl.losses=[contrast_only]", "optim.lr=3.5e-4", "gcl.lr_g=1e-4",
                  "train.epochs=1", "train.iters_per_epoch=1", "train.log_every=1")
    with caplog.at_level("INFO", logger="gclreid"):
        train(cfg, progress=True)
    lines = [r.getMessage() for r in caplog.records if " it 1/1 " in r.getMessage()]
    assert len(lines) == 1 and "lr 3.50e-04" in lines[0], lines


def gd_lrs(method, cfg, epoch_progress):
    for opt in method.optimizers.values():  # what the training loop does every iteration
        apply_lr_schedule(opt, cfg.optim, epoch_progress, cfg.train.epochs)
    return {name: opt.param_groups[0]["lr"] for name, opt in method.optimizers.items()}


@pytest.mark.parametrize("schedule,before,after", [
    ("paper", 1.0, 0.1), ("official_current_torch", 1.0, 1.0), ("official_torch12", 0.1, 0.1)])
def test_gd_learning_rate_under_each_schedule(synth, tmp_path, schedule, before, after):
    ds = build_dataset("synthreid", synth)
    cfg = cfg_for(synth, tmp_path, f"gcl.gd_schedule={schedule}", "train.epochs=4", "optim.milestones=[2]",
                  "optim.gamma=0.1", "gcl.lr_g=1e-4", "gcl.lr_d=2e-4", "optim.lr=3.5e-4")
    method = build_method(cfg, ds, CPU)
    for progress, factor in ((0.5, before), (2.5, after)):
        lrs = gd_lrs(method, cfg, progress)
        assert lrs["generator"] == pytest.approx(1e-4 * factor) and lrs["discriminator"] == pytest.approx(2e-4 * factor)
        # the identity encoder always follows the optim schedule (x0.1 at the milestone)
        assert lrs["identity_encoder"] == pytest.approx(3.5e-4 * (1.0 if progress < 2 else 0.1))
    # stage 2 (constant lr in the official code as here) is not affected
    stage2 = cfg_for(synth, tmp_path, "gcl.stage=2", "gcl.losses=[gan]", f"gcl.gd_schedule={schedule}",
                     "train.epochs=4", "optim.milestones=[2]", "optim.schedule=constant")
    method2 = build_method(stage2, ds, CPU)
    assert gd_lrs(method2, stage2, 0.5)["generator"] == pytest.approx(1e-4)


def test_gd_schedule_through_the_training_loop(synth, tmp_path):
    # two epochs of one iteration, milestone at epoch 1: after training, G stays at lr_g (official code on
    # current torch) while the identity encoder has decayed
    cfg = cfg_for(synth, tmp_path / "loop", "gcl.gd_schedule=official_current_torch", "train.epochs=2",
                  "train.iters_per_epoch=1", "optim.milestones=[1]", "optim.name=sgd", "optim.nesterov=true")
    train(cfg, progress=False)
    optimizers = read_checkpoint(tmp_path / "loop" / "last.pt")["optimizers"]
    assert optimizers["generator"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    assert optimizers["discriminator"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    eid = optimizers["identity_encoder"]["param_groups"][0]
    assert eid["lr"] == pytest.approx(3.5e-5) and eid["nesterov"] is True


def test_bad_gd_schedule_settings_are_config_errors(synth, tmp_path):
    ds = build_dataset("synthreid", synth)
    with pytest.raises(ConfigError, match="gcl.gd_schedule"):
        build_method(cfg_for(synth, tmp_path, "gcl.gd_schedule=torch12"), ds, CPU)
    with pytest.raises(ConfigError, match="official_torch12 .* cosine"):
        build_method(cfg_for(synth, tmp_path, "gcl.gd_schedule=official_torch12", "optim.schedule=cosine"), ds, CPU)
    with pytest.raises(ConfigError, match="gcl.gd_schedule='torch12' is not one of"):
        validate_config(cfg_for(synth, tmp_path, "gcl.gd_schedule=torch12"))
    with pytest.raises(ConfigError, match="official_torch12 .* cosine"):
        validate_config(cfg_for(synth, tmp_path, "gcl.gd_schedule=official_torch12", "optim.schedule=cosine"))

"""GCL stages 2 and 3 on a tiny dataset with structure maps (CPU)."""
import numpy as np
import pytest
import torch

from gclreid.checkpoint import load_checkpoint, read_checkpoint
from gclreid.config import ConfigError, load_config
from gclreid.data import build_dataset
from gclreid.engine import build_method, train
from gclreid.runtime import seed_everything

from conftest import TINY_GENERATOR, add_body_structures, make_stripe_people

H, W = 64, 32
TINY_GCL = [
    "data.name=market1501", f"data.height={H}", f"data.width={W}", "data.workers=0",
    "model.arch=resnet18", "model.pretrained=false", "model.embed_dim=32",
    *TINY_GENERATOR, "generator.mlp_dim=32",
    "train.method=gcl", "train.batch_size=4", "train.log_every=100", "train.eval_every=0", "eval.batch_size=32",
    "cluster.k1=6", "cluster.k2=2", "cluster.eps=0.5", "gcl.num_negatives=16", "run.seed=0",
]


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    root = make_stripe_people(tmp_path_factory.mktemp("gcl") / "people", train_ids=6, test_ids=3, per_cam=2,
                              cams=2, height=H, width=W)
    return add_body_structures(root, H, W)


def cfg_for(root, out, *extra):
    return load_config(None, [*TINY_GCL, f"data.root={root}", f"run.out={out}", *extra])


def recon_loss(method, batch):
    with torch.no_grad():
        for m in method.models.values():
            m.eval()
        r = method.generate(batch["image"], batch["structure"], batch["structure_new"])
        return float((r["x_ori"] - batch["image"]).abs().mean())


def test_stage2_trains_the_generator_and_leaves_the_encoder_unchanged(people, tmp_path):
    # gan_weight=0 isolates the reconstruction objective: at this size the adversarial term dominates
    # the first hundred iterations (D still trains; stage 3's test runs the adversarial path).
    cfg = cfg_for(people, tmp_path / "s2", "gcl.stage=2", "gcl.losses=[gan]", "train.epochs=2",
                  "train.iters_per_epoch=20", "gcl.lr_g=3e-3", "gcl.lr_d=3e-3", "optim.schedule=constant",
                  "gcl.gan_weight=0")
    ds = build_dataset("market1501", people)
    torch.manual_seed(0)
    probe = build_method(cfg, ds, torch.device("cpu"))
    loader = probe.loader(0)
    batch = next(iter(loader))
    before = recon_loss(probe, batch)
    encoder_before = {k: v.clone() for k, v in probe.encoder.state_dict().items()}
    train(cfg, progress=False)
    after_ckpt = read_checkpoint(tmp_path / "s2" / "last.pt")
    trained = build_method(cfg, ds, torch.device("cpu"))
    load_checkpoint(tmp_path / "s2" / "last.pt", models=trained.models)
    # the identity encoder (weights and BN running statistics) is exactly the initial one
    for k, v in after_ckpt["models"]["identity_encoder"].items():
        assert torch.equal(v, encoder_before[k]), k
    assert recon_loss(trained, batch) < before
    assert set(after_ckpt["optimizers"]) == {"generator", "discriminator"}
    assert (tmp_path / "s2" / "grids" / "epoch_002.png").is_file()


def test_stage3_memory_labels_and_resume_round_trip(people, tmp_path):
    s3 = ["gcl.stage=3", "train.epochs=1", "train.iters_per_epoch=3", "optim.lr=1e-3"]
    cfg = cfg_for(people, tmp_path / "s3", *s3)
    record = train(cfg, progress=False)
    assert record["clusters"]["num_clusters"] >= 1
    assert {"lvi", "lvi2", "lvi3", "l_img", "l_feat", "g_adv"} <= set(record["losses"])
    payload = read_checkpoint(tmp_path / "s3" / "last.pt")
    assert set(payload["optimizers"]) == {"generator", "discriminator", "identity_encoder"}
    memory = payload["extra"]["memory"]["features"]
    assert memory.shape == (6 * 2 * 2, 32)
    assert torch.allclose(memory.norm(dim=1), torch.ones(len(memory)), atol=1e-5)
    labels = payload["extra"]["labels"]
    assert np.array_equal(memory_labels := payload["extra"]["memory"]["labels"].numpy(), labels)
    # a fresh method restored from the checkpoint has the same memory and labels
    ds = build_dataset("market1501", people)
    restored = build_method(cfg, ds, torch.device("cpu"))
    load_checkpoint(tmp_path / "s3" / "last.pt", models=restored.models, optimizers=restored.optimizers)
    restored.load_state(payload["extra"])
    assert torch.equal(restored.contrast.memory.features, memory)
    assert np.array_equal(restored.labels, memory_labels) and restored.memory_ready
    # and training resumes from it for one more epoch
    more = train(cfg_for(people, tmp_path / "s3", *s3[:1], "train.epochs=2", *s3[2:]), resume="auto", progress=False)
    assert more["epoch"] == 2


def test_contrast_only_ablation_trains_only_the_encoder(people, tmp_path):
    cfg = cfg_for(people, tmp_path / "c", "gcl.stage=3", "gcl.losses=[contrast_only]", "train.epochs=1",
                  "train.iters_per_epoch=2")
    record = train(cfg, progress=False)
    assert set(record["losses"]) == {"contrast_only", "loss"}


def test_bad_gcl_settings_are_config_errors(people, tmp_path):
    ds = build_dataset("market1501", people)
    with pytest.raises(ConfigError, match="stage"):
        build_method(cfg_for(people, tmp_path, "gcl.stage=1"), ds, torch.device("cpu"))
    with pytest.raises(ConfigError, match="losses"):
        build_method(cfg_for(people, tmp_path, "gcl.losses=[lvi4]"), ds, torch.device("cpu"))
    with pytest.raises(ConfigError, match="fake_bn"):
        build_method(cfg_for(people, tmp_path, "gcl.fake_bn=sometimes"), ds, torch.device("cpu"))


@pytest.mark.parametrize("fake_bn", ["update", "freeze"])
def test_stage3_bn_running_statistics_see_generated_images_unless_frozen(people, tmp_path, fake_bn):
    import copy
    cfg = cfg_for(people, tmp_path, "gcl.stage=3", f"gcl.fake_bn={fake_bn}")
    ds = build_dataset("market1501", people)
    torch.manual_seed(0)
    method = build_method(cfg, ds, torch.device("cpu"))
    method.start_epoch(0)
    batch = next(iter(method.loader(0)))
    method.train_mode()
    # what the running statistics become from the real images alone: one train-mode pass on a copy
    real_only = copy.deepcopy(method.encoder)
    with torch.no_grad():
        real_only(batch["image"])
    method.step(batch)
    key = "backbone.bn1.running_mean"
    got, real = method.encoder.state_dict()[key], real_only.state_dict()[key]
    if fake_bn == "freeze":
        assert torch.allclose(got, real, atol=1e-6)
    else:  # the three passes on generated images moved them further
        assert not torch.allclose(got, real, atol=1e-4)


@pytest.mark.parametrize("fake_bn", ["update", "freeze"])
def test_checkpointing_the_decoder_changes_nothing_but_memory(people, tmp_path, fake_bn):
    ds = build_dataset("market1501", people)
    results = []
    for ckpt in (False, True):
        cfg = cfg_for(people, tmp_path, "gcl.stage=3", f"gcl.fake_bn={fake_bn}", f"gcl.checkpoint_decoder={ckpt}",
                      "optim.lr=1e-2")
        seed_everything(0)  # the structure angle of each item is drawn with Python's random
        method = build_method(cfg, ds, torch.device("cpu"))
        method.start_epoch(0)
        batch = next(iter(method.loader(0)))
        method.train_mode()
        losses = method.step(batch)
        results.append((losses, method.encoder.state_dict(), method.models["generator"].state_dict()))
    (l0, e0, g0), (l1, e1, g1) = results
    for k in l0:
        assert torch.allclose(l0[k], l1[k], rtol=1e-5, atol=1e-6), k
    for a, b in ((e0, e1), (g0, g1)):  # parameters after the update and BN running statistics
        for k in a:
            assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-6), k

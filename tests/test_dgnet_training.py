"""DG-Net on a tiny labelled synthetic set (CPU): a few iterations, every loss term against its
equation on the method's own forward pass, gradient routing, the teacher trained into the run folder,
the loss ramps across save/resume, `gclreid evaluate` on a DG-Net checkpoint, and clear errors."""
import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gclreid.checkpoint import read_checkpoint, save_checkpoint
from gclreid.cli import main
from gclreid.config import ConfigError, load_config
from gclreid.data import ReIDDataset, build_dataset
from gclreid.engine import build_method, train
from gclreid.errors import CheckpointError, DatasetError
from gclreid.losses import to_gray
from gclreid.models import build_identity_encoder

from conftest import TINY_GENERATOR, ConvDtypes, make_stripe_people

H, W = 64, 32
TRAIN_IDS = 6
TINY = [
    "data.name=market1501", f"data.height={H}", f"data.width={W}", "data.workers=0",
    "model.arch=resnet18", "model.pretrained=false", "model.embed_dim=16",
    *TINY_GENERATOR, "generator.mlp_dim=16",
    "train.method=dgnet", "train.batch_size=4", "train.log_every=100", "train.eval_every=0", "eval.batch_size=64",
    "optim.name=sgd", "optim.lr=0.002", "optim.schedule=constant", "dgnet.bottleneck=16", "dgnet.gen_eval_images=3",
    "dgnet.lambda_prim.start=1", "dgnet.lambda_prim.iters=2", "dgnet.lambda_code.start=1",
    "dgnet.lambda_code.iters=2", "dgnet.lambda_cycle.start=1", "dgnet.lambda_cycle.iters=2", "run.seed=0",
]


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    return make_stripe_people(tmp_path_factory.mktemp("dgnet") / "people", train_ids=TRAIN_IDS, test_ids=3,
                              per_cam=2, cams=2, height=H, width=W)


def fake_teacher(path, root, classes=TRAIN_IDS, method="supervised", seed=0):
    """A `supervised` checkpoint with a random ResNet-18 teacher (no training needed)."""
    torch.manual_seed(seed)
    model = {"arch": "resnet18", "pretrained": False, "embed_dim": 16}
    encoder = build_identity_encoder(model)
    classifier = nn.Linear(16, classes, bias=False)
    config = {"train": {"method": method}, "model": model, "data": {"name": "market1501", "root": str(root)}}
    save_checkpoint(path, models={"identity_encoder": encoder, "classifier": classifier}, config=config)
    return path


@pytest.fixture(scope="module")
def teacher(people, tmp_path_factory):
    return fake_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pt", people)


def cfg_for(root, out, *extra):
    return load_config(None, [*TINY, f"data.root={root}", f"run.out={out}", *extra])


def test_a_few_iterations_log_every_term_and_write_grids(people, teacher, tmp_path):
    cfg = cfg_for(people, tmp_path / "run", f"dgnet.teacher={teacher}", "train.epochs=2", "train.iters_per_epoch=2",
                  "dgnet.grid_every=3")
    record = train(cfg, progress=False)
    assert {"adv", "img1", "img2", "id_gen", "code_s", "code_f", "cycle", "id_real", "fine_real", "prim", "fine",
            "d_total", "d_r1", "loss"} <= set(record["losses"])
    assert all(np.isfinite(v) for v in record["losses"].values())
    assert record["iteration"] == 4 and record["loss_weights"]["prim"] == 2.0
    assert record["loss_weights"]["fine"] == pytest.approx(0.4)
    for key in ("eval", "eval_prim", "eval_fine", "eval_teacher"):
        assert 0 < record[key]["mAP"] <= 1
    gen = record["generation"]
    assert gen["images"] == 3 and 0 < gen["ssim_generated"] <= 1 and 0 < gen["ssim_real"] <= 1
    payload = read_checkpoint(tmp_path / "run" / "last.pt")
    assert set(payload["models"]) == {"appearance_encoder", "generator", "discriminator"}
    assert set(payload["optimizers"]) == {"appearance_encoder", "generator", "discriminator"}
    groups = payload["optimizers"]["appearance_encoder"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([0.002, 0.02]) and groups[0]["nesterov"]
    assert payload["extra"]["ramps"]["iteration"] == 4
    grids = tmp_path / "run" / "grids"
    for name in ("swap_epoch_002.png", "test_swap_epoch_002.png", "swap_iter_0000003.png"):
        assert (grids / name).is_file(), name
    # `gclreid evaluate` builds the appearance encoder from the checkpoint and uses the DG-Net feature
    where = ["--dataset", "market1501", "--root", str(people), "--out", str(tmp_path / "ev"), "eval.batch_size=64"]
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "last.pt"), *where]) == 0
    assert json.loads((tmp_path / "ev" / "evaluate.json").read_text())["mAP"] == pytest.approx(record["eval"]["mAP"])
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "last.pt"), *where, "dgnet.test_feature=fine"]) == 0
    report = json.loads((tmp_path / "ev" / "evaluate.json").read_text())
    assert report["mAP"] == pytest.approx(record["eval_fine"]["mAP"]) and report["feature_dim"] == 16


def first_batch(method):
    torch.manual_seed(0)
    return next(iter(method.loader(0)))


def test_every_loss_term_against_its_equation(people, teacher, tmp_path):
    # no erasing (the ID logits then come from the clean images); E_s always re-encodes detached images
    cfg = cfg_for(people, tmp_path, f"dgnet.teacher={teacher}", "data.transforms.erasing_p=0",
                  "dgnet.structure_reencode_p=1")
    m = build_method(cfg, build_dataset("market1501", people), torch.device("cpu"))
    batch = first_batch(m)
    for net in m.models.values():
        net.eval()  # BN on running statistics and no dropout: every forward is deterministic
    ea, gen, D = m.encoder, m.models["generator"], m.models["discriminator"]
    w = {"prim": 2.0, "fine": 0.4, "code": 1.0, "cycle": 2.0}
    with torch.no_grad():
        r = m.forward(batch)
        losses = m.generator_losses(r, w)
        x = {s: batch[f"image_{s}"] for s in ("a", "pa", "b", "pb")}
        y = {s: batch[f"label_{s}"] for s in ("a", "pa", "b", "pb")}
        assert (y["a"] != y["b"]).all() and (y["pa"] == y["a"]).all()
        f = {s: ea(x[s]).parts for s in x}
        s = {k: gen.encode_structure(to_gray(x[k])) for k in ("a", "b")}
        G = gen.decode

        def l1(a, b):
            return (a - b).abs().mean()

        # Eq. 1 and Eq. 2 (self-identity: own code, then the positive's code), for both streams
        assert torch.allclose(losses["img1"], l1(x["a"], G(s["a"], f["a"])) + l1(x["b"], G(s["b"], f["b"])), atol=1e-5)
        assert torch.allclose(losses["img2"], l1(x["a"], G(s["a"], f["pa"])) + l1(x["b"], G(s["b"], f["pb"])),
                              atol=1e-5)
        x_ba, x_ab = G(s["b"], f["a"]), G(s["a"], f["b"])  # x_b^a, x_a^b
        assert torch.allclose(r["x_ba"], x_ba, atol=1e-5)
        # Eq. 4 and Eq. 6 through a frozen copy of Ea (BN on the generated batch, no dropout)
        frozen = copy.deepcopy(ea).eval()
        for mod in frozen.modules():
            if isinstance(mod, nn.BatchNorm2d | nn.BatchNorm1d):
                mod.train()
        re = frozen(torch.cat([x_ba, x_ab]))
        n = len(x_ba)
        f_rec = re.flat_parts()
        flat = {k: v.reshape(n, -1) for k, v in f.items()}
        assert torch.allclose(losses["code_f"], l1(flat["a"], f_rec[:n]) + l1(flat["b"], f_rec[n:]), atol=1e-5)
        ce = F.cross_entropy
        assert torch.allclose(losses["id_gen"], ce(re.logits_prim[:n], y["a"]) + ce(re.logits_prim[n:], y["b"]),
                              atol=1e-5)
        # Eq. 5: E_s(G(a_i, s_j)) against s_j
        s_rec_a, s_rec_b = gen.encode_structure(to_gray(x_ab)), gen.encode_structure(to_gray(x_ba))
        assert torch.allclose(losses["code_s"], l1(s["a"], s_rec_a) + l1(s["b"], s_rec_b), atol=1e-5)
        assert torch.allclose(losses["cycle"], l1(x["a"], G(s_rec_a, f_rec[:n])) + l1(x["b"], G(s_rec_b, f_rec[n:])),
                              atol=1e-5)
        # Eq. 3 on the four streams of real images
        logit = {k: ea(x[k]).logits_prim for k in x}
        assert torch.allclose(losses["id_real"], sum(ce(logit[k], y[k]) for k in x), atol=1e-5)
        fine = {k: ea(x[k]).logits_fine for k in ("a", "b")}
        assert torch.allclose(losses["fine_real"], ce(fine["a"], y["a"]) + ce(fine["b"], y["b"]), atol=1e-5)
        # Eq. 8: KL(q_teacher || p_student) on each generated batch; q averages the mirror (teacher BN on batch stats)
        t = copy.deepcopy(m.teacher)
        for mod in t.modules():
            if isinstance(mod, nn.BatchNorm2d | nn.BatchNorm1d):
                mod.train()
        both = torch.cat([x_ba, x_ab])
        q = (torch.softmax(t(both), 1) + torch.softmax(t(torch.flip(both, dims=[3])), 1)) / 2
        student = ea(both)
        p = torch.softmax(student.logits_prim, 1)

        def kl(q, p):
            return (q * torch.log(q / p)).sum(1).mean()
        assert torch.allclose(losses["prim"], kl(q[:n], p[:n]) + kl(q[n:], p[n:]), atol=1e-5)
        # Eq. 9: the fine head classifies x_ba = G(s_b, f_a) as b (structure provider)
        assert torch.allclose(losses["fine"], ce(student.logits_fine[:n], y["b"]) + ce(student.logits_fine[n:], y["a"]),
                              atol=1e-5)
        # Eq. 7 (generator side): Σ_fakes Σ_scales 2·mean((D(fake) − 1)²)
        assert torch.allclose(losses["adv"], sum(2 * ((o - 1) ** 2).mean() for fk in (x_ba, x_ab) for o in D(fk)),
                              atol=1e-5)
    # Eq. 10's weights
    weights = {"adv": 1, "img1": 5, "img2": 5, "id_gen": 0.5, "code_s": 1, "code_f": 1, "cycle": 2, "id_real": 1,
               "fine_real": 0.4, "prim": 2, "fine": 0.4}
    assert torch.allclose(m.total_loss(losses, w), sum(weights[k] * v for k, v in losses.items()))


GENERATION = ("adv", "img1", "img2", "id_gen", "code_s", "code_f", "cycle")
REID = ("id_real", "fine_real", "prim", "fine")


@pytest.mark.parametrize("detach", [True, False])
def test_gradient_routing(people, teacher, tmp_path, detach):
    cfg = cfg_for(people, tmp_path, f"dgnet.teacher={teacher}", f"dgnet.detach_appearance={detach}",
                  "dgnet.structure_reencode_p=0")
    m = build_method(cfg, build_dataset("market1501", people), torch.device("cpu"))
    m.train_mode()
    r = m.forward(first_batch(m))
    losses = m.generator_losses(r, {"prim": 1.0, "fine": 0.2, "code": 1.0, "cycle": 1.0})
    ea, gen, D = m.encoder, m.models["generator"], m.models["discriminator"]

    def grads(names):
        for net in (ea, gen, D):
            net.zero_grad(set_to_none=True)
        sum(losses[k] for k in names).backward(retain_graph=True)
        return {name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
                for name, net in (("ea", ea, ), ("gen", gen), ("D", D))}
    # generation losses train G (and Ea only when the code is not detached); the frozen copies never
    assert grads(GENERATION)["gen"] and grads(GENERATION)["ea"] == (not detach)
    # Eq. 4 / 6 re-encode with a frozen Ea: they reach G through the generated image, Ea only via its code
    assert grads(["code_f", "id_gen"]) == {"ea": not detach, "gen": True, "D": False}
    # structure_reencode_p=0: Eq. 5 re-encodes with a frozen E_s, so it reaches the decoder and MLPs
    # through the generated image (and E_s only through the code that generated it)
    grads(["code_s"])
    assert any(p.grad is not None for p in gen.decoder.parameters())
    assert any(p.grad is not None for p in gen.adain_mlps.parameters())
    # re-ID losses train Ea only (generated images are detached for Eq. 8 / 9)
    assert grads(REID) == {"ea": True, "gen": False, "D": False}
    # the teacher is never trained
    assert all(p.grad is None and not p.requires_grad for p in m.teacher.parameters())


def test_teacher_trained_in_the_run_folder_and_ramp_survives_resume(people, tmp_path):
    teach = ["dgnet.teacher_overrides=[train.epochs=1,train.batch_size=8,train.num_instances=2,train.eval_every=0]",
             "run.deterministic=true", "dgnet.lambda_prim.start=2", "dgnet.lambda_prim.iters=4", "train.eval_every=1"]
    full = train(cfg_for(people, tmp_path / "full", *teach, "train.epochs=2", "train.iters_per_epoch=2"),
                 progress=False)
    teacher_ckpt = tmp_path / "full" / "teacher" / "last.pt"
    assert read_checkpoint(teacher_ckpt)["config"]["train"]["method"] == "supervised"
    stamp = teacher_ckpt.stat().st_mtime_ns
    # the same run stopped after epoch 1 and resumed: the teacher is reused, the ramp continues
    part = cfg_for(people, tmp_path / "part", *teach, "train.epochs=1", "train.iters_per_epoch=2")
    first = train(part, progress=False)
    assert first["losses"]["w_prim"] == 0.0 and first["iteration"] == 2
    assert first["loss_weights"]["prim"] == pytest.approx(0.5)  # what iteration 2 will use
    part_teacher = tmp_path / "part" / "teacher" / "last.pt"
    part_stamp = part_teacher.stat().st_mtime_ns
    resumed = train(cfg_for(people, tmp_path / "part", *teach, "train.epochs=2", "train.iters_per_epoch=2"),
                    resume="auto", progress=False)
    assert part_teacher.stat().st_mtime_ns == part_stamp and teacher_ckpt.stat().st_mtime_ns == stamp
    assert resumed["iteration"] == full["iteration"] == 4
    # weights at iterations 2 and 3 were 0.5 and 1.0 (start 2, 4 iterations to λprim = 2): not restarted at 0
    assert resumed["losses"]["w_prim"] == pytest.approx(0.75) == full["losses"]["w_prim"]
    assert resumed["loss_weights"] == full["loss_weights"]
    for key, value in full["losses"].items():
        assert resumed["losses"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def relabel(records, pid_of):
    from dataclasses import replace
    return [replace(r, pid=pid_of(r)) for r in records]


def test_clear_errors(people, teacher, tmp_path):
    ds = build_dataset("market1501", people)
    cpu = torch.device("cpu")

    def build(*extra, dataset=ds):
        return build_method(cfg_for(people, tmp_path, f"dgnet.teacher={teacher}", *extra), dataset, cpu)
    unlabeled = ReIDDataset.from_records(people, relabel(ds.train, lambda r: -1), name="market1501")
    with pytest.raises(DatasetError, match="needs identity labels"):
        build(dataset=unlabeled)
    # one identity keeps a single image
    lonely = [r for r in ds.train if r.pid != 1] + [next(r for r in ds.train if r.pid == 1)]
    single = ReIDDataset.from_records(people, lonely, ds.query, ds.gallery, name="market1501")
    with pytest.raises(DatasetError, match="single image.*single_image_ids=drop"):
        build(dataset=single)
    build("dgnet.single_image_ids=drop", dataset=single)  # the explicit choice works
    with pytest.raises(ConfigError, match="dgnet.num_classes=9.*has 6 identities"):
        build("dgnet.num_classes=9")
    with pytest.raises(ConfigError, match="single_image_ids"):
        build("dgnet.single_image_ids=maybe")
    with pytest.raises(ConfigError, match="teacher_bn"):
        build("dgnet.teacher_bn=frozen")
    with pytest.raises(ConfigError, match="test_feature"):
        build("dgnet.test_feature=both")
    with pytest.raises(ConfigError, match="eval_features"):
        build("dgnet.eval_features=[prim,coarse]")
    wrong = fake_teacher(tmp_path / "wrong.pt", people, classes=5)
    with pytest.raises(CheckpointError, match="classifies 5 identities.*has 6"):
        build(f"dgnet.teacher={wrong}")
    not_supervised = fake_teacher(tmp_path / "tmp.pt", people, method="tmp")
    with pytest.raises(CheckpointError, match="must be a `supervised` run"):
        build(f"dgnet.teacher={not_supervised}")
    with pytest.raises(CheckpointError, match="does not exist"):
        build(f"dgnet.teacher={tmp_path / 'missing.pt'}")
    with pytest.raises(ConfigError, match="trained by the `supervised` method"):
        build("dgnet.teacher=''", "dgnet.teacher_config=tmp_base.yaml")


def test_bf16_autocast_on_the_cpu_trains_every_term(people, teacher, tmp_path):
    with ConvDtypes() as convs:
        record = train(cfg_for(people, tmp_path / "bf16", f"dgnet.teacher={teacher}", "train.epochs=1",
                               "train.iters_per_epoch=2", "train.amp_cpu=true"), progress=False)
    assert torch.bfloat16 in convs.seen
    assert {"adv", "img1", "id_gen", "prim", "d_total"} <= set(record["losses"])
    assert all(np.isfinite(v) for v in record["losses"].values())
    weights = read_checkpoint(tmp_path / "bf16" / "last.pt")["models"]["generator"]
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())

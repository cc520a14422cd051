"""DG-Net's loss functions against direct transcriptions of the paper's equations (and of the official
code where it fixes what the paper leaves open), the loss ramps and the frozen forward pass."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from gclreid.config import ConfigError, DGNetConfig
from gclreid.engine.dgnet import LossRamps, frozen_forward
from gclreid.losses import (fine_grained_loss, generated_identity_loss, paired_discriminator_loss,
                            paired_generator_loss, soft_label_kl, teacher_soft_labels, to_gray)
from gclreid.models import MultiScaleDiscriminator, init_weights


def test_gray_is_the_plain_channel_mean():
    x = torch.randn(2, 3, 8, 4)
    g = to_gray(x)
    assert g.shape == (2, 1, 8, 4)
    assert torch.allclose(g[:, 0], (x[:, 0] + x[:, 1] + x[:, 2]) / 3)
    with pytest.raises(ValueError, match="B×3×H×W"):
        to_gray(torch.randn(2, 1, 8, 4))


def test_eq8_kl_divergence_with_teacher_soft_labels():
    torch.manual_seed(0)
    logits = torch.randn(4, 6, dtype=torch.float64)
    q = torch.softmax(torch.randn(4, 6, dtype=torch.float64), 1)
    q[0, 2] = 0  # 0 · log 0 = 0
    q[0] /= q[0].sum()
    p = torch.softmax(logits, 1)
    terms = torch.where(q > 0, q * torch.log(p / q), torch.zeros_like(q))
    expected = -terms.sum(1).mean()  # Eq. 8: E[-Σ_k q log(p / q)]
    assert torch.allclose(soft_label_kl(logits, q).double(), expected, atol=1e-6)
    assert soft_label_kl(torch.log(q[1:] + 1e-12), q[1:]).abs() < 1e-5  # p = q → 0
    with pytest.raises(ValueError, match="same|differ"):
        soft_label_kl(logits, q[:, :5])


def test_soft_label_is_the_mean_of_image_and_mirror_softmax():
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    q = teacher_soft_labels(a, b)
    assert torch.allclose(q, (torch.softmax(a, 1) + torch.softmax(b, 1)) / 2)
    assert torch.allclose(q.sum(1), torch.ones(3))
    assert torch.allclose(teacher_soft_labels(a), torch.softmax(a, 1))


def test_eq6_and_eq9_use_the_appearance_and_the_structure_label():
    torch.manual_seed(1)
    logits_ba, logits_ab = torch.randn(3, 5), torch.randn(3, 5)
    l_a, l_b = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 0])

    def nll(logits, y):  # E[-log p(y|x)]
        return -torch.log_softmax(logits, 1)[torch.arange(len(y)), y].mean()
    # x_ba = G(s_b, f_a): Eq. 6 → y_a (appearance provider), Eq. 9 → y_b (structure provider)
    assert torch.allclose(generated_identity_loss(logits_ba, logits_ab, l_a, l_b),
                          nll(logits_ba, l_a) + nll(logits_ab, l_b))
    assert torch.allclose(fine_grained_loss(logits_ba, logits_ab, l_a, l_b),
                          nll(logits_ba, l_b) + nll(logits_ab, l_a))


def tiny_d():
    torch.manual_seed(0)
    return init_weights(MultiScaleDiscriminator(3, dim=4, n_layer=1, n_res=1, num_scales=2), "gaussian").double()


def official_dis_loss(D, fake, real, r1_weight):
    """calc_dis_loss of the official code (lsgan + R1 on reals), one (fake, real) pair."""
    real = real.detach().requires_grad_(True)
    loss = 0
    for out_f, out_r in zip(D(fake.detach()), D(real)):
        loss = loss + torch.mean(out_f ** 2) + torch.mean((out_r - 1) ** 2)
        grad, = torch.autograd.grad(out_r.sum(), real, create_graph=True)
        loss = loss + r1_weight * grad.pow(2).reshape(real.shape[0], -1).sum(1).mean()
    return loss


def test_eq7_lsgan_pairs_equal_the_official_sum_of_two_calls():
    D = tiny_d()
    x_a, x_b, x_ba, x_ab = (torch.randn(3, 3, 16, 8, dtype=torch.float64) for _ in range(4))
    ours = paired_discriminator_loss(D, [(x_a, x_ba), (x_b, x_ab)], "lsgan", r1_weight=0.01)
    ours.total.backward()
    grads = [p.grad.clone() for p in D.parameters()]
    D.zero_grad()
    official = official_dis_loss(D, x_ba, x_a, 0.01) + official_dis_loss(D, x_ab, x_b, 0.01)
    official.backward()
    assert torch.allclose(ours.total, official)
    assert all(torch.allclose(g, p.grad) for g, p in zip(grads, D.parameters()))
    # generator side: Σ_pairs Σ_scales 2·mean((D(fake) − 1)²)
    g = paired_generator_loss(D, [x_ba, x_ab], "lsgan")
    expected = sum(2 * torch.mean((out - 1) ** 2) for f in (x_ba, x_ab) for out in D(f))
    assert torch.allclose(g, expected)


def test_eq7_nsgan_is_the_log_likelihood_of_the_paper():
    D = tiny_d()
    x, fake = torch.randn(2, 3, 16, 8, dtype=torch.float64), torch.randn(2, 3, 16, 8, dtype=torch.float64)
    d = paired_discriminator_loss(D, [(x, fake)], "nsgan", r1_weight=0.0)
    # D maximises E[log D(x) + log(1 − D(G))] → minimises its negative, per scale (patch means)
    expected = sum(-(torch.log(torch.sigmoid(r)).mean() + torch.log(1 - torch.sigmoid(f)).mean())
                   for r, f in zip(D(x), D(fake)))
    assert torch.allclose(d.total, expected)
    g = paired_generator_loss(D, [fake], "nsgan")  # non-saturating: −log D(G)
    assert torch.allclose(g, sum(-torch.log(torch.sigmoid(f)).mean() for f in D(fake)))


def test_pairs_must_have_one_shape():
    D = tiny_d()
    with pytest.raises(ValueError, match="one shape"):
        paired_discriminator_loss(D, [(torch.randn(2, 3, 16, 8), torch.randn(3, 3, 16, 8))])


# ---------------------------------------------------------------- ramps

def ramps(**kw):
    return LossRamps(OmegaConf.merge(OmegaConf.structured(DGNetConfig), kw))


def test_paper_ramps():
    r = ramps()  # λprim 0 → 2 over 4k iterations after 30k, λfine = 0.2 λprim, code 0 → 1 over 2k
    assert r.weights(29_999) == {"prim": 0.0, "fine": 0.0, "code": 0.0, "cycle": 0.0}
    w = r.weights(31_999)
    assert w["prim"] == pytest.approx(1.0) and w["fine"] == pytest.approx(0.2) and w["code"] == pytest.approx(1.0)
    assert r.weights(33_999)["prim"] == pytest.approx(2.0) and r.weights(10**6)["prim"] == 2.0
    assert r.weights(10**6)["cycle"] == 2.0
    # slope = the official 0.0005 per iteration
    assert r.weights(30_000)["prim"] == pytest.approx(0.0005)
    jump = ramps(lambda_prim={"max": 3.0, "start": 5, "iters": 0})
    assert jump.weights(4)["prim"] == 0 and jump.weights(5)["prim"] == 3.0
    with pytest.raises(ConfigError, match="lambda_code"):
        ramps(lambda_code={"max": 1.0, "start": -1, "iters": 3})


def test_ramp_state_round_trip():
    r = ramps()
    r.iteration = 31_000
    other = ramps()
    other.load_state_dict(r.state_dict())
    assert other.weights() == r.weights() and other.weights()["prim"] > 0


# ---------------------------------------------------------------- the frozen copy

def test_frozen_forward_detaches_parameters_keeps_running_stats_and_drops_dropout():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.9), nn.Linear(8, 2)).train()
    x = torch.randn(16, 4, requires_grad=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = frozen_forward(net, x, bn_batch_stats=True)
    out.sum().backward()
    assert x.grad is not None and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # running stats untouched
    assert net.training and net[2].training  # modes restored
    with torch.no_grad():  # batch statistics, no dropout
        h = net[0](x)
        h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5)
        assert torch.allclose(out, net[3](h), atol=1e-5)
        running = frozen_forward(net, x, bn_batch_stats=False)
        assert torch.allclose(running, net.eval()(x), atol=1e-6)

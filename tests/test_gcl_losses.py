"""GCL's losses against direct transcriptions of their equations: GAN (LSGAN + R1 as the official code,
NSGAN as Eq. 3), reconstruction (Eq. 1-2), the memory bank (Eq. 5) and the view-invariant losses
(Eq. 6-8) with their vectorised sampling."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gclreid.config import ConfigError
from gclreid.losses import (ViewContrastLoss, ViewMemory, ViewSample, contrast_only_loss, discriminator_loss,
                            feature_reconstruction_loss, generator_adversarial_loss, image_reconstruction_loss,
                            r1_penalty, sample_view_contrast, view_invariant_losses)
from gclreid.models import MultiScaleDiscriminator


def tiny_discriminator():
    torch.manual_seed(0)
    return MultiScaleDiscriminator(dim=4, n_layer=1, n_res=1, num_scales=3).double()


def images(n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 16, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------- GAN losses

def official_dis_loss(D, real, fakes, lam):
    """The official calc_dis_loss, called once per fake: D(x) and R1 recomputed every time."""
    total = 0
    for fake in fakes:
        x = real.detach().clone().requires_grad_()
        for out0, out1 in zip(D(fake.detach()), D(x)):
            grad, = torch.autograd.grad(out1.sum(), x, create_graph=True, retain_graph=True)
            reg = grad.pow(2).view(x.shape[0], -1).sum(1).mean()
            total = total + torch.mean(out0 ** 2) + torch.mean((out1 - 1) ** 2) + lam * reg
    return total


def param_grads(module, loss):
    module.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("share_real,batch_fakes", [(True, True), (True, False), (False, True), (False, False)])
def test_lsgan_r1_discriminator_loss_equals_official_pattern(share_real, batch_fakes):
    D = tiny_discriminator()
    real, fakes = images(seed=1), [images(seed=s) for s in (2, 3, 4)]
    ref = official_dis_loss(D, real, fakes, 0.01)
    got = discriminator_loss(D, real, fakes, "lsgan", r1_weight=0.01, share_real=share_real, batch_fakes=batch_fakes)
    assert got.total.item() == pytest.approx(ref.item(), rel=1e-10)
    assert got.total.item() == pytest.approx((got.real + got.fake + got.r1).item(), rel=1e-12)
    for a, b in zip(param_grads(D, got.total), param_grads(D, official_dis_loss(D, real, fakes, 0.01))):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("share_real", [True, False])
def test_discriminator_loss_back_propagated_in_parts_gives_the_same_gradients(share_real):
    """backward=True: each part's graph back-propagated as it is built; same values and D gradients."""
    D = tiny_discriminator()
    real, fakes = images(seed=1), [images(seed=s) for s in (2, 3, 4)]
    ref_grads = param_grads(D, official_dis_loss(D, real, fakes, 0.01))
    ref = official_dis_loss(D, real, fakes, 0.01).item()
    D.zero_grad()
    got = discriminator_loss(D, real, fakes, "lsgan", r1_weight=0.01, share_real=share_real, backward=True)
    assert not got.total.requires_grad  # already back-propagated
    assert got.total.item() == pytest.approx(ref, rel=1e-10)
    assert got.total.item() == pytest.approx((got.real + got.fake + got.r1).item(), rel=1e-12)
    for p, b in zip(D.parameters(), ref_grads):
        assert torch.allclose(p.grad, b, rtol=1e-8, atol=1e-12)


def test_r1_penalty_matches_closed_form_for_a_linear_discriminator():
    """D(x) = w·x + b per pixel (1×1 conv): ∂ΣD/∂x = w at every pixel, so R1 = H·W·‖w‖²; its
    gradient with respect to w (double backprop) is 2·H·W·w."""
    conv = nn.Conv2d(3, 1, 1).double()
    real = images().requires_grad_()
    r1 = r1_penalty([conv(real)], real)
    w = conv.weight.detach().flatten()
    assert r1.item() == pytest.approx(32 * 16 * w.pow(2).sum().item(), rel=1e-12)
    grad_w, = torch.autograd.grad(r1, conv.weight)
    assert torch.allclose(grad_w.flatten(), 2 * 32 * 16 * w)


def test_r1_is_taken_at_full_resolution_for_every_scale():
    D = tiny_discriminator()
    real = images().requires_grad_()
    outs = D(real)
    ref = 0
    for out in outs:
        grad, = torch.autograd.grad(out.sum(), real, retain_graph=True)
        assert grad.shape == real.shape
        ref += grad.pow(2).sum() / real.shape[0]
    assert r1_penalty(outs, real).item() == pytest.approx(ref.item(), rel=1e-10)
    loss = discriminator_loss(D, real, images(seed=5), r1_weight=0.0)
    assert loss.r1.item() == 0.0


def test_nsgan_discriminator_loss_is_eq3():
    D = tiny_discriminator()
    real, fakes = images(seed=1), [images(seed=2), images(seed=3)]
    ref = 0
    for fake in fakes:  # −[log D(x) + log(1 − D(x'))] per fake and scale, D = sigmoid(score)
        for out_r, out_f in zip(D(real), D(fake)):
            ref = ref - torch.log(torch.sigmoid(out_r)).mean() - torch.log(1 - torch.sigmoid(out_f)).mean()
    got = discriminator_loss(D, real, fakes, "nsgan", r1_weight=0.0)
    assert got.total.item() == pytest.approx(ref.item(), rel=1e-10)


def test_discriminator_loss_does_not_train_the_generator():
    D = tiny_discriminator()
    fake = images(seed=2).requires_grad_()
    discriminator_loss(D, images(), [fake]).total.backward()
    assert fake.grad is None


@pytest.mark.parametrize("gan_type", ["lsgan", "nsgan"])
def test_generator_adversarial_loss(gan_type):
    D = tiny_discriminator()
    fakes = [images(seed=s).requires_grad_() for s in (2, 3)]
    ref = 0
    for fake in fakes:
        for out in D(fake):
            ref = ref + (2 * torch.mean((out - 1) ** 2) if gan_type == "lsgan" else -torch.log(torch.sigmoid(out)).mean())
    batched = generator_adversarial_loss(D, fakes, gan_type)
    assert batched.item() == pytest.approx(ref.item(), rel=1e-10)
    single = generator_adversarial_loss(D, fakes[0], gan_type) + generator_adversarial_loss(D, fakes[1], gan_type)
    assert single.item() == pytest.approx(ref.item(), rel=1e-10)
    batched.backward()
    assert fakes[0].grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="unknown gan_type 'wgan'"):
        generator_adversarial_loss(D, fakes, "wgan")


# ---------------------------------------------------------------- reconstruction (Eq. 1-2)

def test_image_reconstruction_loss_is_eq1_with_detached_target():
    x = images(seed=1).requires_grad_()
    x_ori, x_cyc = images(seed=2).requires_grad_(), images(seed=3).requires_grad_()
    loss = image_reconstruction_loss(x, x_ori, x_cyc)
    ref = (x - x_ori).abs().sum() / x.numel() + (x - x_cyc).abs().sum() / x.numel()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    loss.backward()
    assert x.grad is None and x_ori.grad is not None and x_cyc.grad is not None


def test_feature_reconstruction_loss_targets():
    g = torch.Generator().manual_seed(0)
    f_id, f_ori, f_new, f_cyc = (torch.randn(3, 8, generator=g, dtype=torch.float64) for _ in range(4))
    paper = feature_reconstruction_loss(f_id, f_ori, f_new=f_new, target="new")
    assert paper.item() == pytest.approx(((f_id - f_new).abs().mean() + (f_id - f_ori).abs().mean()).item())
    official = feature_reconstruction_loss(f_id, f_ori, f_cycle=f_cyc, target="ori")
    assert official.item() == pytest.approx(((f_id - f_ori).abs().mean() + (f_id - f_cyc).abs().mean()).item())
    with pytest.raises(ValueError, match="needs f_new"):
        feature_reconstruction_loss(f_id, f_ori, f_cycle=f_cyc, target="new")
    with pytest.raises(ConfigError, match="unknown L_feat target"):
        feature_reconstruction_loss(f_id, f_ori, f_new=f_new, target="cycle")
    target = f_id.clone().requires_grad_()
    feature_reconstruction_loss(target, f_ori, f_new=f_new, detach_target=False).backward()
    assert target.grad is not None


# ---------------------------------------------------------------- memory bank (Eq. 5)

def test_memory_initialise_update_and_state():
    g = torch.Generator().manual_seed(0)
    mem = ViewMemory(6, 4, momentum=0.2)
    assert (mem.labels == -1).all()
    init = torch.randn(6, 4, generator=g)
    mem.initialise(init)
    assert torch.allclose(mem.features, F.normalize(init, dim=1))
    f = torch.randn(2, 4, generator=g)
    old = mem.features.clone()
    mem.update(torch.tensor([4, 1]), f)
    for row, feat in zip([4, 1], f):
        expected = 0.2 * old[row] + 0.8 * feat / feat.norm()
        assert torch.allclose(mem.features[row], expected / expected.norm(), atol=1e-6)
    untouched = [0, 2, 3, 5]
    assert torch.equal(mem.features[untouched], old[untouched])
    mem.set_labels([0, 0, 1, -1, 1, 2])
    state = mem.state_dict()
    assert set(state) == {"features", "labels"}
    other = ViewMemory(6, 4)
    other.load_state_dict(state)
    assert torch.equal(other.labels, torch.tensor([0, 0, 1, -1, 1, 2])) and torch.equal(other.features, mem.features)
    with pytest.raises(ValueError, match="expected 6 pseudo labels"):
        mem.set_labels([0, 1])
    with pytest.raises(ValueError, match="integers >= -1"):
        mem.set_labels([0, 0, 1, -2, 1, 2])
    with pytest.raises(ValueError, match="cannot be initialised"):
        mem.initialise(torch.randn(5, 4))


def test_memory_update_with_repeated_indices_is_sequential():
    g = torch.Generator().manual_seed(1)
    mem = ViewMemory(5, 3)
    mem.initialise(torch.randn(5, 3, generator=g))
    ref = mem.features.clone()
    idx, feats = [2, 0, 2, 2, 4], torch.randn(5, 3, generator=g)
    for i, f in zip(idx, feats):  # the per-sample loop
        ref[i] = F.normalize(0.2 * ref[i] + 0.8 * F.normalize(f, dim=0), dim=0)
    mem.update(idx, feats)
    assert torch.allclose(mem.features, ref, atol=1e-6)


def test_loss_can_backpropagate_after_the_memory_update():
    """The official order (update, then backward) gives the gradients of the memory the loss read."""
    grads = []
    for update_first in (False, True):
        loss_fn = ViewContrastLoss(20, 4, num_negatives=5)
        g = torch.Generator().manual_seed(0)
        loss_fn.memory.initialise(torch.randn(20, 4, generator=g))
        loss_fn.memory.set_labels(torch.arange(20) % 4)
        f = torch.randn(3, 4, generator=g, requires_grad=True)
        f_new = torch.randn(3, 4, generator=g, requires_grad=True)
        losses = loss_fn(f, f_new, [0, 5, 9], generator=g)
        before = loss_fn.memory.features.clone()
        if update_first:
            loss_fn.memory.update([0, 5, 9], f.detach() * 3 + 1)
            assert not torch.allclose(loss_fn.memory.features, before)
        sum(losses.values()).backward()
        grads.append((f.grad, f_new.grad))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-7)


# ---------------------------------------------------------------- sampling

LABELS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, -1, -1, 3, 4, 4, 5, 5, 5, 0, 1, -1])


@pytest.mark.parametrize("outliers_as_negatives", [True, False])
def test_negatives_have_other_labels_are_distinct_and_respect_k(outliers_as_negatives):
    g = torch.Generator().manual_seed(0)
    indices = torch.arange(len(LABELS))
    sample = sample_view_contrast(LABELS, indices, 6, outliers_as_negatives=outliers_as_negatives, generator=g)
    assert sample.negatives.shape == sample.negative_valid.shape == (len(LABELS), 6)
    for i, (negs, valid) in enumerate(zip(sample.negatives, sample.negative_valid)):
        chosen = negs[valid].tolist()
        assert len(set(chosen)) == len(chosen) and i not in chosen
        y = LABELS[i].item()
        eligible = [j for j in range(len(LABELS)) if j != i and (LABELS[j] != y or y == -1)
                    and (outliers_as_negatives or LABELS[j] >= 0)]
        assert set(chosen) <= set(eligible)
        assert len(chosen) == min(6, len(eligible))
        assert valid.tolist() == sorted(valid.tolist(), reverse=True)  # padding only at the end


def test_fewer_negatives_than_k_are_padded():
    labels = torch.tensor([0, 0, 0, 1, 1, -1])
    sample = sample_view_contrast(labels, torch.arange(6), 8192, generator=torch.Generator().manual_seed(0))
    assert sample.negatives.shape == (6, 6)  # K capped at N
    assert sample.negative_valid.sum(1).tolist() == [3, 3, 3, 4, 4, 5]
    only_one_cluster = sample_view_contrast(torch.zeros(4, dtype=torch.long), torch.arange(4), 3)
    assert not only_one_cluster.negative_valid.any()


def test_negatives_are_uniform_without_replacement():
    # 4000 draws for anchor 0 (label 0) among 9 eligible rows, K=3: each row is chosen with probability 1/3.
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 3, -1])
    sample = sample_view_contrast(labels, torch.zeros(4000, dtype=torch.long), 3,
                                  generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(sample.negatives.flatten(), minlength=11).float() / 4000
    assert counts[:2].sum() == 0
    assert torch.allclose(counts[2:], torch.full((9,), 1 / 3), atol=0.03)


def test_positive_sampling_rules():
    g = torch.Generator().manual_seed(0)
    indices = torch.arange(len(LABELS)).repeat(30)
    shared = sample_view_contrast(LABELS, indices, 4, generator=g)
    assert shared.positive is shared.positive_new
    assert (LABELS[shared.positive] == LABELS[indices]).all()
    outliers = LABELS[indices] == -1
    assert (shared.positive[outliers] == indices[outliers]).all()  # an outlier's only positive is itself
    assert (shared.positive[~outliers] == indices[~outliers]).any()  # the anchor may be its own positive
    independent = sample_view_contrast(LABELS, indices, 4, shared_positive=False, generator=g)
    assert (independent.positive != independent.positive_new).any()
    others = sample_view_contrast(LABELS, indices, 4, anchor_as_positive=False, generator=g)
    singleton = torch.tensor([y < 0 or (LABELS == y).sum() == 1 for y in LABELS[indices]])
    assert (others.positive[~singleton] != indices[~singleton]).all()
    assert (others.positive[singleton] == indices[singleton]).all()  # outlier or cluster of one: itself
    assert (LABELS[others.positive] == LABELS[indices]).all()


# ---------------------------------------------------------------- view-invariant losses (Eq. 6-8)

def loop_reference(f, f_new, idx, memory, sample, tau, lvi2_positive="live", negative_anchor="new"):
    """Eq. 6-8 per sample with explicit sums over the K negatives (padding skipped)."""
    out = {"lvi": 0.0, "lvi2": 0.0, "lvi3": 0.0, "wogan": 0.0}
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))  # noqa: E731
    for b in range(len(idx)):
        anchor = f_new[b] if negative_anchor == "new" else f[b]
        negs = [memory[k] for k, ok in zip(sample.negatives[b].tolist(), sample.negative_valid[b].tolist()) if ok]
        neg_sum = sum(math.exp(cos(anchor, k) / tau) for k in negs)
        pos = {"lvi": cos(f[b], memory[sample.positive[b]]),
               "lvi2": cos(f_new[b], f[b] if lvi2_positive == "live" else memory[idx[b]]),
               "lvi3": cos(f_new[b], memory[sample.positive_new[b]])}
        for key, p in pos.items():
            out[key] += math.log(1 + neg_sum / math.exp(p / tau)) / len(idx)
        wogan_sum = sum(math.exp(cos(f[b], k) / tau) for k in negs)
        out["wogan"] += math.log(1 + wogan_sum / math.exp(cos(f[b], memory[sample.positive[b]]) / tau)) / len(idx)
    return out


def contrast_setup(n=40, d=8, b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    memory = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    labels = torch.randint(-1, 6, (n,), generator=g)
    idx = torch.randperm(n, generator=g)[:b]
    f = torch.randn(b, d, generator=g, dtype=torch.float64, requires_grad=True)
    f_new = torch.randn(b, d, generator=g, dtype=torch.float64, requires_grad=True)
    return memory, labels, idx, f, f_new, g


@pytest.mark.parametrize("lvi2_positive,shared,negative_anchor,k", [
    ("live", True, "new", 10), ("memory", False, "new", 10), ("live", False, "original", 10),
    ("memory", True, "new", 1000)])
def test_view_invariant_losses_match_per_sample_loop(lvi2_positive, shared, negative_anchor, k):
    memory, labels, idx, f, f_new, g = contrast_setup()
    tau = 0.04
    sample = sample_view_contrast(labels, idx, k, shared_positive=shared, generator=g)
    got = view_invariant_losses(f, f_new, idx, memory, sample, temperature=tau, lvi2_positive=lvi2_positive,
                                negative_anchor=negative_anchor)
    ref = loop_reference(f.detach(), f_new.detach(), idx.tolist(), memory, sample, tau, lvi2_positive, negative_anchor)
    for key in ("lvi", "lvi2", "lvi3"):
        assert got[key].item() == pytest.approx(ref[key], rel=1e-9)
    if negative_anchor == "new":
        wogan = contrast_only_loss(f, idx, memory, sample, temperature=tau)
        assert wogan.item() == pytest.approx(ref["wogan"], rel=1e-9)


def test_hand_built_sample_and_an_anchor_without_negatives():
    memory = F.normalize(torch.tensor([[1.0, 0], [0.6, 0.8], [0, 1], [-1, 0]], dtype=torch.float64), dim=1)
    f = torch.tensor([[1.0, 0.1], [0.2, 1.0]], dtype=torch.float64)
    f_new = torch.tensor([[0.9, 0.3], [0.0, 1.0]], dtype=torch.float64)
    sample = ViewSample(torch.tensor([1, 2]), torch.tensor([1, 2]), torch.tensor([[2, 3], [0, 0]]),
                        torch.tensor([[True, True], [False, False]]))
    got = view_invariant_losses(f, f_new, [0, 2], memory, sample, temperature=0.5)
    ref = loop_reference(f, f_new, [0, 2], memory, sample, 0.5)
    for key in ("lvi", "lvi2", "lvi3"):
        assert got[key].item() == pytest.approx(ref[key], rel=1e-12)
    alone = view_invariant_losses(f[1:], f_new[1:], [2], memory, ViewSample(*(t[1:] for t in sample)), temperature=0.5)
    assert all(v.item() == 0.0 for v in alone.values())  # log(1 + 0)


def test_gradient_flow_of_lvi2():
    memory, labels, idx, f, f_new, g = contrast_setup()
    sample = sample_view_contrast(labels, idx, 10, generator=g)
    mem = view_invariant_losses(f, f_new, idx, memory, sample, lvi2_positive="memory")
    grad_f, grad_new = torch.autograd.grad(mem["lvi2"], [f, f_new], allow_unused=True)
    assert grad_f is None and grad_new.abs().sum() > 0
    live = view_invariant_losses(f, f_new, idx, memory, sample, lvi2_positive="live")
    grad_f, grad_new = torch.autograd.grad(live["lvi2"], [f, f_new], retain_graph=True)
    assert grad_f.abs().sum() > 0 and grad_new.abs().sum() > 0
    # Eq. 6: f through its positive, f'_new through the negatives; the memory is a constant
    grad_f, grad_new = torch.autograd.grad(live["lvi"], [f, f_new])
    assert grad_f.abs().sum() > 0 and grad_new.abs().sum() > 0


def test_view_contrast_module_presets_and_reproducibility():
    n = 300
    g = torch.Generator().manual_seed(0)
    official = ViewContrastLoss(n, 16, num_negatives=128, preset="official")
    assert (official.lvi2_positive, official.shared_positive) == ("memory", False)
    paper = ViewContrastLoss(n, 16, num_negatives=128, lvi2_positive="memory")
    assert (paper.lvi2_positive, paper.shared_positive) == ("memory", True)
    official.memory.initialise(torch.randn(n, 16, generator=g))
    official.memory.set_labels(torch.randint(-1, 20, (n,), generator=g))
    f, f_new, idx = torch.randn(16, 16, generator=g), torch.randn(16, 16, generator=g), torch.randperm(n)[:16]
    a = official(f, f_new, idx, generator=torch.Generator().manual_seed(5))
    b = official(f, f_new, idx, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a[k], b[k]) for k in a) and set(a) == {"lvi", "lvi2", "lvi3"}
    assert torch.isfinite(official.contrast_only(f, idx)).all()
    with pytest.raises(ConfigError, match="unknown view-contrast option"):
        ViewContrastLoss(n, 16, lvi2_positve="live")
    with pytest.raises(ConfigError, match="unknown lvi2_positive"):
        ViewContrastLoss(n, 16, lvi2_positive="f")
    with pytest.raises(ConfigError, match="preset"):
        ViewContrastLoss(n, 16, preset="code")

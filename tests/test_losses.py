"""Losses against direct transcriptions of their equations, on small tensors."""
import math

import pytest
import torch
import torch.nn.functional as F

from gclreid.losses import (ClusterMemory, batch_hard_triplet_loss, cross_entropy_label_smoothing,
                            multi_positive_contrastive_loss)


def tmp_loss_reference(z, y, tau):
    """TMP Eq. 3-4 with explicit loops: L = 1/2N sum_i sum_{j pos} L_ij."""
    z = F.normalize(z, dim=1)
    s = z @ z.t()
    n = len(z)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if j == i or y[j] != y[i]:
                continue
            denom = sum(math.exp(s[i, k] / tau) for k in range(n) if k != i and (k == j or y[k] != y[i]))
            total += -math.log(math.exp(s[i, j] / tau) / denom)
    return total / n


@pytest.mark.parametrize("tau", [0.05, 0.5])
def test_tmp_loss_matches_equation(tau):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(12, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 0, 0])
    got = multi_positive_contrastive_loss(z, y, tau).item()
    assert got == pytest.approx(tmp_loss_reference(z.double(), y, tau), rel=1e-5)


def test_tmp_loss_prefers_aligned_positives():
    y = torch.tensor([0, 0, 1, 1])
    aligned = torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1]])
    mixed = torch.tensor([[1.0, 0], [0, 1], [0, 1], [1, 0]])
    assert multi_positive_contrastive_loss(aligned, y, 0.1) < multi_positive_contrastive_loss(mixed, y, 0.1)


def test_tmp_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="labels"):
        multi_positive_contrastive_loss(torch.randn(4, 3), torch.zeros(5, dtype=torch.long))


def test_label_smoothing_cross_entropy_matches_formula():
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 3, 6, 2, 2])
    eps = 0.1
    logp = logits.log_softmax(1)
    target = torch.full_like(logp, eps / 7)
    target[torch.arange(5), t] += 1 - eps
    expected = -(target * logp).sum(1).mean()
    assert cross_entropy_label_smoothing(logits, t, eps).item() == pytest.approx(expected.item(), rel=1e-6)


def test_batch_hard_triplet_matches_loops():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 4, generator=g)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    d = torch.cdist(x, x)
    losses = []
    for i in range(8):
        ap = max(d[i, j] for j in range(8) if j != i and y[j] == y[i])
        an = min(d[i, j] for j in range(8) if y[j] != y[i])
        losses.append(max(0.0, float(ap - an + 0.3)))
    assert batch_hard_triplet_loss(x, y, 0.3).item() == pytest.approx(sum(losses) / 8, rel=1e-5)
    soft = sum(math.log1p(math.exp(float(max(d[i, j] for j in range(8) if j != i and y[j] == y[i])
                                         - min(d[i, j] for j in range(8) if y[j] != y[i])))) for i in range(8)) / 8
    assert batch_hard_triplet_loss(x, y, 0.0).item() == pytest.approx(soft, rel=1e-5)


def test_cluster_memory_initialise_loss_and_momentum_update():
    f = torch.tensor([[1.0, 0, 0], [1, 0.2, 0], [0, 1, 0], [0, 0, 1]])
    y = torch.tensor([0, 0, 1, 2])
    mem = ClusterMemory(3, 3, temperature=0.1, momentum=0.25)
    mem.initialise(f, y)
    assert torch.allclose(mem.centroids[0], F.normalize(F.normalize(f[:2], dim=1).sum(0), dim=0))
    logits = F.normalize(f, dim=1) @ mem.centroids.t() / 0.1
    assert mem.loss(f, y).item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    before = mem.centroids.clone()
    batch, labels = torch.tensor([[0.0, 1, 1], [0, 3, 3]]), torch.tensor([1, 1])
    mem.update(batch, labels)
    mean = F.normalize(batch, dim=1).mean(0)
    assert torch.allclose(mem.centroids[1], F.normalize(0.25 * before[1] + 0.75 * mean, dim=0), atol=1e-6)
    assert torch.equal(mem.centroids[0], before[0]) and torch.equal(mem.centroids[2], before[2])

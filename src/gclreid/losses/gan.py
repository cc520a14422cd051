"""Adversarial losses of GCL's view generator: LSGAN + R1 (official code) and NSGAN (paper Eq. 3).

``D`` is any module returning a list of patch-score maps, one per scale
(:class:`gclreid.models.MultiScaleDiscriminator`); scores are raw (logits).

**Discriminator** — for every fake f (x'_ori, x'_new, x''_ori) and every scale s:

* ``lsgan`` (official ``calc_dis_loss``): ``mean(D_s(f)²) + mean((D_s(x) − 1)²)``;
* ``nsgan`` (Eq. 3, D maximises ``log D(x) + log(1 − D(f))``): ``BCE(D_s(x), 1) + BCE(D_s(f), 0)`` with
  sigmoid-on-logits, i.e. ``softplus(−D_s(x)) + softplus(D_s(f))`` averaged over patches;
* plus the R1 penalty on real images, ``λ · mean_b Σ_pixels (∂ Σ D_s(x) / ∂x)²`` with respect to the
  full-resolution x (double backprop, ``create_graph=True``), λ = ``r1_weight`` (0.01 officially).

The official code calls this once per fake, recomputing D(x) and R1 each time, so the real term and
R1 count ``len(fakes)`` times. ``share_real=True`` computes D(x) and R1 once and multiplies them by
``len(fakes)``: the same value and the same gradients for less compute and memory. The fakes are
detached (the D step does not train G) and, with ``batch_fakes=True``, go through D as one batch —
equal to separate calls because D has no batch-coupled layers (don't combine with ``dis_norm=bn``).

**Generator** — per fake and scale: ``lsgan`` ``2 · mean((D_s(f) − 1)²)`` (the official ×2);
``nsgan`` the non-saturating ``−log sigmoid(D_s(f))`` = ``BCE(D_s(f), 1)``.
"""
from __future__ import annotations

from typing import Callable, List, NamedTuple, Sequence, Union

import torch
import torch.nn.functional as F

from ..config import ConfigError

__all__ = ["GAN_TYPES", "DiscriminatorLoss", "r1_penalty", "discriminator_loss", "generator_adversarial_loss"]

GAN_TYPES = ("lsgan", "nsgan")
Discriminator = Callable[[torch.Tensor], Sequence[torch.Tensor]]
Images = Union[torch.Tensor, Sequence[torch.Tensor]]


class DiscriminatorLoss(NamedTuple):
    """``total = real + fake + r1`` (each already summed over scales and fakes; backprop ``total``)."""
    total: torch.Tensor
    real: torch.Tensor
    fake: torch.Tensor
    r1: torch.Tensor


def _check_type(gan_type: str) -> None:
    if gan_type not in GAN_TYPES:
        raise ConfigError(f"unknown gan_type {gan_type!r}; expected one of {', '.join(GAN_TYPES)}")


def _as_list(images: Images) -> List[torch.Tensor]:
    return [images] if isinstance(images, torch.Tensor) else list(images)


def _real_term(out: torch.Tensor, gan_type: str) -> torch.Tensor:
    if gan_type == "lsgan":
        return (out - 1).pow(2).mean()
    return F.softplus(-out).mean()  # BCE-with-logits against 1 = −log sigmoid(out)


def _fake_terms(out: torch.Tensor, gan_type: str, n: int) -> torch.Tensor:
    """Sum over the n fakes stacked in ``out`` (n·B rows) of the per-fake mean."""
    per_patch = out.pow(2) if gan_type == "lsgan" else F.softplus(out)  # BCE-with-logits against 0
    return per_patch.reshape(n, -1).mean(1).sum()


def r1_penalty(outputs: Sequence[torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """``Σ_s mean_b Σ_pixels (∂ Σ outputs_s / ∂ real)²`` (not yet weighted by λ).

    ``real`` must require grad and ``outputs`` must come from it; the graph is kept (``create_graph``)
    so that the penalty trains D through double backprop.
    """
    total = real.new_zeros(())
    for out in outputs:
        grad, = torch.autograd.grad(out.sum(), real, create_graph=True)
        total = total + grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()
    return total


def _real_and_r1(D: Discriminator, real: torch.Tensor, gan_type: str, r1_weight: float):
    real = real.detach().requires_grad_(r1_weight > 0)
    outputs = D(real)
    real_loss = sum(_real_term(out, gan_type) for out in outputs)
    r1 = r1_weight * r1_penalty(outputs, real) if r1_weight > 0 else real_loss.new_zeros(())
    return real_loss, r1


def discriminator_loss(D: Discriminator, real: torch.Tensor, fakes: Images, gan_type: str = "lsgan",
                       r1_weight: float = 0.01, share_real: bool = True, batch_fakes: bool = True,
                       backward: bool = False) -> DiscriminatorLoss:
    """The D-step loss for one batch of real images against one or more batches of fakes.

    ``share_real=False`` reproduces the official compute pattern (D(x) and R1 recomputed per fake);
    ``True`` gives the same value and gradients with one D(x) and one R1.

    ``backward=True`` back-propagates every part as soon as it is computed — each batch of fakes, then
    the real term with R1 — so that at most one of their graphs is alive (less peak memory; the
    gradients accumulate in D's ``.grad``, equal up to float rounding); the fakes then go through D
    one batch at a time whatever `batch_fakes` says, and the returned values are detached.
    """
    _check_type(gan_type)
    fakes = [f.detach() for f in _as_list(fakes)]
    n = len(fakes)
    if n == 0:
        raise ValueError("discriminator_loss needs at least one batch of fakes")

    def done(term: torch.Tensor) -> torch.Tensor:
        if not backward:
            return term
        term.backward()
        return term.detach()

    if batch_fakes and n > 1 and not backward:
        fake_loss = sum(_fake_terms(out, gan_type, n) for out in D(torch.cat(fakes)))
    else:
        fake_loss = sum(done(sum(_fake_terms(out, gan_type, 1) for out in D(f))) for f in fakes)
    if share_real:
        real_loss, r1 = _real_and_r1(D, real, gan_type, r1_weight)
        real_loss, r1 = n * real_loss, n * r1
        if backward:
            (real_loss + r1).backward()
    else:
        pairs = []
        for _ in range(n):
            pair = _real_and_r1(D, real, gan_type, r1_weight)
            if backward:
                (pair[0] + pair[1]).backward()
            pairs.append(pair)
        real_loss, r1 = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
    if backward:
        real_loss, r1 = real_loss.detach(), r1.detach()
    return DiscriminatorLoss(real_loss + fake_loss + r1, real_loss, fake_loss, r1)


def generator_adversarial_loss(D: Discriminator, fake: Images, gan_type: str = "lsgan",
                               batch_fakes: bool = True) -> torch.Tensor:
    """The generator's adversarial loss, summed over scales (and over fakes when a list is given;
    ``batch_fakes`` runs them through D as one batch, the same value as separate calls)."""
    _check_type(gan_type)
    fakes = _as_list(fake)
    if not fakes:
        raise ValueError("generator_adversarial_loss needs at least one batch of fakes")
    groups = [torch.cat(fakes)] if batch_fakes and len(fakes) > 1 else fakes
    total = fakes[0].new_zeros(())
    for group in groups:
        n = len(fakes) if len(groups) == 1 else 1
        for out in D(group):
            per_patch = 2 * (out - 1).pow(2) if gan_type == "lsgan" else F.softplus(-out)
            total = total + per_patch.reshape(n, -1).mean(1).sum()
    return total

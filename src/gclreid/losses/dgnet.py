"""DG-Net's losses (Zheng et al., CVPR 2019), on top of the shared GAN and reconstruction losses.

Notation as the paper: x_i, x_j real images of identities y_i ≠ y_j, a appearance codes, s structure
codes, x_j^i = G(a_i, s_j) (appearance of i, structure of j). In the code a, b are the two streams
of a batch, x_ba = G(s_b, f_a) (= x_b^a) and x_ab = G(s_a, f_b).

* Eq. 1 / 2 (self-identity reconstruction) and Eq. 4 / 5 (latent code reconstruction) are
  :func:`gclreid.losses.l1_reconstruction` (mean |·|, target detached), one term per stream.
* Eq. 3, 6 and 9 are cross-entropies that differ only in their label: real image → its identity;
  generated image → its **appearance** provider's identity (Eq. 6, :func:`generated_identity_loss`)
  or its **structure** provider's (Eq. 9, :func:`fine_grained_loss`).
* Eq. 7 (adversarial): LSGAN + R1 as the official code (or NSGAN), summed over the pairs
  (x_a vs x_ba, x_b vs x_ab): :func:`paired_discriminator_loss`, :func:`paired_generator_loss`.
* Eq. 8 (primary feature learning): :func:`soft_label_kl`, the batch-mean KL(q ‖ p) between the
  teacher's soft label q (:func:`teacher_soft_labels`) and the student's prediction p.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .gan import DiscriminatorLoss, discriminator_loss, generator_adversarial_loss

__all__ = ["to_gray", "soft_label_kl", "teacher_soft_labels", "generated_identity_loss", "fine_grained_loss",
           "paired_discriminator_loss", "paired_generator_loss"]


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """The structure encoder's input: the mean of the three (ImageNet-normalised) channels, B×1×H×W —
    the official ``to_gray`` (a plain mean, not luminance weights)."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"to_gray expects B×3×H×W images, got shape {tuple(x.shape)}")
    return x.mean(dim=1, keepdim=True)


def soft_label_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Eq. 8: ``mean_b Σ_k q(k|x) log(q(k|x) / p(k|x))`` with p = softmax(student logits), q the teacher's
    probabilities (treated as a constant; 0·log 0 = 0). The official ``KLDivLoss(size_average=False)/B``."""
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher probabilities "
                         f"{tuple(teacher_probs.shape)} differ in shape (the teacher must have the student's classes)")
    log_p = F.log_softmax(student_logits.float(), dim=1)
    return F.kl_div(log_p, teacher_probs.detach().float(), reduction="batchmean")


def teacher_soft_labels(logits: torch.Tensor, logits_flipped: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The dynamic soft label q: softmax of the teacher's logits, averaged with its mirror image's when
    given (official ``teacher_style 0``: ``normalise(softmax(T(x)) + softmax(T(flip(x))))``)."""
    q = F.softmax(logits.float(), dim=1)
    if logits_flipped is not None:
        q = (q + F.softmax(logits_flipped.float(), dim=1)) / 2
    return q.detach()


def generated_identity_loss(logits_ba: torch.Tensor, logits_ab: torch.Tensor, labels_a: torch.Tensor,
                            labels_b: torch.Tensor) -> torch.Tensor:
    """Eq. 6 for both swaps: x_ba = G(s_b, f_a) is identity ``labels_a`` (its appearance provider), x_ab is
    ``labels_b``. Sum of the two batch-mean cross-entropies (official ``loss_gen_recon_id``)."""
    return F.cross_entropy(logits_ba.float(), labels_a) + F.cross_entropy(logits_ab.float(), labels_b)


def fine_grained_loss(logits_ba: torch.Tensor, logits_ab: torch.Tensor, labels_a: torch.Tensor,
                      labels_b: torch.Tensor) -> torch.Tensor:
    """Eq. 9 for both swaps: x_ba = G(s_b, f_a) is identity ``labels_b`` (its **structure** provider), x_ab
    is ``labels_a``. Sum of the two batch-mean cross-entropies."""
    return F.cross_entropy(logits_ba.float(), labels_b) + F.cross_entropy(logits_ab.float(), labels_a)


def _stack_pairs(pairs: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor, int]:
    if not pairs:
        raise ValueError("at least one (real, fake) pair is needed")
    sizes = {tuple(r.shape) for r, _ in pairs} | {tuple(f.shape) for _, f in pairs}
    if len(sizes) != 1:
        raise ValueError(f"all real and fake batches must have one shape, got {sorted(sizes)}")
    return torch.cat([r for r, _ in pairs]), torch.cat([f for _, f in pairs]), len(pairs)


def paired_discriminator_loss(D, pairs: Sequence[Tuple[torch.Tensor, torch.Tensor]], gan_type: str = "lsgan",
                              r1_weight: float = 0.01) -> DiscriminatorLoss:
    """Σ over (real, fake) pairs of :func:`gclreid.losses.discriminator_loss` (official: D(x_ba) against
    x_a plus D(x_ab) against x_b), computed as one D pass over the stacked batches. Equal to separate
    calls because every term is a per-image mean and D has no batch-coupled layers (R1 included: the
    gradient of Σ D(x) w.r.t. one image depends on that image only)."""
    real, fake, n = _stack_pairs(pairs)
    d = discriminator_loss(D, real, fake, gan_type=gan_type, r1_weight=r1_weight)
    return DiscriminatorLoss(*(n * t for t in d))


def paired_generator_loss(D, fakes: Sequence[torch.Tensor], gan_type: str = "lsgan") -> torch.Tensor:
    """Σ over the fakes of :func:`gclreid.losses.generator_adversarial_loss` (one D pass)."""
    if not fakes:
        raise ValueError("at least one batch of fakes is needed")
    if len({tuple(f.shape) for f in fakes}) != 1:
        raise ValueError("all fake batches must have one shape")
    return len(fakes) * generator_adversarial_loss(D, torch.cat(list(fakes)), gan_type=gan_type)

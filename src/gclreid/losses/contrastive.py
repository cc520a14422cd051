"""TMP's contrastive loss with more positives (Take More Positives, Eq. 3–4)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def multi_positive_contrastive_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.05,
                                    ) -> torch.Tensor:
    """Eq. 3–4 of TMP over a batch of 2N augmented views.

    For an anchor i and each positive j (j ≠ i, same pseudo label)::

        L_ij = −log exp(s_ij/τ) / Σ_{k ≠ i, (k = j or y_k ≠ y_i)} exp(s_ik/τ)
        L_i  = Σ_j L_ij,          L = (1/2N) Σ_i L_i

    i.e. each positive is contrasted against all negatives, the other positives left out of its
    denominator. `features` are normalised here; `labels` give each view's pseudo label (the two
    views of one image share it, so every anchor has at least one positive).
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"features must be (2N, D) and labels (2N,); got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    z = F.normalize(features.float(), dim=1)
    logits = z @ z.t() / temperature  # s_ik / τ
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    positive = same & ~eye
    negative = ~same
    # log Σ_{k negative} exp(s_ik/τ), then add the positive's own term: log(exp(s_ij/τ) + Σ_neg).
    neg_lse = torch.logsumexp(logits.masked_fill(~negative, float("-inf")), dim=1, keepdim=True)
    denominators = torch.logaddexp(logits, neg_lse.expand_as(logits))
    pair_loss = (denominators - logits).masked_fill(~positive, 0.0)
    return pair_loss.sum() / len(z)

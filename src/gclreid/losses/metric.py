"""Supervised ReID losses: label-smoothed cross-entropy and batch-hard triplet."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy_label_smoothing(logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Cross-entropy against (1−ε)·one-hot + ε/C (Szegedy et al.), as used for ReID ID losses."""
    return F.cross_entropy(logits.float(), targets, label_smoothing=epsilon)


def batch_hard_triplet_loss(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) on Euclidean distances of `features`.

    For each anchor: hardest positive (farthest same label) and hardest negative (closest other label).
    margin > 0: hinge max(0, d_ap − d_an + margin); margin = 0: soft margin log(1 + exp(d_ap − d_an)).
    Anchors without a positive or a negative in the batch are left out.
    """
    x = features.float()
    dist = torch.cdist(x, x).clamp_min(1e-12)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    pos_mask, neg_mask = same & ~eye, ~same
    valid = pos_mask.any(1) & neg_mask.any(1)
    if not valid.any():
        return x.sum() * 0.0
    d_ap = dist.masked_fill(~pos_mask, float("-inf")).max(1).values[valid]
    d_an = dist.masked_fill(~neg_mask, float("inf")).min(1).values[valid]
    if margin > 0:
        return F.relu(d_ap - d_an + margin).mean()
    return F.softplus(d_ap - d_an).mean()

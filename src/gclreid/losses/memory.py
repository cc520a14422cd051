"""Cluster-centroid memory for cluster contrast (ClusterNCE with momentum-updated centroids)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClusterMemory(nn.Module):
    """One L2-normalised centroid per pseudo-label cluster.

    ``loss(features, labels)`` is the InfoNCE over all centroids, ``−log softmax(f·Mᵀ/τ)[y]``.
    ``update(features, labels)`` moves each centroid seen in the batch towards the mean of its
    batch features, ``M[y] ← normalise(m·M[y] + (1−m)·mean_batch(f | y))`` — one vectorised step
    per cluster rather than the reference code's sequential per-sample loop (the same fixed point,
    not bit-identical).
    """

    def __init__(self, num_features: int, num_clusters: int, temperature: float = 0.05, momentum: float = 0.2):
        super().__init__()
        self.temperature = temperature
        self.momentum = momentum
        self.register_buffer("centroids", torch.zeros(num_clusters, num_features))

    @torch.no_grad()
    def initialise(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Centroids = normalised mean feature of each cluster (labels ≥ 0, contiguous from 0)."""
        keep = labels >= 0
        f, y = F.normalize(features[keep].float(), dim=1), labels[keep]
        sums = torch.zeros(self.centroids.shape, device=f.device).index_add_(0, y, f)
        self.centroids = F.normalize(sums, dim=1).to(self.centroids.device)

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = F.normalize(features.float(), dim=1) @ self.centroids.t() / self.temperature
        return F.cross_entropy(logits, labels)

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        f = F.normalize(features.detach().float(), dim=1)
        sums = torch.zeros_like(self.centroids).index_add_(0, labels, f)
        counts = torch.zeros(len(self.centroids), device=f.device).index_add_(0, labels, torch.ones_like(labels, dtype=f.dtype))
        seen = counts > 0
        means = sums[seen] / counts[seen, None]
        self.centroids[seen] = F.normalize(self.momentum * self.centroids[seen] + (1 - self.momentum) * means, dim=1)

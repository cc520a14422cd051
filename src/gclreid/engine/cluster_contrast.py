"""Cluster contrast (Dai et al. 2021): DBSCAN pseudo labels each epoch, a centroid memory updated by
momentum, and the per-cluster InfoNCE (ClusterNCE) loss."""
from __future__ import annotations

import torch

from ..config import ConfigError
from ..losses import ClusterMemory
from . import distributed
from .common import forward_chunks
from .data import labelled_loader
from .method import register_method
from .pseudo_label import PseudoLabelMethod


@register_method("cluster_contrast")
class ClusterContrast(PseudoLabelMethod):
    memory: ClusterMemory

    def start_epoch(self, epoch):
        stats = super().start_epoch(epoch)
        num_clusters = int(self.labels.max()) + 1 if (self.labels >= 0).any() else 0
        if num_clusters < 2:
            raise ConfigError(f"epoch {epoch + 1}: clustering found {num_clusters} clusters; cluster contrast needs "
                              "at least 2 (try a larger cluster.eps, cluster.instance_epochs > 0 or a better-initialised "
                              "encoder)")
        t = self.cfg.train
        self.memory = ClusterMemory(self.features.shape[1], num_clusters, t.temperature, t.memory_momentum)
        self.memory.to(self.device).initialise(self.features.to(self.device),
                                               torch.as_tensor(self.labels, device=self.device))
        return stats

    def loader(self, epoch):
        return labelled_loader(self.records, self.labels, self.cfg, two_views=False)

    def step(self, batch):
        images, labels = batch["image"].to(self.device), batch["label"].to(self.device)
        with self.autocast():
            out = forward_chunks(self.encoder, images, self.cfg.train.bn_batch_size)
        loss = self.memory.loss(out.embedding, labels)
        self.optimise(loss)
        # Under torchrun every rank applies the whole global batch, so all hold the same centroids.
        self.memory.update(distributed.all_gather(out.embedding), distributed.all_gather(labels))
        return {"loss": loss.detach()}

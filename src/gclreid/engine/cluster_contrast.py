"""Cluster contrast (Dai et al. 2021): DBSCAN pseudo labels each epoch, a centroid memory updated by
momentum, and the per-cluster InfoNCE (ClusterNCE) loss."""
from __future__ import annotations

import numpy as np
import torch

from ..losses import ClusterMemory
from .common import build_encoder, forward_chunks, train_features, update_pseudo_labels
from .data import labelled_loader, usable_train_records
from .method import Method, register_method
from .optim import build_optimizer


@register_method("cluster_contrast")
class ClusterContrast(Method):
    def __init__(self, cfg, dataset, device):
        super().__init__(cfg, dataset, device)
        self.records = usable_train_records(dataset, cfg)
        encoder = build_encoder(cfg, device)
        self.models = {"identity_encoder": encoder}
        self.optimizers = {"identity_encoder": build_optimizer([encoder], cfg.optim, cfg.train.batch_size)}
        self.labels = np.full(len(self.records), -1, dtype=np.int64)
        self.memory: ClusterMemory | None = None

    def start_epoch(self, epoch):
        features = train_features(self.encoder, self.records, self.cfg, self.device)
        self.labels, stats = update_pseudo_labels(features, self.cfg, [r.pid for r in self.records], epoch)
        num_clusters = int(self.labels.max()) + 1 if (self.labels >= 0).any() else 0
        if num_clusters < 2:
            raise RuntimeError(f"epoch {epoch}: clustering found {num_clusters} clusters; cluster contrast needs at "
                               "least 2 (try a larger cluster.eps or a better-initialised encoder)")
        t = self.cfg.train
        self.memory = ClusterMemory(features.shape[1], num_clusters, t.temperature, t.memory_momentum).to(self.device)
        self.memory.initialise(features.to(self.device), torch.as_tensor(self.labels, device=self.device))
        return stats

    def loader(self, epoch):
        return labelled_loader(self.records, self.labels, self.cfg, two_views=False)

    def step(self, batch):
        images, labels = batch["image"].to(self.device), batch["label"].to(self.device)
        with self.autocast():
            out = forward_chunks(self.encoder, images, self.cfg.train.bn_batch_size)
        loss = self.memory.loss(out.embedding, labels)
        self.optimise(loss)
        self.memory.update(out.embedding, labels)
        return {"loss": loss.detach()}

    def state(self):
        return {"labels": self.labels}

    def load_state(self, state):
        self.labels = np.asarray(state.get("labels", self.labels))

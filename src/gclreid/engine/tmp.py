"""TMP, Take More Positives (seed 003): two augmented views per image, DBSCAN pseudo labels with
unclustered images as classes of their own, and the multi-positive contrastive loss (Eq. 3–4)."""
from __future__ import annotations

import numpy as np

from ..losses import multi_positive_contrastive_loss
from .common import build_encoder, forward_chunks, train_features, update_pseudo_labels
from .data import labelled_loader, usable_train_records
from .method import Method, register_method
from .optim import build_optimizer


@register_method("tmp")
class TMP(Method):
    def __init__(self, cfg, dataset, device):
        super().__init__(cfg, dataset, device)
        self.records = usable_train_records(dataset, cfg)
        encoder = build_encoder(cfg, device)
        self.models = {"identity_encoder": encoder}
        self.optimizers = {"identity_encoder": build_optimizer([encoder], cfg.optim, cfg.train.batch_size)}
        self.labels = np.arange(len(self.records), dtype=np.int64)

    def start_epoch(self, epoch):
        features = train_features(self.encoder, self.records, self.cfg, self.device)
        self.labels, stats = update_pseudo_labels(features, self.cfg, [r.pid for r in self.records], epoch)
        return stats

    def loader(self, epoch):
        return labelled_loader(self.records, self.labels, self.cfg, two_views=True)

    def step(self, batch):
        views, labels = batch["image"].to(self.device), batch["label"].to(self.device)
        images = views.flatten(0, 1)  # (B, 2, C, H, W) → (2B, C, H, W): views of one image adjacent
        labels = labels.repeat_interleave(2)
        with self.autocast():
            out = forward_chunks(self.encoder, images, self.cfg.train.bn_batch_size)
        loss = multi_positive_contrastive_loss(out.embedding, labels, self.cfg.train.temperature)
        self.optimise(loss)
        return {"loss": loss.detach()}

    def state(self):
        return {"labels": self.labels}

    def load_state(self, state):
        self.labels = np.asarray(state.get("labels", self.labels))

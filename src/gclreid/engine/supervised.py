"""Supervised training on a labelled (source) dataset: label-smoothed cross-entropy on the BN
embedding + batch-hard triplet on the pooled feature (the BNNeck recipe). Its checkpoint
initialises a stage-1 method on an unlabeled target (the domain-adaptive setting) or GCL."""
from __future__ import annotations

import numpy as np
from torch import nn

from ..errors import DatasetError
from ..losses import batch_hard_triplet_loss, cross_entropy_label_smoothing
from . import distributed
from .common import build_encoder, forward_chunks
from .data import labelled_loader, usable_train_records
from .method import Method, register_method
from .optim import build_optimizer


@register_method("supervised")
class Supervised(Method):
    def __init__(self, cfg, dataset, device):
        super().__init__(cfg, dataset, device)
        self.records = usable_train_records(dataset, cfg)
        pids = np.array([r.pid for r in self.records])
        if (pids < 0).any():
            raise DatasetError(f"train.method=supervised needs identity labels, but {int((pids < 0).sum())} training "
                               f"images of {dataset.name!r} at {dataset.root} have none")
        _, self.labels = np.unique(pids, return_inverse=True)
        encoder = build_encoder(cfg, device)
        classifier = nn.Linear(encoder.embed_dim, int(self.labels.max()) + 1, bias=False).to(device)
        nn.init.normal_(classifier.weight, std=0.001)
        self.models = {"identity_encoder": encoder, "classifier": classifier}
        self.optimizers = {"identity_encoder": build_optimizer([encoder, classifier], cfg.optim, cfg.train.batch_size)}

    def loader(self, epoch):
        return labelled_loader(self.records, self.labels, self.cfg, two_views=False)

    def step(self, batch):
        images, labels = batch["image"].to(self.device), batch["label"].to(self.device)
        t = self.cfg.train
        with self.autocast():
            out = forward_chunks(self.encoder, images, t.bn_batch_size)
            logits = self.models["classifier"](out.embedding)
        ce = cross_entropy_label_smoothing(logits, labels, t.label_smoothing)
        # Hardest positives and negatives over the whole global batch (all ranks' shares under torchrun).
        triplet = batch_hard_triplet_loss(distributed.gather_with_grad(out.pooled), distributed.all_gather(labels),
                                          t.triplet_margin)
        loss = ce + t.triplet_weight * triplet
        self.optimise(loss)
        accuracy = (logits.argmax(1) == labels).float().mean()
        return {"loss": loss.detach(), "ce": ce.detach(), "triplet": triplet.detach(), "accuracy": accuracy.detach()}

"""The base of the stage-1 methods that train on pseudo labels (TMP, cluster contrast)."""
from __future__ import annotations

import numpy as np

from . import distributed
from .common import build_encoder, check_cameras_for_clustering, train_features, update_pseudo_labels
from .data import usable_train_records
from .method import Method
from .optim import build_optimizer


class PseudoLabelMethod(Method):
    """One identity encoder and its optimiser; each epoch starts by clustering fresh features of all
    training images (``self.features``) into ``self.labels``, saved in the checkpoint."""

    def __init__(self, cfg, dataset, device):
        super().__init__(cfg, dataset, device)
        self.records = usable_train_records(dataset, cfg)
        check_cameras_for_clustering(cfg, [r.camid for r in self.records])
        encoder = build_encoder(cfg, device)
        self.models = {"identity_encoder": encoder}
        self.optimizers = {"identity_encoder": build_optimizer([encoder], cfg.optim, cfg.train.batch_size)}
        self.labels = np.full(len(self.records), -1, dtype=np.int64)
        self.features = None

    def start_epoch(self, epoch):
        self.features = train_features(self.encoder, self.records, self.cfg, self.device)
        # Under torchrun: clustered once, on rank 0; every rank trains on its labels.
        self.labels, stats = distributed.on_main(lambda: update_pseudo_labels(
            self.features, self.cfg, [r.pid for r in self.records], epoch, cameras=[r.camid for r in self.records],
            device=self.device))
        return stats

    def state(self):
        return {"labels": self.labels}

    def load_state(self, state):
        self.labels = self.check_per_image_state(state.get("labels", self.labels), self.records)

"""TMP, Take More Positives (seed 003): two augmented views per image, DBSCAN pseudo labels with
unclustered images as classes of their own, and the multi-positive contrastive loss (Eq. 3–4)."""
from __future__ import annotations

from ..losses import multi_positive_contrastive_loss
from . import distributed
from .common import forward_chunks
from .data import labelled_loader
from .method import register_method
from .pseudo_label import PseudoLabelMethod


@register_method("tmp")
class TMP(PseudoLabelMethod):
    def loader(self, epoch):
        return labelled_loader(self.records, self.labels, self.cfg, two_views=True)

    def step(self, batch):
        views, labels = batch["image"].to(self.device), batch["label"].to(self.device)
        images = views.flatten(0, 1)  # (B, 2, C, H, W) → (2B, C, H, W): views of one image adjacent
        labels = labels.repeat_interleave(2)
        with self.autocast():
            out = forward_chunks(self.encoder, images, self.cfg.train.bn_batch_size)
        # Positives and negatives from the whole global batch (all ranks' shares under torchrun).
        loss = multi_positive_contrastive_loss(distributed.gather_with_grad(out.embedding),
                                               distributed.all_gather(labels), self.cfg.train.temperature)
        self.optimise(loss)
        return {"loss": loss.detach()}

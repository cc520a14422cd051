"""Losses and memories: TMP's multi-positive contrastive loss, the cluster-centroid memory,
label-smoothed cross-entropy and batch-hard triplet."""
from .contrastive import multi_positive_contrastive_loss
from .memory import ClusterMemory
from .metric import batch_hard_triplet_loss, cross_entropy_label_smoothing

__all__ = ["multi_positive_contrastive_loss", "ClusterMemory", "batch_hard_triplet_loss",
           "cross_entropy_label_smoothing"]

"""Statistics of a clustering, and its agreement with ground-truth identities (for analysis only)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
from sklearn import metrics

from ._checks import FeatureError


@dataclass
class ClusterStats:
    """Counts for a label vector where −1 marks an outlier; agreement with ground truth if given.

    NMI and ARI are computed over all samples with every outlier as its own singleton cluster
    (dropping outliers would reward a clustering for discarding hard samples); purity is over the
    clustered samples only (singletons are trivially pure): the fraction of clustered samples
    whose identity is the most frequent identity of their cluster."""
    num_samples: int
    num_clusters: int
    num_outliers: int
    largest_cluster: int
    mean_cluster_size: float
    num_true_ids: Optional[int] = None
    nmi: Optional[float] = None
    ari: Optional[float] = None
    purity: Optional[float] = None

    def as_dict(self) -> dict:
        return asdict(self)


def cluster_statistics(labels: np.ndarray, true_ids: Optional[np.ndarray] = None) -> ClusterStats:
    """Number of clusters, outliers and cluster sizes of `labels` (int, −1 = outlier) and, when
    `true_ids` (one id per sample) are given, NMI, ARI and purity against them."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise FeatureError(f"cluster_statistics: labels must be a 1-D integer array, got "
                           f"shape {labels.shape} dtype {labels.dtype}")
    if labels.size and labels.min() < -1:
        raise FeatureError(f"cluster_statistics: labels must be ≥ −1 (−1 = outlier), got {labels.min()}")
    clustered = labels >= 0
    sizes = np.bincount(labels[clustered]) if clustered.any() else np.zeros(0, dtype=np.int64)
    sizes = sizes[sizes > 0]
    stats = ClusterStats(
        num_samples=int(labels.size),
        num_clusters=int(sizes.size),
        num_outliers=int((~clustered).sum()),
        largest_cluster=int(sizes.max()) if sizes.size else 0,
        mean_cluster_size=float(sizes.mean()) if sizes.size else 0.0,
    )
    if true_ids is None:
        return stats
    true_ids = np.asarray(true_ids)
    if true_ids.shape != labels.shape:
        raise FeatureError(f"cluster_statistics: true_ids has shape {true_ids.shape}, labels {labels.shape}")
    _, truth = np.unique(true_ids, return_inverse=True)
    # Outliers become singletons with labels past the largest cluster label.
    singles = labels.copy()
    singles[~clustered] = labels.max(initial=-1) + 1 + np.arange(int((~clustered).sum()))
    stats.num_true_ids = int(truth.max(initial=-1) + 1)
    stats.nmi = float(metrics.normalized_mutual_info_score(truth, singles))
    stats.ari = float(metrics.adjusted_rand_score(truth, singles))
    if clustered.any():
        table = metrics.cluster.contingency_matrix(labels[clustered], truth[clustered], sparse=True)
        stats.purity = float(table.max(axis=1).sum() / clustered.sum())
    return stats

"""Pseudo labels for unsupervised ReID: exact kNN, sparse k-reciprocal Jaccard distance, DBSCAN with
eps from rho, and cluster statistics. See docs/clustering.md."""
from ._checks import FeatureError
from .camera import camera_centered
from .jaccard import jaccard_blocks, jaccard_distance
from .knn import KNN, knn
from .pseudo_labels import (OUTLIER_POLICIES, PseudoLabels, dbscan_precomputed, eps_from_rho,
                            pseudo_labels)
from .stats import ClusterStats, cluster_statistics

__all__ = [
    "FeatureError", "camera_centered", "KNN", "knn", "jaccard_distance", "jaccard_blocks", "eps_from_rho",
    "dbscan_precomputed", "pseudo_labels", "PseudoLabels", "OUTLIER_POLICIES", "ClusterStats",
    "cluster_statistics",
]

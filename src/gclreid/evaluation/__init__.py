"""Evaluation: feature extraction, distances and ranking metrics (mAP, CMC, mINP).

    features, pids, camids = extract_features(model, loader, device, flip=True)
    distmat = pairwise_distance(query_features, gallery_features)          # squared Euclidean
    result = evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids)  # mAP, mINP, cmc, counts
"""
from .distance import METRICS, pairwise_distance
from .features import extract_features
from .ranking import evaluate_features, evaluate_ranking

__all__ = ["evaluate_ranking", "evaluate_features", "pairwise_distance", "extract_features", "METRICS"]

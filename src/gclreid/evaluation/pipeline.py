"""Evaluate an embedding model on a dataset's query/gallery split: features → distances → metrics."""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch.utils.data import DataLoader

from ..errors import DatasetError


def evaluate_model(model: torch.nn.Module, dataset, data_cfg, eval_cfg, device: torch.device,
                   progress: bool = True) -> Dict[str, Any]:
    """Rank the gallery for every query of `dataset` with `model`'s embedding.

    Returns the metrics of :func:`evaluate_ranking` plus the sizes used. Features come from the test
    transform (resize + normalise), with flip averaging and k-reciprocal re-ranking as `eval_cfg` says.
    """
    from ..data import ImageDataset, build_test_transform
    from . import evaluate_ranking, extract_features, pairwise_distance

    if not dataset.query or not dataset.gallery:
        raise DatasetError(f"dataset {dataset.name!r} at {dataset.root} has no query/gallery split to evaluate "
                           f"(query {len(dataset.query)}, gallery {len(dataset.gallery)} images)")
    transform = build_test_transform(data_cfg)

    def features_of(records):
        images = ImageDataset(records, transform, skip_bad_images=data_cfg.skip_bad_images)
        loader = DataLoader(images, batch_size=eval_cfg.batch_size, shuffle=False, num_workers=data_cfg.workers,
                            pin_memory=device.type == "cuda")
        return extract_features(model, loader, device, flip=eval_cfg.flip, progress=progress)

    qf, q_pids, q_camids = features_of(dataset.query)
    gf, g_pids, g_camids = features_of(dataset.gallery)
    if eval_cfg.rerank:
        from .rerank import re_ranking
        distmat = re_ranking(qf, gf, k1=eval_cfg.k1, k2=eval_cfg.k2, lambda_value=eval_cfg.lambda_value)
    else:
        distmat = pairwise_distance(qf, gf)
    result = evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids,
                              max_rank=eval_cfg.max_rank, query_chunk=eval_cfg.query_chunk)
    result.update(num_query_images=int(len(qf)), num_gallery_images=int(len(gf)),
                  feature_dim=int(qf.shape[1]), flip=bool(eval_cfg.flip), rerank=bool(eval_cfg.rerank))
    return result

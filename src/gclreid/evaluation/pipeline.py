"""Evaluate an embedding model on a dataset's query/gallery split: features → distances → metrics."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader

from ..errors import CheckpointError, DatasetError


def encoder_from_checkpoint(path, cfg, model_key: Optional[str] = None,
                            overrides: Sequence[str] = ()) -> Tuple[torch.nn.Module, Any, str]:
    """Build and load the ReID encoder stored in gclreid checkpoint `path` (eval mode, on the CPU).

    The network must be built, and images sized, exactly as in training: the checkpoint's ``model``
    section and image size (and ``dgnet`` section for a DG-Net run: its test feature) are merged onto
    `cfg`, then the `overrides` (``key=value``) of those sections are applied again on top.
    `model_key` defaults to ``identity_encoder``, or ``appearance_encoder`` for a DG-Net checkpoint
    (evaluated with DG-Net's test feature). Returns ``(encoder, cfg, key)``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ..checkpoint import load_model_state, read_checkpoint
    from ..models import appearance_num_classes, build_appearance_encoder, build_identity_encoder, is_appearance_state

    payload = read_checkpoint(path)
    saved = payload.get("config") or {}
    layers = [{"model": saved["model"]}] if saved.get("model") else []
    if saved.get("data"):
        layers.append({"data": {k: saved["data"][k] for k in ("height", "width") if k in saved["data"]}})
    if saved.get("dgnet") and (saved.get("train") or {}).get("method") == "dgnet":
        layers.append({"dgnet": saved["dgnet"]})
    if layers:
        try:
            cfg = OmegaConf.merge(cfg, *layers)
        except OmegaConfBaseException as exc:
            raise CheckpointError(f"checkpoint {path}: its saved config does not fit this gclreid: {exc}") from exc
        mine = [o for o in overrides if o.split("=", 1)[0].split(".")[0] in ("model", "data", "dgnet")]
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(mine))
    cfg.model.pretrained = False  # weights come from the checkpoint
    models = payload["models"]
    key = model_key or ("appearance_encoder" if "appearance_encoder" in models and "identity_encoder" not in models
                        else "identity_encoder")
    if key not in models:
        raise CheckpointError(f"checkpoint {path} has no model {key!r}; it holds {sorted(models)} "
                              "(choose one with --model-key)")
    if is_appearance_state(models[key]):
        encoder = build_appearance_encoder(cfg.model, cfg.dgnet, appearance_num_classes(models[key]))
    else:
        encoder = build_identity_encoder(cfg.model)
    load_model_state(encoder, models[key], source=f"model {key!r} in {path}")
    return encoder.eval(), cfg, key


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

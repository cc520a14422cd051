"""Evaluate an embedding model on a dataset's query/gallery split: features → distances → metrics."""
from __future__ import annotations

import logging
import sys
import time
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader

from ..errors import CheckpointError, DatasetError, EvaluationError
from ..progress import format_seconds, is_quiet as progress_quiet


def encoder_from_checkpoint(path, cfg, model_key: Optional[str] = None, overrides: Sequence[str] = (),
                            payload: Optional[Dict[str, Any]] = None) -> Tuple[torch.nn.Module, Any, str]:
    """Build and load the ReID encoder stored in gclreid checkpoint `path` (eval mode, on the CPU).

    The network must be built, and images sized, exactly as in training: the checkpoint's ``model``
    section and image size (and ``dgnet`` section for a DG-Net run: its test feature) are merged onto
    `cfg`, then the `overrides` (``key=value``) of those sections are applied again on top.
    `model_key` defaults to ``identity_encoder``, or ``appearance_encoder`` for a DG-Net checkpoint
    (evaluated with DG-Net's test feature). `payload`: the checkpoint as :func:`read_checkpoint` returned
    it, when the caller has already read it (it is not read again). A checkpoint without an identity
    encoder (e.g. a generator only) is a :class:`CheckpointError` naming the models it holds.
    Returns ``(encoder, cfg, key)``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ..checkpoint import load_model_state, read_checkpoint
    from ..models import appearance_num_classes, build_appearance_encoder, build_identity_encoder, is_appearance_state

    payload = read_checkpoint(path) if payload is None else payload
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
    encoders = sorted(name for name, state in models.items() if _is_encoder_state(state))
    if key not in models or not _is_encoder_state(models[key]):
        if not encoders:
            raise CheckpointError(f"checkpoint {path} holds no identity encoder (it holds {sorted(models)}): a "
                                  "generator-only checkpoint cannot embed images; use the checkpoint of the run "
                                  "that trained the encoder")
        what = "no model" if key not in models else "model"
        tail = "" if key not in models else " is not an identity encoder (no backbone.*/feat_bn.* weights)"
        raise CheckpointError(f"checkpoint {path} has {what} {key!r}{tail}; it holds {sorted(models)}, of which "
                              f"{encoders} can embed images (choose one with --model-key)")
    if is_appearance_state(models[key]):
        encoder = build_appearance_encoder(cfg.model, cfg.dgnet, appearance_num_classes(models[key]))
    else:
        encoder = build_identity_encoder(cfg.model)
    load_model_state(encoder, models[key], source=f"model {key!r} in {path}")
    bad = [name for name, t in (*encoder.named_parameters(), *encoder.named_buffers())
           if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"checkpoint {path}: model {key!r} has weights or BatchNorm statistics that are not "
                              f"finite (NaN/Inf) in {len(bad)} tensors ({', '.join(bad[:3])}{', …' if len(bad) > 3 else ''}): "
                              "it would embed every image as NaN; use an earlier checkpoint of the run")
    return encoder.eval(), cfg, key


def valid_query_count(dataset) -> int:
    """How many queries of `dataset` have a valid match in its gallery — an image of the same identity,
    not from the query's camera (unknown cameras, camid < 0, never count as the same) and not the query
    image itself — the rule of :func:`evaluate_ranking`, from the labels alone (no features needed)."""
    by_pid: Dict[int, list] = {}
    for g in dataset.gallery:
        by_pid.setdefault(g.pid, []).append(g)
    return sum(1 for q in dataset.query
               if any(g.path != q.path and not (q.camid >= 0 and g.camid == q.camid) for g in by_pid.get(q.pid, ())))


def _is_encoder_state(state) -> bool:
    """Whether a state dict is an identity (or DG-Net appearance) encoder's: a backbone and the BN embedding."""
    return (isinstance(state, dict) and "feat_bn.weight" in state
            and any(isinstance(k, str) and k.startswith("backbone.") for k in state))


def evaluate_model(model: torch.nn.Module, dataset, data_cfg, eval_cfg, device: torch.device,
                   progress: Union[bool, logging.Logger] = True, return_details: bool = False,
                   desc: str = "evaluate"):
    """Rank the gallery for every query of `dataset` with `model`'s embedding.

    Returns the metrics of :func:`evaluate_ranking` plus the sizes used. Features come from the test
    transform (resize + normalise), with flip averaging and k-reciprocal re-ranking as `eval_cfg` says.
    With ``return_details=True`` returns ``(metrics, details)``; ``details`` holds ``query_records`` and
    ``gallery_records`` (the images actually embedded, in row order), ``query_features``,
    ``gallery_features`` and the ranked ``distmat`` (re-ranked when `eval_cfg.rerank`).
    `progress`: feature extraction and ranking progress on stderr (true; a bar on a terminal, lines with
    rate and ETA otherwise), or through this logger (training), or none (false); `desc` starts its lines.
    """
    from ..data import ImageDataset, build_test_transform
    from . import evaluate_ranking, extract_features, pairwise_distance

    if not dataset.query or not dataset.gallery:
        raise DatasetError(f"dataset {dataset.name!r} at {dataset.root} has no query/gallery split to evaluate "
                           f"(query {len(dataset.query)}, gallery {len(dataset.gallery)} images)")
    if valid_query_count(dataset) == 0:
        raise EvaluationError(f"dataset {dataset.name!r} at {dataset.root}: none of its {len(dataset.query)} queries "
                              "has a valid match in the gallery (an image of the same identity from another camera), "
                              "so there is nothing to rank; check the identities and cameras of query and gallery")
    transform = build_test_transform(data_cfg)

    def say(text: str) -> None:
        if progress_quiet() or progress is False:
            return
        if isinstance(progress, logging.Logger):
            progress.info("%s", text)
        elif progress:
            print(text, file=sys.stderr, flush=True)

    def features_of(records, split):
        images = ImageDataset(records, transform, skip_bad_images=data_cfg.skip_bad_images)
        loader = DataLoader(images, batch_size=eval_cfg.batch_size, shuffle=False, num_workers=data_cfg.workers,
                            pin_memory=device.type == "cuda")
        return (*extract_features(model, loader, device, flip=eval_cfg.flip, progress=progress,
                                  desc=f"{desc}: {split} features"), images.records)

    qf, q_pids, q_camids, q_records = features_of(dataset.query, "query")
    gf, g_pids, g_camids, g_records = features_of(dataset.gallery, "gallery")
    not_finite = [f"{int((~torch.isfinite(f)).any(1).sum())} of {len(f)} {split}"
                  for f, split in ((qf, "query"), (gf, "gallery")) if not torch.isfinite(f).all()]
    if not_finite:
        raise EvaluationError(f"the features of {' and '.join(not_finite)} images are not finite (NaN/Inf): the "
                              "model's weights or BatchNorm statistics are not finite")
    started = time.monotonic()
    if eval_cfg.rerank:
        from .rerank import re_ranking
        say(f"{desc}: re-ranking {len(qf)} queries against {len(gf)} gallery images (k-reciprocal, "
            f"k1={eval_cfg.k1} k2={eval_cfg.k2})")
        distmat = re_ranking(qf, gf, k1=eval_cfg.k1, k2=eval_cfg.k2, lambda_value=eval_cfg.lambda_value)
    else:
        distmat = pairwise_distance(qf, gf)
    # A query image that is also in the gallery never counts as its own match (camera-free data: the
    # only exclusion; with cameras it is same-camera junk anyway).
    column = {r.path: j for j, r in enumerate(g_records)}
    same_image = [column.get(r.path, -1) for r in q_records]
    result = evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids,
                              max_rank=eval_cfg.max_rank, query_chunk=eval_cfg.query_chunk,
                              query_gallery_index=same_image)
    say(f"{desc}: ranked {len(qf)} queries against {len(gf)} gallery images in "
        f"{format_seconds(time.monotonic() - started)}")
    result.update(num_query_images=int(len(qf)), num_gallery_images=int(len(gf)),
                  feature_dim=int(qf.shape[1]), flip=bool(eval_cfg.flip), rerank=bool(eval_cfg.rerank))
    if return_details:
        return result, {"query_records": q_records, "gallery_records": g_records, "query_features": qf,
                        "gallery_features": gf, "distmat": distmat}
    return result

"""Pieces shared by the training methods: encoder construction and initialisation, BN-chunked
forward passes, train-set feature extraction and the pseudo-label update."""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_model_state, read_checkpoint
from ..config import ConfigError
from ..errors import CheckpointError
from ..models import build_identity_encoder, map_official_eid_state, read_state_dict
from ..progress import format_seconds

log = logging.getLogger("gclreid")


def build_encoder(cfg, device: torch.device) -> nn.Module:
    """The identity encoder of cfg.model, initialised from train.init when given."""
    encoder = build_identity_encoder(cfg.model)
    if cfg.train.init:
        report = init_encoder(encoder, cfg.train.init, cfg.train.init_key)
        log.info("initialised the encoder from %s: %s", cfg.train.init, report)
    return encoder.to(device)


def init_encoder(encoder: nn.Module, path: str, key: str = "identity_encoder") -> Dict[str, List[str]]:
    """Load a gclreid checkpoint's model `key`, or a plain/official ResNet state dict, into `encoder`.

    gclreid checkpoints must fit exactly. A plain state dict (e.g. an external warm-up model) is
    mapped to our names; every key that did not load is reported, never silently dropped, and a file of
    which no tensor fits the encoder is an error.
    """
    # A damaged gclreid checkpoint is an error of its own, not read again as a plain state dict.
    payload = read_checkpoint(path, allow_other=True)
    if payload is not None:
        if key not in payload["models"]:
            raise CheckpointError(f"checkpoint {path} has no model {key!r}; it holds {sorted(payload['models'])}")
        return load_model_state(encoder, payload["models"][key], source=f"model {key!r} in {path}")
    state = read_state_dict(path)
    mapped, dropped = map_official_eid_state(state)
    own = encoder.state_dict()
    if not any(k in own for k in mapped):
        raise CheckpointError(f"state dict {path} does not fit {type(encoder).__name__}: none of its {len(state)} "
                              f"tensors matches an encoder parameter (file: {_some(state)}; expected: {_some(own)})")
    report = load_model_state(encoder, mapped, source=f"state dict {path}", strict=False)
    report["dropped"] = list(dropped)
    if report["missing"]:
        log.warning("%s: %d encoder parameters were not in the file and keep their initial values: %s",
                    path, len(report["missing"]), ", ".join(report["missing"][:8]))
    if report["unexpected"] or dropped:
        log.warning("%s: keys not used: %s", path, ", ".join((list(dropped) + report["unexpected"])[:8]))
    return report


def _some(keys, n: int = 4) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def forward_chunks(model: nn.Module, images: torch.Tensor, bn_batch_size: int):
    """model(images), with BatchNorm statistics computed over chunks of `bn_batch_size` images.

    This reproduces training on several GPUs (each normalising its own share of the batch) on one
    device, so results do not depend on how many devices a run had. 0 = the whole batch.
    """
    if bn_batch_size <= 0 or bn_batch_size >= len(images):
        return model(images)
    outputs = [model(chunk) for chunk in images.split(bn_batch_size)]
    if isinstance(outputs[0], tuple):
        return type(outputs[0])(*(torch.cat(parts) for parts in zip(*outputs)))
    return torch.cat(outputs)


@contextlib.contextmanager
def running_stats_frozen(module: nn.Module, frozen: bool = True):
    """Forward passes inside leave the BatchNorm running statistics of `module` (and their batch
    counters) unchanged (momentum 0); in training mode BN still normalises with the batch's own
    statistics. No-op when not `frozen`."""
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if frozen else []
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(layers, saved):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def train_features(encoder: nn.Module, records: Sequence, cfg, device: torch.device,
                   desc: str = "training-set features") -> torch.Tensor:
    """L2-normalised embeddings of `records` with the test transform (for clustering). Progress lines
    go to the ``gclreid`` log (shown when logging is on, e.g. ``gclreid train``). Under torchrun each
    rank embeds its block of the records and every rank gets all of them, in order."""
    from ..data import ImageDataset, build_loader, build_test_transform
    from ..evaluation import extract_features
    from . import distributed
    lo, hi = distributed.shard_range(len(records))
    images = ImageDataset(records[lo:hi], build_test_transform(cfg.data))
    loader = build_loader(images, cfg.eval.batch_size, workers=cfg.data.workers)
    features, _, _ = extract_features(encoder, loader, device, flip=False, progress=log, desc=desc)
    return distributed.all_gather_shards(features)


def check_cameras_for_clustering(cfg, cameras) -> None:
    """cluster.camera_normalize needs a camera id for every training image; the methods that cluster call
    this when they are built, so that a dataset without cameras is refused before any work."""
    if cfg.cluster.camera_normalize and len(cameras) and min(cameras) < 0:
        missing = sum(1 for c in cameras if c < 0)
        raise ConfigError(f"cluster.camera_normalize needs camera ids, but {missing} of {len(cameras)} training "
                          "images have none (camid -1: e.g. a folder dataset without a camera pattern); give the "
                          "pattern (data.options.pattern) or set cluster.camera_normalize=false")


def update_pseudo_labels(features: torch.Tensor, cfg, true_pids: Sequence[int] = (), epoch: int = 0,
                         cameras: Sequence[int] = (), device=None) -> Tuple[np.ndarray, Dict[str, float]]:
    """DBSCAN on the k-reciprocal Jaccard distance → (labels, statistics).

    During the first cluster.instance_epochs epochs every image is its own class instead.

    Labels are contiguous from 0; under outliers=drop unclustered images are −1, under single each
    gets a class of its own. Statistics include NMI/ARI/purity against `true_pids` when those are
    known (for analysis only — they never influence training). With cluster.camera_normalize the
    features are centred per camera (`cameras`, one id per image) before clustering. `device` is where
    the kNN and the Jaccard blocks are computed (the training device: a GPU run clusters on the GPU).
    """
    from ..clustering import pseudo_labels
    c = cfg.cluster
    if epoch < c.instance_epochs:
        return np.arange(len(features), dtype=np.int64), {"num_clusters": len(features), "num_outliers": 0,
                                                          "num_classes": len(features), "instance": True}
    pids = np.asarray(true_pids)
    known = len(pids) == len(features) and len(pids) > 0 and bool((pids >= 0).all())
    if c.camera_normalize and len(cameras) != len(features):
        raise ConfigError(f"cluster.camera_normalize needs one camera id per image; got {len(cameras)} for "
                          f"{len(features)} images")
    check_cameras_for_clustering(cfg, cameras)
    log.info("clustering %d training images (k-reciprocal Jaccard distance, k1=%d k2=%d, DBSCAN)", len(features),
             c.k1, c.k2)
    started = time.monotonic()
    result = pseudo_labels(features, eps=c.eps if c.eps > 0 else None, rho=c.rho, min_samples=c.min_samples,
                           k1=c.k1, k2=c.k2, outliers=c.outliers, true_ids=pids if known else None,
                           cameras=np.asarray(cameras) if c.camera_normalize else None, device=device)
    log.info("clustering took %s", format_seconds(time.monotonic() - started))
    return np.asarray(result.labels, dtype=np.int64), result.as_dict()

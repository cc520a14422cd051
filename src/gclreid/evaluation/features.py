"""Batched feature extraction with optional flip averaging."""
from __future__ import annotations

import logging
from typing import Any, Iterable, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..progress import Progress

__all__ = ["extract_features"]

BATCH_KEYS = ("image", "pid", "camid", "index")


def extract_features(model: torch.nn.Module, loader: Iterable[dict], device: Union[str, torch.device],
                     flip: bool = False, progress: Union[bool, logging.Logger] = True, normalize: bool = True,
                     desc: str = "features") -> Tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Embed every image of ``loader`` with ``model``.

    Each batch is a dict with ``image`` (B×C×H×W tensor), ``pid``, ``camid`` and ``index`` (position
    in the dataset), as the gclreid datasets yield. The model is moved to ``device`` and run in eval
    mode under ``torch.no_grad()`` (its train/eval mode is restored afterwards); ``model.embed(images)``
    is called when the model has an ``embed`` method, else ``model(images)``; either must return a
    B×D tensor.

    With ``flip=True`` the feature is the mean of the image's and its horizontal mirror's, or
    ``model.fuse_flip(feature, mirror_feature)`` when the model defines it (DG-Net re-normalises each
    half of its two-part feature). With ``normalize=True`` (default) the final features are L2-normalised.

    Returns ``(features, pids, camids)``: float32 N×D on the CPU and two numpy arrays, rows sorted by
    ``index`` — dataset order when the loader covers the whole dataset, whatever its sampler.
    Progress (images, rate, ETA; :class:`gclreid.progress.Progress`) goes to stderr when ``progress`` is
    true — a bar on a terminal, a line every few seconds otherwise — or through ``progress`` when it is
    a :class:`logging.Logger` (as during training).
    """
    device = torch.device(device)
    was_training = model.training
    model.to(device)
    model.eval()
    embed = model.embed if callable(getattr(model, "embed", None)) else model
    fuse = model.fuse_flip if callable(getattr(model, "fuse_flip", None)) else (lambda a, b: (a + b) / 2)
    images_total = _dataset_size(loader)
    bar = Progress(images_total if images_total is not None else (len(loader) if hasattr(loader, "__len__") else None),
                   desc=desc, unit="images" if images_total is not None else "batches", enabled=bool(progress),
                   log=progress if isinstance(progress, logging.Logger) else None)
    feats, pids, camids, indices = [], [], [], []
    try:
        with torch.no_grad(), bar:
            for batch in loader:
                missing = [k for k in BATCH_KEYS if k not in batch]
                if missing:
                    raise ValueError(f"batches must be dicts with keys {', '.join(BATCH_KEYS)}; missing "
                                     f"{', '.join(missing)} (got {', '.join(map(str, batch))})")
                images = batch["image"].to(device, non_blocking=True)
                out = _embed_checked(embed, images)
                if flip:
                    out = fuse(out, _embed_checked(embed, torch.flip(images, dims=[3])))
                feats.append(out.float().cpu())
                pids.append(_as_numpy(batch["pid"]))
                camids.append(_as_numpy(batch["camid"]))
                indices.append(_as_numpy(batch["index"]).astype(np.int64))
                bar.update(len(out) if images_total is not None else 1)
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("the loader yielded no batches; nothing to extract")
    features = torch.cat(feats)
    if normalize:
        features = F.normalize(features, dim=1)
    index = np.concatenate(indices)
    order = np.argsort(index, kind="stable")
    dup = index[order][1:][np.diff(index[order]) == 0]
    if len(dup):
        raise ValueError(f"the loader yielded dataset index {int(dup[0])} more than once "
                         f"({len(dup)} duplicates); use a sampler that visits each image once")
    return features[torch.from_numpy(order)], np.concatenate(pids)[order], np.concatenate(camids)[order]


def _dataset_size(loader) -> Any:
    """Images the loader will yield, when it says (a DataLoader over a sized dataset, no dropped batch)."""
    dataset = getattr(loader, "dataset", None)
    if dataset is None or getattr(loader, "drop_last", False) or getattr(loader, "batch_size", 1) is None:
        return None
    try:
        sampler = getattr(loader, "sampler", None)
        return len(sampler) if sampler is not None else len(dataset)
    except TypeError:
        return None


def _embed_checked(embed, images: torch.Tensor) -> torch.Tensor:
    out = embed(images)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != images.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model's embedding of a batch of {images.shape[0]} images must be a "
                         f"({images.shape[0]}, D) tensor, got {shape}")
    return out


def _as_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy().reshape(-1)
    return np.asarray(values).reshape(-1)

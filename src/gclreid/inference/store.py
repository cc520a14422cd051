"""Embedding files: features of a set of images with their paths, labels and how they were made.

A ``.npz`` file (numpy, no pickled objects) with

========== ================ ===========================================================================
key        dtype / shape    contents
========== ================ ===========================================================================
features   float32 (N, D)   L2-normalised features, row i for ``paths[i]``
paths      unicode (N,)     absolute image paths (as given for in-memory images: ``<image 3>``)
pids       int64 (N,)       identity from the dataset reader, -1 where unknown
camids     int64 (N,)       camera (0-based) from the dataset reader, -1 where unknown
meta       unicode ()       JSON: format, version, checkpoint, model_key, method, arch, weights_sha256,
                            preprocessing (height, width, resize, mean, std, flip), feature_dim,
                            source (what was embedded), skipped images, gclreid version, created (UTC)
========== ================ ===========================================================================
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from ..checkpoint import _umask  # the same permission rule as checkpoints
from ..errors import GclreidError

__all__ = ["Embeddings", "save_embeddings", "load_embeddings", "EMBEDDINGS_FORMAT"]

EMBEDDINGS_FORMAT = "gclreid-embeddings"
EMBEDDINGS_VERSION = 1


class EmbeddingsError(GclreidError, ValueError):
    """An embeddings file that is missing, unreadable, or not one written by ``gclreid embed``."""


@dataclass
class Embeddings:
    """The contents of an embeddings file."""
    features: np.ndarray
    paths: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    meta: Dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.features.shape[0])


def save_embeddings(path: os.PathLike, features: np.ndarray, paths: Sequence[str],
                    pids: Optional[Sequence[int]] = None, camids: Optional[Sequence[int]] = None,
                    meta: Optional[Dict[str, Any]] = None) -> Path:
    """Write an embeddings file atomically (temporary file in the same folder, then rename); `path` is
    used as given (no ``.npz`` is appended). Returns the path."""
    path = Path(path)
    n = len(paths)
    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] != n:
        raise ValueError(f"features of shape {features.shape} for {n} paths")
    pids = np.full(n, -1, np.int64) if pids is None else np.asarray(pids, dtype=np.int64)
    camids = np.full(n, -1, np.int64) if camids is None else np.asarray(camids, dtype=np.int64)
    meta = {"format": EMBEDDINGS_FORMAT, "version": EMBEDDINGS_VERSION, **(meta or {}),
            "feature_dim": int(features.shape[1]), "num_images": n}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, features=features, paths=np.asarray(list(paths), dtype=str).reshape(n),
                     pids=pids, camids=camids, meta=np.asarray(json.dumps(meta)))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_embeddings(path: os.PathLike) -> Embeddings:
    """Read an embeddings file written by :func:`save_embeddings` (``gclreid embed``)."""
    path = Path(path)
    if not path.is_file():
        raise EmbeddingsError(f"embeddings file {path} does not exist (write one with `gclreid embed`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("features", "paths", "pids", "camids", "meta") if k not in data.files]
            if missing:
                raise EmbeddingsError(f"{path} is not a gclreid embeddings file: no {', '.join(missing)} "
                                      "(write one with `gclreid embed`)")
            meta = json.loads(str(data["meta"]))
            out = Embeddings(np.ascontiguousarray(data["features"], dtype=np.float32), data["paths"],
                             data["pids"].astype(np.int64), data["camids"].astype(np.int64), meta)
    except EmbeddingsError:
        raise
    except Exception as exc:  # zipfile, numpy and json raise many types for a bad file
        raise EmbeddingsError(f"embeddings file {path} could not be read ({type(exc).__name__}: {exc})") from None
    if meta.get("format") != EMBEDDINGS_FORMAT:
        raise EmbeddingsError(f"{path} is not a gclreid embeddings file (meta format {meta.get('format')!r})")
    if int(meta.get("version", 0)) > EMBEDDINGS_VERSION:
        raise EmbeddingsError(f"{path} has embeddings format version {meta.get('version')}; this gclreid reads "
                              f"up to {EMBEDDINGS_VERSION} (upgrade gclreid)")
    n = out.features.shape[0]
    if out.features.ndim != 2 or any(len(a) != n for a in (out.paths, out.pids, out.camids)):
        raise EmbeddingsError(f"{path}: features {out.features.shape} do not match paths/pids/camids "
                              f"({len(out.paths)}/{len(out.pids)}/{len(out.camids)} entries)")
    return out

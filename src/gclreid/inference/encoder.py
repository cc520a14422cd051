"""A trained ReID encoder as a plain function from images to L2-normalised features.

    from gclreid.inference import Encoder
    encoder = Encoder.from_checkpoint("runs/gcl/last.pt", device="cpu")
    features = encoder.embed(["a.jpg", "b.jpg"])          # float32 numpy (2, D), rows of unit length
    similarity = features @ features.T                     # cosine similarity

Any checkpoint of this project works (tmp, cluster_contrast, supervised, gcl stage 2/3, dgnet; every
backbone): the network is built and loaded by :func:`gclreid.evaluation.pipeline.encoder_from_checkpoint`,
exactly as ``gclreid evaluate`` does, and images are preprocessed as in evaluation — resized to the
checkpoint's ``data.height`` × ``data.width`` (bicubic), scaled to [0, 1], ImageNet-normalised — with
the checkpoint's ``eval.flip`` (image + mirror averaged) unless ``flip=`` says otherwise.
"""
from __future__ import annotations

import hashlib
import os
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..errors import GclreidError

__all__ = ["Encoder", "InputError"]


class InputError(GclreidError, ValueError):
    """Inputs that :meth:`Encoder.embed` cannot take: an unknown type, a tensor of the wrong size or
    channels, an array that is not 8-bit pixels."""


class Encoder:
    """Images → L2-normalised ReID features with one network and its preprocessing.

    Build it with :meth:`from_checkpoint`, or wrap a network directly: ``Encoder(model, height, width,
    flip=False, device="cpu")``, where ``model.embed(x)`` (or ``model(x)``) maps an ImageNet-normalised
    B×3×height×width batch to B×D features (the identity encoder and DG-Net's appearance encoder do).

    Attributes: ``model`` (eval mode, on ``device``), ``height``, ``width``, ``flip``, ``device``,
    ``checkpoint`` (path or None), ``model_key``, ``method``, ``arch``; :attr:`dim`, :attr:`preprocessing`,
    :attr:`weights_sha256`.
    """

    def __init__(self, model: torch.nn.Module, height: int, width: int, *, flip: bool = False,
                 device: Union[str, torch.device] = "cpu", checkpoint: Optional[str] = None,
                 model_key: Optional[str] = None, method: Optional[str] = None) -> None:
        from ..data import build_test_transform

        self.device = _device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.height, self.width, self.flip = int(height), int(width), bool(flip)
        self.checkpoint, self.model_key, self.method = checkpoint, model_key, method
        self.arch = getattr(model, "arch", None)
        self.transform = build_test_transform(SimpleNamespace(height=self.height, width=self.width))
        self._dim: Optional[int] = None
        self._sha: Optional[str] = None

    @classmethod
    def from_checkpoint(cls, path: os.PathLike, device: Union[str, torch.device] = "cpu", *,
                        flip: Optional[bool] = None, model_key: Optional[str] = None,
                        overrides: Sequence[str] = ()) -> "Encoder":
        """The ReID encoder of gclreid checkpoint `path`.

        `flip`: average the features of each image and its mirror (default: the checkpoint's
        ``eval.flip``). `model_key`: the model inside the checkpoint (default ``identity_encoder``, or
        ``appearance_encoder`` for DG-Net, whose test feature follows ``dgnet.test_feature``).
        `overrides`: ``key=value`` strings for the ``model``/``data``/``dgnet`` sections, e.g.
        ``["dgnet.test_feature=prim"]``. A missing or corrupt file, or one without an identity encoder
        (a generator only), raises :class:`~gclreid.errors.CheckpointError`."""
        from ..checkpoint import read_checkpoint
        from ..config import load_config
        from ..evaluation.pipeline import encoder_from_checkpoint

        payload = read_checkpoint(path)
        model, cfg, key = encoder_from_checkpoint(path, load_config(), model_key, overrides, payload=payload)
        saved = payload.get("config") or {}
        if flip is None:
            flip = bool((saved.get("eval") or {}).get("flip", False))
        method = (saved.get("train") or {}).get("method")
        return cls(model, cfg.data.height, cfg.data.width, flip=flip, device=device,
                   checkpoint=os.path.abspath(os.fspath(path)), model_key=key, method=method)

    # ----------------------------------------------------------------------------------------------

    @property
    def preprocessing(self) -> Dict[str, Any]:
        """What :meth:`embed` does to an image, as plain values (written into ``gclreid embed``'s files)."""
        from ..data import IMAGENET_MEAN, IMAGENET_STD
        return {"height": self.height, "width": self.width, "resize": "bicubic", "color": "RGB",
                "scale": "1/255", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "flip": self.flip}

    @property
    def dim(self) -> int:
        """Feature dimension (found with one forward pass of a blank image, then kept)."""
        if self._dim is None:
            self._dim = int(self._embed_batch(torch.zeros(1, 3, self.height, self.width)).shape[1])
        return self._dim

    @property
    def weights_sha256(self) -> str:
        """SHA-256 over the network's state dict (names, dtypes, shapes and values): the same hex string
        for the same weights wherever the checkpoint file lies. ``gclreid search`` uses it to refuse a
        gallery embedded with other weights."""
        if self._sha is None:
            h = hashlib.sha256()
            for name, value in self.model.state_dict().items():
                if not isinstance(value, torch.Tensor):
                    continue
                t = value.detach().cpu().contiguous()
                h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
                h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._sha = h.hexdigest()
        return self._sha

    def preprocess(self, image: Any) -> torch.Tensor:
        """One image (path, PIL image or H×W×3 / H×W uint8 array) → the normalised 3×height×width tensor
        the network sees."""
        return _prepare_item(_check_item(image, 0), self.transform)

    # ----------------------------------------------------------------------------------------------

    def embed(self, inputs: Any, batch_size: int = 64, *, workers: int = 0, progress: bool = False) -> np.ndarray:
        """L2-normalised features, float32 numpy of shape (N, D), one row per input in input order.

        `inputs` is one of:

        * a list (or other sequence) whose items are each an image file path (str or ``os.PathLike``), a
          PIL image (any mode; converted to RGB), an H×W×3 RGB or H×W grey ``uint8`` numpy array, or a
          3×height×width float tensor as below; the items may mix types; images of any size are resized;
        * a single one of those items (→ one row), or an N×H×W×3 ``uint8`` numpy array (N images);
        * a float tensor N×3×height×width (or 3×height×width), **already preprocessed**: RGB scaled to
          [0, 1] and ImageNet-normalised, at exactly this encoder's ``height`` × ``width`` — what
          :meth:`preprocess` returns. Another size or channel count is an :class:`InputError` (a tensor
          is not resized: pass PIL images or arrays for that).

        Images are decoded and preprocessed in ``workers`` DataLoader processes (0: in this process),
        embedded `batch_size` at a time on ``device`` (under ``torch.no_grad``), with flip averaging when
        ``flip``. An image file that does not decode raises :class:`~gclreid.errors.ImageDecodeError`
        naming it; a missing one :class:`~gclreid.errors.DatasetError`. `progress`: report on stderr
        (:class:`~gclreid.progress.Progress`).
        """
        from ..progress import Progress

        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise InputError(f"batch_size={batch_size!r}; expected an integer >= 1")
        if int(workers) < 0:
            raise InputError(f"workers={workers!r}; expected >= 0")
        batches, total = self._batches(inputs, int(batch_size), int(workers))
        if total == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out: Optional[np.ndarray] = None
        done = 0
        bar = Progress(total, desc="embed", enabled=progress)
        try:
            for batch in batches:
                if isinstance(batch, BaseException):
                    raise batch
                feats = self._embed_batch(batch).numpy()
                if out is None:
                    out = np.empty((total, feats.shape[1]), dtype=np.float32)
                    self._dim = feats.shape[1]
                out[done:done + len(feats)] = feats
                done += len(feats)
                bar.update(len(feats))
        finally:
            bar.close()
        assert out is not None and done == total
        return out

    def _embed_batch(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×H×W normalised → B×D float32 CPU, flip-averaged and L2-normalised (the evaluation code)."""
        from ..evaluation.features import extract_features

        n = images.shape[0]
        batch = {"image": images, "pid": torch.zeros(n, dtype=torch.long), "camid": torch.zeros(n, dtype=torch.long),
                 "index": torch.arange(n)}
        feats, _, _ = extract_features(self.model, [batch], self.device, flip=self.flip, progress=False)
        return feats

    def _batches(self, inputs: Any, batch_size: int, workers: int):
        """An iterable of B×3×H×W tensors (or the exception of a bad image) and the number of images."""
        if isinstance(inputs, torch.Tensor):
            x = self._check_tensor(inputs, "the input tensor")
            return (x[i:i + batch_size] for i in range(0, len(x), batch_size)), len(x)
        if isinstance(inputs, np.ndarray) and inputs.ndim == 4:
            _check_array(inputs[0] if len(inputs) else np.zeros((1, 1, 3), np.uint8), "the input array", batch=inputs)
            items = list(inputs)
        elif _is_single(inputs):
            items = [inputs]
        elif isinstance(inputs, (list, tuple)) or (hasattr(inputs, "__len__") and hasattr(inputs, "__getitem__")):
            items = list(inputs)
        else:
            raise InputError(f"embed() takes a list of image paths, PIL images, uint8 arrays or tensors, or an "
                             f"N×3×H×W tensor; got {type(inputs).__name__}")
        items = [_check_item(item, i) for i, item in enumerate(items)]
        for i, item in enumerate(items):
            if isinstance(item, torch.Tensor):
                items[i] = self._check_tensor(item, f"input {i}", single=True)[0]
        dataset = _Items(items, self.transform)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                            collate_fn=_collate, pin_memory=self.device.type == "cuda")
        return loader, len(items)

    def _check_tensor(self, x: torch.Tensor, what: str, single: bool = False) -> torch.Tensor:
        expected = f"3×{self.height}×{self.width}" if single else f"N×3×{self.height}×{self.width} (or 3×{self.height}×{self.width})"
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4 or (single and x.shape[0] != 1) or x.shape[1] != 3 \
                or tuple(x.shape[2:]) != (self.height, self.width):
            raise InputError(f"{what} has shape {tuple(x.shape)}; expected {expected}: RGB, ImageNet-normalised, "
                             f"at this checkpoint's image size (data.height×data.width = {self.height}×{self.width}). "
                             "Tensors are not resized; pass file paths, PIL images or uint8 arrays to have "
                             "images resized, or build tensors with Encoder.preprocess")
        if not x.is_floating_point():
            raise InputError(f"{what} has dtype {x.dtype}; expected a float tensor that is already ImageNet-normalised "
                             "(pass uint8 pixels as numpy arrays or PIL images instead)")
        return x.detach().float()


# --------------------------------------------------------------------------------------------------
# inputs


def _device(device: Union[str, torch.device]) -> torch.device:
    from ..runtime import resolve_device
    try:
        return resolve_device(device) if isinstance(device, str) else torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"device {device!r}: {exc}") from None


def _is_single(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike, Image.Image)) or (isinstance(x, np.ndarray) and x.ndim in (2, 3))


def _check_array(a: np.ndarray, what: str, batch: Optional[np.ndarray] = None) -> None:
    arr = a if batch is None else batch
    shape_ok = (batch is None and (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3))) or \
               (batch is not None and batch.ndim == 4 and batch.shape[3] == 3)
    if not shape_ok or arr.dtype != np.uint8:
        want = "N×H×W×3" if batch is not None else "H×W×3 (RGB) or H×W (grey)"
        raise InputError(f"{what} is a numpy array of shape {arr.shape} and dtype {arr.dtype}; expected {want} uint8 "
                         "pixels (for a preprocessed float batch pass a torch tensor N×3×H×W)")


def _check_item(item: Any, i: int) -> Any:
    """Validate one input item (cheap checks only; files are decoded later) and return it."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, np.ndarray):
        _check_array(item, f"input {i}")
        return item
    if isinstance(item, torch.Tensor):
        return item
    raise InputError(f"input {i} is a {type(item).__name__}; expected an image path, a PIL image, a uint8 numpy "
                     "array or a preprocessed 3×H×W tensor")


def _prepare_item(item: Any, transform) -> torch.Tensor:
    from ..data import load_image
    if isinstance(item, torch.Tensor):
        return item
    if isinstance(item, str):
        return transform(load_image(item))
    if isinstance(item, np.ndarray):
        item = Image.fromarray(np.ascontiguousarray(item))
    return transform(item.convert("RGB"))


class _Items(Dataset):
    """Input items → (position, tensor); a bad image gives (position, the exception) instead of raising,
    so that the error reaches the caller as itself, not wrapped by a DataLoader worker."""

    def __init__(self, items: List[Any], transform) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Tuple[int, Any]:
        try:
            return i, _prepare_item(self.items[i], self.transform)
        except GclreidError as exc:
            return i, exc


def _collate(items: List[Tuple[int, Any]]):
    for _, x in items:
        if isinstance(x, BaseException):
            return x
    return torch.stack([x for _, x in items])

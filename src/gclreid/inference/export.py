"""The identity encoder of a checkpoint as a deployable file: ONNX (dynamic batch) or TorchScript.

    from gclreid.inference.export import export_encoder, ExportedModel
    result = export_encoder("runs/gcl/last.pt", "reid.onnx", "onnx")     # parity-checked at export time
    model = ExportedModel.load("reid.onnx")                               # onnxruntime (or torch.jit for .pt)
    features = model(batch)                                               # B×3×H×W float32 → B×D, unit rows

The exported graph maps an ImageNet-normalised float32 batch ``images`` (B×3×H×W, RGB, B free) to
``embeddings`` (B×D, L2-normalised): exactly :meth:`Encoder.embed` of the same checkpoint, flip
averaging included when it is on (it is computed inside the graph, so the consumer feeds plain images).
The preprocessing a consumer must do (size, mean, std, colour order) and where the model came from are
written into the file: ONNX ``metadata_props["preprocessing"]``, TorchScript extra file
``preprocessing.json`` — the same JSON object, :func:`read_export_metadata` reads either.

Unless ``check=False``, the written file is loaded back (TorchScript: ``torch.jit.load``; ONNX:
onnxruntime on the CPU when it is installed) and run on real images (``images=``) or on seeded random
ones at batch sizes 1 and 4: its embeddings must equal the checkpoint's to 1e-4, and different images must
give different embeddings (torchreid #316: an ONNX export that returns one output for every input).
A file that fails is not left at ``out``.
"""
from __future__ import annotations

import datetime
import importlib.util
import json
import logging
import os
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GclreidError

__all__ = ["EXPORT_FORMATS", "ExportError", "ExportDependencyError", "ExportCheckError", "ExportResult",
           "ExportedModel", "EmbeddingModule", "export_encoder", "check_export", "read_export_metadata",
           "METADATA_KEY", "TORCHSCRIPT_METADATA_FILE", "CHECK_TOLERANCE", "CHECK_BATCH_SIZES"]

EXPORT_FORMATS = ("onnx", "torchscript")
METADATA_KEY = "preprocessing"                  # ONNX metadata_props key
TORCHSCRIPT_METADATA_FILE = "preprocessing.json"  # TorchScript _extra_files name
INPUT_NAME, OUTPUT_NAME = "images", "embeddings"
CHECK_TOLERANCE = 1e-4      # max |exported − eager| over embedding entries
CHECK_BATCH_SIZES = (1, 4)  # batch sizes the exported file is run at (proves the dynamic batch axis)
CHECK_MAX_IMAGES = 16       # real images used by the check (evenly spread over the folder)
CHECK_RANDOM_IMAGES = 8     # seeded random images when no real ones are given
DISTINCT_MIN_DISTANCE = 1e-5  # Euclidean distance below which two embeddings count as the same
EXTRA_HINT = "pip install 'gclreid[export]'"


class ExportError(GclreidError, ValueError):
    """An export that cannot be made: an unknown format, a bad option, the exporter failing."""


class ExportDependencyError(ExportError, ImportError):
    """A package the export (or its check) needs is not installed; the message names the pip extra."""


class ExportCheckError(ExportError):
    """The exported file does not compute what the checkpoint computes (parity or distinct-output check)."""


class EmbeddingModule(nn.Module):
    """The module that is exported: normalised B×3×H×W images → L2-normalised B×D embeddings.

    `model` is an identity encoder (or DG-Net's appearance encoder) with ``embed``; with ``flip`` the
    embeddings of each image and its mirror are fused as evaluation does (mean, or ``model.fuse_flip``
    for DG-Net) before the final normalisation — the same computation as ``extract_features``."""

    def __init__(self, model: nn.Module, flip: bool = False) -> None:
        super().__init__()
        self.model = model
        self.flip = bool(flip)

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed(images) if callable(getattr(self.model, "embed", None)) else self.model(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self._embed(images)
        if self.flip:
            mirror = self._embed(torch.flip(images, dims=[3]))
            fuse = getattr(self.model, "fuse_flip", None)
            out = fuse(out, mirror) if callable(fuse) else (out + mirror) / 2
        return F.normalize(out, dim=1)


@dataclass
class ExportResult:
    """What :func:`export_encoder` made: the file, its metadata and the parity check's report."""
    path: Path
    format: str
    metadata: Dict[str, Any]
    check: Dict[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


# --------------------------------------------------------------------------------------------------
# export


def export_encoder(checkpoint: os.PathLike, out: os.PathLike, format: str, *, height: Optional[int] = None,
                   width: Optional[int] = None, flip: Optional[bool] = None, opset: Optional[int] = None,
                   check: bool = True, images: Optional[Union[os.PathLike, Sequence[Any]]] = None,
                   model_key: Optional[str] = None, overrides: Sequence[str] = ()) -> ExportResult:
    """Export the ReID encoder of gclreid checkpoint `checkpoint` to `out` as ``format`` (``onnx`` |
    ``torchscript``).

    The encoder is :meth:`Encoder.from_checkpoint`'s (any method; DG-Net's appearance encoder with its
    test feature). `height`/`width`: the input size (default the checkpoint's ``data.height`` /
    ``data.width``). `flip`: average each image with its mirror inside the graph (default the
    checkpoint's ``eval.flip``). `opset`: ONNX opset (default: torch's exporter's). `check`: load the
    file back and compare it with the eager encoder (see the module doc); `images`: a folder, or a list
    of image paths / PIL images / uint8 arrays, for that check (up to 16, spread evenly) instead of
    seeded random images. Raises :class:`ExportError` (subclasses for missing packages and failed
    checks) or the :class:`~gclreid.errors.CheckpointError` of a checkpoint without an encoder."""
    from .encoder import Encoder

    fmt = _check_format(format)
    if opset is not None:
        if fmt != "onnx":
            raise ExportError(f"--opset {opset}: an opset applies to --format onnx only, not {fmt}")
        if isinstance(opset, bool) or int(opset) < 7:
            raise ExportError(f"--opset {opset}: expected an ONNX opset number (e.g. 18)")
    for name, value in (("height", height), ("width", width)):
        if value is not None and (isinstance(value, bool) or int(value) < 8):
            raise ExportError(f"--{name} {value}: expected an image size in pixels >= 8")
    if fmt == "onnx":
        _require_onnx_exporter()
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"--out {out}: is a folder; expected a file name (e.g. {out / ('reid.' + _suffix(fmt))})")

    size = [f"data.height={int(height)}"] if height is not None else []
    size += [f"data.width={int(width)}"] if width is not None else []
    encoder = Encoder.from_checkpoint(checkpoint, device="cpu", flip=flip, model_key=model_key,
                                      overrides=[*overrides, *size])
    module = EmbeddingModule(encoder.model, flip=encoder.flip).eval().requires_grad_(False)
    metadata = _metadata(encoder, fmt, checkpoint)
    check_inputs = _check_inputs(encoder, images) if check else None

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        # a random (not constant) example batch of 2: nothing about the values or the batch size is baked in
        example = torch.randn(2, 3, encoder.height, encoder.width, generator=torch.Generator().manual_seed(0))
        if fmt == "onnx":
            metadata["opset"] = _export_onnx(module, example, tmp, metadata, opset, checkpoint)
        else:
            _export_torchscript(module, example, tmp, metadata, checkpoint)
        report: Dict[str, Any] = {"checked": False, "skipped": "--no-check"}
        if check:
            assert check_inputs is not None
            report = check_export(tmp, encoder, *check_inputs, out_name=out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return ExportResult(out, fmt, metadata, report)


def _check_format(format: str) -> str:
    fmt = str(format).lower()
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"--format {format!r}: unknown export format; expected one of {', '.join(EXPORT_FORMATS)}")
    return fmt


def _suffix(fmt: str) -> str:
    return "onnx" if fmt == "onnx" else "pt"


def _require_onnx_exporter() -> None:
    """torch's ONNX exporter (torch.export-based, the default since torch 2.9) needs onnx and onnxscript."""
    import inspect
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportDependencyError(
            f"ONNX export needs the package(s) {' and '.join(missing)} (torch's ONNX exporter uses them), not "
            f"installed here: {EXTRA_HINT} (or pip install onnx onnxscript); --format torchscript needs nothing more")
    params = inspect.signature(torch.onnx.export).parameters
    if "dynamo" not in params or "dynamic_shapes" not in params:
        raise ExportDependencyError(f"ONNX export needs torch's torch.export-based exporter (torch.onnx.export with "
                                    f"dynamo= and dynamic_shapes=; tested with torch 2.13); this is torch "
                                    f"{torch.__version__}: --format torchscript works with it")


def _metadata(encoder, fmt: str, checkpoint: os.PathLike) -> Dict[str, Any]:
    from .. import __version__
    meta: Dict[str, Any] = {
        "format": fmt,
        "input_name": INPUT_NAME, "input_layout": "NCHW", "input_dtype": "float32",
        **encoder.preprocessing,  # height, width, resize, color, scale, mean, std, flip
        "output_name": OUTPUT_NAME, "output_dim": int(encoder.dim), "normalized": True,
        "distance": "squared euclidean = 2 - 2 cos (rank ascending)",
        "checkpoint": os.path.basename(os.fspath(checkpoint)), "weights_sha256": encoder.weights_sha256,
        "method": encoder.method, "arch": encoder.arch, "model_key": encoder.model_key,
        "gclreid_version": __version__, "torch_version": torch.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if hasattr(encoder.model, "test_feature"):  # DG-Net: which test feature the graph computes
        meta["test_feature"], meta["beta"] = encoder.model.test_feature, float(encoder.model.beta)
    return meta


@contextmanager
def _quiet_export():
    """Silence torch's chatter during export: the torch.jit deprecation notices, the exporter's notes
    that torchvision is not installed (it has no torchvision ops to register), pytree FutureWarnings."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "torch.fx",
                                              "torch._dynamo", "torch.onnx._internal.exporter._registration",
                                              "onnxscript")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\..*")
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:400]


def _export_onnx(module: nn.Module, example: torch.Tensor, path: Path, metadata: Dict[str, Any],
                 opset: Optional[int], checkpoint: os.PathLike) -> int:
    """torch.export-based ONNX export with a dynamic batch axis; the metadata goes into
    ``metadata_props``. Returns the opset written."""
    batch = torch.export.Dim("batch", min=1)
    try:
        with _quiet_export(), torch.no_grad():
            program = torch.onnx.export(module, (example,), dynamo=True, input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},),
                                        opset_version=None if opset is None else int(opset),
                                        external_data=False, verbose=False)
    except ImportError as exc:
        raise ExportDependencyError(f"ONNX export needs a package that is missing ({exc}): {EXTRA_HINT}") from None
    except Exception as exc:  # noqa: BLE001 (the exporter raises many kinds; report them as one line)
        raise ExportError(f"ONNX export of {checkpoint} failed: {_first_line(exc)}") from exc
    model = program.model
    version = int(model.opset_imports.get("", opset or 0))
    if opset is not None and version != int(opset):
        raise ExportError(f"--opset {opset}: torch's exporter could not convert this graph to opset {opset} (it "
                          f"stays at {version}); choose --opset {version} or higher")
    metadata["opset"] = version
    model.metadata_props[METADATA_KEY] = json.dumps(metadata, sort_keys=True)
    model.doc_string = (f"gclreid {metadata['method'] or ''} {metadata['arch']} encoder: {INPUT_NAME} "
                        f"(B×3×{metadata['height']}×{metadata['width']}, RGB, ImageNet-normalised) → {OUTPUT_NAME} "
                        f"(B×{metadata['output_dim']}, L2-normalised); preprocessing in metadata_props['{METADATA_KEY}']")
    try:
        with _quiet_export():
            program.save(os.fspath(path), external_data=False)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"writing the ONNX file {path} failed: {_first_line(exc)}") from exc
    return version


def _export_torchscript(module: nn.Module, example: torch.Tensor, path: Path, metadata: Dict[str, Any],
                        checkpoint: os.PathLike) -> None:
    """torch.jit.trace (the encoders have no data-dependent control flow; the batch size is not baked in:
    the check runs it at batch 1 and 4) + the metadata as an extra file."""
    try:
        with _quiet_export(), torch.no_grad():
            traced = torch.jit.trace(module, (example,), check_trace=False)
            torch.jit.save(traced, os.fspath(path),
                           _extra_files={TORCHSCRIPT_METADATA_FILE: json.dumps(metadata, sort_keys=True)})
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"TorchScript export of {checkpoint} failed: {_first_line(exc)}") from exc


# --------------------------------------------------------------------------------------------------
# loading an exported file


def read_export_metadata(path: os.PathLike) -> Dict[str, Any]:
    """The metadata JSON of an exported file (either format), without running it. ONNX needs onnx or
    onnxruntime installed."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"exported model {path} does not exist")
    if zipfile.is_zipfile(path):
        return _parse_metadata(_load_torchscript(path)[1], path)
    if importlib.util.find_spec("onnx") is not None:
        import onnx
        try:
            model = onnx.load(os.fspath(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"{path}: not an ONNX file ({_first_line(exc)})") from None
        return _parse_metadata({p.key: p.value for p in model.metadata_props}.get(METADATA_KEY, ""), path)
    return ExportedModel.load(path).metadata


def _load_torchscript(path: Path):
    """(module, metadata text) of a TorchScript export."""
    extra = {TORCHSCRIPT_METADATA_FILE: ""}
    try:
        with _quiet_export():
            module = torch.jit.load(os.fspath(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{path}: not a TorchScript file ({_first_line(exc)})") from None
    return module, extra[TORCHSCRIPT_METADATA_FILE]


def _parse_metadata(text: Union[str, bytes], path: Path) -> Dict[str, Any]:
    if isinstance(text, bytes):
        text = text.decode()
    if not text:
        raise ExportError(f"{path} has no gclreid preprocessing metadata: it was not written by `gclreid export`")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: its preprocessing metadata is not valid JSON ({exc})") from None


class ExportedModel:
    """An exported file, ready to run on the CPU: ``model(batch)`` maps a float32 B×3×H×W array or tensor
    (preprocessed as ``model.metadata`` says) to a float32 numpy B×D array. ONNX files run in onnxruntime
    (``CPUExecutionProvider``), TorchScript files in ``torch.jit``. ``runtime`` names which."""

    def __init__(self, path: Path, fmt: str, metadata: Dict[str, Any], run: Callable[[np.ndarray], np.ndarray],
                 runtime: str) -> None:
        self.path, self.format, self.metadata, self._run, self.runtime = path, fmt, metadata, run, runtime

    @classmethod
    def load(cls, path: os.PathLike) -> "ExportedModel":
        path = Path(path)
        if not path.is_file():
            raise ExportError(f"exported model {path} does not exist")
        if zipfile.is_zipfile(path):
            module, metadata_text = _load_torchscript(path)
            module.eval()

            def run(x: np.ndarray) -> np.ndarray:
                with torch.no_grad():
                    return module(torch.as_tensor(x, dtype=torch.float32)).numpy()

            return cls(path, "torchscript", _parse_metadata(metadata_text, path), run,
                       f"torch.jit (torch {torch.__version__})")
        if importlib.util.find_spec("onnxruntime") is None:
            raise ExportDependencyError(f"running {path} needs onnxruntime, not installed here: {EXTRA_HINT} "
                                        "(or pip install onnxruntime)")
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"{path}: onnxruntime cannot load it ({_first_line(exc)})") from None
        meta = _parse_metadata(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, ""), path)
        name = session.get_inputs()[0].name

        def run(x: np.ndarray) -> np.ndarray:
            x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
            return session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]

        return cls(path, "onnx", meta, run, f"onnxruntime {ort.__version__} CPUExecutionProvider")

    def __call__(self, batch: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
        return np.asarray(self._run(batch), dtype=np.float32)

    def __repr__(self) -> str:
        return f"ExportedModel({str(self.path)!r}, format={self.format!r}, runtime={self.runtime!r})"


# --------------------------------------------------------------------------------------------------
# the parity check


def _check_inputs(encoder, images) -> Tuple[torch.Tensor, str]:
    """(N×3×H×W normalised batch, description) for the check: real images when given (up to 16, evenly
    spread; topped up with random ones to 4), else 8 seeded random images."""
    from ..data import find_images
    from ..errors import DatasetError

    tensors: List[torch.Tensor] = []
    what = ""
    if images is not None:
        if isinstance(images, (str, os.PathLike)):
            folder = Path(images)
            if not folder.is_dir():
                raise DatasetError(f"--images {folder}: not a folder")
            items: List[Any] = [str(folder / rel) for rel in find_images(str(folder), recursive=True)]
            if not items:
                raise DatasetError(f"--images {folder}: no image files (jpg/jpeg/png/bmp/webp) under it")
            source = f"from {folder}"
        else:
            items, source = list(images), "given"
        if len(items) > CHECK_MAX_IMAGES:
            items = [items[i] for i in np.linspace(0, len(items) - 1, CHECK_MAX_IMAGES).round().astype(int)]
        tensors = [encoder.preprocess(item) for item in items]
        what = f"{len(tensors)} real image{'s' if len(tensors) > 1 else ''} {source}"
    rng = np.random.default_rng(0)
    need = max(max(CHECK_BATCH_SIZES), 2) - len(tensors) if tensors else CHECK_RANDOM_IMAGES
    if need > 0:
        for _ in range(need):
            tensors.append(encoder.preprocess(rng.integers(0, 256, (encoder.height, encoder.width, 3), dtype=np.uint8)))
        noun = "seeded random image" + ("s" if need > 1 else "")
        what = f"{what} + {need} {noun}" if what else f"{need} {noun}"
    return torch.stack(tensors), what


def check_export(path: os.PathLike, encoder, inputs: torch.Tensor, description: str = "the given inputs",
                 out_name: Optional[os.PathLike] = None, tolerance: float = CHECK_TOLERANCE,
                 batch_sizes: Sequence[int] = CHECK_BATCH_SIZES) -> Dict[str, Any]:
    """Run exported file `path` and `encoder` (an :class:`Encoder` whose ``flip`` matches the export) on
    `inputs` (N×3×H×W normalised): at each of `batch_sizes` the exported embeddings must equal
    ``encoder.embed`` to `tolerance` (max abs difference), and no two different inputs may get the same
    exported embedding. Returns the report; raises :class:`ExportCheckError` (or, for ONNX without
    onnxruntime, returns a report with ``checked: False`` and the reason)."""
    path = Path(path)
    shown = Path(out_name) if out_name is not None else path
    fmt = "torchscript" if zipfile.is_zipfile(path) else "onnx"
    report: Dict[str, Any] = {"checked": False, "inputs": description, "tolerance": tolerance}
    if fmt == "onnx":
        if importlib.util.find_spec("onnx") is not None:
            import onnx
            try:
                onnx.checker.check_model(os.fspath(path))
                report["onnx_checker"] = "passed"
            except Exception as exc:  # noqa: BLE001
                raise ExportCheckError(f"{shown}: the ONNX checker rejects the exported graph: "
                                       f"{_first_line(exc)}; nothing written") from None
        if importlib.util.find_spec("onnxruntime") is None:
            report["skipped"] = (f"onnxruntime is not installed, so the exported graph was not run ({EXTRA_HINT} "
                                 "installs it)")
            return report
    model = ExportedModel.load(path)
    report["runtime"] = model.runtime
    reference = encoder.embed(inputs, batch_size=len(inputs))
    if not np.all(np.isfinite(reference)):
        raise ExportCheckError(f"{shown}: the checkpoint's own encoder gives non-finite embeddings; nothing written")
    n = len(inputs)
    diffs: Dict[str, float] = {}
    outputs: Optional[np.ndarray] = None
    for bs in batch_sizes:
        got = np.concatenate([model(inputs[i:i + bs].numpy()) for i in range(0, n, bs)])
        if got.shape != reference.shape:
            raise ExportCheckError(f"{shown}: at batch size {bs} the exported model gives embeddings of shape "
                                   f"{got.shape}, the checkpoint {reference.shape}; nothing written")
        diffs[str(bs)] = float(np.abs(got - reference).max()) if np.all(np.isfinite(got)) else float("inf")
        outputs = got  # the last (largest) batch size's, for the distinct-output check
    report["max_abs_diff"] = diffs
    worst_bs, worst = max(diffs.items(), key=lambda kv: kv[1])
    assert outputs is not None
    # Different inputs must give different outputs (torchreid #316: one output for every input).
    flat = inputs.reshape(n, -1)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if not torch.equal(flat[i], flat[j])]
    if pairs:
        dist = lambda f, i, j: float(np.linalg.norm(f[i] - f[j]))  # noqa: E731
        exported = [dist(outputs, i, j) for i, j in pairs]
        eager = [dist(reference, i, j) for i, j in pairs]
        k = int(np.argmin(exported))
        report["min_pair_distance"] = exported[k]
        report["max_pair_distance"] = max(exported)
        if exported[k] < DISTINCT_MIN_DISTANCE:
            i, j = pairs[k]
            same_everywhere = max(exported) < DISTINCT_MIN_DISTANCE
            cause = ("the checkpoint's own encoder gives them the same embedding too (a collapsed model)"
                     if eager[k] < DISTINCT_MIN_DISTANCE else
                     f"the checkpoint's encoder gives distance {eager[k]:.3g} (the exported graph lost its input: "
                     "BN in train mode or a constant-folded input, torchreid #316)")
            raise ExportCheckError(f"{shown}: the exported model gives the same embedding to different images "
                                   f"({'all ' + str(n) + ' inputs' if same_everywhere else f'inputs {i} and {j}'}, "
                                   f"distance {exported[k]:.3g} < {DISTINCT_MIN_DISTANCE:g}); {cause}; nothing written")
    if worst > tolerance:
        raise ExportCheckError(f"{shown}: the exported model's embeddings differ from the checkpoint's by up to "
                               f"{worst:.3g} at batch size {worst_bs} (tolerance {tolerance:g}, {model.runtime}, "
                               f"{description}); nothing written (--no-check writes it unchecked)")
    report["checked"] = True
    return report

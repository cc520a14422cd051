"""One checkpoint format for every method.

A checkpoint is a dict saved with torch.save::

    {"format": "gclreid-checkpoint", "version": 1,
     "models": {name: state_dict}, "optimizers": {...}, "schedulers": {...},
     "extra": {...},            # method state: memory bank, pseudo labels, loss ramps, ...
     "epoch": int, "iteration": int, "rng": {...}, "config": {...resolved config...}}

It is written atomically (temporary file in the same folder, then rename), so an interrupted save
never leaves a truncated checkpoint behind; temporary files that a killed write left
(``.last.pt.*.tmp``) are removed by the next successful save of the same file.

Every file is read with :func:`safe_load`: ``torch.load(weights_only=True)`` — tensors, numbers,
strings, ``None``, lists, tuples, dicts — plus the numpy pieces a checkpoint holds (the pseudo labels
and numpy's RNG state are numpy arrays): ``numpy.ndarray`` of numeric dtypes, numeric dtypes and
scalars. Nothing in a file can name a function or class outside that list, so loading a file never
runs code from it; a file that needs more is an :class:`~gclreid.errors.UnsafeFileError` saying how to
convert a trusted one (docs/safety.md). There is no fallback to an unrestricted load.
"""
from __future__ import annotations

import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch

from .errors import CheckpointError, UnsafeFileError
from .runtime import rng_state

FORMAT = "gclreid-checkpoint"
VERSION = 1


def save_checkpoint(path: os.PathLike, *, models: Mapping[str, torch.nn.Module],
                    optimizers: Optional[Mapping[str, Any]] = None, schedulers: Optional[Mapping[str, Any]] = None,
                    extra: Optional[Dict[str, Any]] = None, epoch: int = 0, iteration: int = 0,
                    config: Optional[Dict[str, Any]] = None, save_rng: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "models": {k: m.state_dict() for k, m in models.items()},
        "optimizers": {k: o.state_dict() for k, o in (optimizers or {}).items()},
        "schedulers": {k: s.state_dict() for k, s in (schedulers or {}).items()},
        "extra": extra or {},
        "epoch": int(epoch),
        "iteration": int(iteration),
        "rng": rng_state() if save_rng else None,
        "config": config or {},
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; give the checkpoint the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    # Temporary files of earlier writes of this checkpoint that were killed before their rename.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            stale.unlink()
        except OSError:
            pass
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def numpy_safe_globals() -> List[Any]:
    """What :func:`safe_load` allows beyond torch's own weights-only list: numpy arrays of numbers.

    ``numpy.ndarray`` and ``numpy.dtype`` themselves, ``bytes`` (an empty array's data is pickled as
    ``bytes()``; torch itself allows ``bytearray``), the array and scalar reconstruction functions
    (under numpy 2's ``numpy._core`` and numpy 1's ``numpy.core`` names, so files written with either
    load) and the dtype classes of booleans, integers, floats and complex numbers (a dtype's state is
    applied to an instance of its class). Not object, string, structured or datetime dtypes. Each of
    these only builds an array or a number from the bytes and shape in the file.
    """
    reconstruct = np.zeros(1).__reduce__()[0]  # numpy(._)core.multiarray._reconstruct
    scalar = np.float64(0).__reduce__()[0]     # numpy(._)core.multiarray.scalar
    allowed: List[Any] = [np.ndarray, np.dtype, bytes]  # bytes(): the (empty) data of an empty array
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        allowed += [(reconstruct, f"{module}._reconstruct"), (scalar, f"{module}.scalar")]
    codes = "?" + np.typecodes["AllInteger"] + np.typecodes["AllFloat"]
    allowed += sorted({type(np.dtype(code)) for code in codes}, key=lambda t: t.__qualname__)
    return allowed


# torch's messages for an object the weights-only unpickler refuses to build (as opposed to a file that
# is not a pickle / torch file at all, or a damaged one); group 1 names what the file needs.
_UNSAFE = [re.compile(p) for p in (
    r"GLOBAL (\S+) was not an allowed global",
    r"unsupported GLOBAL (\S+) whose module \S+ is blocked",
    r"Can only (?:build|create new object)[^\n]*?but got <class '([^']+)'>",
    r"call reduce for unrecognized function ([^\n]+)",
    r"(\S+) must be imported to load",
)]


def _unsafe_need(message: str) -> Optional[str]:
    for pattern in _UNSAFE:
        found = pattern.search(message)
        if found:
            return found.group(1).strip()
    return None


def _torch_reason(message: str) -> str:
    """The core of a torch.load error message (torch wraps it in paragraphs of advice)."""
    message = message.split("Check the documentation of torch.load")[0]
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    reason = lines[-1] if lines else message.strip()
    return reason.split("WeightsUnpickler error:")[-1].strip() or reason


def conversion_hint(path: os.PathLike) -> str:
    """How to turn a trusted file that fails the safe load into one that passes (one line)."""
    path = Path(path)
    converted = path.with_name(path.name.split(".")[0] + "-converted.pth")
    return (f"if (and only if) you trust where {path.name} comes from, convert it once in a separate Python "
            f"session: `import torch; obj = torch.load({str(path)!r}, map_location='cpu', weights_only=False)` "
            f"then `torch.save(obj.get('state_dict', obj), {str(converted)!r})` (a state dict of tensors) "
            "and use the converted file; see docs/safety.md")


def safe_load(path: os.PathLike, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with :func:`numpy_safe_globals` allowed.

    A file that needs anything else raises :class:`~gclreid.errors.UnsafeFileError` (naming the file,
    what it needs, and how to convert a trusted file); any other failure (not a torch file, damaged)
    raises :class:`~gclreid.errors.CheckpointError`. `what` names the file in the messages.
    """
    path = Path(path)
    present = set(torch.serialization.get_safe_globals())
    extra = [g for g in numpy_safe_globals() if g not in present]
    try:
        with torch.serialization.safe_globals(extra), warnings.catch_warnings():
            # Plain pickles (protocol > 2) make torch warn before it refuses them; the error says it all.
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        needs = _unsafe_need(str(exc))
        if needs:
            raise UnsafeFileError(
                f"{what} {path} holds objects that a safe load does not build (it needs {needs}): gclreid reads files "
                "only with torch.load(weights_only=True) (tensors, numbers, strings, lists, dicts, numpy arrays of "
                f"numbers), so that loading a file can never run code from it; {conversion_hint(path)}") from None
        raise CheckpointError(f"{what} {path} could not be read (not a file written by torch.save, or a damaged "
                              f"one: {_torch_reason(str(exc))})") from None
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(f"{what} {path} could not be read ({type(exc).__name__}: {exc})") from exc


def read_checkpoint(path: os.PathLike, map_location: Any = "cpu", *,
                    allow_other: bool = False) -> Optional[Dict[str, Any]]:
    """Read (with :func:`safe_load`) and validate a checkpoint file without applying it.

    `allow_other`: return None for a readable file that is not a gclreid checkpoint (e.g. a plain state
    dict) instead of raising."""
    path = Path(path)
    if path.is_dir():
        hint = (f"give its last.pt ({path / 'last.pt'})" if (path / "last.pt").is_file()
                else "give a checkpoint file (a run folder's last.pt); it holds no last.pt")
        raise CheckpointError(f"checkpoint {path} is a folder, not a file: {hint}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    payload = safe_load(path, "checkpoint", map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        if allow_other:
            return None
        raise CheckpointError(f"{path} is not a gclreid checkpoint (no 'format: {FORMAT}' entry); "
                              "to load a plain state dict use gclreid.checkpoint.load_model_state()")
    version = payload.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"checkpoint {path} is damaged: its format version is {version!r}, not an integer")
    if version > VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version}, newer than the "
                              f"version {VERSION} this gclreid reads; upgrade gclreid")
    # What every reader of a checkpoint relies on (save_checkpoint always writes both).
    for key in ("models", "config"):
        if key not in payload:
            raise CheckpointError(f"checkpoint {path} is damaged: it has no {key!r} entry")
        if not isinstance(payload[key], dict):
            raise CheckpointError(f"checkpoint {path} is damaged: its {key!r} is a {type(payload[key]).__name__}, "
                                  "not a dict")
    for name, state in payload["models"].items():
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {path} is damaged: model {name!r} is a {type(state).__name__}, "
                                  "not a state dict")
    return payload


def _shape(value: Any) -> Any:
    # Non-tensor entries (a module's `_extra_state`) have no shape; compare them by type only.
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def load_model_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "state dict",
                     strict: bool = True) -> Dict[str, list]:
    """Load `state` into `model` and report what did not fit.

    Shape mismatches are always an error naming the keys. With ``strict`` any missing or unexpected
    key is an error too; without it they are returned (never silently ignored: callers print them).
    """
    own = model.state_dict()
    mismatched = [f"{k}: file {_shape(v)} vs model {_shape(own[k])}"
                  for k, v in state.items() if k in own and _shape(v) != _shape(own[k])]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if mismatched or (strict and (missing or unexpected)):
        lines = []
        if mismatched:
            lines.append("shape mismatch: " + "; ".join(mismatched[:10]) + (" ..." if len(mismatched) > 10 else ""))
        if strict and missing:
            lines.append(f"missing in file ({len(missing)}): " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
        if strict and unexpected:
            lines.append(f"unexpected in file ({len(unexpected)}): " + ", ".join(unexpected[:10])
                         + (" ..." if len(unexpected) > 10 else ""))
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + " | ".join(lines))
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return {"missing": missing, "unexpected": unexpected}


def load_checkpoint(path: os.PathLike, *, models: Mapping[str, torch.nn.Module],
                    optimizers: Optional[Mapping[str, Any]] = None, schedulers: Optional[Mapping[str, Any]] = None,
                    map_location: Any = "cpu", strict: bool = True,
                    payload: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Load models (and optimisers/schedulers when given) from `path`; return the whole payload.

    Pass `payload` (from :func:`read_checkpoint`) to apply an already-read checkpoint without reading
    the file again, e.g. after checking its config."""
    payload = read_checkpoint(path, map_location) if payload is None else payload
    for name, model in models.items():
        if name not in payload["models"]:
            raise CheckpointError(f"checkpoint {path} has no model {name!r}; it holds {sorted(payload['models'])}")
        load_model_state(model, payload["models"][name], source=f"model {name!r} in {path}", strict=strict)
    for kind, objects in (("optimizers", optimizers), ("schedulers", schedulers)):
        for name, obj in (objects or {}).items():
            if name not in payload[kind]:
                raise CheckpointError(f"checkpoint {path} has no {kind[:-1]} {name!r}")
            try:
                obj.load_state_dict(payload[kind][name])
            except (ValueError, KeyError, RuntimeError) as exc:
                raise CheckpointError(f"{kind[:-1]} {name!r} in {path} does not fit: {exc}") from exc
    return payload

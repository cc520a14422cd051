"""Optimisers (SGD, Adam, LARS) and per-iteration learning-rate schedules (warm-up + step/cosine)."""
from __future__ import annotations

import math
from typing import Iterable, List

import torch
from torch import nn

from ..config import ConfigError


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017) with SGD momentum, as used by SimCLR/TMP.

    For a parameter group with ``adapt=True`` the update is ``g + wd·w`` scaled by the trust ratio
    ``eta·‖w‖ / ‖g + wd·w‖``; groups with ``adapt=False`` (biases, norm layers when excluded) get
    plain momentum SGD with their own weight decay (0 when excluded).
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, adapt=True))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad.clone()
                if group["adapt"]:
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    trust = torch.where((w_norm > 0) & (u_norm > 0), group["eta"] * w_norm / u_norm,
                                        torch.ones_like(w_norm))
                    update.mul_(trust)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = update
                else:
                    buf.mul_(group["momentum"]).add_(update)
                p.add_(buf, alpha=-group["lr"])
        return loss


def _is_bias_or_norm(name: str, param: torch.Tensor, module_of: dict) -> bool:
    return param.ndim <= 1 or isinstance(module_of.get(name.rsplit(".", 1)[0]), (nn.modules.batchnorm._NormBase,
                                                                                nn.GroupNorm, nn.LayerNorm))


def parameter_groups(models: Iterable[nn.Module], weight_decay: float, exclude_bias_bn: bool) -> List[dict]:
    """Trainable parameters split into (decayed, adapted) and (biases/norm: no decay, not adapted) groups."""
    regular, excluded = [], []
    for model in models:
        module_of = dict(model.named_modules())
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            (excluded if exclude_bias_bn and _is_bias_or_norm(name, p, module_of) else regular).append(p)
    groups = [{"params": regular, "weight_decay": weight_decay, "adapt": True}]
    if excluded:
        groups.append({"params": excluded, "weight_decay": 0.0, "adapt": False})
    return groups


def scaled_lr(cfg, batch_size: int) -> float:
    return cfg.lr * batch_size / cfg.lr_batch_scale if cfg.lr_batch_scale > 0 else cfg.lr


def build_optimizer(models: Iterable[nn.Module], cfg, batch_size: int) -> torch.optim.Optimizer:
    """From an OptimConfig: sgd | adam | lars, lr scaled by batch size when lr_batch_scale > 0."""
    groups = parameter_groups(models, cfg.weight_decay, cfg.exclude_bias_bn)
    lr = scaled_lr(cfg, batch_size)
    nesterov = bool(getattr(cfg, "nesterov", False))
    if nesterov and cfg.name != "sgd":
        raise ConfigError(f"optim.nesterov=true needs optim.name=sgd (got {cfg.name!r})")
    if nesterov and not cfg.momentum > 0:
        raise ConfigError(f"optim.nesterov=true needs optim.momentum > 0 (got {cfg.momentum})")
    if cfg.name == "sgd":
        for g in groups:
            g.pop("adapt")
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=nesterov)
    if cfg.name == "adam":
        for g in groups:
            g.pop("adapt")
        return torch.optim.Adam(groups, lr=lr, betas=tuple(cfg.betas))
    if cfg.name == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, eta=cfg.lars_eta)
    raise ConfigError(f"optim.name={cfg.name!r} is not one of sgd, adam, lars")


def lr_factor(cfg, epoch_progress: float, total_epochs: int) -> float:
    """Multiplier of the base lr at a fractional epoch: linear warm-up, then step or cosine decay."""
    if cfg.warmup_epochs > 0 and epoch_progress < cfg.warmup_epochs:
        return (epoch_progress + 1e-8) / cfg.warmup_epochs
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** sum(1 for m in cfg.milestones if epoch_progress >= m)
    if cfg.schedule == "cosine":
        span = max(total_epochs - cfg.warmup_epochs, 1e-8)
        t = min(max(epoch_progress - cfg.warmup_epochs, 0.0) / span, 1.0)
        return 0.5 * (1 + math.cos(math.pi * t))
    raise ConfigError(f"optim.schedule={cfg.schedule!r} is not one of step, cosine, constant")


def apply_lr_schedule(optimizer: torch.optim.Optimizer, cfg, epoch_progress: float, total_epochs: int) -> float:
    """Set every group's lr to its base lr × lr_factor at this fractional epoch; return the factor.

    Called every iteration with ``epoch + i / iterations_this_epoch``, so the schedule stays right when
    the number of iterations changes from epoch to epoch (pseudo labels change the training set). The
    base lr lives in the optimiser's param groups, so it is saved and restored with the optimiser.
    An optimiser with a ``fixed_lr_factor`` attribute (set by :func:`fix_lr_factor`) ignores the
    schedule and runs at its base lr × that factor throughout.
    """
    fixed = getattr(optimizer, "fixed_lr_factor", None)
    factor = lr_factor(cfg, epoch_progress, total_epochs) if fixed is None else float(fixed)
    for group in optimizer.param_groups:
        group.setdefault("base_lr", group["lr"])
        group["lr"] = group["base_lr"] * factor
    return factor


def fix_lr_factor(optimizer: torch.optim.Optimizer, factor) -> None:
    """Pin `optimizer` at base lr × `factor` whatever schedule :func:`apply_lr_schedule` is given (None:
    follow the schedule again). Not saved with the optimiser state: the method sets it from its config
    every time it builds the optimiser (GCL's ``gcl.gd_schedule``)."""
    optimizer.fixed_lr_factor = None if factor is None else float(factor)

"""Reconstruction losses of GCL's view generator (paper Eq. 1 and 2).

Notation: x the real image, x'_ori = G(Estr(s_ori), Eid(x)), x'_new = G(Estr(s_new), Eid(x)),
x''_ori = G(Estr(s_ori), Eid(x'_new)) (the cycle); f_id = Eid(x) part features (8192-d flattened).

Like the official ``recon_criterion``, every term is ``mean |a − b|`` with the *target* detached: the
gradient trains what produced the reconstruction (G, and Eid through the generated image's
encoding), never pulls the target towards it.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..config import ConfigError

__all__ = ["FEAT_TARGETS", "l1_reconstruction", "image_reconstruction_loss", "feature_reconstruction_loss"]

FEAT_TARGETS = ("new", "ori")


def l1_reconstruction(prediction: torch.Tensor, target: torch.Tensor, detach_target: bool = True) -> torch.Tensor:
    """``mean |prediction − target|`` (the target detached by default)."""
    if prediction.shape != target.shape:
        raise ValueError(f"reconstruction of shape {tuple(prediction.shape)} against a target of shape "
                         f"{tuple(target.shape)}")
    return (prediction - (target.detach() if detach_target else target)).abs().mean()


def image_reconstruction_loss(x: torch.Tensor, x_ori: torch.Tensor, x_cycle: torch.Tensor) -> torch.Tensor:
    """Eq. 1: ``L_img = E‖x − x'_ori‖₁ + E‖x − x''_ori‖₁`` (each a mean over all elements)."""
    return l1_reconstruction(x_ori, x) + l1_reconstruction(x_cycle, x)


def feature_reconstruction_loss(f_id: torch.Tensor, f_ori: torch.Tensor, f_new: Optional[torch.Tensor] = None,
                                f_cycle: Optional[torch.Tensor] = None, target: str = "new",
                                detach_target: bool = True) -> torch.Tensor:
    """Eq. 2, L_feat, on identity (part) features.

    Args:
        f_id: Eid(x), the target.
        f_ori: Eid(x'_ori).
        f_new: Eid(x'_new); needed with ``target="new"``.
        f_cycle: Eid(x''_ori); needed with ``target="ori"``.
        target: ``"new"`` — the paper: ``E‖f_id − Eid(x'_new)‖₁ + E‖f_id − Eid(x'_ori)‖₁``;
            ``"ori"`` — the official code, whose first term uses x'_ori instead of x'_new and whose second
            term is the cycle image: ``E‖f_id − Eid(x'_ori)‖₁ + E‖f_id − Eid(x''_ori)‖₁``. The paper form
            needs no Eid(x''_ori): one fewer identity-encoder pass per iteration.
        detach_target: detach ``f_id`` (official behaviour).
    """
    if target == "new":
        if f_new is None:
            raise ValueError("feature_reconstruction_loss(target='new') needs f_new = Eid(x'_new)")
        second = f_new
    elif target == "ori":
        if f_cycle is None:
            raise ValueError("feature_reconstruction_loss(target='ori') needs f_cycle = Eid(x''_ori)")
        second = f_cycle
    else:
        raise ConfigError(f"unknown L_feat target {target!r}; expected one of {', '.join(FEAT_TARGETS)}")
    return (l1_reconstruction(second, f_id, detach_target) + l1_reconstruction(f_ori, f_id, detach_target))

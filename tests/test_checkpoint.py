"""gclreid.checkpoint: full round trip (models, optimisers, schedulers, extra, RNG), atomic writes,
checkpoints that do not fit, corrupt and foreign files."""
import os
import random
import stat

import numpy as np
import pytest
import torch
from torch import nn

from gclreid.checkpoint import FORMAT, VERSION, load_checkpoint, load_model_state, read_checkpoint, save_checkpoint
from gclreid.errors import CheckpointError, UnsafeFileError
from gclreid.models import IdentityEncoder
from gclreid.runtime import set_rng_state


def make_training(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    head = nn.Linear(3, 2)
    opt_net = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    opt_head = torch.optim.Adam(head.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt_net, step_size=2, gamma=0.1)
    return net, head, opt_net, opt_head, sched


def train_steps(parts, steps, seed):
    net, head, opt_net, opt_head, sched = parts
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=g)
        loss = head(net(x)).pow(2).mean()
        opt_net.zero_grad()
        opt_head.zero_grad()
        loss.backward()
        opt_net.step()
        opt_head.step()
        sched.step()


def save_parts(path, parts, **kw):
    net, head, opt_net, opt_head, sched = parts
    return save_checkpoint(path, models={"net": net, "head": head}, optimizers={"net": opt_net, "head": opt_head},
                           schedulers={"net": sched}, **kw)


def test_round_trip_resumes_exactly(tmp_path):
    original = make_training(0)
    train_steps(original, 3, seed=1)
    memory = torch.randn(10, 4)
    labels = np.array([0, 0, 1, -1, 2, 2, 1, 0, -1, 2])
    ckpt = save_parts(tmp_path / "run" / "last.pt", original, epoch=4, iteration=123,
                      extra={"memory": memory, "labels": labels, "history": [1.5, 0.75]},
                      config={"model": {"arch": "tiny"}})
    assert ckpt == tmp_path / "run" / "last.pt"

    resumed = make_training(99)  # different initial values everywhere
    net, head, opt_net, opt_head, sched = resumed
    payload = load_checkpoint(ckpt, models={"net": net, "head": head},
                              optimizers={"net": opt_net, "head": opt_head}, schedulers={"net": sched})
    assert payload["format"] == FORMAT and payload["version"] == VERSION
    assert payload["epoch"] == 4 and payload["iteration"] == 123
    assert payload["config"] == {"model": {"arch": "tiny"}}
    assert torch.equal(payload["extra"]["memory"], memory)
    assert np.array_equal(payload["extra"]["labels"], labels) and payload["extra"]["history"] == [1.5, 0.75]
    for a, b in zip(original[:2], resumed[:2]):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert ka == kb and torch.equal(va, vb), ka
    assert sched.last_epoch == original[4].last_epoch == 3
    assert opt_net.param_groups[0]["lr"] == pytest.approx(original[2].param_groups[0]["lr"])
    # Continuing both runs gives bit-identical results (momentum and Adam moments were restored).
    train_steps(original, 2, seed=7)
    train_steps(resumed, 2, seed=7)
    for a, b in zip(original[:2], resumed[:2]):
        for va, vb in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(va, vb)


def test_rng_state_round_trip(tmp_path):
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    ckpt = save_checkpoint(tmp_path / "c.pt", models={"m": nn.Linear(2, 2)})
    expected = (random.random(), np.random.rand(3), torch.rand(3))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    set_rng_state(read_checkpoint(ckpt)["rng"])
    got = (random.random(), np.random.rand(3), torch.rand(3))
    assert got[0] == expected[0]
    assert np.array_equal(got[1], expected[1]) and torch.equal(got[2], expected[2])
    assert read_checkpoint(save_checkpoint(tmp_path / "n.pt", models={}, save_rng=False))["rng"] is None


def test_atomic_write_leaves_no_temp_files_and_normal_permissions(tmp_path):
    path = tmp_path / "ck.pt"
    for epoch in range(3):  # overwriting works too
        save_checkpoint(path, models={"m": nn.Linear(3, 3)}, epoch=epoch)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]
    assert read_checkpoint(path)["epoch"] == 2
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_failed_save_keeps_old_file(tmp_path):
    path = tmp_path / "ck.pt"
    model = nn.Linear(3, 3)
    save_checkpoint(path, models={"m": model}, epoch=1)
    before = path.read_bytes()
    with pytest.raises(Exception):  # a lambda cannot be pickled: fails once the temp file exists
        save_checkpoint(path, models={"m": model}, epoch=2, extra={"bad": lambda: 0})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


def test_io_error_after_writing_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, models={"m": nn.Linear(3, 3)}, epoch=1)
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # the whole payload is written, then the flush fails
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, models={"m": nn.Linear(3, 3)}, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert read_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


def test_checkpoint_of_another_embed_dim_names_mismatched_keys(tmp_path):
    ckpt = save_checkpoint(tmp_path / "eid.pt", models={"identity_encoder": IdentityEncoder("resnet18", embed_dim=64)})
    other = IdentityEncoder("resnet18", embed_dim=32)
    before = other.backbone.conv1.weight.clone()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ckpt, models={"identity_encoder": other})
    msg = str(info.value)
    assert "shape mismatch" in msg and str(ckpt) in msg
    assert "feat.weight: file (64, 512) vs model (32, 512)" in msg
    assert "feat_bn.running_mean: file (64,) vs model (32,)" in msg
    assert torch.equal(other.backbone.conv1.weight, before)  # nothing half-loaded


def test_checkpoint_of_another_arch_names_missing_and_unexpected_keys(tmp_path):
    ckpt = save_checkpoint(tmp_path / "eid.pt", models={"identity_encoder": IdentityEncoder("resnet34", embed_dim=16)})
    with pytest.raises(CheckpointError, match=r"unexpected in file \(\d+\): backbone\.layer1\.2\.conv1\.weight"):
        load_checkpoint(ckpt, models={"identity_encoder": IdentityEncoder("resnet18", embed_dim=16)})
    with pytest.raises(CheckpointError, match=r"shape mismatch: backbone\.layer1\.0\.conv1\.weight"):
        load_checkpoint(ckpt, models={"identity_encoder": IdentityEncoder("resnet50", embed_dim=16)})


def test_non_strict_load_reports_instead_of_ignoring():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    state = {"0.weight": torch.ones(2, 2), "0.bias": torch.zeros(2), "extra.weight": torch.ones(1)}
    report = load_model_state(model, state, strict=False)
    assert report == {"missing": ["1.weight", "1.bias"], "unexpected": ["extra.weight"]}
    assert torch.equal(model[0].weight, torch.ones(2, 2))
    with pytest.raises(CheckpointError, match=r"missing in file \(2\): 1\.weight, 1\.bias"):
        load_model_state(model, state)


def test_missing_model_optimizer_and_mismatched_optimizer(tmp_path):
    net, head, opt_net, opt_head, sched = make_training(0)
    ckpt = save_checkpoint(tmp_path / "c.pt", models={"net": net}, optimizers={"net": opt_net})
    with pytest.raises(CheckpointError, match=r"has no model 'generator'; it holds \['net'\]"):
        load_checkpoint(ckpt, models={"generator": net})
    with pytest.raises(CheckpointError, match="has no optimizer 'head'"):
        load_checkpoint(ckpt, models={}, optimizers={"head": opt_head})
    wrong = torch.optim.SGD(head.parameters(), lr=0.1)  # 2 parameters vs 6 in the saved group
    with pytest.raises(CheckpointError, match="optimizer 'net' .* does not fit"):
        load_checkpoint(ckpt, models={}, optimizers={"net": wrong})


def test_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")
    good = save_checkpoint(tmp_path / "good.pt", models={"m": nn.Linear(50, 50)})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 definitely not a checkpoint")
    for bad in (truncated, garbage):
        with pytest.raises(CheckpointError, match=f"checkpoint {bad} could not be read"):
            read_checkpoint(bad)
    plain = tmp_path / "plain.pth"
    torch.save(nn.Linear(2, 2).state_dict(), plain)
    with pytest.raises(CheckpointError, match=f"{plain} is not a gclreid checkpoint.*load_model_state"):
        read_checkpoint(plain)
    future = tmp_path / "future.pt"
    torch.save({"format": FORMAT, "version": VERSION + 1, "models": {}}, future)
    with pytest.raises(CheckpointError, match="format version 2, newer"):
        read_checkpoint(future)


def test_every_numeric_numpy_value_round_trips_through_the_safe_load(tmp_path):
    """Checkpoints are read with torch.load(weights_only=True) + numpy numbers (docs/safety.md): method
    state may hold numpy arrays and scalars of any numeric dtype."""
    extra = {f"a_{t}": np.arange(6).reshape(2, 3).astype(t)
             for t in ("bool", "int8", "uint8", "int16", "int32", "int64", "uint32", "uint64", "float16", "float32",
                       "float64", "complex64", "complex128")}
    extra.update(scalar=np.float32(0.25), count=np.int64(7), fortran=np.asfortranarray(np.ones((3, 2))),
                 empty=np.zeros((0, 4)), nested={"list": [np.array([1.5]), (np.uint8(3), "text", None, True)]})
    before = list(torch.serialization.get_safe_globals())
    payload = read_checkpoint(save_checkpoint(tmp_path / "c.pt", models={"m": nn.Linear(2, 2)}, extra=extra))
    for key, value in extra.items():
        if isinstance(value, np.ndarray):
            got = payload["extra"][key]
            assert got.dtype == value.dtype and np.array_equal(got, value), key
    assert payload["extra"]["scalar"] == np.float32(0.25) and payload["extra"]["count"] == 7
    assert payload["extra"]["nested"]["list"][1] == (3, "text", None, True)
    # The numpy allow-list is scoped to gclreid's loads: nothing of numpy stays in torch's global list
    # (torch itself may add entries of its own on first use of a submodule, so compare numpy's only).
    def numpy_entries(entries):
        return {repr(e) for e in entries if "numpy" in repr(e)}
    assert numpy_entries(torch.serialization.get_safe_globals()) == numpy_entries(before)


def test_checkpoint_with_foreign_objects_is_refused_with_a_conversion_hint(tmp_path):
    import argparse
    ckpt = save_checkpoint(tmp_path / "c.pt", models={"m": nn.Linear(2, 2)}, extra={"args": argparse.Namespace(lr=1)})
    with pytest.raises(UnsafeFileError) as info:
        read_checkpoint(ckpt)
    message = str(info.value)
    assert message.startswith(f"checkpoint {ckpt} holds objects that a safe load does not build "
                              "(it needs argparse.Namespace)")
    assert "weights_only=False" in message and "docs/safety.md" in message and "\n" not in message
    assert isinstance(info.value, CheckpointError)  # callers that catch CheckpointError still do


@pytest.mark.parametrize("change, named", [
    ({"models": None}, "its 'models' is a NoneType, not a dict"),
    ({"config": ["train"]}, "its 'config' is a list, not a dict"),
    ({"models": {"m": [1, 2]}}, "model 'm' is a list, not a state dict"),
    ({"version": "one"}, "its format version is 'one', not an integer"),
    ({"version": 1.5}, "its format version is 1.5, not an integer"),
    ("models", "it has no 'models' entry"),
    ("config", "it has no 'config' entry"),
])
def test_damaged_checkpoint_fields_are_named(change, named, tmp_path):
    payload = read_checkpoint(save_checkpoint(tmp_path / "good.pt", models={"m": nn.Linear(2, 2)}))
    if isinstance(change, str):
        del payload[change]
    else:
        payload.update(change)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path / 'bad.pt'} is damaged: {named}"):
        read_checkpoint(tmp_path / "bad.pt")


def test_a_folder_is_not_a_checkpoint_and_its_last_pt_is_named(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match=f"checkpoint {run} is a folder, not a file.*holds no last.pt"):
        read_checkpoint(run)
    save_checkpoint(run / "last.pt", models={"m": nn.Linear(2, 2)})
    with pytest.raises(CheckpointError, match=f"checkpoint {run} is a folder, not a file: give its last.pt "
                                              rf"\({run / 'last.pt'}\)"):
        read_checkpoint(run)

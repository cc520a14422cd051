"""No file given to gclreid can run code when it is loaded (issue 17).

A malicious pickle (its ``__reduce__`` creates a marker file) goes to every loading path: the CLI
commands where that is cheap, in-process. The marker must not appear, and the command must stop with
one line ``gclreid <command>: error: …`` (rc 2) naming the file and, for a file that needs objects the
safe load does not build, how to convert a trusted one. Files: a plain pickle (protocol 2 and the
default protocol), a zip-format ``torch.save`` file and a legacy-format ``torch.save`` file, each
holding the malicious object where the loader expects a tensor. Our own checkpoints — written by a
real (tiny) training run, with optimiser, RNG and method state — still load and resume.
"""
import json
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from gclreid.checkpoint import FORMAT, VERSION, numpy_safe_globals, read_checkpoint, safe_load
from gclreid.cli import main
from gclreid.errors import CheckpointError, UnsafeFileError
from gclreid.models import build_resnet, load_imagenet_weights

from conftest import make_stripe_people

KINDS = ["pickle2", "pickle", "zip", "legacy"]  # pickle = Python's default protocol (4 here)
UNSAFE_TEXT = "holds objects that a safe load does not build"


class Evil:
    """Creates `marker` when unpickled by an unrestricted loader."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def payload(shape, evil):
    if shape == "checkpoint":  # a gclreid checkpoint as train/evaluate/generate expect it
        return {"format": FORMAT, "version": VERSION, "models": {"identity_encoder": {"feat.weight": evil}},
                "optimizers": {}, "schedulers": {}, "extra": {}, "epoch": 1, "iteration": 1, "rng": None,
                "config": {"train": {"method": "cluster_contrast"}}}
    return {"state_dict": {"conv1.weight": evil}}  # weights file / plain state dict


def write_evil(path, kind, marker, shape="checkpoint"):
    obj = payload(shape, Evil(marker))
    if kind in ("pickle2", "pickle"):
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=2 if kind == "pickle2" else pickle.DEFAULT_PROTOCOL)
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=kind == "zip")
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("safe")
    people = make_stripe_people(base / "people")
    real, fake = base / "real", base / "fake"
    for folder in (real, fake):
        folder.mkdir()
        for i in range(2):
            Image.new("RGB", (16, 32), (40 * i, 90, 150)).save(folder / f"{i}.png")
    params = base / "hmr.npz"
    np.savez(params, names=np.array(["x.jpg"]), pose=np.zeros((1, 72)), shape=np.zeros((1, 10)))
    return {"people": people, "real": real, "fake": fake, "params": params}


DATA = ["data.height=32", "data.width=16", "data.workers=0", "model.arch=resnet18", "model.embed_dim=32"]
SMALL = ["data.name=market1501", *DATA, "model.pretrained=false", "train.batch_size=16", "eval.batch_size=64"]


def train_args(env, tmp_path, *extra):
    return ["train", f"data.root={env['people']}", *SMALL, f"run.out={tmp_path / 'run'}", *extra]


# Each loading path of the issue: (file shape, argv builder). `f` is the malicious file.
PATHS = {
    "evaluate --checkpoint": ("checkpoint", lambda env, tmp, f: [
        "evaluate", "--checkpoint", str(f), "--dataset", "market1501", "--root", str(env["people"]), *DATA]),
    "train.init (checkpoint)": ("checkpoint", lambda env, tmp, f: train_args(
        env, tmp, "train.method=cluster_contrast", f"train.init={f}")),
    "train.init (state dict)": ("state_dict", lambda env, tmp, f: train_args(
        env, tmp, "train.method=cluster_contrast", f"train.init={f}")),
    "gcl.init": ("checkpoint", lambda env, tmp, f: train_args(
        env, tmp, "train.method=gcl", "gcl.stage=2", f"gcl.init={f}",
        f"gcl.structure_root={tmp / 'no_structures'}")),
    "dgnet.teacher": ("checkpoint", lambda env, tmp, f: train_args(
        env, tmp, "train.method=dgnet", f"dgnet.teacher={f}")),
    "train --resume PATH": ("checkpoint", lambda env, tmp, f: train_args(
        env, tmp, "train.method=cluster_contrast") + ["--resume", str(f)]),
    "model.weights": ("state_dict", lambda env, tmp, f: [
        "evaluate", "--dataset", "market1501", "--root", str(env["people"]), *DATA, "model.pretrained=true",
        f"model.weights={f}"]),
    "generate --checkpoint": ("checkpoint", lambda env, tmp, f: [
        "generate", "--checkpoint", str(f), "--out", str(tmp / "gen"), "--device", "cpu"]),
    "fid --reid-checkpoint": ("checkpoint", lambda env, tmp, f: [
        "fid", str(env["real"]), str(env["fake"]), "--reid-checkpoint", str(f), "--device", "cpu", "--workers", "0"]),
    "fid --inception-weights": ("state_dict", lambda env, tmp, f: [
        "fid", str(env["real"]), str(env["fake"]), "--inception-weights", str(f), "--device", "cpu",
        "--workers", "0"]),
    "structures --smpl-model": ("state_dict", lambda env, tmp, f: [
        "structures", "--dataset", "market1501", "--root", str(env["people"]), "--out", str(tmp / "maps"),
        "--no-progress", "--source", "smpl", "--smpl-model", str(f), "--smpl-params", str(env["params"])]),
}


def assert_one_clear_line(err, command, file, marker, unsafe=True):
    assert not marker.exists(), "the file's code ran"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gclreid {command}: error: "), err
    assert str(file) in err
    if unsafe:  # (a file that is not a pickle / torch file at all only "could not be read")
        assert UNSAFE_TEXT in err or "which the SMPL reader does not build" in err, err
        assert "weights_only=False" in err or "convert it to .npz" in err, err


def test_the_malicious_files_do_run_code_under_an_unrestricted_load(tmp_path):
    """The control: without the safe load these files would have created the marker."""
    for kind in KINDS:
        marker = tmp_path / f"marker-{kind}"
        file = write_evil(tmp_path / f"evil-{kind}.pt", kind, marker)
        if kind.startswith("pickle"):
            with open(file, "rb") as fh:
                pickle.load(fh)
        else:
            torch.load(file, weights_only=False)
        assert marker.exists(), kind


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("path", list(PATHS))
def test_malicious_file_runs_no_code_on_any_loading_path(path, kind, env, tmp_path, capsys):
    shape, argv = PATHS[path]
    marker = tmp_path / "pwned"
    suffix = ".pkl" if path.startswith("structures") else ".pt"
    evil = write_evil(tmp_path / f"evil{suffix}", kind, marker, shape)
    args = argv(env, tmp_path, evil)
    capsys.readouterr()
    assert main(args) == 2
    # Python's default protocol (4) is no torch file: "could not be read"; the SMPL reader reads pickles only.
    smpl = args[0] == "structures"
    unsafe = kind.startswith("pickle") if smpl else kind != "pickle"
    assert_one_clear_line(capsys.readouterr().err, args[0], evil, marker, unsafe)


@pytest.mark.parametrize("kind", KINDS)
def test_planted_file_in_the_torch_hub_cache_runs_no_code(kind, env, tmp_path, monkeypatch, capsys):
    """`model.pretrained=true` reads $TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    marker = tmp_path / "pwned"
    evil = write_evil(cache / "resnet18-f37072fd.pth", kind, marker, "state_dict")
    capsys.readouterr()
    assert main(["evaluate", "--dataset", "market1501", "--root", str(env["people"]), *DATA,
                 "model.pretrained=true"]) == 2
    assert_one_clear_line(capsys.readouterr().err, "evaluate", evil, marker, kind != "pickle")
    with pytest.raises(CheckpointError):  # the library function too
        load_imagenet_weights(build_resnet("resnet18"), "resnet18")
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["zip", "legacy", "pickle2"])
def test_library_loaders_raise_unsafe_file_error(kind, tmp_path):
    from gclreid.engine.common import init_encoder
    from gclreid.models import build_identity_encoder
    marker = tmp_path / "pwned"
    ckpt = write_evil(tmp_path / "c.pt", kind, marker)
    weights = write_evil(tmp_path / "w.pth", kind, marker, "state_dict")
    for call in (lambda: read_checkpoint(ckpt), lambda: safe_load(weights, "weights file"),
                 lambda: init_encoder(build_identity_encoder({"arch": "resnet18", "pretrained": False}), str(weights)),
                 lambda: load_imagenet_weights(build_resnet("resnet18"), "resnet18", path=str(weights))):
        with pytest.raises(UnsafeFileError) as info:
            call()
        assert "exec" in str(info.value)
        assert "weights_only=False" in str(info.value) and "docs/safety.md" in str(info.value)
    assert not marker.exists()


def test_other_objects_than_exec_are_refused_too(tmp_path):
    """Not just exec: any class or function outside the allow-list, and numpy object arrays."""
    import argparse
    import fractions
    import functools
    for i, (obj, needs) in enumerate([
            (argparse.Namespace(lr=0.1), "argparse.Namespace"), (fractions.Fraction(1, 3), "fractions.Fraction"),
            (functools.partial(print, "x"), "functools.partial"),
            (np.array([None, 1], dtype=object), "numpy.dtypes.ObjectDType"),
            (np.array([("a", 1)], dtype=[("n", "U1"), ("v", "i4")]), "numpy.dtypes.(StrDType|VoidDType)")]):
        file = tmp_path / f"{i}.pt"
        torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": obj}, file)
        with pytest.raises(UnsafeFileError, match=f"weights file {file} holds objects .*it needs {needs}"):
            safe_load(file, "weights file")


def test_conversion_hint_works_for_a_trusted_legacy_file(tmp_path):
    """The two lines the error message gives turn another tool's checkpoint into a file that loads."""
    import argparse
    file = tmp_path / "train.pth.tar"
    state = build_resnet("resnet18").state_dict()
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=0.1), "epoch": 90}, file)
    with pytest.raises(UnsafeFileError) as info:
        load_imagenet_weights(build_resnet("resnet18"), "resnet18", path=str(file))
    message = str(info.value)
    assert "it needs argparse.Namespace" in message
    first = message.split("`")[1]
    second = message.split("`")[3]
    namespace = {}
    exec(first, namespace)  # the user's own trusted session
    exec(second, namespace)
    converted = tmp_path / "train-converted.pth"
    assert converted.is_file()
    model = build_resnet("resnet18")
    load_imagenet_weights(model, "resnet18", path=str(converted))
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


def test_smpl_pickle_with_fake_chumpy_never_runs_chumpy(tmp_path, monkeypatch):
    """A SMPL .pkl names chumpy classes; even when a module of that name imports, it is not used: the
    stand-in takes the array (a hostile 'chumpy' on sys.path gets no call)."""
    from test_structures_smpl import fake_model

    from gclreid.structures.smpl import load_smpl_model
    marker = tmp_path / "pwned"
    fake = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x

        def __setstate__(self, state):
            open(marker, "w").close()
            self.__dict__.update(state)
    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    fake.Ch = Ch
    package = types.ModuleType("chumpy")
    package.ch = fake
    monkeypatch.setitem(sys.modules, "chumpy", package)
    monkeypatch.setitem(sys.modules, "chumpy.ch", fake)
    m = fake_model()
    for protocol in (0, 2, 4, 5):
        path = tmp_path / f"model{protocol}.pkl"
        with open(path, "wb") as fh:
            pickle.dump({k: (Ch(v) if k in ("v_template", "shapedirs") else v) for k, v in m.items()}, fh,
                        protocol=protocol)
        model = load_smpl_model(path)
        assert np.allclose(model.v_template.numpy(), m["v_template"], atol=1e-7), protocol
        assert not marker.exists()


def test_smpl_pickle_states_apply_only_to_arrays_and_stand_ins(tmp_path):
    """A pickled state (BUILD) for anything but an array, a dtype or a stand-in is refused: it could
    change an allowed function's attributes."""
    from gclreid.structures.smpl import SmplError, load_smpl_model
    path = tmp_path / "build.pkl"
    path.write_bytes(b"c_codecs\nencode\n}b.")  # BUILD an empty state onto _codecs.encode
    with pytest.raises(SmplError, match="pickled state for function, which the SMPL reader does not build"):
        load_smpl_model(path)
    path.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(SmplError, match="holds os.system, which the SMPL reader does not build"):
        load_smpl_model(path)


# --- our own checkpoints still load -----------------------------------------------------------------

def allowed_names():
    names = set()
    for entry in numpy_safe_globals():
        names.add(entry[1] if isinstance(entry, tuple) else f"{entry.__module__}.{entry.__qualname__}")
    return names


def test_real_training_checkpoint_loads_safely_and_resumes(env, tmp_path, capsys):
    """A tiny cluster-contrast run (optimiser, RNG states, numpy pseudo labels) writes last.pt; it holds
    nothing beyond the allow-list, loads with the safe loader, and `train --resume PATH` continues it."""
    run = tmp_path / "run"
    common = train_args(env, tmp_path, "train.method=cluster_contrast", "train.num_instances=2", "cluster.eps=0.6",
                        "cluster.k1=6", "cluster.k2=3", "train.iters_per_epoch=2", "train.eval_every=0",
                        "train.log_every=100")
    assert main(common + ["train.epochs=1"]) == 0
    ckpt = run / "last.pt"
    needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)))
    assert needed and needed <= allowed_names(), needed - allowed_names()
    payload = read_checkpoint(ckpt)
    assert payload["epoch"] == 1 and set(payload["optimizers"]) and payload["optimizers"][
        next(iter(payload["optimizers"]))]["state"]
    assert isinstance(payload["extra"]["labels"], np.ndarray) and payload["extra"]["labels"].dtype == np.int64
    rng = payload["rng"]
    assert isinstance(rng["numpy"][1], np.ndarray) and rng["numpy"][1].dtype == np.uint32
    assert isinstance(rng["torch"], torch.Tensor) and isinstance(rng["python"], tuple)
    assert payload["config"]["train"]["method"] == "cluster_contrast"
    copy = tmp_path / "copy.pt"
    copy.write_bytes(ckpt.read_bytes())
    assert main(common + ["train.epochs=2", "--resume", str(copy)]) == 0
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert read_checkpoint(ckpt)["epoch"] == 2


def test_checkpoint_with_numpy1_names_loads(tmp_path):
    """Checkpoints written under numpy 1.x name numpy.core.multiarray (numpy 2: numpy._core)."""
    from gclreid.checkpoint import save_checkpoint
    labels = np.array([3, -1, 2], dtype=np.int64)
    path = save_checkpoint(tmp_path / "c.pt", models={"m": torch.nn.Linear(2, 2)},
                           extra={"labels": labels, "score": np.float64(0.5)})
    legacy = tmp_path / "legacy.pt"
    torch.save(read_checkpoint(path), legacy, _use_new_zipfile_serialization=False)
    data = legacy.read_bytes()
    assert b"numpy._core.multiarray\n" in data
    legacy.write_bytes(data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    payload = read_checkpoint(legacy)
    assert np.array_equal(payload["extra"]["labels"], labels) and payload["extra"]["score"] == 0.5
    assert payload["rng"]["numpy"][1].dtype == np.uint32

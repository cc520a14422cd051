"""`gclreid export` (issue 16, item 5): tiny ResNet-18 and MobileNetV2 checkpoints to TorchScript and ONNX,
loaded back and compared with the eager encoder at batch 1 and 4, metadata, distinct outputs for distinct
inputs (torchreid #316), the consumer's onnxruntime snippet of docs/inference.md, and clear errors."""
import gclreid  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)

import importlib.util
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from gclreid.checkpoint import save_checkpoint
from gclreid.cli import main
from gclreid.config import load_config, to_dict
from gclreid.errors import CheckpointError
from gclreid.inference import Encoder
from gclreid.inference import export as export_module
from gclreid.inference.export import (METADATA_KEY, TORCHSCRIPT_METADATA_FILE, ExportCheckError,
                                      ExportDependencyError, ExportedModel, ExportError, check_export, export_encoder,
                                      read_export_metadata)
from gclreid.models import build_appearance_encoder, build_discriminator, build_generator, build_identity_encoder

from conftest import TINY_GENERATOR, make_stripe_people

H, W = 64, 32
SMALL = ["model.pretrained=false", f"data.height={H}", f"data.width={W}", "model.embed_dim=32", "data.workers=0"]
ONNX_MISSING = [n for n in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(n) is None]
needs_onnx = pytest.mark.skipif(bool(ONNX_MISSING), reason=f"{', '.join(ONNX_MISSING)} not installed "
                                                           "(pip install 'gclreid[export]')")


def _save(path, arch, method, models, *extra):
    cfg = load_config(None, [*SMALL, f"model.arch={arch}", f"train.method={method}", *extra])
    return save_checkpoint(path, models=models, config=to_dict(cfg), save_rng=False)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Freshly built networks saved the way training saves them: ResNet-18 (tmp, eval.flip on),
    MobileNetV2 (cluster contrast), GCL stage 3 (encoder + generator), DG-Net (flip on), generator only."""
    d = tmp_path_factory.mktemp("export_ckpts")
    torch.manual_seed(0)
    out = {}
    r18 = load_config(None, [*SMALL, "model.arch=resnet18"])
    out["resnet18"] = _save(d / "r18.pt", "resnet18", "tmp", {"identity_encoder": build_identity_encoder(r18.model)},
                            "eval.flip=true")
    mb = load_config(None, [*SMALL, "model.arch=mobilenet_v2"])
    out["mobilenet_v2"] = _save(d / "mbv2.pt", "mobilenet_v2", "cluster_contrast",
                                {"identity_encoder": build_identity_encoder(mb.model)})
    gcl = load_config(None, [*SMALL, "model.arch=resnet18", *TINY_GENERATOR])
    eid = build_identity_encoder(gcl.model)
    gen = build_generator(gcl.generator, id_dim=eid.part_dim)
    out["gcl"] = _save(d / "gcl.pt", "resnet18", "gcl", {"identity_encoder": eid, "generator": gen,
                                                         "discriminator": build_discriminator(gcl.generator)},
                       *TINY_GENERATOR, "gcl.stage=3")
    out["generator_only"] = _save(d / "gen.pt", "resnet18", "gcl", {"generator": gen}, *TINY_GENERATOR)
    dg = load_config(None, [*SMALL, "model.arch=resnet18", "dgnet.bottleneck=16"])
    out["dgnet"] = _save(d / "dgnet.pt", "resnet18", "dgnet",
                         {"appearance_encoder": build_appearance_encoder(dg.model, dg.dgnet, num_classes=3)},
                         "dgnet.bottleneck=16", "eval.flip=true")
    return out


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    return make_stripe_people(tmp_path_factory.mktemp("export_people") / "people", train_ids=2, test_ids=3,
                              per_cam=2, cams=2, height=H, width=W)


def _batch(n, height=H, width=W, seed=1):
    """n normalised images the export check did not see (its random ones use seed 0)."""
    rng = np.random.default_rng(seed)
    images = [torch.from_numpy(((rng.integers(0, 256, (height, width, 3)) / 255.0 - [0.485, 0.456, 0.406])
                                  / [0.229, 0.224, 0.225]).transpose(2, 0, 1).astype(np.float32)) for _ in range(n)]
    return torch.stack(images)


def _assert_parity(model: ExportedModel, encoder: Encoder, x: torch.Tensor):
    """Exported ≈ eager (≤ 1e-4) at batch 1 and 4, unit rows, and different inputs → different outputs."""
    reference = encoder.embed(x, batch_size=len(x))
    for bs in (1, 4):
        got = np.concatenate([model(x[i:i + bs]) for i in range(0, len(x), bs)])
        assert got.shape == reference.shape
        assert np.abs(got - reference).max() <= 1e-4, bs
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    d = np.linalg.norm(got[:, None] - got[None], axis=2)[np.triu_indices(len(x), 1)]
    assert d.min() > 1e-3  # no two different images share an embedding (torchreid #316)


def _assert_metadata(meta, fmt, ckpt, arch, method, flip, dim=32, height=H, width=W):
    assert meta["format"] == fmt and meta["checkpoint"] == ckpt.name
    assert (meta["arch"], meta["method"], meta["flip"]) == (arch, method, flip)
    assert (meta["height"], meta["width"], meta["output_dim"]) == (height, width, dim)
    assert meta["normalized"] is True and meta["color"] == "RGB" and meta["input_layout"] == "NCHW"
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and meta["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert meta["gclreid_version"] == gclreid.__version__
    assert (meta["input_name"], meta["output_name"]) == ("images", "embeddings")
    assert meta["weights_sha256"] == Encoder.from_checkpoint(ckpt).weights_sha256


# ------------------------------------------------------------------------------------------------
# TorchScript


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_torchscript_export_matches_the_eager_encoder(ckpts, tmp_path, capsys, arch):
    out = tmp_path / f"{arch}.pt"
    assert main(["export", "--checkpoint", str(ckpts[arch]), "--format", "torchscript", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "parity check passed" in printed and "at batch 1" in printed and "at batch 4" in printed
    flip = arch == "resnet18"  # that checkpoint has eval.flip=true: the flip is inside the graph
    model = ExportedModel.load(out)
    assert model.format == "torchscript"
    _assert_metadata(model.metadata, "torchscript", ckpts[arch], arch,
                     "tmp" if arch == "resnet18" else "cluster_contrast", flip)
    _assert_parity(model, Encoder.from_checkpoint(ckpts[arch]), _batch(6))
    # A consumer needs only torch: the metadata is an extra file of the TorchScript archive.
    extra = {TORCHSCRIPT_METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra[TORCHSCRIPT_METADATA_FILE]) == model.metadata
    with torch.no_grad():
        assert module(_batch(3)).shape == (3, 32)


@pytest.mark.parametrize("kind", ["gcl", "dgnet"])
def test_torchscript_export_of_gcl_and_dgnet_checkpoints(ckpts, tmp_path, kind):
    result = export_encoder(ckpts[kind], tmp_path / f"{kind}.pt", "torchscript")
    assert result.check["checked"] and max(result.check["max_abs_diff"].values()) <= 1e-4
    meta = read_export_metadata(result.path)
    assert meta["method"] == kind and meta["arch"] == "resnet18"
    encoder = Encoder.from_checkpoint(ckpts[kind])
    if kind == "dgnet":  # the appearance encoder's combined test feature, DG-Net's flip fusion in the graph
        assert meta["model_key"] == "appearance_encoder" and meta["test_feature"] == "combined"
        assert meta["flip"] is True and meta["output_dim"] == 32
    _assert_parity(ExportedModel.load(result.path), encoder, _batch(5))


def test_flip_can_be_switched_off_and_other_input_sizes(ckpts, tmp_path):
    result = export_encoder(ckpts["resnet18"], tmp_path / "noflip.pt", "torchscript", flip=False, height=128, width=64)
    meta = result.metadata
    assert meta["flip"] is False and (meta["height"], meta["width"]) == (128, 64)
    encoder = Encoder.from_checkpoint(ckpts["resnet18"], flip=False, overrides=["data.height=128", "data.width=64"])
    _assert_parity(ExportedModel.load(result.path), encoder, _batch(4, 128, 64))
    # the flipped and unflipped exports differ (the flip really is in the first graph)
    flipped = export_encoder(ckpts["resnet18"], tmp_path / "flip.pt", "torchscript", check=False, height=128, width=64)
    x = _batch(2, 128, 64)
    assert np.abs(ExportedModel.load(flipped.path)(x) - ExportedModel.load(result.path)(x)).max() > 1e-4


def test_check_on_real_images(ckpts, people, tmp_path, capsys):
    out = tmp_path / "real.pt"
    assert main(["export", "--checkpoint", str(ckpts["resnet18"]), "--format", "torchscript", "--out", str(out),
                 "--images", str(people / "bounding_box_test")]) == 0
    assert "real images from" in capsys.readouterr().out  # 6 gallery images, spread evenly up to 16
    result = export_encoder(ckpts["resnet18"], tmp_path / "two.pt", "torchscript",
                            images=sorted((people / "query").glob("*.jpg"))[:2])
    assert result.check["inputs"] == "2 real images given + 2 seeded random images"


# ------------------------------------------------------------------------------------------------
# ONNX


@pytest.fixture(scope="module")
def onnx_exports(ckpts, people, tmp_path_factory):
    if ONNX_MISSING:
        pytest.skip(f"{', '.join(ONNX_MISSING)} not installed (pip install 'gclreid[export]')")
    d = tmp_path_factory.mktemp("onnx")
    return {
        # ResNet-18 with flip averaging in the graph, checked on real images, through the command line
        "resnet18": (main(["export", "--checkpoint", str(ckpts["resnet18"]), "--format", "onnx",
                           "--out", str(d / "r18.onnx"), "--images", str(people / "bounding_box_test")]), d / "r18.onnx"),
        # MobileNetV2 at 128×64 through the API
        "mobilenet_v2": (export_encoder(ckpts["mobilenet_v2"], d / "mbv2.onnx", "onnx", height=128, width=64).check,
                         d / "mbv2.onnx"),
    }


@needs_onnx
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_onnx_export_matches_the_eager_encoder(ckpts, onnx_exports, arch):
    import onnx

    status, path = onnx_exports[arch]
    if arch == "resnet18":
        assert status == 0
    else:
        assert status["checked"] and status["runtime"].startswith("onnxruntime")
        assert max(status["max_abs_diff"].values()) <= 1e-4 and status["min_pair_distance"] > 1e-5
    height, width = (H, W) if arch == "resnet18" else (128, 64)
    model = ExportedModel.load(path)
    assert model.format == "onnx" and "CPUExecutionProvider" in model.runtime
    _assert_metadata(model.metadata, "onnx", ckpts[arch], arch, "tmp" if arch == "resnet18" else "cluster_contrast",
                     arch == "resnet18", height=height, width=width)
    assert model.metadata["opset"] >= 18
    encoder = Encoder.from_checkpoint(ckpts[arch], overrides=[f"data.height={height}", f"data.width={width}"])
    _assert_parity(model, encoder, _batch(6, height, width))
    # the batch axis is symbolic in the graph, the rest fixed; metadata_props holds the same JSON
    graph = onnx.load(str(path))
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, height, width]
    assert graph.graph.input[0].name == "images" and graph.graph.output[0].name == "embeddings"
    assert json.loads({p.key: p.value for p in graph.metadata_props}[METADATA_KEY]) == model.metadata
    assert read_export_metadata(path) == model.metadata


@needs_onnx
def test_docs_onnxruntime_snippet_reproduces_embed(ckpts, onnx_exports, people):
    """The consumer snippet of docs/inference.md: preprocessing from the metadata only, no gclreid."""
    import onnxruntime as ort

    _, path = onnx_exports["resnet18"]
    files = sorted(str(p) for p in (people / "query").glob("*.jpg"))[:3]
    # --- as in the docs ---
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["preprocessing"])

    def preprocess(file):
        img = Image.open(file).convert("RGB").resize((meta["width"], meta["height"]), Image.BICUBIC)
        x = np.asarray(img, dtype=np.float32) / 255.0
        return ((x - meta["mean"]) / meta["std"]).transpose(2, 0, 1).astype(np.float32)

    features = session.run(None, {meta["input_name"]: np.stack([preprocess(f) for f in files])})[0]
    # ---
    expected = Encoder.from_checkpoint(ckpts["resnet18"]).embed(files)
    assert meta["flip"] is True  # the checkpoint's eval.flip: done inside the graph, not by the consumer
    assert np.abs(features - expected).max() <= 1e-4


@needs_onnx
def test_onnx_check_is_skipped_without_onnxruntime(ckpts, onnx_exports, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(export_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    _, path = onnx_exports["mobilenet_v2"]
    encoder = Encoder.from_checkpoint(ckpts["mobilenet_v2"], overrides=["data.height=128", "data.width=64"])
    report = check_export(path, encoder, _batch(4, 128, 64))
    assert report["checked"] is False and "onnxruntime is not installed" in report["skipped"]
    assert "gclreid[export]" in report["skipped"] and report["onnx_checker"] == "passed"
    with pytest.raises(ExportDependencyError, match=r"onnxruntime.*gclreid\[export\]"):
        ExportedModel.load(path)


# ------------------------------------------------------------------------------------------------
# the check catches bad exports; errors


def test_constant_output_export_fails_the_check(ckpts, tmp_path, monkeypatch):
    """torchreid #316: an export that returns the same embedding for every input must not be written."""
    def constant(self, batch):
        out = np.zeros((len(batch), 32), dtype=np.float32)
        out[:, 0] = 1
        return out

    monkeypatch.setattr(ExportedModel, "__call__", constant)
    out = tmp_path / "const.pt"
    with pytest.raises(ExportCheckError, match=r"same embedding to different images \(all 8 inputs.*#316"):
        export_encoder(ckpts["mobilenet_v2"], out, "torchscript")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_parity_failure_is_reported_and_nothing_written(ckpts, tmp_path, monkeypatch, capsys):
    real_call = ExportedModel.__call__
    monkeypatch.setattr(ExportedModel, "__call__", lambda self, batch: real_call(self, batch) + 1e-3)
    out = tmp_path / "off.pt"
    assert main(["export", "--checkpoint", str(ckpts["mobilenet_v2"]), "--format", "torchscript",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "differ from the checkpoint's by up to 0.001" in err and "tolerance 0.0001" in err
    assert err.count("\n") == 1 and not out.exists()
    # --no-check writes it anyway and says the check was skipped
    assert main(["export", "--checkpoint", str(ckpts["mobilenet_v2"]), "--format", "torchscript",
                 "--out", str(out), "--no-check"]) == 0
    assert out.is_file() and "parity check skipped: --no-check" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--format", "tflite"], "--format 'tflite': unknown export format; expected one of onnx, torchscript"),
    (["--format", "torchscript", "--opset", "18"], "--opset 18: an opset applies to --format onnx only"),
    (["--format", "torchscript", "--height", "0"], "--height 0: expected an image size"),
    (["--format", "torchscript", "--images", "/nonexistent/folder"], "--images /nonexistent/folder: not a folder"),
])
def test_bad_options_are_one_line_errors(ckpts, tmp_path, capsys, args, message):
    out = tmp_path / "x.out"
    assert main(["export", "--checkpoint", str(ckpts["resnet18"]), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gclreid export: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_checkpoint_without_encoder_is_a_clear_error(ckpts, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(ckpts["generator_only"]), "--format", "torchscript",
                 "--out", str(tmp_path / "g.pt")]) == 2
    err = capsys.readouterr().err
    assert "holds no identity encoder" in err and "gen.pt" in err and err.count("\n") == 1
    with pytest.raises(CheckpointError):
        export_encoder(tmp_path / "missing.pt", tmp_path / "m.pt", "torchscript")


def test_missing_onnx_packages_name_the_extra(ckpts, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(export_module.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("onnx", "onnxscript") else real(name, *a))
    assert main(["export", "--checkpoint", str(ckpts["resnet18"]), "--format", "onnx",
                 "--out", str(tmp_path / "r.onnx")]) == 2
    err = capsys.readouterr().err
    assert "onnx and onnxscript" in err and "pip install 'gclreid[export]'" in err and err.count("\n") == 1
    with pytest.raises(ExportDependencyError):
        export_encoder(ckpts["resnet18"], tmp_path / "r.onnx", "onnx")


def test_reading_a_file_that_is_not_an_export(ckpts, tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        read_export_metadata(tmp_path / "nothing.onnx")
    with pytest.raises(ExportError, match="not a TorchScript file|no gclreid preprocessing metadata"):
        read_export_metadata(ckpts["resnet18"])  # a training checkpoint (a zip, not TorchScript)

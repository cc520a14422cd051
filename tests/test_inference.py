"""Using a trained model (issue 16, items 1-4): the Encoder API on every input type and checkpoint kind,
`gclreid embed` → `gclreid search`, chunked top-k against the dense ranking, `gclreid evaluate
--visualize` frame colours read back from the pictures, and clear errors for bad inputs."""
import gclreid  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gclreid.checkpoint import save_checkpoint
from gclreid.cli import main
from gclreid.clustering._checks import FeatureError
from gclreid.config import load_config, to_dict
from gclreid.data import ImageDataset, ImageRecord, build_test_transform
from gclreid.engine import train
from gclreid.errors import CheckpointError, DatasetError, ImageDecodeError
from gclreid.evaluation import extract_features, pairwise_distance
from gclreid.evaluation.pipeline import encoder_from_checkpoint
from gclreid.evaluation.rerank import re_ranking
from gclreid.evaluation.visual import RANK_COLOURS, ranked_list_boxes
from gclreid.inference import (Encoder, EmbeddingsError, InputError, Progress, load_embeddings, rerank_topk,
                               topk_search)
from gclreid.inference import search as search_module
from gclreid.models import build_appearance_encoder, build_discriminator, build_generator, build_identity_encoder

from conftest import TINY_GENERATOR, make_stripe_people

H, W = 64, 32
SMALL = ["model.arch=resnet18", "model.pretrained=false", f"data.height={H}", f"data.width={W}", "model.embed_dim=32",
         "data.workers=0"]


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """3 train + 3 test identities × 2 cameras × 2 images: query 6, gallery 6 (one junk per query)."""
    return make_stripe_people(tmp_path_factory.mktemp("inf") / "people", train_ids=3, test_ids=3, per_cam=2, cams=2,
                              height=H, width=W)


def _save(path, method, models, *extra):
    cfg = load_config(None, [*SMALL, f"train.method={method}", *extra])
    return save_checkpoint(path, models=models, config=to_dict(cfg), save_rng=False)


@pytest.fixture(scope="module")
def ckpts(people, tmp_path_factory):
    """A checkpoint of every method (freshly saved networks; `supervised` really trained for a few
    iterations), one with MobileNetV2, and one holding only a generator."""
    d = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    out = {}
    cfg = load_config(None, SMALL)
    out["tmp"] = _save(d / "tmp.pt", "tmp", {"identity_encoder": build_identity_encoder(cfg.model)}, "eval.flip=true")
    mb = load_config(None, [*SMALL, "model.arch=mobilenet_v2"])
    out["cluster_contrast_mbv2"] = _save(d / "cc.pt", "cluster_contrast",
                                         {"identity_encoder": build_identity_encoder(mb.model)}, "model.arch=mobilenet_v2")
    gcl = load_config(None, [*SMALL, *TINY_GENERATOR])
    eid = build_identity_encoder(gcl.model)
    gen = build_generator(gcl.generator, id_dim=eid.part_dim)
    out["gcl"] = _save(d / "gcl.pt", "gcl", {"identity_encoder": eid, "generator": gen,
                                             "discriminator": build_discriminator(gcl.generator)},
                       *TINY_GENERATOR, "gcl.stage=3")
    out["generator_only"] = _save(d / "gen.pt", "gcl", {"generator": gen}, *TINY_GENERATOR)
    dg = load_config(None, [*SMALL, "dgnet.bottleneck=16"])
    out["dgnet"] = _save(d / "dgnet.pt", "dgnet",
                         {"appearance_encoder": build_appearance_encoder(dg.model, dg.dgnet, num_classes=3),
                          "generator": gen}, "dgnet.bottleneck=16", "eval.flip=true")
    sup = load_config(None, [*SMALL, "data.name=market1501", f"data.root={people}", "train.method=supervised",
                             f"run.out={d / 'sup'}", "train.epochs=1", "train.iters_per_epoch=2", "train.batch_size=6",
                             "train.num_instances=2", "train.eval_every=0", "train.log_every=100"])
    train(sup, progress=False)
    out["supervised"] = d / "sup" / "last.pt"
    return out


def _paths(people, split="query"):
    return sorted(str(p) for p in (people / split).glob("*.jpg"))


def _reference_features(ckpt, paths, flip):
    """What `gclreid evaluate` computes for these images: its encoder loader, test transform, extract_features."""
    model, cfg, _ = encoder_from_checkpoint(ckpt, load_config())
    records = [ImageRecord(p, -1, -1, Path(p).name, "query") for p in paths]
    loader = torch.utils.data.DataLoader(ImageDataset(records, build_test_transform(cfg.data)), batch_size=4)
    return extract_features(model, loader, "cpu", flip=flip, progress=False)[0].numpy()


# --------------------------------------------------------------------------------------------------
# the Python API


def test_every_input_type_gives_the_same_features(people, ckpts):
    enc = Encoder.from_checkpoint(ckpts["tmp"], device="cpu")
    assert (enc.height, enc.width, enc.flip, enc.method, enc.model_key) == (H, W, True, "tmp", "identity_encoder")
    paths = _paths(people)[:5]
    ref = enc.embed(paths, batch_size=2)
    assert ref.dtype == np.float32 and ref.shape == (5, 32) and enc.dim == 32
    np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(ref, _reference_features(ckpts["tmp"], paths, flip=True), atol=1e-6)
    pil = [Image.open(p) for p in paths]
    arrays = [np.asarray(im.convert("RGB")) for im in pil]
    tensors = torch.stack([enc.preprocess(p) for p in paths])
    variants = {
        "Path": [Path(p) for p in paths], "PIL": pil, "numpy": arrays, "numpy batch": np.stack(arrays),
        "tensor": tensors, "tensor list": list(tensors), "mixed": [paths[0], pil[1], arrays[2], tensors[3], Path(paths[4])],
        "batch 1": paths,
    }
    for name, inputs in variants.items():
        got = enc.embed(inputs, batch_size=1 if name == "batch 1" else 3)
        np.testing.assert_allclose(got, ref, atol=2e-6, err_msg=name)
    np.testing.assert_allclose(enc.embed(paths[2]), ref[2:3], atol=2e-6)  # one item → one row
    np.testing.assert_allclose(enc.embed(tensors[2]), ref[2:3], atol=2e-6)  # 3×H×W tensor → one row
    assert enc.embed([]).shape == (0, 32)
    # another size is resized like any image; grey images become RGB
    big = pil[0].convert("RGB").resize((W * 3, H * 3), Image.BICUBIC)
    assert enc.embed([big, np.asarray(pil[0].convert("L"))]).shape == (2, 32)


@pytest.mark.parametrize("name", ["tmp", "cluster_contrast_mbv2", "supervised", "gcl", "dgnet"])
def test_every_method_loads_with_its_own_preprocessing(people, ckpts, name):
    enc = Encoder.from_checkpoint(ckpts[name])
    paths = _paths(people)[:4]
    flip = name in ("tmp", "dgnet")  # what those checkpoints' eval.flip says
    assert enc.flip is flip
    got = enc.embed(paths, batch_size=3)
    np.testing.assert_allclose(got, _reference_features(ckpts[name], paths, flip), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    expected_key = "appearance_encoder" if name == "dgnet" else "identity_encoder"
    assert enc.model_key == expected_key and enc.arch == ("mobilenet_v2" if "mbv2" in name else "resnet18")
    other = Encoder.from_checkpoint(ckpts[name], flip=not flip).embed(paths)  # the argument overrides eval.flip
    np.testing.assert_allclose(other, _reference_features(ckpts[name], paths, not flip), atol=1e-5)
    assert not np.allclose(other, got, atol=1e-4)


def test_weights_hash_identifies_the_weights_not_the_file(ckpts, tmp_path):
    copy = tmp_path / "copy.pt"
    shutil.copy(ckpts["tmp"], copy)
    a, b = Encoder.from_checkpoint(ckpts["tmp"]), Encoder.from_checkpoint(copy)
    assert a.weights_sha256 == b.weights_sha256 != Encoder.from_checkpoint(ckpts["gcl"]).weights_sha256


def test_bad_inputs_are_clear_errors(people, ckpts, tmp_path):
    enc = Encoder.from_checkpoint(ckpts["tmp"])
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    good = _paths(people)[:3]
    for workers in (0, 1):  # from a DataLoader worker the error arrives as itself, not wrapped
        with pytest.raises(ImageDecodeError, match="broken.jpg") as info:
            enc.embed([*good, str(bad)], batch_size=2, workers=workers)
        assert "\n" not in str(info.value)
    with pytest.raises(DatasetError, match="missing.jpg"):
        enc.embed([str(tmp_path / "missing.jpg")])
    with pytest.raises(InputError, match=r"\(2, 3, 32, 32\).*3×64×32"):
        enc.embed(torch.zeros(2, 3, 32, 32))
    with pytest.raises(InputError, match="expected N×3×64×32"):
        enc.embed(torch.zeros(2, 1, H, W))
    with pytest.raises(InputError, match="input 1 has shape"):
        enc.embed([torch.zeros(3, H, W), torch.zeros(3, H + 1, W)])
    with pytest.raises(InputError, match="dtype torch.uint8"):
        enc.embed(torch.zeros(1, 3, H, W, dtype=torch.uint8))
    with pytest.raises(InputError, match="uint8"):
        enc.embed([np.zeros((H, W, 3), np.float32)])
    with pytest.raises(InputError, match="input 0 is a int"):
        enc.embed([3])
    with pytest.raises(InputError, match="batch_size"):
        enc.embed(good, batch_size=0)
    with pytest.raises(CheckpointError, match=r"holds no identity encoder.*generator"):
        Encoder.from_checkpoint(ckpts["generator_only"])
    with pytest.raises(CheckpointError, match=r"'generator' is not an identity encoder.*identity_encoder"):
        Encoder.from_checkpoint(ckpts["gcl"], model_key="generator")
    with pytest.raises(CheckpointError, match="does not exist"):
        Encoder.from_checkpoint(tmp_path / "nope.pt")


def test_progress_is_line_based_without_a_terminal():
    stream = io.StringIO()
    bar = Progress(10, desc="embed", stream=stream, every=0)
    for _ in range(5):
        bar.update(2)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0] == "embed: 10 images" and lines[-1].startswith("embed: 10/10 images (100%)")
    assert len(lines) == 6


# --------------------------------------------------------------------------------------------------
# search


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("chunk_bytes", [4 * 64, 4 * 4096, 64 * 2**20])
def test_chunked_topk_equals_the_dense_ranking(chunk_bytes):
    rng = np.random.default_rng(0)
    q, g = _unit(rng, 37, 24), _unit(rng, 3001, 24)
    dist, idx = topk_search(q, g, 15, chunk_bytes=chunk_bytes)
    dense = pairwise_distance(q, g).numpy()
    order = np.argsort(dense, axis=1, kind="stable")[:, :15]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_allclose(dist, np.take_along_axis(dense, order, 1), atol=1e-5)
    assert dist.dtype == np.float32 and idx.dtype == np.int64
    # k beyond the gallery: the whole gallery, ranked
    d_all, i_all = topk_search(q[:2], g[:7], 50, backend="torch", chunk_bytes=chunk_bytes)
    assert i_all.shape == (2, 7) and sorted(i_all[0]) == list(range(7))


def test_topk_ties_go_to_the_lower_gallery_index():
    rng = np.random.default_rng(1)
    g = _unit(rng, 50, 8)
    g = np.concatenate([g, g, g])  # rows i, i+50, i+100 identical
    dist, idx = topk_search(g[:5], g, 3, backend="torch", chunk_bytes=4 * 16)  # tiny chunks split the copies
    np.testing.assert_array_equal(idx, np.arange(5)[:, None] + np.array([0, 50, 100]))
    np.testing.assert_allclose(dist, 0, atol=1e-6)


def test_faiss_backend_agrees_with_torch():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(2)
    q, g = _unit(rng, 20, 32), _unit(rng, 2000, 32)
    d_t, i_t = topk_search(q, g, 10, backend="torch")
    d_f, i_f = topk_search(q, g, 10, backend="faiss")
    np.testing.assert_array_equal(i_t, i_f)
    np.testing.assert_allclose(d_t, d_f, atol=1e-5)


def test_search_errors():
    rng = np.random.default_rng(3)
    with pytest.raises(FeatureError, match="dimensions differ"):
        topk_search(_unit(rng, 2, 8), _unit(rng, 5, 9), 3)
    with pytest.raises(FeatureError, match="positive integer"):
        topk_search(_unit(rng, 2, 8), _unit(rng, 5, 8), 0)
    with pytest.raises(FeatureError, match="backend"):
        topk_search(_unit(rng, 2, 8), _unit(rng, 5, 8), 2, backend="annoy")
    g = _unit(rng, 500, 8)
    g[321, 3] = np.nan
    with pytest.raises(FeatureError, match="row 321 contains NaN"):
        topk_search(_unit(rng, 2, 8), g, 2, chunk_bytes=4 * 200)


def test_rerank_topk_is_the_head_of_the_dense_reranking(monkeypatch):
    rng = np.random.default_rng(4)
    q, g = _unit(rng, 6, 16), _unit(rng, 60, 16)
    dist, idx = rerank_topk(q, g, 5, k1=8, k2=3)
    dense = re_ranking(q, g, k1=8, k2=3)
    order = np.argsort(dense, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_allclose(dist, np.take_along_axis(dense, order, 1))
    monkeypatch.setattr(search_module, "RERANK_MAX_GALLERY", 59)
    with pytest.raises(FeatureError, match="at most 59 entries .*60"):
        rerank_topk(q, g, 5, k1=8, k2=3)


def test_embed_then_search_finds_the_copy_at_rank_1(people, ckpts, tmp_path, capsys):
    gallery_dir = tmp_path / "gallery"
    shutil.copytree(people / "bounding_box_test", gallery_dir)
    shutil.copytree(people / "bounding_box_train", gallery_dir / "train")
    npz = tmp_path / "g.npz"
    assert main(["embed", "--checkpoint", str(ckpts["tmp"]), "--images", str(gallery_dir), "--out", str(npz),
                 "--workers", "0", "--batch-size", "7"]) == 0
    captured = capsys.readouterr()
    assert "embed: 18/18 images (100%)" in captured.err and "\r" not in captured.err  # not a TTY: plain lines
    g = load_embeddings(npz)
    assert g.features.shape == (18, 32) and g.features.dtype == np.float32
    assert (g.pids == -1).all() and (g.camids == -1).all()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in g.paths)
    meta = g.meta
    assert meta["format"] == "gclreid-embeddings" and meta["checkpoint"] == str(Path(ckpts["tmp"]).resolve())
    assert meta["preprocessing"]["height"] == H and meta["preprocessing"]["flip"] is True
    assert meta["source"]["kind"] == "images" and meta["feature_dim"] == 32 and len(meta["weights_sha256"]) == 64

    # The queries: copies (under another name) of gallery images.
    targets = [g.paths[3], g.paths[17]]
    queries = []
    for i, t in enumerate(targets):
        queries.append(tmp_path / f"query_{i}.jpg")
        shutil.copy(t, queries[-1])
    out = tmp_path / "found"
    assert main(["search", "--checkpoint", str(ckpts["tmp"]), "--query", *map(str, queries), "--gallery", str(npz),
                 "--top", "4", "--out", str(out), "--backend", "torch"]) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["gallery_size"] == 18 and report["top"] == 4 and "2 - 2*cos" in report["metric"]
    for entry, target in zip(report["queries"], targets):
        first = entry["results"][0]
        assert first["path"] == target and first["rank"] == 1 and first["distance"] == pytest.approx(0, abs=1e-5)
        assert [r["rank"] for r in entry["results"]] == [1, 2, 3, 4]
        d = [r["distance"] for r in entry["results"]]
        assert d == sorted(d) and first["pid"] == -1
        picture = Image.open(out / entry["picture"])
        boxes = ranked_list_boxes(4)
        assert picture.size[0] == boxes[-1][2] + 6
        x0, y0, _, _ = boxes[0]
        assert picture.getpixel((x0 + 1, y0 + 1)) == RANK_COLOURS["query"]
        assert picture.getpixel((boxes[1][0] + 1, boxes[1][1] + 1)) == RANK_COLOURS["unknown"]
    # the gallery file from a dataset split carries identities and cameras into the results
    npz2 = tmp_path / "g2.npz"
    assert main(["embed", "--checkpoint", str(ckpts["tmp"]), "--dataset", "market1501", "--root", str(people),
                 "--split", "gallery", "--out", str(npz2), "--workers", "1"]) == 0
    g2 = load_embeddings(npz2)
    names = [Path(p).name for p in g2.paths]
    assert list(g2.pids) == [int(n[:4]) for n in names] and list(g2.camids) == [int(n[6]) - 1 for n in names]
    assert main(["search", "--checkpoint", str(ckpts["tmp"]), "--query", str(people / "bounding_box_test"),
                 "--gallery", str(npz2), "--top", "2", "--out", str(tmp_path / "f2"), "--no-pictures"]) == 0
    report = json.loads((tmp_path / "f2" / "results.json").read_text())
    assert len(report["queries"]) == 6 and not list((tmp_path / "f2").glob("*.png"))
    for entry in report["queries"]:
        first = entry["results"][0]
        assert first["path"] == entry["query"] and first["pid"] == int(Path(entry["query"]).name[:4])
    # --list: relative paths are relative to the list file
    listing = tmp_path / "list.txt"
    listing.write_text("# two images\ngallery/" + Path(g.paths[0]).name + "\n\ngallery/" + Path(g.paths[1]).name + "\n")
    assert main(["embed", "--checkpoint", str(ckpts["tmp"]), "--list", str(listing), "--out", str(tmp_path / "l.npz"),
                 "--workers", "0", "--no-flip"]) == 0
    small = load_embeddings(tmp_path / "l.npz")
    assert list(small.paths) == list(g.paths[:2]) and small.meta["preprocessing"]["flip"] is False


def test_search_with_rerank(people, ckpts, tmp_path):
    npz = tmp_path / "g.npz"
    assert main(["embed", "--checkpoint", str(ckpts["tmp"]), "--dataset", "market1501", "--root", str(people),
                 "--split", "train", "--out", str(npz), "--workers", "0"]) == 0
    q = load_embeddings(npz).paths[5]
    assert main(["search", "--checkpoint", str(ckpts["tmp"]), "--query", str(q), "--gallery", str(npz), "--top", "3",
                 "--out", str(tmp_path / "rr"), "--rerank", "--k1", "5", "--k2", "2"]) == 0
    report = json.loads((tmp_path / "rr" / "results.json").read_text())
    assert report["rerank"] is True and "re-ranked" in report["metric"]
    assert report["queries"][0]["results"][0]["path"] == q


def test_cli_errors_are_one_line(people, ckpts, tmp_path, capsys):
    def fails(argv, *needles):
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        err = lines[-1]  # progress lines may come before it; the error is one line, no traceback
        assert err.startswith(f"gclreid {argv[0]}: error:") and "Traceback" not in "".join(lines), lines
        assert all(line.startswith(("embed: ", "gclreid embed: skipping")) for line in lines[:-1]), lines
        for needle in needles:
            assert needle in err, err

    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(_paths(people)[0], folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"\xff\xd8 truncated")
    npz = tmp_path / "g.npz"
    fails(["embed", "--checkpoint", str(ckpts["tmp"]), "--images", str(folder), "--out", str(npz), "--workers", "1"],
          "b.jpg", "does not decode")
    assert not npz.exists()
    assert main(["embed", "--checkpoint", str(ckpts["tmp"]), "--images", str(folder), "--out", str(npz),
                 "--workers", "0", "--skip-bad-images"]) == 0
    assert len(load_embeddings(npz)) == 1 and load_embeddings(npz).meta["skipped"][0]["path"].endswith("b.jpg")
    capsys.readouterr()
    fails(["embed", "--checkpoint", str(ckpts["generator_only"]), "--images", str(folder), "--out", str(npz)],
          "no identity encoder", "generator")
    fails(["embed", "--checkpoint", str(ckpts["tmp"]), "--images", str(tmp_path / "none"), "--out", str(npz)], "none")
    fails(["search", "--checkpoint", str(ckpts["gcl"]), "--query", str(folder / "a.jpg"), "--gallery", str(npz),
           "--out", str(tmp_path / "s")], "other weights")
    fails(["search", "--checkpoint", str(ckpts["tmp"]), "--query", str(folder / "b.jpg"), "--gallery", str(npz),
           "--out", str(tmp_path / "s")], "b.jpg")
    fails(["search", "--checkpoint", str(ckpts["tmp"]), "--query", str(folder / "a.jpg"),
           "--gallery", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "s")], "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"nope")
    fails(["search", "--checkpoint", str(ckpts["tmp"]), "--query", str(folder / "a.jpg"),
           "--gallery", str(tmp_path / "junk.npz"), "--out", str(tmp_path / "s")], "junk.npz")
    with pytest.raises(EmbeddingsError):
        load_embeddings(tmp_path / "junk.npz")


# --------------------------------------------------------------------------------------------------
# gclreid evaluate --visualize


def test_evaluate_visualize_frames_matches_green_others_red_junk_grey(people, ckpts, tmp_path):
    plain, vis = tmp_path / "plain", tmp_path / "vis"
    common = ["evaluate", "--checkpoint", str(ckpts["tmp"]), "--dataset", "market1501", "--root", str(people),
              "data.workers=0"]
    assert main([*common, "--out", str(plain)]) == 0
    assert main([*common, "--out", str(vis), "--visualize", "3", "--visualize-top", "6"]) == 0
    report = json.loads((vis / "evaluate.json").read_text())
    assert report["mAP"] == json.loads((plain / "evaluate.json").read_text())["mAP"]  # drawing changes nothing
    assert report["visualize"]["queries"] == 3 and report["visualize"]["top"] == 6
    index = json.loads((vis / "ranked" / "index.json").read_text())
    assert [e["query_index"] for e in index["queries"]] == [0, 2, 5]  # spread evenly over the 6 queries
    parse = re.compile(r"(\d{4})_c(\d)")
    seen = set()
    for entry in index["queries"]:
        q_pid, q_cam = map(int, parse.search(Path(entry["query"]).name).groups())
        picture = Image.open(vis / "ranked" / entry["picture"]).convert("RGB")
        boxes = ranked_list_boxes(6)
        assert picture.size == (boxes[-1][2] + 6, boxes[0][3] + 26 + 6)
        assert picture.getpixel((boxes[0][0] + 1, boxes[0][1] + 1)) == RANK_COLOURS["query"]
        assert len(entry["ranked"]) == 6  # the whole gallery: every match, junk and false entry is drawn
        for r, box in zip(entry["ranked"], boxes[1:]):
            g_pid, g_cam = map(int, parse.search(Path(r["path"]).name).groups())
            expected = ("false" if g_pid != q_pid else "junk" if g_cam == q_cam else "match")
            assert r["status"] == expected
            seen.add(expected)
            x0, y0, x1, y1 = box
            for xy in [(x0 + 1, y0 + 1), (x1 - 2, (y0 + y1) // 2), ((x0 + x1) // 2, y1 - 2)]:
                assert picture.getpixel(xy) == RANK_COLOURS[expected], (entry["picture"], r["rank"], xy)
        d = [r["distance"] for r in entry["ranked"]]
        assert d == sorted(d)
    assert seen == {"match", "false", "junk"}


def test_evaluate_visualize_rejects_bad_numbers(people, capsys):
    assert main(["evaluate", "--dataset", "market1501", "--root", str(people), "--visualize", "2",
                 "--visualize-top", "0", *SMALL]) == 2
    assert "--visualize-top" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# the new loading paths are safe (issue 17): a malicious checkpoint or gallery file runs no code


@pytest.mark.parametrize("kind", ["pickle2", "pickle", "zip", "legacy"])
def test_malicious_checkpoint_or_gallery_runs_no_code(kind, people, tmp_path, capsys):
    from gclreid.inference import save_embeddings
    from test_safe_loading import Evil, assert_one_clear_line, write_evil

    marker = tmp_path / "pwned"
    evil = write_evil(tmp_path / "evil.pt", kind, marker)
    query = _paths(people)[0]
    gallery = save_embeddings(tmp_path / "g.npz", np.eye(2, 32, dtype=np.float32), ["a.jpg", "b.jpg"])
    for argv in (["embed", "--checkpoint", str(evil), "--images", str(people / "query"), "--out", str(tmp_path / "x.npz")],
                 ["search", "--checkpoint", str(evil), "--query", query, "--gallery", str(gallery),
                  "--out", str(tmp_path / "s")]):
        capsys.readouterr()
        assert main(argv) == 2
        assert_one_clear_line(capsys.readouterr().err, argv[0], evil, marker, unsafe=kind != "pickle")
    evil_npz = tmp_path / "evil.npz"
    np.savez(evil_npz, features=np.array([Evil(marker)], dtype=object), paths=np.array(["a"]),
             pids=np.array([-1]), camids=np.array([-1]), meta=np.asarray("{}"))
    capsys.readouterr()
    assert main(["search", "--checkpoint", str(evil), "--query", query, "--gallery", str(evil_npz),
                 "--out", str(tmp_path / "s")]) == 2
    assert_one_clear_line(capsys.readouterr().err, "search", evil_npz, marker, unsafe=False)

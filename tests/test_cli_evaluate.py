"""`gclreid evaluate` end to end on a tiny Market-layout dataset."""
import json

import pytest
import torch

from gclreid.checkpoint import save_checkpoint
from gclreid.cli import main
from gclreid.config import load_config, to_dict
from gclreid.data import build_dataset
from gclreid.evaluation.pipeline import evaluate_model
from gclreid.models import build_identity_encoder

SMALL = ["model.arch=resnet18", "model.pretrained=false", "data.height=32", "data.width=16", "data.workers=0",
         "model.embed_dim=32"]


def test_evaluate_untrained_model_writes_json(stripe_people, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["evaluate", "--dataset", "market1501", "--root", str(stripe_people), "--out", str(out), *SMALL])
    assert code == 0
    report = json.loads((out / "evaluate.json").read_text())
    assert 0 <= report["mAP"] <= 1 and len(report["cmc"]) == 50
    assert report["num_valid_queries"] == 8 * 3 and report["num_skipped_queries"] == 0
    assert report["num_query_images"] == 24 and report["num_gallery_images"] == 48
    assert "R-1" in capsys.readouterr().out
    assert (out / "evaluate_config.yaml").is_file()


def test_evaluate_checkpoint_equals_direct_evaluation(stripe_people, tmp_path):
    cfg = load_config(None, SMALL + ["data.name=market1501", f"data.root={stripe_people}"])
    torch.manual_seed(3)
    model = build_identity_encoder(cfg.model)
    ckpt = save_checkpoint(tmp_path / "run" / "last.pt", models={"identity_encoder": model}, config=to_dict(cfg))
    # The model section comes from the checkpoint: no model.* overrides needed on the command line.
    assert main(["evaluate", "--checkpoint", str(ckpt), "--dataset", "market1501", "--root", str(stripe_people),
                 "data.height=32", "data.width=16", "data.workers=0", "eval.flip=true"]) == 0
    report = json.loads((tmp_path / "run" / "evaluate.json").read_text())
    cfg.eval.flip = True
    direct = evaluate_model(model, build_dataset("market1501", stripe_people), cfg.data, cfg.eval, torch.device("cpu"),
                            progress=False)
    assert report["mAP"] == pytest.approx(direct["mAP"], abs=1e-6)
    assert report["flip"] is True


def test_evaluate_rejects_a_checkpoint_that_does_not_fit(stripe_people, tmp_path, capsys):
    cfg = load_config(None, SMALL)
    model = build_identity_encoder(cfg.model)
    ckpt = save_checkpoint(tmp_path / "c.pt", models={"identity_encoder": model}, config=to_dict(cfg))
    code = main(["evaluate", "--checkpoint", str(ckpt), "--dataset", "market1501", "--root", str(stripe_people),
                 "model.embed_dim=64", "data.workers=0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "feat.weight" in err and "c.pt" in err
    assert main(["evaluate", "--checkpoint", str(ckpt), "--model-key", "generator", "--dataset", "market1501",
                 "--root", str(stripe_people)]) == 2
    assert "generator" in capsys.readouterr().err


def test_evaluate_wrong_root_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", "--dataset", "market1501", "--root", str(tmp_path / "nowhere"), *SMALL]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_evaluate_refuses_bad_eval_values_and_a_nan_checkpoint_before_any_work(stripe_people, tmp_path, capsys):
    base = ["evaluate", "--dataset", "market1501", "--root", str(stripe_people), "--out", str(tmp_path / "e"), *SMALL]
    assert main([*base, "eval.batch_size=0", "eval.max_rank=0"]) == 2
    assert "eval.batch_size=0 must be >= 1; eval.max_rank=0 must be >= 1" in capsys.readouterr().err
    cfg = load_config(None, SMALL)
    model = build_identity_encoder(cfg.model)
    with torch.no_grad():
        model.backbone.conv1.weight[0, 0, 0, 0] = float("nan")
    ckpt = save_checkpoint(tmp_path / "nan.pt", models={"identity_encoder": model}, config=to_dict(cfg))
    assert main(["evaluate", "--checkpoint", str(ckpt), "--dataset", "market1501", "--root", str(stripe_people),
                 "data.workers=0"]) == 2
    err = capsys.readouterr().err
    assert "nan.pt" in err and "not finite" in err and "backbone.conv1.weight" in err and "Traceback" not in err


def test_a_dataset_without_any_valid_query_is_a_clear_error_before_features(stripe_people, tmp_path):
    from gclreid.errors import EvaluationError
    from gclreid.evaluation.pipeline import valid_query_count
    ds = build_dataset("market1501", stripe_people)
    assert valid_query_count(ds) == len(ds.query)  # every stripe person is seen by another camera
    # one camera only: every same-identity gallery image is same-camera junk, nothing is a valid match
    cam = ds.query[0].camid
    ds.query = [q for q in ds.query if q.camid == cam]
    ds.gallery = [g for g in ds.gallery if g.camid == cam]
    assert valid_query_count(ds) == 0 and len(ds.query) == 8
    cfg = load_config(None, SMALL)
    model = build_identity_encoder(cfg.model)
    extracted = []
    model.register_forward_hook(lambda *a: extracted.append(1))
    with pytest.raises(EvaluationError, match="none of its 8 queries has a valid match"):
        evaluate_model(model, ds, cfg.data, cfg.eval, torch.device("cpu"), progress=False)
    assert not extracted
    # non-finite features (a NaN weight) are an EvaluationError, not a ranking ValueError
    with torch.no_grad():
        model.feat_bn.running_var.fill_(float("nan"))
    with pytest.raises(EvaluationError, match="features of 24 of 24 query and 48 of 48 gallery images are not finite"):
        evaluate_model(model, build_dataset("market1501", stripe_people), cfg.data, cfg.eval, torch.device("cpu"),
                       progress=False)


def test_valid_query_count_follows_the_ranking_rule():
    # random labels with unknown cameras and queries that are also gallery images: the label-only count
    # equals the number of queries evaluate_ranking finds valid
    from types import SimpleNamespace

    import numpy as np

    from gclreid.evaluation import evaluate_ranking
    from gclreid.evaluation.pipeline import valid_query_count
    rng = np.random.default_rng(0)
    for _ in range(20):
        gallery = [SimpleNamespace(path=f"g{j}", pid=int(rng.integers(0, 6)), camid=int(rng.integers(-1, 3)))
                   for j in range(30)]
        query = [SimpleNamespace(path=f"q{i}", pid=int(rng.integers(0, 6)), camid=int(rng.integers(-1, 3)))
                 for i in range(8)] + [gallery[j] for j in rng.choice(30, 4, replace=False)]
        ds = SimpleNamespace(query=query, gallery=gallery)
        same = [next((j for j, g in enumerate(gallery) if g.path == q.path), -1) for q in query]
        try:
            n = evaluate_ranking(rng.random((len(query), len(gallery))), [q.pid for q in query], [g.pid for g in gallery],
                                 [q.camid for q in query], [g.camid for g in gallery],
                                 query_gallery_index=same)["num_valid_queries"]
        except ValueError:
            n = 0
        assert valid_query_count(ds) == n


def test_training_on_a_dataset_without_valid_queries_skips_evaluation_and_says_so(stripe_people, tmp_path, caplog):
    from gclreid.engine import train
    ds = build_dataset("market1501", stripe_people)
    cam = ds.query[0].camid
    ds.query, ds.gallery = [q for q in ds.query if q.camid == cam], [g for g in ds.gallery if g.camid == cam]
    cfg = load_config(None, [*SMALL, "data.name=market1501", f"data.root={stripe_people}", "train.method=supervised",
                             "train.epochs=1", "train.iters_per_epoch=1", "train.batch_size=16",
                             f"run.out={tmp_path / 'run'}"])
    with caplog.at_level("WARNING", logger="gclreid"):
        record = train(cfg, dataset=ds, progress=False)
    assert "eval" not in record and (tmp_path / "run" / "last.pt").is_file()  # the epoch is kept
    assert "no query of market1501 has a valid match in its gallery" in caplog.text

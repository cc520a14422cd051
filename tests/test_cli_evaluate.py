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

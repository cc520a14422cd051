"""bf16 autocast of the training steps (`train.amp_cpu` on the CPU; the same code path as `train.amp` on
CUDA): every method trains under it with convolutions really in bf16, finite losses and float32 weights."""
import numpy as np
import pytest
import torch

from gclreid.checkpoint import read_checkpoint
from gclreid.config import load_config
from gclreid.engine import train

from conftest import TINY_SYNTH_GCL, ConvDtypes, make_stripe_people, make_tiny_synth

STAGE1 = ["data.name=market1501", "data.height=32", "data.width=16", "data.workers=0", "model.arch=resnet18",
          "model.pretrained=false", "model.embed_dim=32", "train.batch_size=16", "eval.batch_size=64",
          "cluster.k1=10", "cluster.k2=3", "cluster.eps=0.7", "train.log_every=100", "train.eval_every=0"]
TMP = ["train.num_instances=0", "cluster.outliers=single", "optim.name=lars", "optim.lr=0.3",
       "optim.lr_batch_scale=256", "optim.exclude_bias_bn=true"]


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    return make_stripe_people(tmp_path_factory.mktemp("amp") / "people", train_ids=8, test_ids=4)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_tiny_synth(tmp_path_factory.mktemp("amp_synth") / "synth")


def run(cfg):
    with ConvDtypes() as convs:
        record = train(cfg, progress=False)
    return record, convs.seen


def check_float32_weights(run_dir):
    payload = read_checkpoint(run_dir / "last.pt")
    for name, state in payload["models"].items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.is_floating_point():
                assert value.dtype == torch.float32, (name, key, value.dtype)
                assert torch.isfinite(value).all(), (name, key)


@pytest.mark.parametrize("method", ["cluster_contrast", "tmp", "supervised"])
def test_stage1_methods_train_in_bf16_on_the_cpu(people, tmp_path, method):
    extra = TMP if method == "tmp" else []
    cfg = load_config(None, [*STAGE1, *extra, f"data.root={people}", f"train.method={method}", "train.epochs=1",
                             "train.iters_per_epoch=2", "train.amp_cpu=true", f"run.out={tmp_path / method}"])
    record, seen = run(cfg)
    assert torch.bfloat16 in seen  # the training steps' convolutions ran in bf16
    assert all(np.isfinite(v) for v in record["losses"].values())
    assert 0 < record["eval"]["mAP"] <= 1  # evaluation (float32 feature extraction) still works
    check_float32_weights(tmp_path / method)


def test_without_amp_cpu_the_cpu_trains_in_float32(people, tmp_path):
    cfg = load_config(None, [*STAGE1, f"data.root={people}", "train.method=cluster_contrast", "train.epochs=1",
                             "train.iters_per_epoch=1", f"run.out={tmp_path / 'fp32'}"])
    assert cfg.train.amp_cpu is False  # the default
    _, seen = run(cfg)
    assert seen == {torch.float32}


def test_gcl_stages_2_and_3_train_in_bf16_on_the_cpu(synth, tmp_path):
    common = [*TINY_SYNTH_GCL, f"data.root={synth}", "train.epochs=1", "train.iters_per_epoch=2", "train.amp_cpu=true"]
    record, seen = run(load_config(None, [*common, "gcl.stage=2", f"run.out={tmp_path / 's2'}"]))
    assert torch.bfloat16 in seen and all(np.isfinite(v) for v in record["losses"].values())
    assert np.isfinite(record["generation"]["ssim"]) and np.isfinite(record["view_cos"]["novel"])
    check_float32_weights(tmp_path / "s2")
    record, seen = run(load_config(None, [*common, "gcl.stage=3", f"gcl.init={tmp_path / 's2' / 'last.pt'}",
                                          f"run.out={tmp_path / 's3'}"]))
    assert torch.bfloat16 in seen and all(np.isfinite(v) for v in record["losses"].values())
    assert {"lvi", "lvi2", "lvi3", "l_img"} <= set(record["losses"])
    check_float32_weights(tmp_path / "s3")
    memory = read_checkpoint(tmp_path / "s3" / "last.pt")["extra"]["memory"]["features"]
    assert memory.dtype == torch.float32 and torch.isfinite(memory).all()

"""Training on two processes (torchrun, gloo on CPU) against one process: the same global batches,
pseudo labels, memory banks, losses and weights; resume under torchrun; a failing rank ends the job.

Why the equivalence runs use ``train.freeze_bn=true``: with BatchNorm on batch statistics each process
normalises its own share of the batch, which is another computation than one process normalising the
whole batch (``train.sync_bn`` or ``train.bn_batch_size`` make them the same, checked for one step in
``test_batchnorm_over_two_processes_is_one_process_batchnorm``). Over several steps the tiny networks
here are also chaotic under batch statistics (4-8 images per BatchNorm group at 32×16 pixels): float
rounding differences of 1e-7 grow ~100× per step, so only frozen BatchNorm gives runs that can be
compared at float tolerance for epochs. The encoders train with SGD for the same reason: Adam turns a
rounding difference in a gradient that is zero up to rounding into a ±lr step (GCL's generator and
discriminator keep Adam; they are compared by what they compute).
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import gclreid
from gclreid.checkpoint import load_checkpoint, read_checkpoint
from gclreid.config import ConfigError, load_config
from gclreid.data import RandomIdentitySampler, ShardedSampler, build_dataset, build_loader
from gclreid.engine import build_method, distributed, train

from conftest import TINY_GENERATOR, add_body_structures, make_stripe_people

SRC = Path(gclreid.__file__).resolve().parents[1]


def torchrun(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node 2 -m gclreid train ARGS` (gloo on CPU); `.seconds` is its wall time."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "gclreid", "train", *args], capture_output=True, text=True, timeout=timeout, env=env)
    proc.seconds = time.monotonic() - started
    return proc


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def records(out: Path) -> list:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_records(one: list, two: list, evaluation: bool = True) -> None:
    assert [r["epoch"] for r in one] == [r["epoch"] for r in two]
    for a, b in zip(one, two):
        assert b["losses"] == pytest.approx(a["losses"], rel=1e-5, abs=1e-6)
        assert b["clusters"] == pytest.approx(a["clusters"])
        if evaluation and "eval" in a:
            assert b["eval"] == pytest.approx(a["eval"], abs=1e-6)


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


# -- cluster contrast ---------------------------------------------------------------------------------------

def cc_args(root, *extra):
    return ["data.name=market1501", f"data.root={root}", "data.height=32", "data.width=16", "data.workers=0",
            "model.arch=resnet18", "model.pretrained=false", "model.embed_dim=64", "train.method=cluster_contrast",
            "train.batch_size=16", "train.num_instances=4", "eval.batch_size=64", "cluster.k1=10", "cluster.k2=3",
            "cluster.eps=0.6", "train.log_every=1", "run.deterministic=true", "optim.name=sgd", "optim.lr=0.01",
            # no random augmentation: each process draws its own, so only the data-independent draws can match
            "data.transforms.flip_p=0", "data.transforms.pad=0", "data.transforms.erasing_p=0", *extra]


CC_EQUIVALENCE = ["train.freeze_bn=true", "train.iters_per_epoch=3"]


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    return make_stripe_people(tmp_path_factory.mktemp("ddp") / "people")


@pytest.fixture(scope="module")
def cc_two(people, tmp_path_factory):
    """A 2-epoch cluster-contrast run on two processes, global batch 16."""
    out = tmp_path_factory.mktemp("cc") / "two"
    proc = ok(torchrun(*cc_args(people, *CC_EQUIVALENCE, "train.epochs=2", f"run.out={out}")))
    return out, proc


def test_two_processes_train_cluster_contrast_as_one_process(people, cc_two, tmp_path):
    two, proc = cc_two
    one = tmp_path / "one"
    train(load_config(None, cc_args(people, *CC_EQUIVALENCE, "train.epochs=2", f"run.out={one}")), progress=False)
    # the same pseudo labels (epoch 2 clusters features of the trained encoder), losses, evaluation, weights
    assert_same_records(records(one), records(two))
    a, b = read_checkpoint(one / "last.pt"), read_checkpoint(two / "last.pt")
    assert np.array_equal(a["extra"]["labels"], b["extra"]["labels"])
    assert max_difference(a["models"]["identity_encoder"], b["models"]["identity_encoder"]) < 1e-5
    # the run records its split: the start line, config.yaml and the checkpoint's config
    assert "2 processes, batch 8 per process of train.batch_size=16" in proc.stderr
    assert b["config"]["run"]["world_size"] == 2 and b["config"]["run"]["batch_per_rank"] == 8
    assert "world_size: 2" in (two / "config.yaml").read_text()
    assert a["config"]["run"]["world_size"] == 1 and a["config"]["run"]["batch_per_rank"] == 16
    assert proc.stdout.count("final: mAP") == 1  # rank 0 reports; the run folder is written once
    assert sorted(p.name for p in two.iterdir() if p.name.startswith(".") and p.name != ".lock") == []


def test_resume_under_torchrun_continues_as_the_uninterrupted_run(people, cc_two, tmp_path):
    full, _ = cc_two
    part = tmp_path / "part"
    ok(torchrun(*cc_args(people, *CC_EQUIVALENCE, "train.epochs=1", f"run.out={part}")))
    proc = ok(torchrun(*cc_args(people, *CC_EQUIVALENCE, "train.epochs=2", f"run.out={part}"), "--resume"))
    assert "resumed from" in proc.stderr
    assert [r["epoch"] for r in records(part)] == [1, 2]
    assert_same_records(records(full), records(part))
    a, b = read_checkpoint(full / "last.pt"), read_checkpoint(part / "last.pt")
    assert np.array_equal(a["extra"]["labels"], b["extra"]["labels"])
    assert max_difference(a["models"]["identity_encoder"], b["models"]["identity_encoder"]) < 1e-6


@pytest.mark.parametrize("bn", ["sync_bn", "per_process"])
def test_batchnorm_over_two_processes_is_one_process_batchnorm(people, tmp_path, bn):
    # One step on batch statistics (more steps are chaotic at this size, see the module docstring).
    # sync_bn: statistics of the whole global batch = one process's BatchNorm; per process: each rank's
    # half = one process with train.bn_batch_size=8 (which is what that setting is for).
    step = ["train.epochs=1", "train.iters_per_epoch=1"]
    one, two = tmp_path / "one", tmp_path / "two"
    one_extra, two_extra = ([], ["train.sync_bn=true"]) if bn == "sync_bn" else (["train.bn_batch_size=8"], [])
    train(load_config(None, cc_args(people, *step, *one_extra, f"run.out={one}")), progress=False)
    ok(torchrun(*cc_args(people, *step, *two_extra, f"run.out={two}")))
    # per process, the running statistics (and so the evaluation) differ: the ranks' own, averaged, against
    # one process's update by each chunk in turn
    assert_same_records(records(one), records(two), evaluation=bn == "sync_bn")
    a, b = (read_checkpoint(p / "last.pt")["models"]["identity_encoder"] for p in (one, two))
    weights = [k for k in a if "running_" not in k and "num_batches" not in k]
    assert max_difference({k: a[k] for k in weights}, {k: b[k] for k in weights}) < 1e-5
    if bn == "sync_bn":  # the running statistics too (without it they are the mean of the ranks' own)
        for k in a:
            assert torch.allclose(a[k].double(), b[k].double(), rtol=1e-4, atol=1e-5), k


# -- GCL stage 3 ---------------------------------------------------------------------------------------------

H, W = 64, 32


def gcl_args(root, *extra):
    return ["data.name=market1501", f"data.root={root}", f"data.height={H}", f"data.width={W}", "data.workers=0",
            "model.arch=resnet18", "model.pretrained=false", "model.embed_dim=32", *TINY_GENERATOR,
            "generator.mlp_dim=32", "train.method=gcl", "gcl.stage=3", "train.batch_size=4", "train.log_every=1",
            "train.eval_every=0", "eval.batch_size=32", "cluster.k1=6", "cluster.k2=2", "cluster.eps=0.5",
            "gcl.num_negatives=16", "run.seed=0", "run.deterministic=true", "train.freeze_bn=true",
            "optim.name=sgd", "optim.lr=1e-3", "data.transforms.flip_p=0",
            "gcl.angles=[90]",  # one angle: the per-image draw is the same in every process
            *extra]


@pytest.fixture(scope="module")
def gcl_people(tmp_path_factory):
    root = make_stripe_people(tmp_path_factory.mktemp("gcl") / "people", train_ids=6, test_ids=3, per_cam=2,
                              cams=2, height=H, width=W)
    return add_body_structures(root, H, W)


def test_two_processes_train_gcl_stage3_as_one_process(gcl_people, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = gcl_args(gcl_people, "train.epochs=1", "train.iters_per_epoch=3")
    train(load_config(None, [*args, f"run.out={one}"]), progress=False)
    ok(torchrun(*args, f"run.out={two}"))
    assert_same_records(records(one), records(two))  # D, G, L_vi losses; clusters; evaluation
    a, b = read_checkpoint(one / "last.pt"), read_checkpoint(two / "last.pt")
    assert np.array_equal(a["extra"]["labels"], b["extra"]["labels"])
    # the instance memory after three all-gathered updates
    assert torch.allclose(a["extra"]["memory"]["features"], b["extra"]["memory"]["features"], atol=1e-5)
    assert max_difference(a["models"]["identity_encoder"], b["models"]["identity_encoder"]) < 1e-5  # SGD
    assert max_difference(a["models"]["discriminator"], b["models"]["discriminator"]) < 1e-6
    # The generator (Adam, lr 1e-4) may differ by a few lr where a gradient is zero up to rounding (biases
    # in front of a normalisation): what it computes is the same.
    assert max_difference(a["models"]["generator"], b["models"]["generator"]) < 1e-3
    cfg = load_config(None, [*args, f"run.out={tmp_path / 'probe'}"])
    dataset = build_dataset("market1501", gcl_people)
    methods = []
    for out in (one, two):
        torch.manual_seed(0)
        method = build_method(cfg, dataset, torch.device("cpu"))
        load_checkpoint(out / "last.pt", models=method.models)
        methods.append(method)
    batch = next(iter(build_loader(methods[0]._dataset(methods[0].records, augment=False), 8)))
    with torch.no_grad(), methods[0].eval_models(), methods[1].eval_models():
        r1, r2 = (m.generate(batch["image"], batch["structure"], batch["structure_new"]) for m in methods)
    for key in ("f", "x_ori", "x_new", "x_cycle"):
        assert torch.allclose(r1[key], r2[key], atol=1e-4), key


# -- failures ----------------------------------------------------------------------------------------------

def test_a_rank_that_fails_ends_the_job_with_its_error(people, tmp_path):
    bad = make_stripe_people(tmp_path / "bad")
    last = sorted((bad / "bounding_box_train").iterdir())[-1]  # in rank 1's half of the feature extraction
    last.write_bytes(last.read_bytes()[:100])
    proc = torchrun(*cc_args(bad, "train.epochs=1", f"run.out={tmp_path / 'run'}"), timeout=90)
    assert proc.returncode != 0
    assert f"image {last} does not decode" in proc.stderr  # rank 1's own error, printed once
    assert proc.seconds < 60  # rank 0, waiting for rank 1's features, did not hang


def test_an_uneven_global_batch_is_a_clear_error():
    cfg = load_config(None, ["train.batch_size=15", "train.num_instances=0"])
    with pytest.raises(ConfigError, match=r"train.batch_size=15 is the global batch.*multiple of 2"):
        distributed.check_config(cfg, 2)
    distributed.check_config(cfg, 1)
    distributed.check_config(load_config(None, ["train.batch_size=16"]), 2)
    with pytest.raises(ConfigError, match="LOCAL_RANK"):
        distributed.check_config(load_config(None, ["run.device=cuda:1"]), 2)
    with pytest.raises(ConfigError, match="sync_bn"):
        from gclreid.config import validate_config
        validate_config(load_config(None, ["train.sync_bn=true", "train.bn_batch_size=8"]))


# -- the pieces, in one process ------------------------------------------------------------------------------

def test_sharded_sampler_splits_every_global_batch_without_overlap():
    labels = np.repeat(np.arange(10), 5)
    one = list(RandomIdentitySampler(labels, 4, 16, seed=3))
    shares = [list(ShardedSampler(RandomIdentitySampler(labels, 4, 16, seed=3), 8, r, 2)) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == len(ShardedSampler(RandomIdentitySampler(labels, 4, 16, seed=3), 8,
                                                                   0, 2))
    for b in range(len(one) // 16):  # global batch b = rank 0's half, then rank 1's half
        assert one[16 * b:16 * b + 16] == shares[0][8 * b:8 * b + 8] + shares[1][8 * b:8 * b + 8]
    # a plain shuffle: the same seed on every rank gives disjoint shares covering whole batches
    data = list(range(37))
    parts = [[int(i) for batch in build_loader(data, 6, shuffle=True, seed=5, drop_last=True, shard=(r, 3))
              for i in batch] for r in range(3)]
    assert not set(parts[0]) & set(parts[1]) and not set(parts[1]) & set(parts[2])
    assert len(parts[0]) == len(parts[1]) == len(parts[2]) == 36 // 18 * 6


def test_the_helpers_do_nothing_in_one_process():
    assert not distributed.is_distributed() and distributed.world_size() == 1 and distributed.is_main()
    x = torch.randn(5, 3, requires_grad=True)
    assert distributed.all_gather(x) is x and distributed.gather_with_grad(x) is x
    assert distributed.all_gather_shards(x) is x
    assert distributed.shard_range(10) == (0, 10) and distributed.rank_batch(16) == 16
    assert distributed.shared_seed() is None and distributed.shard_spec() is None
    assert distributed.on_main(lambda: 7) == 7 and distributed.from_main(lambda: 8) == 8
    assert distributed.mean_values({"a": 1.5}) == {"a": 1.5}
    x.grad = torch.ones(5, 3)
    distributed.average_gradients([x])
    assert torch.equal(x.grad, torch.ones(5, 3))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    assert distributed.convert_sync_bn({"m": model}) == 0 and isinstance(model[1], torch.nn.BatchNorm2d)

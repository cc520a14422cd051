"""Run folders that cannot be lost, resume rules, config checks before any work, divergence, camera-free
data and one-line errors (issue 17). Tiny runs on the stripe people, as in test_engine.py."""
import errno
import json
import logging

import numpy as np
import pytest
import torch

from gclreid.checkpoint import read_checkpoint, save_checkpoint
from gclreid.cli import main
from gclreid.config import ConfigError, load_config
from gclreid.data import build_dataset
from gclreid.engine import train
from gclreid.engine.runfolder import RunLock
from gclreid.errors import RunFolderError, TrainingDivergedError
from gclreid.evaluation import evaluate_ranking
from gclreid.evaluation.pipeline import evaluate_model
from gclreid.models import build_identity_encoder

SUP = ["data.name=market1501", "data.height=32", "data.width=16", "data.workers=0", "model.arch=resnet18",
       "model.pretrained=false", "model.embed_dim=32", "train.method=supervised", "train.batch_size=16",
       "train.num_instances=4", "train.iters_per_epoch=2", "train.eval_every=0", "eval.batch_size=64",
       "train.log_every=100", "optim.lr=3e-3"]


def args(root, out, *extra):
    return ["train", f"data.root={root}", f"run.out={out}", *SUP, *extra]


def cfg_of(root, out, *extra):
    return load_config(None, [f"data.root={root}", f"run.out={out}", *SUP, *extra])


def snapshot(out):
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}


def err_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line
    return err


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    from conftest import make_stripe_people
    return make_stripe_people(tmp_path_factory.mktemp("rf") / "people")


@pytest.fixture
def finished(people, tmp_path):
    """A finished 1-epoch run in tmp_path/run."""
    out = tmp_path / "run"
    train(cfg_of(people, out, "train.epochs=1"), progress=False)
    return out


# -- run folders ---------------------------------------------------------------------------------------

def test_a_new_run_into_a_folder_holding_a_run_is_refused_before_any_work(finished, people, capsys):
    before = snapshot(finished)
    # data.root does not exist: the refusal must come before the dataset is read
    assert main(args(people / "nowhere", finished, "train.epochs=1")) == 2
    line = err_line(capsys)
    assert line.startswith("gclreid train: error: run folder") and "already holds a run" in line
    assert "--resume" in line and "--overwrite" in line
    assert snapshot(finished) == before


def test_overwrite_keeps_the_old_record_until_the_new_runs_first_checkpoint(finished, people, tmp_path, capsys):
    before = snapshot(finished)
    events_before = sorted((finished / "tensorboard").iterdir())
    # a replacing run that fails before its first checkpoint leaves the old run exactly as it was
    assert main(args(people / "nowhere", finished, "train.epochs=1", "--overwrite")) == 2
    assert "does not exist" in err_line(capsys)
    assert snapshot(finished) == before
    # one that succeeds replaces it: new metrics only, old TensorBoard events gone
    assert main(args(people, finished, "train.epochs=2", "--overwrite")) == 0
    lines = [json.loads(x) for x in (finished / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert read_checkpoint(finished / "last.pt")["epoch"] == 2
    assert "epochs: 2" in (finished / "config.yaml").read_text()
    assert json.loads((finished / "results.json").read_text())["epoch"] == 2
    assert not set(events_before) & set((finished / "tensorboard").iterdir())


def test_resume_with_changed_settings_is_refused_listing_them_and_keeps_config_yaml(finished, people, capsys):
    before = snapshot(finished)
    assert main(args(people, finished, "train.epochs=2", "optim.lr=1e-3", "train.triplet_margin=0.5",
                     "--resume")) == 2
    line = err_line(capsys)
    assert "optim.lr 0.003 -> 0.001" in line and "train.triplet_margin 0.3 -> 0.5" in line
    assert "--allow-changes" in line and "train.epochs" not in line  # epochs may change freely
    assert snapshot(finished) == before  # config.yaml, metrics.jsonl, last.pt untouched


def test_allowed_changes_on_resume_are_trained_with_and_recorded(finished, people, caplog):
    with caplog.at_level(logging.INFO, logger="gclreid"):
        train(cfg_of(people, finished, "train.epochs=2", "optim.lr=1e-3", "optim.weight_decay=0.0"),
              resume="last", allow_changes=True, progress=False)
    groups = read_checkpoint(finished / "last.pt")["optimizers"]["identity_encoder"]["param_groups"]
    # the lr really changed in the optimiser (its base lr, from which the schedule sets lr)
    assert all(g["base_lr"] == pytest.approx(1e-3) and g["weight_decay"] == 0.0 for g in groups)
    assert "optim.lr 0.003 -> 0.001" in caplog.text
    history = [json.loads(x) for x in (finished / "config_history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["epoch"] == 1
    assert history[0]["changes"]["optim.lr"] == {"from": 3e-3, "to": 1e-3}
    assert history[0]["changes"]["train.epochs"] == {"from": 1, "to": 2}
    assert "lr: 0.001" in (finished / "config.yaml").read_text()


def test_resume_of_another_runs_checkpoint_into_a_folder_holding_a_run_is_refused(finished, people, tmp_path,
                                                                                     capsys):
    other = tmp_path / "other"
    train(cfg_of(people, other, "train.epochs=1"), progress=False)
    before = snapshot(finished)
    assert main(args(people, finished, "train.epochs=2", "--resume", str(other / "last.pt"))) == 2
    assert "would continue another run's checkpoint into it" in err_line(capsys)
    assert snapshot(finished) == before
    # a copy of the folder's own checkpoint is the same run: it continues (metrics.jsonl kept)
    backup = tmp_path / "backup.pt"
    backup.write_bytes((finished / "last.pt").read_bytes())
    assert main(args(people, finished, "train.epochs=2", "--resume", str(backup))) == 0
    assert [json.loads(x)["epoch"] for x in (finished / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_resume_followed_by_an_override_trains_longer(finished, people):
    # `--resume train.epochs=2` (as in the help): the override is not taken for the checkpoint path
    assert main(["train", f"data.root={people}", f"run.out={finished}", *SUP, "--resume", "train.epochs=2"]) == 0
    assert [json.loads(x)["epoch"] for x in (finished / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_resume_without_a_checkpoint_is_an_error(people, tmp_path, capsys, caplog):
    assert main(args(people, tmp_path / "empty", "train.epochs=1", "--resume")) == 2
    assert "no checkpoint to resume" in err_line(capsys)
    assert not (tmp_path / "empty").exists()
    assert main(args(people, tmp_path / "x", "train.epochs=1", "--allow-changes")) == 2
    assert "--resume" in err_line(capsys)
    # the Python API's resume="auto" starts a new run, and says so
    with caplog.at_level(logging.INFO, logger="gclreid"):
        train(cfg_of(people, tmp_path / "auto", "train.epochs=1"), resume="auto", progress=False)
    assert "NEW run" in caplog.text


def test_stale_temporary_checkpoint_files_are_removed(finished, people, tmp_path):
    stale = finished / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"x" * 1000)
    train(cfg_of(people, finished, "train.epochs=2"), resume="last", progress=False)
    assert not stale.exists()
    # and by save_checkpoint itself after a successful write
    other = tmp_path / "c"
    other.mkdir()
    (other / ".m.pt.abcd.tmp").write_bytes(b"x")
    save_checkpoint(other / "m.pt", models={"m": torch.nn.Linear(2, 2)})
    assert sorted(p.name for p in other.iterdir()) == ["m.pt"]


def test_a_folder_in_use_by_another_run_is_refused(people, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    lock = RunLock(out).acquire()
    try:
        with pytest.raises(RunFolderError, match="in use by another training run"):
            train(cfg_of(people, out, "train.epochs=1"), progress=False)
    finally:
        lock.release()


def test_disk_full_while_saving_is_one_line_and_keeps_the_previous_checkpoint(finished, people, monkeypatch, capsys):
    import gclreid.checkpoint as checkpoint

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    before = (finished / "last.pt").read_bytes()
    assert main(args(people, finished, "train.epochs=2", "--resume")) == 2
    line = err_line(capsys)
    assert "no space left on device" in line and "last.pt" in line and "previous checkpoint is unchanged" in line
    assert (finished / "last.pt").read_bytes() == before
    assert not list(finished.glob(".*.tmp"))


# -- config values checked up front ----------------------------------------------------------------------

@pytest.mark.parametrize("override,named", [
    ("optim.lr=-1", "optim.lr=-1.0 must be > 0"), ("optim.lr=1e38", "optim.lr=1e+38 is far beyond"),
    ("optim.lr=nan", "must be finite"), ("optim.lr=1e6", "optim.lr=1000000.0 is far beyond"),
    ("data.height=0", "data.height=0 must be >= 1"), ("train.epochs=0", "train.epochs=0 must be >= 1"),
    ("train.epochs=-1", "train.epochs=-1"), ("train.batch_size=-4", "train.batch_size=-4 must be >= 1"),
    ("train.batch_size=10", "multiple of train.num_instances=4"),
])
def test_bad_config_values_are_refused_before_any_work(override, named, people, tmp_path, capsys):
    # data.root does not exist, so any work before the check would fail differently
    assert main(args(people / "nowhere", tmp_path / "r", override)) == 2
    line = err_line(capsys)
    assert line.startswith("gclreid train: error: ") and named in line
    assert not (tmp_path / "r").exists()


def test_every_shipped_config_passes_the_checks():
    from gclreid.config import PACKAGE_CONFIGS, validate_config
    for path in sorted(PACKAGE_CONFIGS.glob("*.yaml")):
        validate_config(load_config(path))


# -- divergence -----------------------------------------------------------------------------------------

def test_nan_loss_stops_cleanly_keeping_the_last_good_checkpoint(finished, people, monkeypatch, capsys):
    from gclreid.engine.supervised import Supervised
    real = Supervised.step

    def nan_after_one(self, batch):
        losses = real(self, batch)
        self.calls = getattr(self, "calls", 0) + 1
        return {**losses, "ce": torch.tensor(float("nan"))} if self.calls > 1 else losses

    monkeypatch.setattr(Supervised, "step", nan_after_one)
    ckpt = (finished / "last.pt").read_bytes()
    assert main(args(people, finished, "train.epochs=2", "--resume")) == 2
    line = err_line(capsys)
    assert "training diverged in epoch 2/2" in line and "loss ce became nan" in line
    assert "last good checkpoint" in line and "--resume --allow-changes optim.lr=" in line
    assert (finished / "last.pt").read_bytes() == ckpt
    assert [json.loads(x)["epoch"] for x in (finished / "metrics.jsonl").read_text().splitlines()] == [1]


def test_exploding_weights_count_as_divergence(people, tmp_path):
    with pytest.raises(TrainingDivergedError, match="weights exploded.*max_weight_norm=1.*no checkpoint was written"):
        train(cfg_of(people, tmp_path / "big", "train.epochs=1", "train.max_weight_norm=1"), progress=False)
    assert not (tmp_path / "big" / "last.pt").exists()


def test_non_finite_batchnorm_statistics_count_as_divergence(people, tmp_path, monkeypatch):
    from gclreid.engine.supervised import Supervised
    real = Supervised.step

    def poison(self, batch):  # what a step with an overflowing activation leaves behind
        losses = real(self, batch)
        self.encoder.feat_bn.running_var.fill_(float("inf"))
        return losses

    monkeypatch.setattr(Supervised, "step", poison)
    with pytest.raises(TrainingDivergedError, match=r"buffer identity_encoder\.\S+ \(a BatchNorm running statistic\) is not finite"):
        train(cfg_of(people, tmp_path / "bn", "train.epochs=1"), progress=False)
    assert not (tmp_path / "bn" / "last.pt").exists()


# -- camera-free data -----------------------------------------------------------------------------------

CAMERA_FREE = {"pattern": r"^(?P<pid>\d+)_", "train_dir": "bounding_box_train", "gallery_dir": "bounding_box_test"}


def test_camera_free_folder_dataset_evaluates_and_trains_through_all_epochs(people, tmp_path):
    ds = build_dataset("folder", people, **CAMERA_FREE)
    assert {r.camid for r in ds.train + ds.query + ds.gallery} == {-1}
    cfg = load_config(None, [f"data.root={people}", f"run.out={tmp_path / 'cc'}", *SUP[1:], "data.name=folder",
                             "train.method=cluster_contrast", "cluster.eps=0.6", "cluster.k1=10", "cluster.k2=3",
                             "train.epochs=2", "train.eval_every=1"])
    cfg.data.options = CAMERA_FREE
    result = evaluate_model(build_identity_encoder(cfg.model), ds, cfg.data, cfg.eval, torch.device("cpu"),
                            progress=False)
    assert result["num_valid_queries"] == len(ds.query)  # no query is lost to same-camera exclusion
    record = train(cfg, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "cc" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and all("eval" in r for r in lines)
    assert 0 < record["eval"]["mAP"] <= 1


@pytest.mark.parametrize("method", ["cluster_contrast", "gcl"])
def test_camera_aware_clustering_without_cameras_is_refused_before_any_work(people, tmp_path, method):
    cfg = load_config(None, [f"data.root={people}", f"run.out={tmp_path / 'cc'}", *SUP[1:], "data.name=folder",
                             f"train.method={method}", "gcl.stage=3", "cluster.camera_normalize=true"])
    cfg.data.options = CAMERA_FREE
    started = []
    from gclreid.engine import common
    original = common.train_features
    common.train_features = lambda *a, **k: started.append(1) or original(*a, **k)
    try:
        n = len(build_dataset("folder", people, **CAMERA_FREE).train)
        with pytest.raises(ConfigError, match=rf"cluster.camera_normalize needs camera ids, but {n} of {n} .*pattern"):
            train(cfg, progress=False)
    finally:
        common.train_features = original
    assert not started  # refused when the method is built, before the first feature extraction


def test_without_cameras_only_the_query_image_itself_is_excluded(people):
    # query folder = gallery folder: every query is in the gallery; its own image must not count
    ds = build_dataset("folder", people, pattern=r"^(?P<pid>\d+)_", gallery_dir="query", train_dir="bounding_box_train")
    cfg = load_config(None, SUP)
    torch.manual_seed(0)
    result, details = evaluate_model(build_identity_encoder(cfg.model), ds, cfg.data, cfg.eval, torch.device("cpu"),
                                     progress=False, return_details=True)
    dist = np.asarray(details["distmat"])
    pids = np.array([r.pid for r in ds.query])
    aps = []
    for i in range(len(pids)):  # reference: drop the query's own column, no other exclusion
        keep = np.arange(len(pids)) != i
        order = np.argsort(dist[i, keep], kind="stable")
        hits = pids[keep][order] == pids[i]
        ranks = np.flatnonzero(hits) + 1
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    assert result["num_valid_queries"] == len(pids)
    assert result["mAP"] == pytest.approx(np.mean(aps), abs=1e-9)


def test_negative_camids_are_unknown_cameras_in_the_ranking():
    dist = np.array([[0.0, 0.1, 0.2, 0.3]])
    q_pids, g_pids = [1], [1, 2, 1, 3]
    # all unknown: same as no camera information; the query's own image (column 0) excluded
    unknown = evaluate_ranking(dist, q_pids, g_pids, [-1], [-1, -1, -1, -1], query_gallery_index=[0])
    assert unknown["mAP"] == pytest.approx(0.5)  # the one positive (column 2) at rank 2 after removing column 0
    none = evaluate_ranking(dist, q_pids, g_pids, None, None, query_gallery_index=[0])
    assert none["mAP"] == unknown["mAP"]
    # known cameras keep the standard protocol
    known = evaluate_ranking(dist, q_pids, g_pids, [0], [0, 1, 1, 0])
    assert known["mAP"] == pytest.approx(0.5)


# -- one-line errors ------------------------------------------------------------------------------------

def test_an_unreadable_image_in_a_dataloader_worker_is_one_line(people, tmp_path):
    from torch.utils.data import DataLoader

    from gclreid.data import ImageDataset
    from gclreid.errors import DatasetError
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    records = [build_dataset("market1501", people).train[0].__class__(str(bad), 1, 0, "broken.jpg", "train")]
    with pytest.raises(DatasetError) as caught:
        list(DataLoader(ImageDataset(records), batch_size=1, num_workers=1))
    message = str(caught.value)
    assert "\n" not in message and str(bad) in message and "does not decode" in message
    assert "worker process" in message and "Traceback" not in message


def test_permission_denied_is_reported_as_such(tmp_path, monkeypatch):
    import gclreid.data.images as images
    from gclreid.errors import DatasetError, ImageDecodeError
    path = tmp_path / "secret.jpg"
    path.write_bytes(b"x")

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(images, "open", denied, raising=False)
    with pytest.raises(DatasetError, match="cannot be read: permission denied") as caught:
        images.load_image(path)
    assert not isinstance(caught.value, ImageDecodeError)


def test_dataset_count_warnings_in_train_are_one_line(tmp_path, capsys, caplog):
    from conftest import make_stripe_people
    # under the release's folder name the counts are compared with the published ones (all differ)
    root = make_stripe_people(tmp_path / "Market-1501-v15.09.15", train_ids=8, test_ids=4, per_cam=2)
    with caplog.at_level(logging.INFO, logger="gclreid"):
        assert main(args(root, tmp_path / "w", "train.epochs=1")) == 0
    counts = [r.getMessage() for r in caplog.records if "published release" in r.getMessage()]
    assert len(counts) == 1 and "\n" not in counts[0] and counts[0].count("; ") >= 2
    assert "DatasetCountWarning" not in capsys.readouterr().err


def test_gcl_init_must_be_a_gcl_run_and_unused_inits_are_warned_about(finished, people):
    from conftest import TINY_GENERATOR
    from gclreid.config import validate_config
    from gclreid.engine import build_method
    from gclreid.errors import CheckpointError
    cfg = load_config(None, [*SUP[:7], *TINY_GENERATOR, f"data.root={people}", "train.method=gcl", "gcl.stage=3",
                             f"gcl.init={finished / 'last.pt'}"])
    # a supervised (stage-1-like) checkpoint has no generator / discriminator: refused, not half-loaded
    with pytest.raises(CheckpointError, match="must be a GCL run.*generator, discriminator would stay random"):
        build_method(cfg, build_dataset("market1501", people), torch.device("cpu"))
    warnings = validate_config(cfg_of(people, finished, f"gcl.init={finished / 'last.pt'}", "dgnet.teacher=t.pt"))
    assert any("gcl.init" in w and "ignored" in w for w in warnings)
    assert any("dgnet.teacher" in w and "ignored" in w for w in warnings)


# -- damaged metrics.jsonl, a folder as --checkpoint -----------------------------------------------------

def test_a_half_written_last_metrics_line_is_dropped_on_resume(finished, people, caplog):
    metrics = finished / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"epoch": 2, "losses": {"ce": 1.2')  # disk full mid-append
    with caplog.at_level(logging.WARNING, logger="gclreid"):
        assert main(args(people, finished, "train.epochs=2", "--resume")) == 0
    assert any(str(metrics) in r.getMessage() and "damaged last line 2" in r.getMessage() for r in caplog.records)
    assert [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()] == [1, 2]


def test_trim_metrics_rewrites_the_file_without_a_damaged_last_line(tmp_path):
    from gclreid.engine.logger import read_metrics, trim_metrics
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert read_metrics(metrics) == [{"epoch": 1}, {"epoch": 2}]
    trim_metrics(metrics, 2)
    assert metrics.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'


def test_a_damaged_metrics_line_before_the_last_is_one_line_error(finished, people, capsys):
    metrics = finished / "metrics.jsonl"
    metrics.write_text("{not json\n" + metrics.read_text())
    before = snapshot(finished)
    assert main(args(people, finished, "train.epochs=2", "--resume")) == 2
    err = err_line(capsys)
    assert str(metrics) in err and "line 1 " in err
    assert snapshot(finished) == before


@pytest.mark.parametrize("command", ["evaluate", "embed"])
def test_a_run_folder_given_as_checkpoint_names_its_last_pt(command, finished, people, tmp_path, capsys):
    extra = (["--dataset", "market1501", "--root", str(people)] if command == "evaluate"
             else ["--images", str(people), "--out", str(tmp_path / "f.npz")])
    capsys.readouterr()
    assert main([command, "--checkpoint", str(finished), *extra]) == 2
    err = err_line(capsys)
    assert f"{finished} is a folder" in err and f"give its last.pt ({finished / 'last.pt'})" in err


def test_resume_given_a_run_folder_names_its_last_pt(finished, people, capsys):
    assert main(args(people, finished, "train.epochs=2", "--resume", str(finished))) == 2
    assert f"is a folder, not a file: give its last.pt ({finished / 'last.pt'})" in err_line(capsys)


def test_resume_on_other_training_images_is_refused_naming_both_counts(people, tmp_path, capsys):
    from conftest import make_stripe_people
    cc = ["train.method=cluster_contrast", "cluster.eps=0.6", "cluster.k1=10", "cluster.k2=3"]
    out = tmp_path / "cc"
    train(cfg_of(people, out, "train.epochs=1", *cc), progress=False)
    other = make_stripe_people(tmp_path / "other", train_ids=5)
    # data.root may change on resume (moved data) without --allow-changes, the training images may not
    assert main(args(other, out, "train.epochs=2", *cc, "--resume")) == 2
    n = len(build_dataset("market1501", people).train)
    m = len(build_dataset("market1501", other).train)
    assert f"the checkpoint holds state for {n} training images, but the dataset at {other} has {m}" in err_line(capsys)

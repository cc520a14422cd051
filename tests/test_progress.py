"""Progress that works in logs (issue 17): line-based progress with rate and ETA when stderr is not a
terminal, no carriage returns, the training rate measured on iterations only, and a logger the Python
API can turn on."""
import io
import logging
import re
import time

import pytest

import gclreid
import gclreid.progress as progress_mod
from gclreid.cli import _logging_on_stderr, main
from gclreid.config import load_config
from gclreid.progress import Progress, disable_logging, enable_logging, quiet

RATE = re.compile(r"[\d.]+ (images|batches)/s")
ETA = re.compile(r"eta \d+:\d\d:\d\d")
STAMP = re.compile(r"^\d\d:\d\d:\d\d ")


@pytest.fixture
def every_batch(monkeypatch):
    """A progress line per update (the default is one every 10 s)."""
    monkeypatch.setattr(progress_mod, "DEFAULT_EVERY", 0.0)


# --------------------------------------------------------------------------------------------------
# the helper


def test_progress_lines_unknown_total_shortfall_quiet_and_logger(caplog):
    stream = io.StringIO()
    with Progress(None, desc="x", unit="items", stream=stream, every=0) as bar:
        bar.update(3)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "x: started" and len(lines) == 3
    assert re.fullmatch(r"x: 3 items, [\d.]+ items/s", lines[1])
    assert re.fullmatch(r"x: 3 items, [\d.]+ items/s, took 0:00:00", lines[2])  # the end line on close

    stream = io.StringIO()
    with Progress(10, desc="y", stream=stream, every=3600) as bar:  # skipped images: the count falls short
        bar.update(7)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "y: 10 images" and lines[-1].startswith("y: 7/10 images (70%)") and "took" in lines[-1]

    stream = io.StringIO()
    with quiet():
        Progress(5, stream=stream, every=0).update(5)
    assert stream.getvalue() == ""

    log = logging.getLogger("gclreid")
    with caplog.at_level(logging.WARNING, logger="gclreid"):  # a logger not enabled for INFO: nothing at all
        Progress(5, desc="z", log=log, every=0).update(5)
    assert not caplog.records
    with caplog.at_level(logging.INFO, logger="gclreid"):
        Progress(5, desc="z", log=log, every=0).update(5)
    assert [r.getMessage()[:13] for r in caplog.records] == ["z: 5 images", "z: 5/5 images"]


def test_enable_logging_and_the_cli_handler(capsys):
    log = logging.getLogger("gclreid")
    assert gclreid.enable_logging is enable_logging
    try:
        enable_logging("INFO")
        enable_logging("INFO")  # again: replaces, no double lines
        log.info("hello")
    finally:
        disable_logging()
    log.info("not shown")
    err = capsys.readouterr().err
    assert STAMP.match(err) and err.count("hello") == 1 and "not shown" not in err
    assert log.level == logging.NOTSET and not log.handlers

    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()  # a process that did not configure logging (pytest does)
    try:
        with _logging_on_stderr():
            log.info("from a command")
        log.info("after it")
    finally:
        root.handlers[:] = saved
    err = capsys.readouterr().err
    assert STAMP.match(err) and "from a command" in err and "after it" not in err


# --------------------------------------------------------------------------------------------------
# commands in a pipe (capsys: stderr is not a terminal)


def assert_progress_lines(text, desc):
    lines = [line for line in text.splitlines() if desc in line]
    assert lines, (desc, text)
    assert any(RATE.search(line) and ETA.search(line) for line in lines), (desc, lines)
    assert any("took" in line for line in lines), (desc, lines)
    return lines


SMALL = ["model.arch=resnet18", "model.pretrained=false", "data.height=32", "data.width=16", "data.workers=0",
         "model.embed_dim=32", "eval.batch_size=16"]


def test_evaluate_in_a_pipe_reports_feature_and_ranking_progress(stripe_people, tmp_path, capsys, every_batch):
    assert main(["evaluate", "--dataset", "market1501", "--root", str(stripe_people), "--out", str(tmp_path),
                 *SMALL]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert_progress_lines(err, "evaluate: query features")
    assert_progress_lines(err, "evaluate: gallery features")
    assert "evaluate: query features: 24 images" in err  # the first line comes at the start
    assert re.search(r"evaluate: ranked 24 queries against 48 gallery images", err)


def test_train_logs_progress_with_an_iteration_rate_not_diluted_by_clustering(stripe_people, tmp_path, capsys,
                                                                              every_batch, monkeypatch):
    import gclreid.engine.pseudo_label as pl
    from gclreid.engine import train
    pause = 3.0
    original = pl.update_pseudo_labels

    def slow_clustering(*args, **kwargs):
        time.sleep(pause)
        return original(*args, **kwargs)

    monkeypatch.setattr(pl, "update_pseudo_labels", slow_clustering)
    cfg = load_config(None, [
        "data.name=market1501", f"data.root={stripe_people}", *SMALL, "train.method=cluster_contrast",
        "train.batch_size=16", "train.num_instances=4", "train.epochs=1", "train.iters_per_epoch=4",
        "train.log_every=2", "cluster.eps=0.6", "cluster.k1=10", "cluster.k2=3", f"run.out={tmp_path / 'run'}"])
    try:
        enable_logging()
        train(cfg)
    finally:
        disable_logging()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines and all(STAMP.match(line) for line in lines), lines
    assert_progress_lines(err, "training-set features")
    assert_progress_lines(err, "epoch 1/1 eval: query features")
    assert_progress_lines(err, "epoch 1/1 eval: gallery features")
    assert any("clustering 108 training images" in line for line in lines), lines
    its = [line for line in lines if "  it " in line]
    assert [re.search(r"it (\d+)/4", line).group(1) for line in its] == ["2", "4"], its
    rate = float(re.search(r"([\d.]+) it/s", its[0]).group(1))
    assert ETA.search(its[0]), its[0]
    # Counting the clustering pause would give at most 2 iterations / 3 s = 0.67 it/s; the iterations of
    # this tiny model take well under a second each.
    assert rate > 1.5 * 2 / pause, its[0]
    assert any("eval (test): mAP" in line for line in lines), lines


def test_synth_and_structures_in_a_pipe_write_lines_not_bars(tmp_path, capsys, every_batch):
    root = tmp_path / "s"
    assert main(["synth", "--out", str(root), "--train-ids", "2", "--test-ids", "1", "--cams", "2",
                 "--distractors", "0", "--images-per-id", "2", "--height", "64", "--width", "32", "--ssaa", "1", "--no-views", "--seed", "3",
                 "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "synth: 12 images" in err and re.search(r"synth: 12/12 images \(100%\), [\d.]+ images/s, took", err), err
    assert main(["structures", "--dataset", "synthreid", "--root", str(root), "--out", str(tmp_path / "st"),
                 "--estimator", "fallback", "--batch", "2"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "structures: 12 images" in err and re.search(r"structures: 12/12 images \(100%\), [\d.]+ images/s", err), err

"""Training curves (gclreid.engine.plots, `gclreid plot`): panels follow the data, forgiving reading,
atomic writes, several runs overlaid; and one real tiny training run."""
import json
import logging
import math

import numpy as np
import pytest
from PIL import Image

from gclreid.cli import main
from gclreid.engine.plots import (PLOT_FILE, comparison_panels, read_records, run_labels, training_panels,
                                  write_comparison_plot, write_training_plot)


# ------------------------------------------------------------------ epoch records with the real key names

def clusters(n_clusters, n_outliers, samples=100, **extra):
    return {"eps": 0.6, "num_clusters": n_clusters, "num_outliers": n_outliers, "num_classes": n_clusters,
            "outliers": "drop", "cluster_num_samples": samples, "cluster_num_clusters": n_clusters,
            "cluster_num_outliers": n_outliers, "cluster_largest_cluster": 9, "cluster_mean_cluster_size": 3.5,
            "cluster_num_true_ids": 20, "cluster_nmi": 0.7, "cluster_ari": 0.3, "cluster_purity": 0.8, **extra}


def evaluation(m):
    return {"mAP": m, "mINP": m / 2, "rank1": min(1.0, m + 0.1), "rank5": 1.0, "rank10": 1.0}


def cluster_contrast_records(epochs=3, split="test"):
    return [{"epoch": e, "iterations": 20, "losses": {"loss": 5.0 - e}, "clusters": clusters(10 + e, 30 - e),
             "eval": evaluation(0.1 * e), "eval_split": split} for e in range(1, epochs + 1)]


def gcl_stage2_records(epochs=2):
    gen = {"images": 6, "ssim": 0.16, "ssim_45": 0.15, "ssim_90": 0.17, "recon_ssim": 0.2, "copy_ssim": 0.42,
           "psnr": 16.1, "recon_psnr": 16.0, "copy_psnr": 18.7, "l1": 0.12, "recon_l1": 0.12, "copy_l1": 0.06}
    records = [{"epoch": e, "iterations": 2,
                "losses": {"d_total": 6.0, "d_r1": 2.3e-12, "g_adv": 12.0, "l_img": 1.1, "l_feat": 0.9, "loss": 22.5},
                "clusters": {}, "generation": gen,
                "view_cos": {"images": 6, "novel": 0.3 + 0.1 * e, "novel_45": 0.5, "recon": 0.6, "mirror": 0.95,
                             "other": -0.02}} for e in range(1, epochs + 1)]
    records[-1].update(eval=evaluation(0.7), eval_split="test")  # train.eval_every=0: the last epoch only
    return records


def dgnet_records():
    return [{"epoch": e, "iterations": 2,
             "losses": {"adv": 8.0, "img1": 2.9, "id_real": 7.1, "loss": 49.2, "d_total": 4.0, "accuracy": 0.125,
                        "w_prim": 0.5, "w_fine": 0.1, "prim": 0.09, "fine": 1.8},
             "clusters": {}, "loss_weights": {"prim": 2.0, "fine": 0.4}, "iteration": 2 * e,
             "generation": {"images": 3, "ssim_generated": 0.23, "recon_ssim": 0.18, "recon_l1": 0.23, "ssim_real": 0.3},
             "eval_prim": evaluation(0.6), "eval_teacher": evaluation(0.28), "eval": evaluation(0.7),
             "eval_split": "val"} for e in (1, 2)]


def write_run(folder, records, tail=""):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return folder


def names(records):
    return [p.name for p in training_panels(records)]


def panel(records, name):
    return next(p for p in training_panels(records) if p.name == name)


def png(path):
    """(height, width, drawn panels from the PNG's metadata, share of non-white pixels)."""
    img = Image.open(path)
    drawn = img.info.get("Description", "").replace("panels: ", "").split(", ")
    rgb = np.asarray(img.convert("RGB"))
    return rgb.shape[0], rgb.shape[1], drawn, float((rgb.min(axis=2) < 250).mean())


# ---------------------------------------------------------------------------------------- the panels

def test_cluster_contrast_run_gets_eval_loss_cluster_panels_and_a_drawn_png(tmp_path):
    records = cluster_contrast_records()
    assert names(records) == ["eval", "losses", "clusters", "cluster_quality"]
    ev = panel(records, "eval")
    assert ev.title == "evaluation (test split)"
    assert [s.label for s in ev.series] == ["mAP", "rank-1"]
    assert ev.series[0].y == pytest.approx([10, 20, 30])  # percent
    cl = panel(records, "clusters")
    assert cl.series[0].y == [11, 12, 13]
    share = next(s for s in cl.series if s.label == "outlier share")
    assert share.right and share.y == pytest.approx([29, 28, 27])  # cluster_num_outliers / cluster_num_samples

    run = write_run(tmp_path / "cc", records)
    out = write_training_plot(run, strict=True)
    assert out == run / PLOT_FILE
    height, width, drawn, ink = png(out)
    assert drawn == ["eval", "losses", "clusters", "cluster_quality"]
    assert (height, width) == (700, 1280) and ink > 0.02
    assert sorted(p.name for p in run.iterdir()) == [PLOT_FILE, "metrics.jsonl"]  # no temp file left


def test_gcl_stage2_has_novel_view_ssim_and_no_cluster_panel(tmp_path):
    records = gcl_stage2_records()
    assert names(records) == ["eval", "losses", "generation", "view_cos"]
    cos = panel(records, "view_cos")
    assert [s.y for s in cos.series] == [[0.4, 0.5], [0.6, 0.6], [0.95, 0.95], [-0.02, -0.02]]
    gen = panel(records, "generation")
    assert "novel-view SSIM" in gen.title
    assert [s.y for s in gen.series] == [[0.16, 0.16], [0.2, 0.2], [0.42, 0.42]]
    assert panel(records, "eval").series[0].x == [2]  # evaluated at the last epoch only
    losses = panel(records, "losses")
    assert losses.log_y  # 2e-12 … 22: a log axis cut 5 decades below the largest loss
    assert losses.ylim[0] == pytest.approx(22.5e-5)
    assert "below the axis" in next(s.label for s in losses.series if s.label.startswith("d_r1"))
    # the GCL stage-3 memory clustering adds the cluster panels
    stage3 = [{**r, "clusters": clusters(5, 4, samples=15)} for r in records]
    assert names(stage3) == ["eval", "losses", "clusters", "cluster_quality", "generation", "view_cos"]
    h, _, drawn, ink = png(write_training_plot(write_run(tmp_path / "s3", stage3), strict=True))
    assert drawn == names(stage3) and h == 1030 and ink > 0.02


def test_dgnet_and_supervised_extras(tmp_path):
    records = dgnet_records()
    assert names(records) == ["eval", "losses", "accuracy", "generation"]
    ev = panel(records, "eval")
    assert ev.title == "evaluation (val split)"
    assert [s.label for s in ev.series] == ["mAP", "rank-1", "mAP (prim)", "mAP (teacher)"]
    loss_labels = [s.label for s in panel(records, "losses").series]
    assert "accuracy" not in loss_labels and not any(x.startswith("w_") for x in loss_labels)
    assert {"adv", "img1", "loss", "prim", "fine"} <= set(loss_labels)
    assert panel(records, "accuracy").series[0].y == [12.5, 12.5]
    assert [s.label for s in panel(records, "generation").series][0] == "generated, same appearance"
    supervised = [{"epoch": 1, "losses": {"loss": 3.8, "ce": 1.8, "triplet": 2.0, "accuracy": 0.31}, "clusters": {},
                   "eval": evaluation(0.27), "eval_split": "test"}]
    assert names(supervised) == ["eval", "losses", "accuracy"]
    # one epoch: drawn (one panel per row pair, markers keep single points visible)
    _, _, drawn, ink = png(write_training_plot(write_run(tmp_path / "sup", supervised), strict=True))
    assert drawn == ["eval", "losses", "accuracy"] and ink > 0.02


def test_instance_epochs_are_shaded_not_counted_and_lr_panel_when_logged():
    records = cluster_contrast_records(3)
    records[0]["clusters"] = {"num_clusters": 100, "num_outliers": 0, "num_classes": 100, "instance": True}
    cl = panel(records, "clusters")
    assert cl.series[0].x == [2, 3] and cl.shade == [1]
    assert "lr" not in names(records)
    with_lr = [{**r, "lr": 3.5e-4 * (0.1 if r["epoch"] > 2 else 1)} for r in records]
    assert panel(with_lr, "lr").series[0].y == pytest.approx([3.5e-4, 3.5e-4, 3.5e-5])
    per_optimiser = [{**r, "lr": {"identity_encoder": 3.5e-4, "generator": 1e-4}} for r in records]
    assert [s.label for s in panel(per_optimiser, "lr").series] == ["identity_encoder", "generator"]


# ------------------------------------------------------------------------------- forgiving reading

def test_killed_run_partial_last_line_and_junk_lines_are_skipped(tmp_path):
    records = cluster_contrast_records(3)
    truncated = json.dumps(cluster_contrast_records(4)[-1])[:57]  # killed while writing epoch 4
    run = write_run(tmp_path / "killed", records[:2], tail="[1, 2]\n\n\"text\"\n" + truncated)
    assert [r["epoch"] for r in read_records(run / "metrics.jsonl")] == [1, 2]
    h, _, drawn, _ = png(write_training_plot(run, strict=True))
    assert drawn == ["eval", "losses", "clusters", "cluster_quality"]
    # a record written again for the same epoch (resume without trimming) replaces the earlier one
    again = write_run(tmp_path / "again", [records[0], records[1], {**records[1], "losses": {"loss": 9.0}}])
    assert [r["losses"]["loss"] for r in read_records(again / "metrics.jsonl")] == [4.0, 9.0]


def test_non_finite_and_malformed_values_are_left_out(tmp_path):
    records = cluster_contrast_records(3)
    records[0]["losses"]["loss"] = float("nan")
    records[1]["eval"]["mAP"] = float("inf")
    records[2]["eval"]["rank1"] = "n/a"
    for r in records:
        r["losses"]["bad"] = float("nan")  # never finite: no line at all
        r["clusters"]["cluster_num_samples"] = 0  # no share without a sample count
    records[1]["clusters"]["cluster_nmi"] = True
    text = "".join(json.dumps(r) + "\n" for r in records)
    assert "NaN" in text and "Infinity" in text  # what json.dumps writes for the loop's floats
    run = tmp_path / "nan"
    run.mkdir()
    (run / "metrics.jsonl").write_text(text)
    got = read_records(run / "metrics.jsonl")
    loss = panel(got, "losses")
    assert [s.label for s in loss.series] == ["loss"] and loss.series[0].x == [2, 3]
    ev = panel(got, "eval")
    assert ev.series[0].x == [1, 3] and ev.series[1].x == [1, 2]
    assert [s.label for s in panel(got, "clusters").series] == ["clusters"]  # share left out
    assert all(math.isfinite(v) for p in training_panels(got) for s in p.series for v in s.y)
    assert png(write_training_plot(run, strict=True))[2] == ["eval", "losses", "clusters", "cluster_quality"]


def test_nothing_to_draw_gives_none_and_no_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_training_plot(empty) is None  # no metrics.jsonl yet
    (empty / "metrics.jsonl").write_text("")
    assert write_training_plot(empty) is None
    (empty / "metrics.jsonl").write_text('{"epoch": 1, "iterations": 3, "losses": {"lo')  # killed in epoch 1
    assert write_training_plot(empty) is None
    no_numbers = write_run(tmp_path / "bare", [{"epoch": 1, "iterations": 2, "losses": {}, "clusters": {}}])
    assert write_training_plot(no_numbers) is None
    assert not (empty / PLOT_FILE).exists() and not (no_numbers / PLOT_FILE).exists()
    assert write_training_plot(tmp_path / "missing") is None


def test_never_raises_a_write_failure_and_leaves_no_temp_file(tmp_path, caplog):
    run = write_run(tmp_path / "run", cluster_contrast_records(2))
    (run / PLOT_FILE).mkdir()  # a folder where the PNG should go: the rename fails
    with caplog.at_level(logging.WARNING, logger="gclreid"):
        assert write_training_plot(run) is None
    assert "could not draw the training curves" in caplog.text
    assert sorted(p.name for p in run.iterdir()) == ["curves.png", "metrics.jsonl"]
    with pytest.raises(OSError):  # strict (the CLI): the error comes out
        write_training_plot(run, out=run / "metrics.jsonl" / "curves.png", strict=True)
    # an existing PNG is replaced in one step
    (run / PLOT_FILE).rmdir()
    (run / PLOT_FILE).write_bytes(b"old")
    assert png(write_training_plot(run))[3] > 0.02


# ------------------------------------------------------------------------------------ several runs, CLI

def test_cli_draws_one_run_and_overlays_several(tmp_path, capsys):
    a = write_run(tmp_path / "a" / "stage1", cluster_contrast_records(3))
    b = write_run(tmp_path / "b" / "stage1", cluster_contrast_records(2, split="test"))
    c = write_run(tmp_path / "stage2", gcl_stage2_records(2))
    assert main(["plot", str(a)]) == 0
    assert png(a / PLOT_FILE)[2] == ["eval", "losses", "clusters", "cluster_quality"]
    out = tmp_path / "cmp" / "compare.png"
    assert main(["plot", str(a), str(b), str(c / "metrics.jsonl"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.split() == [str(a / PLOT_FILE), str(out)]
    assert png(out)[2] == ["mAP", "rank1"]
    assert run_labels([a, b, c]) == ["a/stage1", "b/stage1", "stage2"]
    runs = [(label, read_records(d / "metrics.jsonl")) for label, d in zip(run_labels([a, b, c]), [a, b, c])]
    maps = comparison_panels(runs)[0]
    assert maps.title == "mAP (test split)"
    assert [(s.label, s.x) for s in maps.series] == [("a/stage1", [1, 2, 3]), ("b/stage1", [1, 2]), ("stage2", [2])]
    # a run without evaluation is left out of the comparison with a note; none at all → error
    bare = write_run(tmp_path / "bare", [{"epoch": 1, "losses": {"loss": 1.0}, "clusters": {}}])
    assert main(["plot", str(a), str(bare), "--out", str(out)]) == 0
    assert "bare has no evaluation record" in capsys.readouterr().err
    assert write_comparison_plot([bare, bare], tmp_path / "x.png") is None
    assert main(["plot", str(bare), str(bare), "--out", str(tmp_path / "x.png")]) == 2
    assert main(["plot", str(tmp_path / "nowhere")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "metrics.jsonl").write_text("")
    assert main(["plot", str(tmp_path / "fresh")]) == 2
    assert "no complete epoch record" in capsys.readouterr().err


# --------------------------------------------------------------------------------- a real training run

def test_real_tiny_cluster_contrast_run(tmp_path):
    from conftest import make_stripe_people
    from gclreid.config import load_config
    from gclreid.engine import train
    root = make_stripe_people(tmp_path / "people", train_ids=8, test_ids=3, per_cam=2, cams=2)
    out = tmp_path / "cc"
    cfg = load_config(None, [
        "data.name=market1501", f"data.root={root}", "data.height=32", "data.width=16", "data.workers=0",
        "model.arch=resnet18", "model.pretrained=false", "model.embed_dim=16", "train.method=cluster_contrast",
        "train.batch_size=8", "train.num_instances=4", "train.epochs=2", "train.iters_per_epoch=1",
        "train.eval_every=0", "train.log_every=100", "eval.batch_size=64", "cluster.k1=6", "cluster.k2=2",
        "cluster.eps=0.6", "cluster.min_samples=2", "cluster.instance_epochs=1", f"run.out={out}"])
    train(cfg, progress=False)
    records = read_records(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    written = write_training_plot(out, strict=True)
    _, _, drawn, ink = png(written)
    assert drawn == ["eval", "losses", "clusters", "cluster_quality"] and ink > 0.02
    assert panel(records, "clusters").shade == [1]  # the instance-discrimination epoch is shaded, not counted
    assert panel(records, "eval").series[0].x == [2]  # evaluated after the last epoch only

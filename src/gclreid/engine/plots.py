"""Training curves as one PNG: ``<run.out>/curves.png`` from ``<run.out>/metrics.jsonl``.

``write_training_plot(run_dir)`` reads the epoch records the training loop writes and draws one
panel per kind of data the run has, and only those:

- ``eval``: mAP and rank-1 per evaluated epoch (the ``eval_split``, val or test, in the title);
  DG-Net's other test features (``eval_prim``, ``eval_fine``, ``eval_teacher`` …) as dashed mAP lines;
- ``losses``: every training loss per epoch (the total ``loss`` in black; log scale when the losses
  span more than two decades);
- ``accuracy``: training accuracy (supervised, DG-Net);
- ``clusters``: number of clusters (left axis) and outlier share ``cluster_num_outliers /
  cluster_num_samples`` (right axis); instance-discrimination epochs are shaded, not counted;
- ``cluster_quality``: NMI / ARI / purity of the clusters against the true identities (analysis only);
- ``generation``: GCL's novel-view SSIM against the true views, with the 0° reconstruction and the
  copy-the-input baseline; DG-Net's SSIM diversity;
- ``view_cos``: GCL's cosine between the identity features of fixed training images and of their
  generated views, with the mirrored-input and another-image baselines;
- ``lr``: learning rate per epoch, when the records carry it (``"lr"``: a number or ``{optimiser: lr}``).

The reading is forgiving — an empty file, a run killed while writing its last line, non-finite
values, missing keys, a single epoch — and ``write_training_plot`` never raises (it logs a warning
and returns None), so calling it after each epoch cannot stop a training run. The PNG is written to
a temporary file and renamed. ``write_comparison_plot`` overlays the mAP / rank-1 curves of several
runs (``gclreid plot RUN RUN …``). Drawing uses matplotlib's Agg canvas directly (no pyplot, no
global backend change).
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

log = logging.getLogger("gclreid")

PLOT_FILE = "curves.png"
METRICS_FILE = "metrics.jsonl"

PathLike = Union[str, "os.PathLike[str]"]

# Entries of the `losses` dict that are not losses: DG-Net's ramped loss weights (`w_prim` …), GCL's
# cosine of real and generated views (`view_cos`) and training accuracies.
_NOT_LOSSES = ("w_", "view_cos")
# Larger magnitudes are left out like non-finite values: matplotlib's axis arithmetic overflows near
# the float maximum, and no loss or metric worth a curve is that large.
MAX_ABS = 1e30
# The losses panel shows at most this many decades below the largest loss (log scale).
LOSS_DECADES = 5


@dataclass
class Series:
    label: str
    x: List[float]
    y: List[float]
    style: Dict[str, Any] = field(default_factory=dict)
    right: bool = False  # on the panel's second y axis


@dataclass
class Panel:
    name: str
    title: str
    ylabel: str
    series: List[Series]
    ylabel_right: str = ""
    log_y: bool = False
    shade: List[float] = field(default_factory=list)  # epochs to shade (instance discrimination)
    shade_label: str = ""
    ylim: Optional[Tuple[Optional[float], Optional[float]]] = None
    integer_y: bool = False


# ---------------------------------------------------------------------------------------------- reading

def _number(value: Any) -> Optional[float]:
    """A finite float, or None for anything else (strings, booleans, NaN, ±inf, nested values)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def read_records(path: PathLike) -> List[Dict[str, Any]]:
    """The epoch records of a metrics.jsonl file, sorted by epoch, one per epoch (the last one wins).

    Lines that do not parse (a run killed mid-write) or are not JSON objects are skipped; a record
    without a usable ``epoch`` gets its position in the file. A missing or unreadable file gives [].
    """
    try:
        text = Path(path).read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return []
    by_epoch: Dict[int, Dict[str, Any]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        epoch = _number(record.get("epoch"))
        epoch = int(epoch) if epoch is not None and 0 <= epoch <= 1e7 else len(by_epoch) + 1
        by_epoch[epoch] = {**record, "epoch": epoch}
    return [by_epoch[e] for e in sorted(by_epoch)]


def _series(records: Sequence[Dict], get, label: str, scale: float = 1.0, **style) -> Optional[Series]:
    """(epoch, scale·get(record)) for the records where get gives a finite number (of magnitude at most
    MAX_ABS); None when there are none."""
    xs, ys = [], []
    for r in records:
        try:
            v = _number(get(r))
        except (AttributeError, KeyError, TypeError, ValueError):
            v = None
        if v is not None and abs(v * scale) <= MAX_ABS:
            xs.append(r["epoch"])
            ys.append(v * scale)
    return Series(label, xs, ys, dict(style)) if xs else None


def _dict_at(record: Dict, key: str) -> Dict:
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def _keys(records: Sequence[Dict], key: str) -> List[str]:
    """Keys of the dict ``record[key]`` over all records, in order of first appearance."""
    seen: Dict[str, None] = {}
    for r in records:
        for k in _dict_at(r, key):
            seen.setdefault(str(k), None)
    return list(seen)


def _wide_range(series: Iterable[Series], decades: float = 2.0) -> bool:
    values = [v for s in series for v in s.y]
    return bool(values) and min(values) > 0 and max(values) / min(values) > 10 ** decades


# --------------------------------------------------------------------------------------------- panels

def _eval_panel(records: Sequence[Dict]) -> Optional[Panel]:
    series: List[Series] = []
    for metric, label, colour in (("mAP", "mAP", "C0"), ("rank1", "rank-1", "C1")):
        s = _series(records, lambda r, m=metric: _dict_at(r, "eval")[m], label, 100.0, color=colour, linewidth=2)
        if s:
            series.append(s)
    # DG-Net evaluates its other test features (and the teacher) too: eval_<name>.
    extra = sorted({k for r in records for k, v in r.items()
                    if k.startswith("eval_") and isinstance(v, dict) and "mAP" in v})
    for i, key in enumerate(extra):
        s = _series(records, lambda r, k=key: _dict_at(r, k)["mAP"], f"mAP ({key[5:]})", 100.0,
                    color=f"C{(i + 2) % 10}", linestyle="--", linewidth=1)
        if s:
            series.append(s)
    if not series:
        return None
    splits = []
    for r in records:
        split = r.get("eval_split")
        if isinstance(split, str) and split not in splits:
            splits.append(split)
    title = "evaluation" + (f" ({'/'.join(splits)} split)" if splits else "")
    return Panel("eval", title, "%", series)


def _loss_panel(records: Sequence[Dict]) -> Optional[Panel]:
    names = [k for k in _keys(records, "losses") if not k.startswith(_NOT_LOSSES) and "acc" not in k]
    series: List[Series] = []
    colours = 0
    for name in names:
        if name == "loss":
            style = dict(color="black", linewidth=2)
        else:
            style = dict(color=f"C{colours % 10}", linewidth=1, linestyle="-" if colours < 10 else "--")
            colours += 1
        s = _series(records, lambda r, k=name: _dict_at(r, "losses")[k], name, **style)
        if s:
            series.append(s)
    if not series:
        return None
    log_y, floor = _wide_range(series), None
    if log_y:
        # A term orders of magnitude below the others (an R1 penalty of 1e-12 while D is still
        # untrained) would squash every other curve into the top of the panel: cut the axis at
        # LOSS_DECADES below the largest loss and say so in the legend of the terms entirely below.
        top = max(v for s in series for v in s.y)
        if min(v for s in series for v in s.y) < top / 10 ** LOSS_DECADES:
            floor = top / 10 ** LOSS_DECADES
            for s in series:
                if max(s.y) < floor:
                    s.label += f" (max {max(s.y):.1e}, below the axis)"
    return Panel("losses", "training losses (last logged mean per epoch)", "loss", series, log_y=log_y,
                 ylim=(floor, None) if floor else None)


def _accuracy_panel(records: Sequence[Dict]) -> Optional[Panel]:
    names = [k for k in _keys(records, "losses") if "acc" in k]
    series = [s for s in (_series(records, lambda r, k=k: _dict_at(r, "losses")[k], k, 100.0) for k in names) if s]
    return Panel("accuracy", "training accuracy", "%", series) if series else None


def _is_instance(record: Dict) -> bool:
    return _dict_at(record, "clusters").get("instance") is True


def _cluster_panel(records: Sequence[Dict]) -> Optional[Panel]:
    clustered = [r for r in records if not _is_instance(r)]

    def count(r):
        c = _dict_at(r, "clusters")
        return c["cluster_num_clusters"] if "cluster_num_clusters" in c else c["num_clusters"]

    def outlier_share(r):
        c = _dict_at(r, "clusters")
        outliers = c.get("cluster_num_outliers", c.get("num_outliers"))
        samples = _number(c.get("cluster_num_samples"))
        return float(outliers) / samples if samples else None

    series = []
    s = _series(clustered, count, "clusters", color="C0", linewidth=2)
    if s:
        series.append(s)
    s = _series(clustered, outlier_share, "outlier share", 100.0, color="C3", linestyle="--")
    if s:
        s.right = True
        series.append(s)
    shade = [r["epoch"] for r in records if _is_instance(r)]
    if not series:
        return None
    return Panel("clusters", "pseudo labels: clusters and outliers", "clusters", series,
                 ylabel_right="outliers (% of images)" if any(s.right for s in series) else "",
                 shade=shade, shade_label="instance discrimination", integer_y=True)


def _cluster_quality_panel(records: Sequence[Dict]) -> Optional[Panel]:
    series = []
    for key, label in (("cluster_nmi", "NMI"), ("cluster_ari", "ARI"), ("cluster_purity", "purity")):
        s = _series(records, lambda r, k=key: _dict_at(r, "clusters")[k], label)
        if s:
            series.append(s)
    if not series:
        return None
    return Panel("cluster_quality", "clusters vs true identities (analysis only)", "score", series, ylim=(0, 1.02))


def _generation_panel(records: Sequence[Dict]) -> Optional[Panel]:
    keys = set(_keys(records, "generation"))
    if "ssim" in keys:  # GCL: novel views against SynthReID's true views
        wanted = (("ssim", "novel view vs true view", dict(color="C0", linewidth=2)),
                  ("recon_ssim", "0° reconstruction vs input", dict(color="C2")),
                  ("copy_ssim", "input copied (baseline)", dict(color="grey", linestyle=":")))
        title = "GCL novel-view SSIM"
    else:  # DG-Net: SSIM diversity (Table 2 of the paper) and reconstruction
        wanted = (("ssim_generated", "generated, same appearance", dict(color="C0", linewidth=2)),
                  ("ssim_real", "real, same identity", dict(color="grey", linestyle=":")),
                  ("recon_ssim", "reconstruction vs input", dict(color="C2")))
        title = "generation SSIM"
    series = [s for s in (_series(records, lambda r, k=k: _dict_at(r, "generation")[k], label, **style)
                          for k, label, style in wanted if k in keys) if s]
    return Panel("generation", title, "SSIM", series) if series else None


def _view_cos_panel(records: Sequence[Dict]) -> Optional[Panel]:
    wanted = (("novel", "novel views", dict(color="C0", linewidth=2)),
              ("recon", "0° reconstruction", dict(color="C2")),
              ("mirror", "mirrored input (baseline)", dict(color="grey", linestyle=":")),
              ("other", "another image (baseline)", dict(color="C3", linestyle=":")))
    series = [s for s in (_series(records, lambda r, k=k: _dict_at(r, "view_cos")[k], label, **style)
                          for k, label, style in wanted) if s]
    return Panel("view_cos", "GCL: cos(Eid(x), Eid(generated view))", "cosine", series,
                 ylim=(-1.02, 1.02)) if series else None


def _lr_panel(records: Sequence[Dict]) -> Optional[Panel]:
    series = []
    if any(_number(r.get("lr")) is not None for r in records):
        s = _series(records, lambda r: r["lr"], "lr")
        if s:
            series.append(s)
    for name in _keys(records, "lr"):
        s = _series(records, lambda r, k=name: _dict_at(r, "lr")[k], name)
        if s:
            series.append(s)
    if not series:
        return None
    return Panel("lr", "learning rate", "lr", series, log_y=_wide_range(series, 1.0))


PANEL_BUILDERS = (_eval_panel, _loss_panel, _accuracy_panel, _cluster_panel, _cluster_quality_panel,
                  _generation_panel, _view_cos_panel, _lr_panel)


def training_panels(records: Sequence[Dict]) -> List[Panel]:
    """The panels a run's records have data for, in drawing order (see the module docstring)."""
    records = [r for r in records if isinstance(r, dict) and isinstance(r.get("epoch"), int)
               and not isinstance(r.get("epoch"), bool) and 0 <= r["epoch"] <= 1e7]
    return [p for p in (build(records) for build in PANEL_BUILDERS) if p is not None]


def comparison_panels(runs: Sequence[Tuple[str, Sequence[Dict]]]) -> List[Panel]:
    """mAP and rank-1 of several runs overlaid, one line per run labelled with its name."""
    panels = []
    for metric, title in (("mAP", "mAP"), ("rank1", "rank-1")):
        series = []
        for i, (label, records) in enumerate(runs):
            s = _series(records, lambda r, m=metric: _dict_at(r, "eval")[m], label, 100.0, color=f"C{i % 10}",
                        linestyle="-" if i < 10 else "--", linewidth=1.5)
            if s:
                series.append(s)
        if series:
            splits = sorted({r["eval_split"] for _, rs in runs for r in rs if isinstance(r.get("eval_split"), str)})
            panels.append(Panel(metric, title + (f" ({'/'.join(splits)} split)" if splits else ""), "%", series))
    return panels


# -------------------------------------------------------------------------------------------- drawing

def _runs_of(epochs: Sequence[float]) -> List[Tuple[float, float]]:
    """Consecutive epochs merged: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    runs: List[Tuple[float, float]] = []
    for e in sorted(epochs):
        if runs and e - runs[-1][1] <= 1:
            runs[-1] = (runs[-1][0], e)
        else:
            runs.append((e, e))
    return runs


def _draw(panels: Sequence[Panel], out: Path, title: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)  # fail before drawing, not after
    cols = 1 if len(panels) == 1 else 2
    rows = math.ceil(len(panels) / cols)
    width, height = 6.4 * cols, 3.3 * rows + 0.4
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.12 / height)
    # Fixed margins (in inches) rather than constrained layout, which would double the drawing time.
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.75 / width, bottom=0.5 / height, top=1 - 0.65 / height,
                        wspace=0.38, hspace=0.75 / 3.3 * 1.3)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        right = ax.twinx() if any(s.right for s in panel.series) else None
        handles = []
        for s in panel.series:
            target = right if s.right else ax
            style = {"marker": "o", "markersize": 3 if len(s.x) <= 60 else 0, **s.style}
            handles += target.plot(s.x, s.y, label=s.label, **style)
        for i, (lo, hi) in enumerate(_runs_of(panel.shade)):
            span = ax.axvspan(lo - 0.5, hi + 0.5, color="0.85", zorder=0)
            if i == 0:
                span.set_label(panel.shade_label)
                handles.append(span)
        if panel.log_y:
            ax.set_yscale("log")
        if panel.ylim:
            ax.set_ylim(*panel.ylim)
        if panel.integer_y:
            left = [v for s in panel.series if not s.right for v in s.y]
            if left and max(left) - min(left) < 2:  # counts that hardly change: whole-number ticks still
                ax.set_ylim(min(left) - 1, max(left) + 1)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if right is not None:
            right.set_ylabel(panel.ylabel_right, fontsize=9)
            right.set_ylim(bottom=0)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
        ax.set_ylabel(panel.ylabel, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        xs = [x for s in panel.series for x in s.x] + list(panel.shade)
        if xs and min(xs) == max(xs):  # one epoch: keep the point off the frame
            ax.set_xlim(min(xs) - 1, max(xs) + 1)
        ax.legend(handles=handles, fontsize=7, ncol=max(1, math.ceil(len(handles) / 8)), loc="best",
                  framealpha=0.7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png",
                    metadata={"Software": "gclreid", "Description": "panels: " + ", ".join(p.name for p in panels)})
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _run_title(run_dir: Path, records: Sequence[Dict]) -> str:
    parts = [run_dir.resolve().name or str(run_dir)]
    try:
        import yaml
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        method = cfg.get("train", {}).get("method")
        if method == "gcl":
            method = f"gcl stage {cfg.get('gcl', {}).get('stage', '?')}"
        if method:
            parts.append(str(method))
        total = cfg.get("train", {}).get("epochs")
    except Exception:  # noqa: BLE001 - the title is decoration; a missing or odd config must not matter
        total = None
    done = records[-1]["epoch"] if records else 0
    if isinstance(total, int) and not isinstance(total, bool):
        parts.append(f"{done}/{total} epochs")
    else:
        parts.append(f"{done} epoch" + ("" if done == 1 else "s"))
    return " · ".join(parts)


def _metrics_path(run_dir: PathLike) -> Tuple[Path, Path]:
    path = Path(run_dir)
    if path.is_file() or path.suffix == ".jsonl":
        return path.parent, path
    return path, path / METRICS_FILE


def write_training_plot(run_dir: PathLike, out: Optional[PathLike] = None, *, strict: bool = False) -> Optional[Path]:
    """Draw ``<run_dir>/curves.png`` (or `out`) from ``<run_dir>/metrics.jsonl``; return its path.

    None when there is nothing to draw (no file, no complete record, no numbers). With
    ``strict=False`` (the default, for the training loop) no error escapes: a failure to draw or
    write is logged as a warning and gives None; ``strict=True`` raises it (the CLI).
    """
    try:
        run_dir, metrics = _metrics_path(run_dir)
        records = read_records(metrics)
        panels = training_panels(records)
        if not panels:
            return None
        return _draw(panels, Path(out) if out is not None else run_dir / PLOT_FILE, _run_title(run_dir, records))
    except Exception as exc:  # noqa: BLE001 - a plot must never stop a training run
        if strict:
            raise
        log.warning("could not draw the training curves of %s: %s: %s", run_dir, type(exc).__name__, exc)
        return None


def run_labels(run_dirs: Sequence[PathLike]) -> List[str]:
    """Folder names; where two runs share one, as many parent folders as tell them apart."""
    paths = [_metrics_path(d)[0].resolve() for d in run_dirs]
    depth = [1] * len(paths)
    while True:
        labels = ["/".join(p.parts[-k:]) for p, k in zip(paths, depth)]
        clashes = [i for i, label in enumerate(labels) if labels.count(label) > 1 and depth[i] < len(paths[i].parts)]
        if not clashes:
            return labels
        for i in clashes:
            depth[i] += 1


def write_comparison_plot(run_dirs: Sequence[PathLike], out: PathLike, *, strict: bool = True) -> Optional[Path]:
    """mAP and rank-1 per epoch of several runs overlaid in one PNG at `out`; None when no run has an
    evaluation record."""
    try:
        runs = [(label, read_records(_metrics_path(d)[1])) for label, d in zip(run_labels(run_dirs), run_dirs)]
        panels = comparison_panels(runs)
        if not panels:
            return None
        return _draw(panels, Path(out), f"{len(runs)} runs")
    except Exception as exc:  # noqa: BLE001
        if strict:
            raise
        log.warning("could not draw the comparison of %s: %s: %s", ", ".join(map(str, run_dirs)),
                    type(exc).__name__, exc)
        return None

"""Score structure maps of real Market-1501 crops against labels made by eye.

    python bench/score_structures.py --structures runs/market1501_structures [--json]
    python bench/score_structures.py --estimator fallback --out /tmp/labelled_fallback

The first form scores an existing structures folder (its ``structures.jsonl`` and the maps in
``train/render[_<deg>]/``, as written by ``gclreid structures``). The second first runs
``gclreid structures`` on only the labelled crops (a temporary folder of symlinks read by the
``folder`` dataset) into ``--out`` and then scores that folder.

Labels: ``bench/real_crops/market1501_labels.csv`` (see ``bench/real_crops/README.md``), columns
``relpath,facing,top,bottom,pose,notes``; ``facing`` in the yaw convention of ``structures.jsonl``
(0 = facing the camera, 90 = facing image right), empty when it could not be judged.

Per labelled crop:

* facing ok: circular difference between the record's ``yaw`` and the label ≤ 45°; front/back
  confusion: difference ≥ 135°;
* extent ok: top and bottom of the body in the 0° map (rows with at least ``MIN_ROW_PIXELS`` pixels
  brighter than ``BODY_GREY``) each within 0.10 of the crop height of the labelled head top / feet;
* plausible: facing ok and extent ok (crops with a facing label only);
* empty maps: a map at any angle with under ``EMPTY_FRACTION`` of its pixels on the body;
* border: the body is cut by a border in some map (``BORDER_PIXELS`` or more body pixels on the
  left or right column, or on the top/bottom row where the labelled head/feet are more than
  ``BORDER_MARGIN`` from that edge);
* missing: no record in ``structures.jsonl``, or a map file missing.

Overall and per record ``status`` (detected, fallback, …); the worst cases are listed by relpath.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image

from gclreid.data.records import ImageRecord
from gclreid.structures.layout import ANGLES, structure_path
from gclreid.structures.writer import RECORDS, read_records

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LABELS = REPO / "bench" / "real_crops" / "market1501_labels.csv"
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "market1501"
SPLIT = "train"                 # the labelled crops are Market-1501 training images
COLUMNS = ("relpath", "facing", "top", "bottom", "pose", "notes")
POSES = ("standing", "walking", "cycling", "sitting", "other")
FACING_TOL = 45.0               # facing ok: yaw within this of the label
FRONT_BACK = 135.0              # front/back confusion: yaw this far or farther from the label
EXTENT_TOL = 0.10               # extent ok: top and bottom within this fraction of the map height
BODY_GREY = 20                  # a map pixel brighter than this is body (background is black; JPEG noise)
MIN_ROW_PIXELS = 2              # a row with at least this many body pixels is a body row
EMPTY_FRACTION = 0.01           # a map with fewer body pixels than this fraction is "empty"
BORDER_PIXELS = 8               # body pixels on a border line that make the body "cut" by that border
BORDER_MARGIN = 0.05            # top/bottom cuts count only where the label is this far from the edge


class ScoreError(Exception):
    """Bad input (labels file, structures folder, dataset root): printed as one line."""


@dataclass
class Label:
    relpath: str
    facing: Optional[float]
    top: float
    bottom: float
    pose: str
    notes: str


# ---------------------------------------------------------------------------------------------
# Inputs


def read_labels(path: os.PathLike) -> List[Label]:
    """The labels of ``path``; lines starting with ``#`` are comments. Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ScoreError(f"labels file {path} does not exist")
    with open(path, newline="", encoding="utf-8") as fh:
        lines = [(n, line) for n, line in enumerate(fh, 1) if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ScoreError(f"labels file {path} has no header line ({','.join(COLUMNS)})")
    reader = csv.reader(line for _, line in lines)
    header = [c.strip() for c in next(reader)]
    if tuple(header) != COLUMNS:
        raise ScoreError(f"{path} line {lines[0][0]}: header is {','.join(header)}; expected {','.join(COLUMNS)}")
    labels, seen = [], set()
    for (lineno, _), row in zip(lines[1:], reader):
        where = f"{path} line {lineno}"
        if len(row) != len(COLUMNS):
            raise ScoreError(f"{where}: {len(row)} fields; expected {len(COLUMNS)} ({','.join(COLUMNS)})")
        relpath, facing, top, bottom, pose, notes = (c.strip() for c in row)
        if not relpath:
            raise ScoreError(f"{where}: empty relpath")
        if relpath in seen:
            raise ScoreError(f"{where}: {relpath} is labelled twice")
        seen.add(relpath)
        try:
            face = None if facing == "" else float(facing)
            top_f, bottom_f = float(top), float(bottom)
        except ValueError:
            raise ScoreError(f"{where}: facing, top and bottom must be numbers (facing may be empty); "
                             f"got {facing!r}, {top!r}, {bottom!r}") from None
        if face is not None and (face % 45 or not 0 <= face < 360):
            raise ScoreError(f"{where}: facing {facing} is not one of 0, 45, ..., 315")
        if not 0.0 <= top_f < bottom_f <= 1.0:
            raise ScoreError(f"{where}: top {top} and bottom {bottom} must satisfy 0 <= top < bottom <= 1")
        if pose not in POSES:
            raise ScoreError(f"{where}: pose {pose!r} is not one of {', '.join(POSES)}")
        labels.append(Label(relpath, face, top_f, bottom_f, pose, notes))
    if not labels:
        raise ScoreError(f"labels file {path} has no rows")
    return labels


def yaw_difference(a: float, b: float) -> float:
    """Circular difference in degrees, 0…180 (350 vs 10 → 20)."""
    return abs((float(a) - float(b) + 180.0) % 360.0 - 180.0)


def body_mask(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > BODY_GREY


def body_extent(mask: np.ndarray):
    """(top, bottom) of the body rows as fractions of the map height, or None for an empty map."""
    rows = np.nonzero(mask.sum(1) >= MIN_ROW_PIXELS)[0]
    if len(rows) == 0:
        return None
    h = mask.shape[0]
    return rows[0] / h, (rows[-1] + 1) / h


# ---------------------------------------------------------------------------------------------
# Scoring


def score_one(label: Label, record: Optional[dict], root: Path, angles: Sequence[int]) -> dict:
    """Everything measured for one labelled crop."""
    out = {"relpath": label.relpath, "status": "missing" if record is None else str(record.get("status")),
           "yaw": None if record is None else record.get("yaw"), "label_facing": label.facing,
           "label_top": label.top, "label_bottom": label.bottom, "pose": label.pose,
           "facing_error": None, "facing_ok": None, "front_back": None, "top": None, "bottom": None,
           "extent_ok": False, "plausible": None, "empty_maps": [], "border_maps": [], "missing_maps": []}
    if record is None:  # counts as a failure everywhere
        if label.facing is not None:
            out.update(facing_ok=False, front_back=False, plausible=False)
        return out
    if out["yaw"] is not None and label.facing is not None:
        err = yaw_difference(out["yaw"], label.facing)
        out.update(facing_error=round(err, 2), facing_ok=bool(err <= FACING_TOL), front_back=bool(err >= FRONT_BACK))
    elif label.facing is not None:
        out.update(facing_ok=False, front_back=False)  # a record without a yaw cannot face right
    image = ImageRecord(path="", pid=-1, camid=-1, relpath=label.relpath, split=SPLIT)
    for angle in (0, *angles):
        path = structure_path(root, image, angle)
        if not path.is_file():
            out["missing_maps"].append(angle)
            continue
        mask = body_mask(path)
        if float(mask.mean()) < EMPTY_FRACTION:
            out["empty_maps"].append(angle)
        # Cut by the left/right border, or by the top/bottom one where the person does not reach it.
        cut = bool(max(mask[:, 0].sum(), mask[:, -1].sum()) >= BORDER_PIXELS)
        cut |= bool(mask[0].sum() >= BORDER_PIXELS) and label.top > BORDER_MARGIN
        cut |= bool(mask[-1].sum() >= BORDER_PIXELS) and label.bottom < 1.0 - BORDER_MARGIN
        if cut:
            out["border_maps"].append(angle)
        if angle == 0:
            extent = body_extent(mask)
            if extent is not None:
                top, bottom = extent
                ok = abs(top - label.top) <= EXTENT_TOL and abs(bottom - label.bottom) <= EXTENT_TOL
                out.update(top=round(float(top), 4), bottom=round(float(bottom), 4), extent_ok=bool(ok))
    if out["facing_ok"] is not None:
        out["plausible"] = bool(out["facing_ok"] and out["extent_ok"])
    return out


def summarise(rows: Sequence[dict]) -> dict:
    """Counts and rates of a group of per-crop rows."""
    n = len(rows)
    faced = [r for r in rows if r["facing_ok"] is not None]
    present = [r for r in rows if r["status"] != "missing"]
    errors = [r["facing_error"] for r in rows if r["facing_error"] is not None]
    top_err = [abs(r["top"] - r["label_top"]) for r in rows if r["top"] is not None]
    bottom_err = [abs(r["bottom"] - r["label_bottom"]) for r in rows if r["bottom"] is not None]

    def frac(k: int, d: int) -> dict:
        return {"count": k, "of": d, "rate": round(k / d, 4) if d else None}

    return {
        "images": n,
        "facing_ok": frac(sum(bool(r["facing_ok"]) for r in faced), len(faced)),
        "front_back": frac(sum(bool(r["front_back"]) for r in faced), len(faced)),
        "extent_ok": frac(sum(r["extent_ok"] for r in rows), n),
        "plausible": frac(sum(bool(r["plausible"]) for r in faced), len(faced)),
        "empty_maps": frac(sum(bool(r["empty_maps"]) for r in present), len(present)),
        "border": frac(sum(bool(r["border_maps"]) for r in present), len(present)),
        "border_0": frac(sum(0 in r["border_maps"] for r in present), len(present)),
        "border_rotated": frac(sum(any(a != 0 for a in r["border_maps"]) for r in present), len(present)),
        "missing": frac(sum(r["status"] == "missing" or bool(r["missing_maps"]) for r in rows), n),
        "facing_ok_by_label": {str(int(f)): frac(sum(bool(r["facing_ok"]) for r in faced if r["label_facing"] == f),
                                                sum(r["label_facing"] == f for r in faced))
                               for f in sorted({r["label_facing"] for r in faced})},
        "median_facing_error": round(float(np.median(errors)), 1) if errors else None,
        "median_top_error": round(float(np.median(top_err)), 3) if top_err else None,
        "median_bottom_error": round(float(np.median(bottom_err)), 3) if bottom_err else None,
    }


def badness(row: dict) -> tuple:
    """Sort key, worst first: missing, not plausible, then facing error and extent error."""
    extent_err = (abs(row["top"] - row["label_top"]) + abs(row["bottom"] - row["label_bottom"])
                  if row["top"] is not None else 2.0)
    return (row["status"] == "missing", not row["extent_ok"] or row["facing_ok"] is False,
            row["facing_error"] or 0.0, extent_err, bool(row["empty_maps"]))


def score(structures: os.PathLike, labels_path: os.PathLike = DEFAULT_LABELS, angles: Sequence[int] = ANGLES,
          worst: int = 12) -> dict:
    """Score the structures folder ``structures`` against the labels; returns a JSON-able report."""
    root = Path(structures)
    if not (root / RECORDS).is_file():
        raise ScoreError(f"{root / RECORDS} does not exist: --structures must be a folder written by "
                         "`gclreid structures` (with structures.jsonl and train/render…)")
    labels = read_labels(labels_path)
    records = read_records(root)
    rows = [score_one(lab, records.get((SPLIT, lab.relpath)), root, angles) for lab in labels]
    statuses = sorted({r["status"] for r in rows})
    ranked = sorted(rows, key=badness, reverse=True)
    return {"structures": str(root), "labels": str(labels_path), "angles": [0, *angles],
            "thresholds": {"facing_deg": FACING_TOL, "front_back_deg": FRONT_BACK, "extent": EXTENT_TOL,
                           "body_grey": BODY_GREY, "min_row_pixels": MIN_ROW_PIXELS, "empty_fraction": EMPTY_FRACTION,
                           "border_pixels": BORDER_PIXELS, "border_margin": BORDER_MARGIN},
            "overall": summarise(rows),
            "per_status": {s: summarise([r for r in rows if r["status"] == s]) for s in statuses},
            "worst": ranked[:worst], "images": rows}


# ---------------------------------------------------------------------------------------------
# Making structures for the labelled crops only


def make_structures(labels_path: os.PathLike, market_root: os.PathLike, out: os.PathLike, estimator: str,
                    pose_python: Optional[str] = None, workers: int = 1) -> None:
    """Run ``gclreid structures`` on the labelled crops only (symlinks + the ``folder`` dataset)."""
    from gclreid.data import build_dataset
    from gclreid.errors import GclreidError

    market_root = Path(market_root)
    if not market_root.is_dir():
        raise ScoreError(f"Market-1501 root {market_root} does not exist; give --root (the folder that holds "
                         "Market-1501-v15.09.15/ or bounding_box_train/)")
    try:
        train = {r.relpath: r.path for r in build_dataset("market1501", str(market_root)).train}
    except GclreidError as exc:
        raise ScoreError(f"--root {market_root}: {exc}") from None
    labels = read_labels(labels_path)
    absent = [lab.relpath for lab in labels if lab.relpath not in train]
    if absent:
        raise ScoreError(f"{len(absent)} labelled crops are not in the training split under {market_root}, "
                         f"e.g. {', '.join(absent[:3])}")
    tmp = Path(tempfile.mkdtemp(prefix="labelled_crops_"))
    try:
        (tmp / "train").mkdir()
        for lab in labels:  # links only: the images never leave the dataset folder
            os.symlink(os.path.abspath(train[lab.relpath]), tmp / "train" / lab.relpath)
        cmd = [sys.executable, "-m", "gclreid", "structures", "--dataset", "folder", "--root", str(tmp),
               "--out", str(out), "--estimator", estimator, "--split", "train", "--workers", str(workers),
               "--no-progress"]
        if pose_python:
            cmd += ["--pose-python", pose_python]
        print("running:", " ".join(cmd), file=sys.stderr)
        done = subprocess.run(cmd)
        if done.returncode != 0:
            raise ScoreError(f"gclreid structures failed (exit code {done.returncode})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Output


def _pct(entry: dict) -> str:
    if not entry["of"]:
        return "-"
    return f"{entry['count']}/{entry['of']} {100 * entry['rate']:.0f}%"


def format_report(report: dict) -> str:
    groups = [("all", report["overall"])] + list(report["per_status"].items())
    metrics = [("images", lambda s: str(s["images"])),
               ("facing within 45°", lambda s: _pct(s["facing_ok"])),
               ("front/back (≥135°)", lambda s: _pct(s["front_back"])),
               ("extent top+bottom ±0.10", lambda s: _pct(s["extent_ok"])),
               ("plausible (facing+extent)", lambda s: _pct(s["plausible"])),
               ("empty map at some angle", lambda s: _pct(s["empty_maps"])),
               ("body cut by a border", lambda s: _pct(s["border"])),
               ("  in the 0° map", lambda s: _pct(s["border_0"])),
               ("  in a rotated map", lambda s: _pct(s["border_rotated"])),
               ("missing record/maps", lambda s: _pct(s["missing"])),
               ("median facing error °", lambda s: str(s["median_facing_error"])),
               ("median |top error|", lambda s: str(s["median_top_error"])),
               ("median |bottom error|", lambda s: str(s["median_bottom_error"]))]
    cells = [[name] + [fn(s) for _, s in groups] for name, fn in metrics]
    head = ["metric"] + [g for g, _ in groups]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *cells)]
    line = lambda row: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                 for i, (c, w) in enumerate(zip(row, widths)))
    out = [f"structures: {report['structures']}", f"labels:     {report['labels']}", "", line(head),
           line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    by_label = report["overall"]["facing_ok_by_label"]
    out += ["", "facing within 45° by labelled facing (all): "
            + ", ".join(f"{f}°: {e['count']}/{e['of']}" for f, e in by_label.items())]
    if report["worst"]:
        out += ["", "worst cases (relpath, status, yaw vs label, top/bottom vs label, pose, flags):"]
    for r in report["worst"]:
        yaw = "-" if r["yaw"] is None else f"{r['yaw']:.0f}"
        face = "?" if r["label_facing"] is None else f"{r['label_facing']:.0f}"
        err = "" if r["facing_error"] is None else f" (err {r['facing_error']:.0f})"
        ext = ("no body" if r["top"] is None
               else f"{r['top']:.2f}/{r['bottom']:.2f} vs {r['label_top']:.2f}/{r['label_bottom']:.2f}")
        flags = []
        if r["empty_maps"]:
            flags.append("empty " + ",".join(map(str, r["empty_maps"])))
        if r["border_maps"]:
            flags.append("border " + ",".join(map(str, r["border_maps"])))
        if r["missing_maps"]:
            flags.append("missing " + ",".join(map(str, r["missing_maps"])))
        out.append(f"  {r['relpath']:<26} {r['status']:<9} yaw {yaw:>3} vs {face:>3}{err:<10} {ext:<24} "
                   f"{r['pose']:<8} {'; '.join(flags)}")
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Score structure maps of labelled Market-1501 crops.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--structures", help="an existing structures folder to score (structures.jsonl + train/render…)")
    ap.add_argument("--estimator", choices=("mediapipe", "fallback", "auto"),
                    help="first run `gclreid structures --estimator E` on the labelled crops into --out")
    ap.add_argument("--out", help="with --estimator: the structures folder to write (resumable)")
    ap.add_argument("--labels", default=str(DEFAULT_LABELS), help="labels CSV (default: %(default)s)")
    ap.add_argument("--root", default=str(DEFAULT_ROOT), help="Market-1501 root for --estimator (default: %(default)s)")
    ap.add_argument("--pose-python", help="with --estimator: Python with mediapipe (default $GCLREID_POSE_PYTHON)")
    ap.add_argument("--workers", type=int, default=1, help="with --estimator: worker processes (default 1)")
    ap.add_argument("--worst", type=int, default=12, help="how many worst cases to list (default 12)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    try:
        if args.estimator:
            if not args.out:
                ap.error("--estimator needs --out DIR")
            if args.structures and Path(args.structures) != Path(args.out):
                ap.error("give either --structures (score an existing folder) or --estimator with --out")
            make_structures(args.labels, args.root, args.out, args.estimator, args.pose_python, args.workers)
            folder = args.out
        elif args.structures:
            folder = args.structures
        else:
            ap.error("give --structures DIR, or --estimator E --out DIR")
        report = score(folder, args.labels, worst=args.worst)
    except ScoreError as exc:
        print(f"score_structures: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

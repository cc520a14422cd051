"""The resumable structure-map job: for every image, render 0° and the rotations, write them in the
GCL layout, and keep a per-image record.

Output folder (``out``)::

    train/render/<relpath>, train/render_<deg>/<relpath>, test/…   the maps (JPEG data, names kept)
    structures.jsonl      one JSON object per image: split, relpath, status, yaw, confidence, source
    structures_summary.json   counts, detection/fallback rates, throughput of the last run
    contact_sheet.png     a grid of images with their maps at every angle, status, yaw, quality

Resuming: an image whose maps (0° and every angle) all exist is skipped. Every map is written to a
temporary name and renamed, so an interrupted run never leaves a truncated file; records are
appended after the image's maps are written. An image found complete without a record (killed
between the two) gets the status ``existing``.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ..errors import DatasetError
from .layout import ANGLES, structure_path

RECORDS = "structures.jsonl"
SUMMARY = "structures_summary.json"
CONTACT_SHEET = "contact_sheet.png"
JPEG_QUALITY = 95


def _format(path: Path) -> str:
    return Image.registered_extensions().get(path.suffix.lower(), "PNG")


def save_map(array: np.ndarray, path: Path) -> None:
    """Write a grey uint8 map atomically, in the format its extension names (``.jpg`` → JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fmt = _format(path)
    kwargs = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {}
    Image.fromarray(np.ascontiguousarray(array)).save(tmp, format=fmt, **kwargs)
    os.replace(tmp, path)


def is_complete(out: os.PathLike, record, angles: Sequence[int]) -> bool:
    return all(structure_path(out, record, a).is_file() for a in (0, *angles))


def read_records(out: os.PathLike) -> Dict[Tuple[str, str], dict]:
    """The per-image records of ``out`` keyed by (split, relpath); later lines win."""
    path = Path(out) / RECORDS
    found: Dict[Tuple[str, str], dict] = {}
    if path.is_file():
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by an interruption
                found[(rec["split"], rec["relpath"])] = rec
    return found


# Worker-process state: the source is built once per process from its factory.
_SOURCE = None


def _init_worker(factory: Callable, threads: int) -> None:
    global _SOURCE
    import torch
    torch.set_num_threads(threads)
    _SOURCE = factory()


def _process(task) -> List[dict]:
    records, out, angles, height, width = task
    maps, infos = _SOURCE.render(records, angles, height, width)
    done = []
    for record, per_angle, info in zip(records, maps, infos):
        for angle, grey in zip((0, *angles), per_angle):
            save_map(grey, structure_path(out, record, angle))
        done.append({"split": record.split, "relpath": record.relpath, **info, "source": _SOURCE.name})
    return done


def _check_no_shared_map_paths(records: Sequence) -> None:
    """Query and gallery share the layout's ``test/`` folder: two different images with one relative
    path (a folder dataset whose query/ and gallery/ reuse a file name) would get one map."""
    seen: Dict[Path, object] = {}
    for r in records:
        target = structure_path(".", r, 0)
        first = seen.setdefault(target, r)
        if first is not r and os.path.abspath(first.path) != os.path.abspath(r.path):
            raise DatasetError(f"{first.path} and {r.path} would share one structure map ({target}): query and "
                               "gallery maps live together under test/, so their file names must differ")


def write_structures(records: Sequence, out: os.PathLike, source_factory: Callable, angles: Sequence[int] = ANGLES,
                     height: int = 128, width: int = 64, workers: int = 1, batch: int = 32, progress: bool = True,
                     contact_rows: int = 8, describe: Optional[str] = None) -> Dict:
    """Make the structure maps of ``records`` in ``out`` with the source built by ``source_factory``.

    ``source_factory`` is a picklable callable returning a source (it runs in each worker).
    Returns the run's summary (also written to ``structures_summary.json``).
    """
    global _SOURCE
    out = Path(out)
    _check_no_shared_map_paths(records)
    out.mkdir(parents=True, exist_ok=True)
    angles = tuple(angles)
    known = read_records(out)
    todo, skipped = [], 0
    missing_records = []
    for r in records:
        if is_complete(out, r, angles):
            skipped += 1
            if (r.split, r.relpath) not in known:
                missing_records.append({"split": r.split, "relpath": r.relpath, "status": "existing",
                                        "yaw": None, "confidence": None, "source": "existing"})
        else:
            todo.append(r)
    tasks = [(todo[i:i + batch], str(out), angles, height, width) for i in range(0, len(todo), batch)]
    counts: Counter = Counter()
    reasons: Counter = Counter()
    start = time.perf_counter()
    from ..progress import Progress
    bar = Progress(len(todo), desc="structures", unit="images", enabled=progress and bool(todo))
    source_name = None
    with open(out / RECORDS, "a", encoding="utf-8") as fh:
        for rec in missing_records:
            fh.write(json.dumps(rec) + "\n")
        results: Iterable[List[dict]]
        pool = None
        if workers > 1 and len(tasks) > 1:
            import multiprocessing as mp
            pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(source_factory, 1))
            results = pool.imap(_process, tasks)
        else:
            import torch
            _init_worker(source_factory, torch.get_num_threads())
            results = map(_process, tasks)
        try:
            for done in results:
                for rec in done:
                    fh.write(json.dumps(rec) + "\n")
                    counts[rec["status"]] += 1
                    if rec.get("reason") is not None:
                        reasons[str(rec["reason"])] += 1
                    source_name = rec["source"]
                fh.flush()
                bar.update(len(done))
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
            elif _SOURCE is not None:
                _SOURCE.close()
                _SOURCE = None
            bar.close()
    seconds = time.perf_counter() - start
    processed = sum(counts.values())
    summary = {
        "out": str(out), "source": source_name, "estimator": describe, "images": len(records), "processed": processed,
        "skipped": skipped, "counts": dict(counts), "reasons": dict(reasons.most_common()),
        "detection_rate": counts["detected"] / processed if processed else None,
        "fallback_rate": counts["fallback"] / processed if processed else None,
        "seconds": round(seconds, 3), "images_per_second": processed / seconds if processed and seconds > 0 else None,
        "angles": list(angles), "height": height, "width": width, "workers": workers,
    }
    if contact_rows:
        summary["contact_sheet"] = write_contact_sheet(out, records, angles, rows=contact_rows)
    with open(out / SUMMARY, "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=1)
    return summary


CONTACT_COLUMNS = 4


def _caption(rec: dict) -> List[str]:
    status = rec.get("status", "?")
    parts = [status]
    if rec.get("yaw") is not None:
        parts.append(f"yaw {rec['yaw']:.0f}")
    conf = rec.get("quality", rec.get("confidence"))
    if conf is not None:
        parts.append(f"q {conf:.2f}")
    if rec.get("pose"):
        parts.append(str(rec["pose"]))
    lines = ["  ".join(parts)]
    if rec.get("reason") and rec.get("reason") != "ok":
        lines.append(str(rec["reason"])[:40])
    return lines


def write_contact_sheet(out: os.PathLike, records: Sequence, angles: Sequence[int] = ANGLES, rows: int = 8,
                        height: int = 128, width: int = 64, path: Optional[os.PathLike] = None,
                        columns: int = CONTACT_COLUMNS) -> Optional[str]:
    """A PNG grid of up to ``rows`` × ``columns`` images (spread over the list).

    Each cell: the image, the 0° map laid over it, and the maps at 0° and every angle at half size,
    with the file name and, from ``structures.jsonl``, status, yaw, quality (or confidence), pose
    and the reason of a fallback or a flagged estimate written under it.
    """
    out = Path(out)
    chosen = [r for r in records if is_complete(out, r, angles)]
    if not chosen:
        return None
    want = max(1, rows * columns)
    step = max(1, len(chosen) // want)
    chosen = chosen[::step][:want]
    known = read_records(out)
    pad, text_h = 4, 36
    all_angles = (0, *angles)
    per_row = (len(all_angles) + 1) // 2
    th, tw = height // 2, width // 2
    cell_w = 2 * width + per_row * tw + 3 * pad
    cell_h = height + text_h
    cols = min(columns, len(chosen))
    nrows = (len(chosen) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cell_w + pad, nrows * (cell_h + pad) + pad), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for i, record in enumerate(chosen):
        x = pad + (i % cols) * cell_w
        y = pad + (i // cols) * (cell_h + pad)
        image = Image.open(record.path).convert("RGB").resize((width, height), Image.BILINEAR)
        maps = [Image.open(structure_path(out, record, a)).convert("L").resize((width, height), Image.BILINEAR)
                for a in all_angles]
        overlay = np.asarray(image, dtype=np.float32).copy()
        body = np.asarray(maps[0]) > 20
        overlay[body] = 0.55 * overlay[body] + 0.45 * np.array([255.0, 0.0, 255.0])
        sheet.paste(image, (x, y))
        sheet.paste(Image.fromarray(overlay.astype(np.uint8)), (x + width + pad, y))
        for k, (angle, grey) in enumerate(zip(all_angles, maps)):
            tx = x + 2 * (width + pad) + (k % per_row) * tw
            ty = y + (k // per_row) * th
            sheet.paste(grey.resize((tw, th), Image.BILINEAR).convert("RGB"), (tx, ty))
            draw.text((tx + 1, ty), str(angle), fill=(90, 200, 255))
        rec = known.get((record.split, record.relpath), {})
        lines = [record.relpath[-34:]] + _caption(rec)
        colour = (200, 200, 120) if rec.get("status") in ("detected", "truth", "smpl") else (255, 150, 100)
        for j, line in enumerate(lines[:3]):
            draw.text((x + 1, y + height + 1 + 11 * j), line, fill=(220, 220, 220) if j == 0 else colour)
    target = Path(path) if path is not None else out / CONTACT_SHEET
    sheet.save(target)
    return str(target)

"""The resumable structure-map job: for every image, render 0° and the rotations, write them in the
GCL layout, and keep a per-image record.

Output folder (``out``)::

    train/render/<relpath>, train/render_<deg>/<relpath>, test/…   the maps (JPEG data, names kept)
    structures.jsonl      one JSON object per image: split, relpath, status, yaw, confidence, source
    structures_summary.json   counts, detection/fallback rates, throughput of the last run
    contact_sheet.png     a few images next to their maps at every angle

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


def write_structures(records: Sequence, out: os.PathLike, source_factory: Callable, angles: Sequence[int] = ANGLES,
                     height: int = 128, width: int = 64, workers: int = 1, batch: int = 32, progress: bool = True,
                     contact_rows: int = 8) -> Dict:
    """Make the structure maps of ``records`` in ``out`` with the source built by ``source_factory``.

    ``source_factory`` is a picklable callable returning a source (it runs in each worker).
    Returns the run's summary (also written to ``structures_summary.json``).
    """
    global _SOURCE
    out = Path(out)
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
        "out": str(out), "source": source_name, "images": len(records), "processed": processed,
        "skipped": skipped, "counts": dict(counts),
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


def write_contact_sheet(out: os.PathLike, records: Sequence, angles: Sequence[int] = ANGLES, rows: int = 8,
                        height: int = 128, width: int = 64, path: Optional[os.PathLike] = None) -> Optional[str]:
    """A PNG of up to ``rows`` images (spread over the list) next to their maps at 0° and each angle."""
    out = Path(out)
    chosen = [r for r in records if is_complete(out, r, angles)]
    if not chosen:
        return None
    step = max(1, len(chosen) // rows)
    chosen = chosen[::step][:rows]
    known = read_records(out)
    label_h, pad = 14, 2
    cols = 1 + 1 + len(angles)
    sheet = Image.new("RGB", (cols * (width + pad) + pad, label_h + len(chosen) * (height + label_h + pad)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for c, text in enumerate(["image", "0", *[str(a) for a in angles]]):
        draw.text((pad + c * (width + pad) + 2, 1), text, fill=(220, 220, 220))
    for i, record in enumerate(chosen):
        y = label_h + i * (height + label_h + pad)
        tiles = [Image.open(record.path).convert("RGB")]
        tiles += [Image.open(structure_path(out, record, a)).convert("RGB") for a in (0, *angles)]
        for c, tile in enumerate(tiles):
            sheet.paste(tile.resize((width, height), Image.BILINEAR), (pad + c * (width + pad), y))
        rec = known.get((record.split, record.relpath), {})
        yaw = rec.get("yaw")
        caption = f"{record.relpath[:28]}  {rec.get('status', '?')}" + (f" yaw {yaw:.0f}" if yaw is not None else "")
        draw.text((pad + 2, y + height + 1), caption, fill=(200, 200, 120))
    target = Path(path) if path is not None else out / CONTACT_SHEET
    sheet.save(target)
    return str(target)

"""Images for a person to look at: generated views next to their inputs (:func:`save_image_grid`), and
ranked lists — a query and its nearest gallery images framed by whether they match
(:func:`save_ranked_list`)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import torch
from PIL import Image, ImageDraw


def _to_image(x: torch.Tensor) -> Image.Image:
    """C×H×W → PIL. 3 channels: ImageNet-normalised image; 1 channel: a structure map in [−1, 1]."""
    from ..data import tensor_to_pil
    return tensor_to_pil(x) if x.shape[0] == 3 else tensor_to_pil((x + 1) / 2, normalized=False)


def save_image_grid(columns: Sequence[torch.Tensor], titles: Sequence[str], path: os.PathLike, pad: int = 2) -> Path:
    """One row per sample, one column per tensor in `columns` (each B×C×H×W, same H×W), with titles."""
    if len(columns) != len(titles) or not columns:
        raise ValueError("save_image_grid needs one title per column")
    b, _, h, w = columns[0].shape
    title_h = 12
    grid = Image.new("RGB", (len(columns) * (w + pad) + pad, title_h + b * (h + pad) + pad), (24, 24, 24))
    draw = ImageDraw.Draw(grid)
    for c, (images, title) in enumerate(zip(columns, titles)):
        x0 = pad + c * (w + pad)
        draw.text((x0, 0), title[: max(1, w // 6)], fill=(230, 230, 120))
        for r in range(b):
            grid.paste(_to_image(images[r]), (x0, title_h + pad + r * (h + pad)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


# --------------------------------------------------------------------------------------------------
# Ranked lists: a query and its nearest gallery images, framed by whether they match.

#: Frame colours of a ranked-list picture: ``match`` same identity (a true match under the protocol),
#: ``false`` another identity (distractors included), ``junk`` same identity *and* camera (ignored by
#: the protocol), ``unknown`` no labels to judge by (``gclreid search``), ``query`` the query itself.
RANK_COLOURS = {"match": (0, 200, 0), "false": (230, 0, 0), "junk": (150, 150, 150),
                "unknown": (235, 235, 235), "query": (40, 110, 255)}
_BACKGROUND = (24, 24, 24)
_FRAME, _PAD, _QUERY_GAP, _TITLE_H, _TEXT_H = 4, 6, 16, 16, 26


@dataclass
class RankedImage:
    """One cell of a ranked-list picture: ``image`` (a file path, a PIL image, or None for a blank),
    up to two short text ``lines`` drawn under it, and its ``status`` (a key of :data:`RANK_COLOURS`)."""
    image: Union[str, os.PathLike, Image.Image, None]
    lines: Sequence[str] = ()
    status: str = "unknown"


def ranked_list_boxes(num_gallery: int, cell_height: int = 128, cell_width: int = 64) -> List[Tuple[int, int, int, int]]:
    """Frame boxes ``(x0, y0, x1, y1)`` (x1, y1 exclusive) of a ranked-list picture: the query first, then
    gallery ranks 1…`num_gallery`. A frame is :data:`_FRAME` (4) pixels wide; the image fills the rest."""
    w, h = cell_width + 2 * _FRAME, cell_height + 2 * _FRAME
    boxes = []
    for i in range(num_gallery + 1):
        x0 = _PAD + i * (w + _PAD) + (_QUERY_GAP if i else 0)
        boxes.append((x0, _TITLE_H + _PAD, x0 + w, _TITLE_H + _PAD + h))
    return boxes


def save_ranked_list(query: RankedImage, gallery: Sequence[RankedImage], path: os.PathLike, title: str = "",
                     cell_height: int = 128, cell_width: int = 64) -> Path:
    """Draw a query and its ranked gallery images in one row and save it as PNG (lossless, so the frame
    colours can be read back). Each image is resized to `cell_height` × `cell_width`, framed in its
    status colour, with its text lines underneath. A gallery image that cannot be read becomes a grey
    cell saying so (a picture is never the reason a command fails)."""
    from ..data import load_image
    from ..errors import GclreidError

    boxes = ranked_list_boxes(len(gallery), cell_height, cell_width)
    width = boxes[-1][2] + _PAD
    height = boxes[0][3] + _TEXT_H + _PAD
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((_PAD, 2), title[: max(8, width // 6)], fill=(230, 230, 120))
    for cell, box in zip([query, *gallery], boxes):
        if cell.status not in RANK_COLOURS:
            raise ValueError(f"unknown ranked-list status {cell.status!r}; expected one of {sorted(RANK_COLOURS)}")
        draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=RANK_COLOURS[cell.status])
        image, note = cell.image, ""
        if image is not None and not isinstance(image, Image.Image):
            try:
                image = load_image(image)
            except GclreidError:
                image, note = None, "unreadable"
        if image is None:
            image = Image.new("RGB", (cell_width, cell_height), (80, 80, 80))
            if note:
                ImageDraw.Draw(image).text((2, cell_height // 2 - 6), note, fill=(240, 240, 240))
        canvas.paste(image.convert("RGB").resize((cell_width, cell_height), Image.BILINEAR),
                     (box[0] + _FRAME, box[1] + _FRAME))
        for j, line in enumerate(list(cell.lines)[:2]):
            draw.text((box[0], box[3] + 2 + 12 * j), str(line)[: max(4, (cell_width + 2 * _FRAME) // 6)],
                      fill=(230, 230, 230))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def rank_status(query_pid, query_camid, gallery_pid, gallery_camid) -> str:
    """``match``, ``junk`` or ``false`` for one gallery entry, as the evaluation protocol sees it
    (:func:`gclreid.evaluation.evaluate_ranking`): same identity and camera is junk (left out of the
    ranking), same identity from another camera a true match, anything else (distractors too) false.
    A negative camid is an unknown camera, never the same camera as another entry."""
    if gallery_pid != query_pid:
        return "false"
    unknown = isinstance(query_camid, (int, float)) and query_camid < 0
    return "junk" if gallery_camid == query_camid and not unknown else "match"


def save_ranked_queries(distmat, query_records: Sequence, gallery_records: Sequence, out: os.PathLike,
                        num_queries: int, top: int = 10, cell_height: int = 128, cell_width: int = 64) -> List[dict]:
    """Ranked-list pictures of `num_queries` queries spread evenly over the query list (the first, the
    last and equal steps between; all when there are fewer), one PNG per query in `out`, plus
    ``out/index.json`` listing for each picture the query and its `top` gallery entries (path, pid,
    camid, distance, status). The ranking is the protocol's (ascending distance, ties by gallery index)
    *before* junk is removed, so junk entries appear, framed grey. `distmat` is the (num_query,
    num_gallery) matrix that was evaluated (numpy or torch); the records are the images of its rows and
    columns. Returns the index entries."""
    import json

    import numpy as np

    out = Path(out)
    num_q, num_g = len(query_records), len(gallery_records)
    if num_queries < 1 or top < 1:
        raise ValueError(f"num_queries={num_queries} and top={top} must be >= 1")
    chosen = sorted({int(round(x)) for x in np.linspace(0, num_q - 1, min(num_queries, num_q))})
    top = min(top, num_g)
    entries = []
    for qi in chosen:
        row = distmat[qi]
        row = row.detach().cpu().numpy() if isinstance(row, torch.Tensor) else np.asarray(row)
        order = np.argsort(row, kind="stable")[:top]
        q = query_records[qi]
        ranked = []
        for rank, gi in enumerate(order, 1):
            g = gallery_records[int(gi)]
            ranked.append({"rank": rank, "path": g.path, "pid": int(g.pid), "camid": int(g.camid),
                           "distance": float(row[gi]), "status": "junk" if g.path == q.path else rank_status(q.pid, q.camid, g.pid, g.camid)})
        stem = Path(q.relpath).stem.replace(os.sep, "_")
        name = f"q{qi:05d}_{stem}.png"
        save_ranked_list(
            RankedImage(q.path, ["query", f"id {q.pid} c{q.camid}"], "query"),
            [RankedImage(r["path"], [f"#{r['rank']}  d {r['distance']:.3f}", f"id {r['pid']} c{r['camid']}"], r["status"])
             for r in ranked],
            out / name, title=f"{q.relpath}: top {top}; green same id, red other id, grey junk (same id+camera)",
            cell_height=cell_height, cell_width=cell_width)
        entries.append({"query_index": qi, "query": q.path, "pid": int(q.pid), "camid": int(q.camid),
                        "picture": name, "ranked": ranked})
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.json").write_text(json.dumps({"top": top, "colours": RANK_COLOURS, "queries": entries}, indent=2))
    return entries

"""Contact sheet: a PNG grid of a few SynthReID people across cameras, with the structure maps of
one image at all 8 angles and its 7 true novel views, so a person can see what was generated."""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Dict, List, Optional

from PIL import Image, ImageDraw

from .writer import CONTACT_SHEET


def write_contact_sheet(out: str, meta: dict, rows: int = 6, path: Optional[str] = None) -> str:
    """Write the sheet for the dataset in ``out`` (``meta`` = its synthreid.json); returns the path."""
    cfg = meta["settings"]
    h, w = cfg["height"], cfg["width"]
    angles = [0, *cfg["angles"]]
    by_pid: Dict[int, List[dict]] = defaultdict(list)
    for rec in meta["images"]:
        if rec["pid"] > 0:
            by_pid[rec["pid"]].append(rec)
    # People seen by the most cameras first (ties: smaller pid), alternating train and test.
    ranked = sorted(by_pid, key=lambda p: (-len({r["camid"] for r in by_pid[p]}), p))
    chosen = ranked[:rows]
    cams = list(range(1, len(meta["cameras"]) + 1))
    gap, label_h = 6, 14
    cols = len(cams) + len(angles) + (len(angles) - 1 if cfg.get("views", True) else 0)
    sheet_w = cols * (w + 2) + 2 * gap + 4
    sheet = Image.new("RGB", (sheet_w, label_h + len(chosen) * (h + label_h + 4) + 4), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    x_struct = len(cams) * (w + 2) + gap
    x_views = x_struct + len(angles) * (w + 2) + gap
    draw.text((2, 1), "cameras", fill=(220, 220, 220))
    draw.text((x_struct, 1), "structure maps 0..315 deg", fill=(220, 220, 220))
    if cfg.get("views", True):
        draw.text((x_views, 1), "true views 45..315 deg", fill=(220, 220, 220))
    for r, pid in enumerate(chosen):
        y = label_h + r * (h + label_h + 4)
        recs = by_pid[pid]
        first = {}
        for rec in recs:
            first.setdefault(rec["camid"], rec)
        ref = first[min(first)]
        draw.text((2, y), f"pid {pid:04d} ({recs[0]['split'] if recs[0]['split'] == 'train' else 'test'})",
                  fill=(200, 200, 200))
        y += label_h - 2
        for i, cam in enumerate(cams):
            if cam in first:
                rec = first[cam]
                img = Image.open(os.path.join(out, rec["file"])).convert("RGB")
                sheet.paste(img, (i * (w + 2), y))
                draw.text((i * (w + 2) + 2, y + h - 11), f"c{cam} {rec['yaw']:.0f}", fill=(255, 255, 0))
        name = os.path.basename(ref["file"])
        split = ref["structure_split"]
        for j, angle in enumerate(angles):
            sub = "render" if angle == 0 else f"render_{angle}"
            img = Image.open(os.path.join(out, "structures", split, sub, name)).convert("RGB")
            sheet.paste(img, (x_struct + j * (w + 2), y))
            if cfg.get("views", True) and angle:
                view = Image.open(os.path.join(out, "views", split, f"view_{angle}", name)).convert("RGB")
                sheet.paste(view, (x_views + (j - 1) * (w + 2), y))
    path = path or os.path.join(out, CONTACT_SHEET)
    sheet.save(path)
    return path

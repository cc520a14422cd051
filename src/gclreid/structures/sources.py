"""Where structure maps come from: a source turns a batch of image records into grey maps at 0° and
at every requested angle, plus one record per image (status, yaw, confidence).

* :class:`EstimateSource` — estimate the body from the image (MediaPipe Pose when an interpreter
  with mediapipe is available, checked, with the silhouette fallback for what it misses or
  rejects; or the fallback alone) and render it, turned views kept inside the frame.
* :class:`SynthSource` — SynthReID ground truth, re-rendered from ``synthreid.json`` (identity shape
  and gait, per-image yaw, phase, elevation and framing) with the same body model and renderer.
* :class:`gclreid.structures.smpl.SmplSource` — per-image SMPL parameters + a user-supplied SMPL model
  file, posed and rasterised here (no smplx, no mesh renderer).
* :func:`validate_precomputed` — check a released GCL mesh folder (or this project's own output).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data.images import load_image
from ..errors import DatasetError, GclreidError
from .estimate import Estimate, bodies_and_cameras, estimate_fallback, render_turned
from .layout import missing_structures, structure_path

SOURCES: Tuple[str, ...] = ("estimate", "smpl", "synth", "precomputed")


def render_estimates(estimates: Sequence[Estimate], angles: Sequence[int], height: int, width: int) -> np.ndarray:
    """uint8 [N, 1 + len(angles), H, W]: each estimated body at 0° and turned by each angle, every
    turned view kept inside the frame (:func:`gclreid.structures.estimate.turned_cameras`)."""
    bodies, camera = bodies_and_cameras(estimates, height, width)
    return render_turned(bodies, camera, (0, *angles), height, width).numpy()


class EstimateSource:
    """Estimate the body from each image. ``estimator``: ``fallback`` (no extra dependency),
    ``mediapipe`` (needs an interpreter with mediapipe; the fallback for images where nobody is
    detected or the checks fail) or ``auto`` (MediaPipe when an interpreter is found and starts,
    else the fallback). :attr:`description` says which one runs and why, in one line."""

    name = "estimate"

    def __init__(self, estimator: str = "auto", pose_python: Optional[str] = None,
                 min_detection_confidence: float = 0.1) -> None:
        if estimator not in ("auto", "fallback", "mediapipe"):
            raise GclreidError(f"structures: estimator {estimator!r} is unknown; expected auto, fallback or mediapipe")
        self.pose = None
        why = "asked for (--estimator fallback)"
        if estimator != "fallback":
            from .mediapipe_pose import POSE_HELP, MediaPipeEstimator, find_pose_python
            python = pose_python or find_pose_python()
            problem = None
            if python is None:
                problem = "no Python with MediaPipe was found"
            elif os.sep in python and not os.path.isfile(python):
                problem = f"the MediaPipe Python {python} does not exist"
            else:
                try:
                    self.pose = MediaPipeEstimator(python, min_detection_confidence=min_detection_confidence)
                except (GclreidError, OSError) as exc:
                    problem = f"MediaPipe did not start with {python} ({getattr(exc, 'short', exc)})"
            if problem is not None:
                if estimator == "mediapipe":
                    raise GclreidError(f"structures: --estimator mediapipe: {problem}; {POSE_HELP}, "
                                       "or use --estimator fallback")
                why = f"auto: {problem}, so every image gets the silhouette fallback; for MediaPipe, {POSE_HELP}"
        self.estimator = "mediapipe" if self.pose is not None else "fallback"
        if self.pose is not None:
            self.description = (f"estimator mediapipe (MediaPipe {self.pose.version} with {self.pose.python}; "
                                "images it misses or whose checks fail get the silhouette fallback)")
        else:
            self.description = f"estimator fallback ({why})"

    def estimate(self, images: Sequence) -> List[Estimate]:
        if self.pose is None:
            return [estimate_fallback(im) for im in images]
        found = self.pose.estimate(images)
        out = []
        for e, im in zip(found, images):
            if isinstance(e, Estimate):
                out.append(e)
                continue
            fb = estimate_fallback(im, hints=e)
            fb.reason = f"{getattr(e, 'reason', None) or 'no_person'}:{fb.reason}"
            out.append(fb)
        return out

    def render(self, records: Sequence, angles: Sequence[int], height: int, width: int) -> Tuple[np.ndarray, List[dict]]:
        images = [load_image(r.path) for r in records]
        estimates = self.estimate(images)
        return render_estimates(estimates, angles, height, width), [e.record() for e in estimates]

    def close(self) -> None:
        if self.pose is not None:
            self.pose.close()


class SynthSource:
    """SynthReID ground truth, re-rendered from ``<root>/synthreid.json``.

    Re-rendering (rather than copying ``<root>/structures``) works at any map size and angle set
    and reproduces the generator's own maps exactly (same bodies, cameras and renderer).
    """

    name = "synth"

    def __init__(self, root: os.PathLike) -> None:
        path = Path(root) / "synthreid.json"
        if not path.is_file():
            raise DatasetError(f"structures --source synth: {path} does not exist; the root must be a folder "
                               "written by `gclreid synth`")
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh)
        self.identities = meta["identities"]
        self.images = {(m["split"], os.path.basename(m["file"])): m for m in meta["images"]}

    def lookup(self, record) -> dict:
        entry = self.images.get((record.split, record.relpath))
        if entry is None:
            raise DatasetError(f"structures --source synth: image {record.path} ({record.split}/{record.relpath}) "
                               "is not in synthreid.json")
        return entry

    def render(self, records: Sequence, angles: Sequence[int], height: int, width: int) -> Tuple[np.ndarray, List[dict]]:
        from ..synth.clothing import Outfit
        from ..synth.identity import identity_from_dict
        from ..synth.scene import Shot, dress, frame_shots, make_bodies, render_structures
        entries = [self.lookup(r) for r in records]
        people = [identity_from_dict(self.identities[str(e["person"])]) for e in entries]
        shots = [Shot(**e["shot"]) for e in entries]
        base = make_bodies(people, shots)
        body_seg = dress(base, Outfit.from_identities(people)).body
        camera = frame_shots(body_seg, base.yaw, shots, height, width)
        all_angles = (0, *angles)
        k, n = len(all_angles), len(records)
        rep = torch.arange(n).repeat(k)
        yaw = base.yaw[rep] + torch.tensor(all_angles, dtype=torch.float32).repeat_interleave(n)
        grey = render_structures(body_seg.select(rep), yaw, camera.select(rep), height, width)
        maps = grey.view(k, n, height, width).transpose(0, 1).numpy()
        infos = [{"status": "truth", "yaw": round(float(e["yaw"]) % 360.0, 2), "confidence": 1.0} for e in entries]
        return maps, infos

    def close(self) -> None:
        pass


def make_source(name: str, root: Optional[os.PathLike] = None, **options):
    """A source by name (``estimate``, ``synth``, ``smpl``); ``precomputed`` has no renderer."""
    if name == "estimate":
        return EstimateSource(options.get("estimator", "auto"), options.get("pose_python"),
                              options.get("min_detection_confidence", 0.1))
    if name == "synth":
        return SynthSource(root)
    if name == "smpl":
        if not options.get("smpl_params") or not options.get("smpl_model"):
            raise GclreidError("structures --source smpl needs --smpl-params FILE.npz and --smpl-model FILE (.pkl/.npz)")
        from .smpl import SmplSource
        return SmplSource(options["smpl_model"], options["smpl_params"], options.get("smpl_missing") or "error")
    raise GclreidError(f"structures: unknown source {name!r}; expected one of {', '.join(SOURCES)}")


def validate_precomputed(root: os.PathLike, records: Sequence, angles: Sequence[int], sample: int = 20) -> Dict:
    """Check that ``root`` (a released GCL mesh folder or this project's output) has a map for every
    record at 0° and every angle; decode a sample of them. Returns a report dict with ``ok``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"structures --source precomputed: {root} is not a folder; expected the structure root "
                           "that holds train/render/… and test/render/…")
    missing = missing_structures(root, records, angles)
    per_angle: Dict[str, int] = {}
    images_missing = set()
    for record, path in missing:
        folder = "/".join(path.relative_to(root).parts[:2])  # e.g. train/render_90
        per_angle[folder] = per_angle.get(folder, 0) + 1
        images_missing.add((record.split, record.relpath))
    bad: List[str] = []
    present = [r for r in records if (r.split, r.relpath) not in images_missing]
    step = max(1, len(present) // max(sample, 1))
    from PIL import Image
    for record in present[::step][:sample]:
        path = structure_path(root, record, 0)
        try:
            with Image.open(path) as im:
                im.load()
                w, h = im.size
            if not 1.5 <= h / max(w, 1) <= 2.5:
                bad.append(f"{path}: size {w}x{h} is not about 2:1")
        except OSError as exc:
            bad.append(f"{path}: does not decode ({exc})")
    return {"root": str(root), "images": len(records), "complete": len(records) - len(images_missing),
            "images_missing": len(images_missing), "files_missing": len(missing), "missing_per_folder": per_angle,
            "first_missing": [str(p) for _, p in missing[:5]], "bad_files": bad,
            "ok": not missing and not bad}

"""Planning and writing a SynthReID dataset (Market-1501 layout plus ground truth).

Layout under the output folder::

    bounding_box_train/0002_c1s1_000451_01.jpg      training images
    query/  bounding_box_test/                       one query per (test identity, camera); gallery
    structures/<train|test>/render/<name>            grey structure map, original view (0°)
    structures/<train|test>/render_<deg>/<name>      the body turned by deg (45…315)
    views/<train|test>/view_<deg>/<name>             true colour novel view (same shot, person turned)
    synthreid.json                                   settings, cameras, identities, per-image truth
    contact_sheet.png                                a few people across cameras + structure maps

Determinism: the plan (identities, images, shots) comes from seeded numpy streams keyed by what
they describe; images are rendered in fixed chunks of ``config.chunk``, whatever the number of
workers, and every pixel operation is exact IEEE arithmetic, so a seed gives byte-identical files.
"""
from __future__ import annotations

import functools
import json
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from ..errors import GclreidError
from .cameras import CameraProfile, make_background, sample_cameras, sample_yaw
from .clothing import Outfit
from .identity import Identity, sample_identity
from .presets import SynthConfig
from .scene import Shot, compose, dress, frame_shots, make_bodies, noise_field, render_people, render_structures

METADATA = "synthreid.json"
CONTACT_SHEET = "contact_sheet.png"
INCOMPLETE = ".synthreid-incomplete"
SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
# Everything this generator writes (and, with overwrite, removes first).
OUTPUTS = (*SPLIT_DIRS.values(), "structures", "views", METADATA, CONTACT_SHEET, INCOMPLETE)
DISTRACTOR_BASE = 10000   # identity-stream index of distractor k is DISTRACTOR_BASE + k
STRUCTURE_JPEG_QUALITY = 95
FORMAT_VERSION = 1


@dataclass
class ImageSpec:
    """One image of the plan."""
    index: int
    split: str        # train | query | gallery
    pid: int          # 0 for distractors
    person: int       # identity stream index (= pid, or DISTRACTOR_BASE + k)
    cam: int          # 1-based
    frame: int
    shot: Shot

    @property
    def name(self) -> str:
        return f"{self.pid:04d}_c{self.cam}s1_{self.frame:06d}_01.jpg"

    @property
    def folder(self) -> str:
        return SPLIT_DIRS[self.split]

    @property
    def structure_split(self) -> str:
        return "train" if self.split == "train" else "test"


@dataclass
class Plan:
    config: SynthConfig
    cameras: List[CameraProfile]
    train_pids: List[int]
    test_pids: List[int]
    images: List[ImageSpec]


def _counts(rng: np.random.Generator, cams: int, min_cams: int, mean: float, per_cam: int) -> Dict[int, int]:
    """Images per camera for one identity: a random camera subset, at least ``per_cam`` in each."""
    k = int(rng.integers(min_cams, cams + 1))
    chosen = sorted(int(c) + 1 for c in rng.choice(cams, size=k, replace=False))
    total = max(k * per_cam, int(rng.poisson(mean)))
    counts = {c: per_cam for c in chosen}
    extra = rng.multinomial(total - k * per_cam, np.full(k, 1.0 / k))
    for c, e in zip(chosen, extra):
        counts[c] += int(e)
    return counts


def _shot(seed: int, index: int, prof: CameraProfile) -> Shot:
    rng = np.random.default_rng([int(seed), 0x1A, int(index)])
    occluder = None
    if rng.random() < prof.occlusion:
        kind = str(rng.choice(["pole", "bottom", "side"], p=[0.35, 0.45, 0.2]))
        size = {"pole": rng.uniform(0.06, 0.14), "bottom": rng.uniform(0.12, 0.3), "side": rng.uniform(0.18, 0.32)}[kind]
        occluder = {"kind": kind, "x": float(rng.uniform(0.0, 0.9)), "size": float(size),
                    "top": float(rng.uniform(0.1, 0.5)),
                    "color": [float(x) for x in rng.uniform(0.1, 0.7, size=3)], "seed": int(rng.integers(2 ** 31))}
    standing = rng.random() < 0.08
    lo, hi = prof.elevation
    return Shot(yaw=round(sample_yaw(prof, rng), 3), phase=round(float(rng.random()), 4),
                elevation=round(float(rng.uniform(lo, hi)), 3),
                fill=round(float(np.clip(rng.normal(prof.fill, 0.03), 0.7, 0.96)), 4),
                shift_x=round(float(np.clip(rng.normal(0, 0.035), -0.1, 0.1)), 4),
                shift_y=round(float(np.clip(rng.normal(0, 0.02), -0.05, 0.05)), 4),
                bg_offset=round(float(rng.random()), 4),
                blur=round(float(max(0.0, prof.blur + rng.normal(0, 0.15))), 3),
                noise_seed=int(rng.integers(2 ** 31)),
                stride_scale=round(float(0.15 if standing else rng.uniform(0.7, 1.15)), 3),
                occluder=occluder)


def make_plan(config: SynthConfig) -> Plan:
    """Identities, camera profiles and every image (split, camera, frame, shot) for ``config``."""
    cfg = config.validate()
    seed = cfg.seed
    cameras = sample_cameras(seed, cfg.cams)
    total = cfg.train_ids + cfg.test_ids
    pids = np.random.default_rng([seed, 0x9A]).permutation(np.arange(1, total + 1))
    train = sorted(int(p) for p in pids[: cfg.train_ids])
    test = sorted(int(p) for p in pids[cfg.train_ids:])
    raw: List[Tuple[str, int, int, int]] = []   # split, pid, person, cam
    for pid in train:
        counts = _counts(np.random.default_rng([seed, 0x1B, pid]), cfg.cams, cfg.min_cams_per_id,
                         cfg.train_images_per_id, 1)
        raw += [("train", pid, pid, c) for c, n in counts.items() for _ in range(n)]
    for pid in test:
        # Two or more images per camera: one query, the rest in the gallery.
        counts = _counts(np.random.default_rng([seed, 0x1B, pid]), cfg.cams, max(2, cfg.min_cams_per_id),
                         cfg.test_images_per_id, 2)
        for c, n in counts.items():
            raw += [("query", pid, pid, c)] + [("gallery", pid, pid, c)] * (n - 1)
    for k in range(cfg.distractors):
        cam = int(np.random.default_rng([seed, 0x1C, k]).integers(1, cfg.cams + 1))
        raw.append(("gallery", 0, DISTRACTOR_BASE + k, cam))
    # Frame numbers: per camera, increasing in a shuffled order with random gaps (unique names).
    frames = [0] * len(raw)
    frng = np.random.default_rng([seed, 0x1E])
    for cam in range(1, cfg.cams + 1):
        members = [i for i, r in enumerate(raw) if r[3] == cam]
        frame = 0
        for i in (members[j] for j in frng.permutation(len(members))):
            frame += int(frng.integers(1, 100))
            frames[i] = frame
        if frame > 999999:
            raise GclreidError(f"synth: camera c{cam} has too many images for 6-digit frame numbers ({len(members)})")
    images = [ImageSpec(index=i, split=s, pid=pid, person=person, cam=cam, frame=frames[i],
                        shot=_shot(seed, i, cameras[cam - 1]))
              for i, (s, pid, person, cam) in enumerate(raw)]
    return Plan(cfg, cameras, train, test, images)


@functools.lru_cache(maxsize=4096)
def _identity(seed: int, person: int, pid: int) -> Identity:
    return sample_identity(seed, person, pid)


_BACKGROUNDS: Dict[Tuple[int, int, int, int], np.ndarray] = {}


def _background(seed: int, prof: CameraProfile, height: int, width: int) -> np.ndarray:
    key = (seed, prof.cam, height, width)
    if key not in _BACKGROUNDS:
        _BACKGROUNDS[key] = make_background(prof, seed, height, 5 * width)
    return _BACKGROUNDS[key]


def _save(array: np.ndarray, path: str, quality: int) -> None:
    Image.fromarray(array).save(path, format="JPEG", quality=int(quality))


def render_chunk(config: SynthConfig, cameras: Sequence[CameraProfile], specs: Sequence[ImageSpec], out: str) -> int:
    """Render and write one chunk of images with all their ground truth; returns the image count."""
    cfg = config
    h, w = cfg.height, cfg.width
    people = [_identity(cfg.seed, s.person, s.pid) for s in specs]
    shots = [s.shot for s in specs]
    profs = [cameras[s.cam - 1] for s in specs]
    outfit = Outfit.from_identities(people)
    base = make_bodies(people, shots)
    dressed = dress(base, outfit)
    body_seg = dressed.body
    camera = frame_shots(body_seg, base.yaw, shots, h, w)
    backgrounds = [_background(cfg.seed, p, h, w) for p in profs]
    light = torch.tensor([p.light for p in profs], dtype=torch.float32)
    ambient = torch.tensor([p.ambient for p in profs], dtype=torch.float32)
    noise = [noise_field(s, h, w) for s in shots]
    angles = (0, *cfg.angles)
    k = len(specs)
    # Structure maps: all angles in one batch (small images render fastest in big batches).
    rep = torch.arange(k).repeat(len(angles))
    yaw_all = base.yaw[rep] + torch.tensor(angles, dtype=torch.float32).repeat_interleave(k)
    grey = render_structures(body_seg.select(rep), yaw_all, camera.select(rep), h, w).numpy()
    for a, angle in enumerate(angles):
        render_dir = "render" if angle == 0 else f"render_{angle}"
        for spec, g in zip(specs, grey[a * k:(a + 1) * k]):
            _save(g, os.path.join(out, "structures", spec.structure_split, render_dir, spec.name), STRUCTURE_JPEG_QUALITY)
    for angle in angles if cfg.views else (0,):
        rgb, alpha = render_people(dressed, base.yaw + float(angle), outfit, camera, h, w, cfg.ssaa, light, ambient)
        images = compose(rgb, alpha, shots, profs, backgrounds, h, w, noise=noise)
        for spec, img, prof in zip(specs, images, profs):
            if angle == 0:
                path = os.path.join(out, spec.folder, spec.name)
            else:
                path = os.path.join(out, "views", spec.structure_split, f"view_{angle}", spec.name)
            _save(img, path, prof.jpeg)
    return len(specs)


def tune_malloc() -> bool:
    """Keep freed memory in the heap instead of returning it to the OS (glibc ``mallopt``).

    Rendering allocates and frees many multi-megabyte temporaries; by default glibc serves each
    from fresh ``mmap`` pages, and the page faults cost ~15% of the generator's time. Returns
    whether the setting was applied (False where glibc is not available).
    """
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        big = 1 << 30
        return bool(libc.mallopt(m_mmap_threshold, big)) and bool(libc.mallopt(m_trim_threshold, big))
    except (OSError, AttributeError):
        return False


def _worker_init() -> None:
    torch.set_num_threads(1)
    tune_malloc()


def _worker_task(args) -> int:
    return render_chunk(*args)


def prepare_output(out: str, overwrite: bool) -> None:
    """Refuse to write into a non-empty folder unless ``overwrite``; then clear only our own outputs."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise GclreidError(f"synth: output path {out} exists and is not a folder")
    if os.path.isdir(out):
        entries = sorted(os.listdir(out))
        if entries and not overwrite:
            what = "a SynthReID dataset" if METADATA in entries else (
                "a dataset in Market-1501 layout" if any(e in SPLIT_DIRS.values() for e in entries) else "other files")
            shown = ", ".join(entries[:5]) + (", …" if len(entries) > 5 else "")
            raise GclreidError(f"synth: output folder {out} is not empty (it holds {what}: {shown}); "
                               f"choose another --out or pass --overwrite to replace the SynthReID outputs")
        for name in OUTPUTS:
            path = os.path.join(out, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)


def _make_dirs(out: str, cfg: SynthConfig) -> None:
    for folder in SPLIT_DIRS.values():
        os.makedirs(os.path.join(out, folder), exist_ok=True)
    for split in ("train", "test"):
        for angle in (0, *cfg.angles):
            os.makedirs(os.path.join(out, "structures", split, "render" if angle == 0 else f"render_{angle}"), exist_ok=True)
            if angle and cfg.views:
                os.makedirs(os.path.join(out, "views", split, f"view_{angle}"), exist_ok=True)


def metadata(plan: Plan) -> dict:
    """The content of ``synthreid.json``."""
    from .. import __version__
    cfg = plan.config
    persons = sorted({s.person: s.pid for s in plan.images}.items())
    identities = {str(person): _identity(cfg.seed, person, pid).to_dict() for person, pid in persons}
    train = set(plan.train_pids)
    for person, pid in persons:
        identities[str(person)]["split"] = "train" if pid in train else "distractor" if pid == 0 else "test"
    counts = {split: sum(1 for s in plan.images if s.split == split) for split in SPLIT_DIRS}
    return {
        "format": "synthreid", "version": FORMAT_VERSION, "generator": f"gclreid {__version__}",
        "settings": cfg.to_dict(),
        "layout": {"images": dict(SPLIT_DIRS),
                   "structures": "structures/<train|test>/render[_<deg>]/<file name>",
                   "views": "views/<train|test>/view_<deg>/<file name>",
                   "yaw": "degrees; 0 = facing the camera, 90 = facing image right, 180 = back to the camera"},
        "counts": {**counts, "train_ids": len(plan.train_pids), "test_ids": len(plan.test_pids),
                   "distractors": sum(1 for s in plan.images if s.pid == 0)},
        "cameras": [c.to_dict() for c in plan.cameras],
        "identities": identities,
        "images": [{"file": f"{s.folder}/{s.name}", "split": s.split, "pid": s.pid, "person": s.person,
                    "camid": s.cam, "frame": s.frame, "yaw": s.shot.yaw, "phase": s.shot.phase,
                    "structure_split": s.structure_split, "shot": s.shot.to_dict()} for s in plan.images],
    }


def generate(config: SynthConfig, out: str, workers: int = 1, overwrite: bool = False, progress: bool = True,
             contact_sheet: bool = True) -> dict:
    """Write a SynthReID dataset to ``out``; returns a summary (counts, seconds, images per second)."""
    cfg = config.validate()
    if not isinstance(workers, int) or workers < 1:
        raise GclreidError(f"synth: workers={workers!r} is invalid: expected a positive integer")
    plan = make_plan(cfg)
    prepare_output(out, overwrite)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, INCOMPLETE), "w") as fh:
        fh.write("generation in progress or interrupted; run `gclreid synth` again with --overwrite\n")
    _make_dirs(out, cfg)
    chunks = [plan.images[i:i + cfg.chunk] for i in range(0, len(plan.images), cfg.chunk)]
    tasks = [(cfg, plan.cameras, chunk, out) for chunk in chunks]
    start = time.perf_counter()
    from ..progress import Progress
    bar = Progress(len(plan.images), desc="synth", unit="images", enabled=progress)
    try:
        if workers == 1:
            # One thread, as in the workers: the tensors are small, so intra-op threads only add
            # synchronisation (and contention on a busy machine).
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for task in tasks:
                    bar.update(render_chunk(*task))
            finally:
                torch.set_num_threads(threads)
        else:
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, initializer=_worker_init) as pool:
                for done in pool.imap_unordered(_worker_task, tasks):
                    bar.update(done)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    meta = metadata(plan)
    tmp = os.path.join(out, METADATA + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(meta, fh, indent=1)
    os.replace(tmp, os.path.join(out, METADATA))
    if contact_sheet:
        from .contact import write_contact_sheet
        write_contact_sheet(out, meta)
    os.remove(os.path.join(out, INCOMPLETE))
    return {"out": out, **meta["counts"], "images": len(plan.images), "seconds": round(seconds, 2),
            "images_per_second": round(len(plan.images) / max(seconds, 1e-9), 1), "workers": workers}

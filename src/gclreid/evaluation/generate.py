"""Generated images of a trained GCL or DG-Net model, written to a folder (for FID, for looking).

Both papers measure their generators on the *test* set (GCL Table 4, DG-Net Table 2). This module
writes those images so that ``gclreid fid DIR/real DIR/<folder>`` can score them::

    info = generate_images("runs/gcl/last.pt", "gen/", split="query")        # GCL: DIR/<angle>/<stem>.png
    info = generate_images("runs/dgnet/last.pt", "gen/", count=500, seed=1)  # DG-Net: DIR/generated/...

* **GCL** (``train.method: gcl``, stage 2 or 3): for each selected image x and each angle θ, the novel
  view G(Estr(s_θ), Eid(x).parts), with s_θ the structure map turned by θ (``gcl.structure_root``, default
  ``<data.root>/structures``, layout of :mod:`gclreid.structures.layout`) → ``DIR/<θ>/<stem>.png``.
  Default angles: every one of 45…315 whose maps exist for all selected images (0 = the reconstruction
  from the original map can be asked for with ``angles``).
* **DG-Net** (``train.method: dgnet``): each selected image's appearance code with the structure code
  of another selected image of a different identity, drawn with ``seed`` → G(Es(gray(x_j)), Ea(x_i)) as
  ``DIR/generated/<stem_i>_from_<stem_j>.png`` (appearance of the first, structure of the second).

Both write ``DIR/real/<stem>.png`` (the inputs resized to the training size, exactly what the model
saw) and ``DIR/generate.json``. The networks are built from the checkpoint's own config (plus
``key=value`` overrides, e.g. ``data.root=`` when the data moved) and run in eval mode without
gradients, in batches, under the method's autocast (bf16 on CUDA when ``train.amp``, on the CPU
when ``train.amp_cpu``; pass ``train.amp=false`` for float32 on CUDA). Only the networks that generate
are built: GCL's identity encoder and generator, DG-Net's appearance encoder and generator — not
the discriminator, optimisers, memory bank or DG-Net's teacher (which ``build_method`` would train
when its file is missing). They are put in an instance of the method's own class, so structure
paths, autocast and eval modes are the training code's (``tests/test_generate.py`` checks the images against ``GCL.generate`` and
``DGNet.swap_matrix`` of a method built the normal way).
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import CheckpointError, DatasetError, GclreidError

log = logging.getLogger("gclreid")

__all__ = ["GenerateError", "SUPPORTED_METHODS", "GENERATE_SPLITS", "checkpoint_config", "load_generation_method",
           "select_records", "output_names", "gcl_angles", "dgnet_partners", "write_gcl_views", "write_dgnet_swaps",
           "generate_images"]

SUPPORTED_METHODS = ("gcl", "dgnet")
GENERATE_SPLITS = ("query", "gallery", "train")
GCL_ANGLE_CHOICES = (0, 45, 90, 135, 180, 225, 270, 315)
REAL_FOLDER = "real"
DGNET_FOLDER = "generated"
REPORT_FILE = "generate.json"


class GenerateError(GclreidError, ValueError):
    """A bad argument of `gclreid generate` (count, split, angles, output folder)."""


# ---------------------------------------------------------------------------------------------- model

def checkpoint_config(payload: Dict[str, Any], path: os.PathLike, overrides: Sequence[str] = ()):
    """The config a checkpoint was trained with (schema defaults ← ``payload["config"]``) with the
    ``key=value`` `overrides` on top."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ..config import Config, ConfigError
    saved = payload.get("config") or {}
    if not saved:
        raise CheckpointError(f"checkpoint {path} holds no training config (it was not written by `gclreid train`); "
                              "gclreid generate builds the networks from it")
    for bad in [o for o in overrides if "=" not in o]:
        raise ConfigError(f"override {bad!r} must look like key.sub=value")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), saved)
    except OmegaConfBaseException as exc:
        raise CheckpointError(f"checkpoint {path}: its saved config does not fit this gclreid: {exc}") from exc
    try:
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"overrides {list(overrides)} do not fit the config schema: {exc}") from exc
    OmegaConf.set_readonly(cfg, False)
    return cfg


def _model_section(cfg) -> Dict[str, Any]:
    from omegaconf import OmegaConf
    model = OmegaConf.to_container(cfg.model, resolve=True)
    model["pretrained"] = False  # the weights come from the checkpoint
    return model


def load_generation_method(path: os.PathLike, overrides: Sequence[str] = (), device: Any = "cpu", dataset=None):
    """``(method, cfg, payload)``: the GCL or DG-Net method of checkpoint `path` with its generating
    networks loaded (strictly) from it. `dataset` defaults to ``cfg.data``'s dataset."""
    from ..checkpoint import load_model_state, read_checkpoint
    from ..data import build_dataset
    from ..engine.dgnet import DGNet
    from ..engine.gcl import GCL
    from ..models import (appearance_num_classes, build_appearance_encoder, build_generator, build_identity_encoder,
                          is_appearance_state)

    payload = read_checkpoint(path)
    cfg = checkpoint_config(payload, path, overrides)
    method = cfg.train.method
    if method not in SUPPORTED_METHODS:
        raise CheckpointError(f"checkpoint {path} was written by method {method!r}, which has no generator; gclreid "
                              "generate supports GCL (train.method gcl, stage 2 or 3) and DG-Net (train.method dgnet) "
                              "checkpoints")
    encoder_key = "identity_encoder" if method == "gcl" else "appearance_encoder"
    models = payload["models"]
    missing = [k for k in (encoder_key, "generator") if k not in models]
    if missing:
        raise CheckpointError(f"checkpoint {path} (method {method}) has no {' and '.join(missing)}; it holds "
                              f"{sorted(models)}")
    if method == "gcl":
        encoder = build_identity_encoder(_model_section(cfg))
    else:
        if not is_appearance_state(models[encoder_key]):
            raise CheckpointError(f"model 'appearance_encoder' in {path} is not a DG-Net appearance encoder "
                                  "(no fine-grained head)")
        encoder = build_appearance_encoder(_model_section(cfg), cfg.dgnet, appearance_num_classes(models[encoder_key]))
    load_model_state(encoder, models[encoder_key], source=f"model {encoder_key!r} in {path}")
    generator = build_generator(cfg.generator, encoder.part_dim)
    load_model_state(generator, models["generator"], source=f"model 'generator' in {path}")
    if dataset is None:
        try:
            dataset = build_dataset(cfg.data.name, cfg.data.root, **cfg.data.options)
        except DatasetError as exc:
            raise DatasetError(f"{exc} (the dataset the checkpoint was trained on: data.name={cfg.data.name}, "
                               f"data.root={cfg.data.root}; pass data.root=DIR when the data moved)") from exc
    device = torch.device(device)
    cls = GCL if method == "gcl" else DGNet
    return cls.for_inference(cfg, dataset, device, {encoder_key: encoder, "generator": generator}), cfg, payload


# ---------------------------------------------------------------------------------------------- images

def select_records(records: Sequence, count: Optional[int] = None) -> List:
    """`count` records spread evenly over `records` (all of them when `count` is None or larger)."""
    records = list(records)
    if count is not None and int(count) <= 0:
        raise GenerateError(f"--count {count}: expected a positive number of images")
    if count is None or count >= len(records):
        return records
    picks = np.unique(np.linspace(0, len(records) - 1, num=int(count)).round().astype(int))
    return [records[i] for i in picks]


def output_names(records: Sequence) -> List[str]:
    """One file name stem per record: the image's own stem, or its relative path with ``/`` → ``_``
    when two images of the selection share a stem (MSMT17-like sub-folders)."""
    stems = [PurePosixPath(r.relpath).stem for r in records]
    if len(set(stems)) == len(stems):
        return stems
    stems = [str(PurePosixPath(r.relpath).with_suffix("")).replace("/", "_") for r in records]
    if len(set(stems)) < len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise GenerateError(f"two selected images would both be written as {dup}.png; their relative paths clash")
    return stems


class _Items(Dataset):
    """Item k: ``{"index", "image"`` (test transform), ``"real"`` (the resized image, H×W×3 uint8)``,
    "structures"`` (A×1×H×W maps at `angles`, GCL only)``}``."""

    def __init__(self, records: Sequence, height: int, width: int, structure_root=None, angles: Sequence[int] = ()):
        self.records, self.height, self.width = list(records), height, width
        self.root, self.angles = structure_root, tuple(angles)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, k: int) -> Dict[str, Any]:
        from ..data import Resize, ToTensorNormalize, load_image
        from ..structures import load_structure, structure_path
        record = self.records[k]
        # = build_test_transform(data), keeping the resized picture for DIR/real/
        resized = Resize(self.height, self.width)(load_image(record.path))
        item = {"index": k, "image": ToTensorNormalize()(resized),
                "real": torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy())}
        if self.angles:
            item["structures"] = torch.stack([load_structure(structure_path(self.root, record, a), self.height,
                                                             self.width) for a in self.angles])
        return item


def _loader(items: Dataset, batch_size: int, workers: int):
    from ..data import build_loader
    return build_loader(items, batch_size, workers=workers, seed=0, pin_memory=False)


def _save(tensor: torch.Tensor, path: Path) -> None:
    from ..data import tensor_to_pil
    tensor_to_pil(tensor).save(path)


def _save_real(array: torch.Tensor, path: Path) -> None:
    from PIL import Image
    Image.fromarray(array.numpy(), "RGB").save(path)


def _prepare_folders(out: Path, folders: Sequence[str], overwrite: bool) -> None:
    """Create the output folders; images already in them (an earlier run) are an error, or deleted with
    `overwrite` (FID over a folder mixing two runs would be wrong)."""
    from ..data import IMAGE_SUFFIXES
    old = {f: [p for p in (out / f).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
           for f in folders if (out / f).is_dir()}
    old = {f: files for f, files in old.items() if files}
    if old and not overwrite:
        shown = ", ".join(f"{out / f} ({len(files)})" for f, files in old.items())
        raise GenerateError(f"{shown} already hold images of an earlier run; FID over mixed folders would be wrong. "
                            "Choose another --out, or pass --overwrite to delete those images first")
    for files in old.values():
        for p in files:
            p.unlink()
    for f in folders:
        (out / f).mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------------------------------------- GCL

def gcl_angles(structure_root: os.PathLike, records: Sequence, angles: Optional[Sequence[int]] = None
               ) -> Tuple[List[int], Dict[int, int]]:
    """``(angles, skipped)``: the requested angles (each must have a map for every record, else a
    :class:`DatasetError` naming the folder), or by default every angle of 45…315 whose maps all exist;
    `skipped` counts the missing maps of the default angles left out."""
    from ..structures import ANGLES, angle_folder, structure_path, structure_split

    def missing(angle):
        return [structure_path(structure_root, r, angle) for r in records
                if not structure_path(structure_root, r, angle).is_file()]

    def folder(angle):
        return Path(structure_root) / structure_split(records[0]) / angle_folder(angle)

    hint = ("make them with `gclreid structures`, or point gcl.structure_root at the folder holding "
            "<train|test>/render[_<deg>]/")
    if angles:
        bad = [a for a in angles if a not in GCL_ANGLE_CHOICES]
        if bad:
            raise GenerateError(f"--angles {bad[0]}: expected angles among {', '.join(map(str, GCL_ANGLE_CHOICES))}")
        chosen = sorted(set(int(a) for a in angles))
        for a in chosen:
            gone = missing(a)
            if gone:
                raise DatasetError(f"structure maps for angle {a} missing: {len(gone)} of {len(records)} selected "
                                   f"images have none in {folder(a)} (first: {gone[0]}); {hint}")
        return chosen, {}
    chosen, skipped = [], {}
    for a in ANGLES:
        gone = len(missing(a))
        if gone:
            skipped[a] = gone
        else:
            chosen.append(a)
    for a, gone in skipped.items():
        if gone < len(records):
            log.warning("angle %d left out: %d of %d selected images have no structure map in %s", a, gone,
                        len(records), folder(a))
    if not chosen:
        raise DatasetError(f"no structure maps for the selected images at any angle: e.g. {folder(ANGLES[0])} lacks "
                           f"{skipped[ANGLES[0]]} of {len(records)}; {hint}")
    return chosen, skipped


@torch.no_grad()
def write_gcl_views(method, records: Sequence, out: os.PathLike, angles: Sequence[int], batch_size: int = 16,
                    names: Optional[Sequence[str]] = None, workers: int = 0, progress: bool = False) -> Dict[str, int]:
    """DIR/real/<stem>.png and DIR/<angle>/<stem>.png = G(Estr(s_angle), Eid(x).parts) for `records`
    (the output folders must exist); returns the number of files per folder. `progress`: on stderr
    (:class:`gclreid.progress.Progress`)."""
    from ..progress import Progress
    out = Path(out)
    d = method.cfg.data
    names = list(names or output_names(records))
    eid, gen = method.encoder, method.models["generator"]
    items = _Items(records, d.height, d.width, method.structure_root(), angles)
    written = {REAL_FOLDER: 0, **{str(a): 0 for a in angles}}
    with method.eval_models(), method.autocast(), Progress(len(records), desc="generate", enabled=progress) as bar:
        for batch in _loader(items, batch_size, workers):
            x = batch["image"].to(method.device)
            parts = eid(x).parts
            views = [gen.decode(gen.encode_structure(batch["structures"][:, k].to(method.device)), parts).float().cpu()
                     for k in range(len(angles))]
            for row, k in enumerate(batch["index"].tolist()):
                _save_real(batch["real"][row], out / REAL_FOLDER / f"{names[k]}.png")
                written[REAL_FOLDER] += 1
                for a, v in zip(angles, views):
                    _save(v[row], out / str(a) / f"{names[k]}.png")
                    written[str(a)] += 1
            bar.update(len(x))
    return written


# ---------------------------------------------------------------------------------------------- DG-Net

def dgnet_partners(pids: Sequence[int], seed: int = 0) -> np.ndarray:
    """For each image i, a random other image j of a different identity (an unknown identity, −1, differs
    from every other image): ``partners[i] = j``, drawn with ``np.random.default_rng(seed)``."""
    pids = np.asarray(pids)
    rng = np.random.default_rng(seed)
    partners = np.empty(len(pids), dtype=np.int64)
    index = np.arange(len(pids))
    for i, pid in enumerate(pids):
        candidates = np.flatnonzero(index != i if pid < 0 else pids != pid)
        if not len(candidates):
            raise GenerateError(f"image {i} has no partner of another identity: all {len(pids)} selected images "
                                f"show identity {pid}; select more images (--count, --split)")
        partners[i] = candidates[rng.integers(len(candidates))]
    return partners


@torch.no_grad()
def write_dgnet_swaps(method, records: Sequence, out: os.PathLike, seed: int = 0, batch_size: int = 16,
                      names: Optional[Sequence[str]] = None, workers: int = 0,
                      progress: bool = False) -> Tuple[Dict[str, int], np.ndarray]:
    """DIR/real/<stem>.png and DIR/generated/<stem_i>_from_<stem_j>.png = G(Es(gray(x_j)), Ea(x_i)) with
    j = :func:`dgnet_partners` (seed); returns (files per folder, partners). `progress`: on stderr."""
    from ..losses import to_gray
    from ..progress import Progress
    out = Path(out)
    d = method.cfg.data
    names = list(names or output_names(records))
    partners = dgnet_partners([r.pid for r in records], seed)
    ea, gen = method.encoder, method.models["generator"]
    appearance = _Items(records, d.height, d.width)
    structure = _Items([records[j] for j in partners], d.height, d.width)
    written = {REAL_FOLDER: 0, DGNET_FOLDER: 0}
    with method.eval_models(), method.autocast(), Progress(len(records), desc="generate", enabled=progress) as bar:
        for a, s in zip(_loader(appearance, batch_size, workers), _loader(structure, batch_size, workers)):
            codes = ea(a["image"].to(method.device)).flat_parts()
            fakes = gen.decode(gen.encode_structure(to_gray(s["image"].to(method.device))), codes).float().cpu()
            for row, i in enumerate(a["index"].tolist()):
                _save_real(a["real"][row], out / REAL_FOLDER / f"{names[i]}.png")
                _save(fakes[row], out / DGNET_FOLDER / f"{names[i]}_from_{names[partners[i]]}.png")
                written[REAL_FOLDER] += 1
                written[DGNET_FOLDER] += 1
            bar.update(len(fakes))
    return written, partners


# ---------------------------------------------------------------------------------------------- all of it

def generate_images(checkpoint: os.PathLike, out: os.PathLike, split: str = "query", count: Optional[int] = None,
                    seed: int = 0, angles: Optional[Sequence[int]] = None, device: Any = "cpu",
                    overrides: Sequence[str] = (), batch_size: int = 16, overwrite: bool = False,
                    dataset=None, progress: bool = True) -> Dict[str, Any]:
    """Write the generated images of GCL / DG-Net checkpoint `checkpoint` for `count` images (default
    all) of `split` into `out` (see the module docstring) and ``out/generate.json``; return its content.
    `progress`: images done, rate and ETA on stderr (a bar on a terminal, lines otherwise)."""
    if split not in GENERATE_SPLITS:
        raise GenerateError(f"--split {split!r}: expected one of {', '.join(GENERATE_SPLITS)}")
    if count is not None and int(count) <= 0:
        raise GenerateError(f"--count {count}: expected a positive number of images")
    if batch_size < 1:
        raise GenerateError(f"--batch-size {batch_size}: expected >= 1")
    started = time.time()
    method, cfg, payload = load_generation_method(checkpoint, overrides, device, dataset)
    name = cfg.train.method
    if angles and name != "gcl":
        raise GenerateError("--angles applies to GCL checkpoints only (DG-Net swaps structures between images)")
    records = list(getattr(method.dataset, split))
    if not records:
        raise DatasetError(f"dataset {cfg.data.name!r} at {cfg.data.root} has no {split} images")
    chosen = select_records(records, count)
    names = output_names(chosen)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report: Dict[str, Any] = {
        "checkpoint": str(checkpoint), "method": name, "epoch": int(payload.get("epoch", 0)),
        "dataset": cfg.data.name, "root": str(cfg.data.root), "split": split, "split_images": len(records),
        "count_requested": count, "images": len(chosen), "image_size": [int(cfg.data.height), int(cfg.data.width)],
        "device": str(method.device), "autocast_bf16": isinstance(method.autocast(), torch.autocast),
    }
    workers = int(cfg.data.workers)
    if name == "gcl":
        root = method.structure_root()
        chosen_angles, skipped = gcl_angles(root, chosen, angles)
        _prepare_folders(out, [REAL_FOLDER, *map(str, chosen_angles)], overwrite)
        files = write_gcl_views(method, chosen, out, chosen_angles, batch_size, names, workers, progress)
        report.update(stage=int(cfg.gcl.stage), structure_root=str(root), angles=chosen_angles,
                      skipped_angles={str(a): n for a, n in skipped.items()},
                      folders={"real": REAL_FOLDER, **{str(a): str(a) for a in chosen_angles}})
    else:
        _prepare_folders(out, [REAL_FOLDER, DGNET_FOLDER], overwrite)
        files, _ = write_dgnet_swaps(method, chosen, out, seed, batch_size, names, workers, progress)
        report.update(seed=int(seed), pairing="appearance of <stem> with the structure of <stem2>, a random other "
                      "selected image of a different identity",
                      folders={"real": REAL_FOLDER, "generated": DGNET_FOLDER})
    report.update(files=files, seconds=round(time.time() - started, 2))
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return report

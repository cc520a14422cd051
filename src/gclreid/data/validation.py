"""A validation split carved out of the training identities, for tuning without touching query/gallery.

``hold_out_identities(dataset, K, seed)`` moves K labelled training identities out of ``train`` and
turns their images into a query/gallery split built the Market-1501 way: per held-out identity, one
query image per camera it appears in, every other image in the gallery. See docs/datasets.md
("Validation split from training identities").
"""
from __future__ import annotations

import random
from dataclasses import replace
from typing import Dict, List, Tuple

from ..config import ConfigError
from ..errors import DatasetError
from .records import ImageRecord, ReIDDataset


def hold_out_identities(dataset: ReIDDataset, num_ids: int, seed: int = 0) -> ReIDDataset:
    """A new dataset: ``train`` minus ``num_ids`` identities; ``query``/``gallery`` built from them.

    - The identities are drawn with ``random.Random(seed)`` from the sorted labelled pids (pid -1
      images are never held out and stay in train), so a seed gives the same split on every machine.
    - For each held-out identity and each known camera (camid >= 0) it appears in, one image drawn at
      random (same generator, images in relpath order) becomes a query; the rest go to the gallery.
      A query whose identity has no gallery image from another known camera could never be matched
      (the protocol ignores same-camera matches), so, checking cameras in increasing camid order,
      such a query is moved back to the gallery. An identity seen by two or more cameras therefore
      always gives at least one valid query.
    - Identities seen by fewer than two known cameras cannot be evaluated cross-camera: all their
      images go to the gallery, where they act as distractors. So do images with an unknown camera.

    The result records what was done in ``dataset.validation``:
    ``{"held_out_ids", "query_ids", "distractor_ids", "query", "gallery", "seed"}`` (image counts).
    """
    if isinstance(num_ids, bool) or not isinstance(num_ids, int) or num_ids < 1:
        raise ConfigError(f"validation split: num_ids={num_ids!r}; expected a positive number of training "
                          "identities to hold out (data.val_identities; 0 there means no validation split)")
    where = f"dataset {dataset.name!r} at {dataset.dataset_dir}"
    pids = sorted({r.pid for r in dataset.train if r.pid >= 0})
    if not pids:
        raise DatasetError(f"validation split: the train split of {where} is unlabeled (every pid is -1); "
                           "holding out identities needs identity labels")
    if num_ids >= len(pids):
        raise DatasetError(f"validation split: cannot hold out {num_ids} identities (data.val_identities): the "
                           f"train split of {where} has {len(pids)} labelled identities; expected at most "
                           f"{len(pids) - 1} so that some remain for training")

    rng = random.Random(seed)
    held = set(rng.sample(pids, num_ids))
    train = [r for r in dataset.train if r.pid not in held]
    by_id: Dict[int, List[ImageRecord]] = {}
    for r in dataset.train:  # relpath order
        if r.pid in held:
            by_id.setdefault(r.pid, []).append(r)

    query: List[ImageRecord] = []
    gallery: List[ImageRecord] = []
    distractor_ids = 0
    for pid in sorted(by_id):
        q, g = _split_identity(by_id[pid], rng)
        distractor_ids += not q
        query += [replace(r, split="query") for r in q]
        gallery += [replace(r, split="gallery") for r in g]
    if not query:
        raise DatasetError(f"validation split: none of the {num_ids} held-out identities of {where} "
                           f"(seed {seed}) appears in two or more known cameras, so no query can be matched "
                           "across cameras; hold out more identities or check the camera ids")

    out = ReIDDataset.from_records(dataset.root, train, query, gallery, name=dataset.name)
    # Reader attributes (dataset_dir, camera_names, options …) carry over; query/gallery no longer
    # come from the released test folders, so nothing was dropped from them.
    for key, value in vars(dataset).items():
        if key not in ("train", "query", "gallery", "dropped"):
            setattr(out, key, value)
    out.dropped = {"train": dataset.dropped.get("train", 0), "query": 0, "gallery": 0}
    out.validation = {"held_out_ids": num_ids, "query_ids": num_ids - distractor_ids,
                      "distractor_ids": distractor_ids, "query": len(query), "gallery": len(gallery), "seed": seed}
    return out


def _split_identity(records: List[ImageRecord], rng: random.Random) -> Tuple[List[ImageRecord], List[ImageRecord]]:
    """(query, gallery) images of one held-out identity; see :func:`hold_out_identities`."""
    by_cam: Dict[int, List[ImageRecord]] = {}
    for r in records:
        if r.camid >= 0:
            by_cam.setdefault(r.camid, []).append(r)
    if len(by_cam) < 2:
        return [], list(records)
    picks = {cam: rng.choice(images) for cam, images in sorted(by_cam.items())}
    chosen = set(picks.values())
    gallery = [r for r in records if r not in chosen]
    query = []
    # Moving a query back only adds gallery images, so a query found valid stays valid: one pass.
    for cam, pick in sorted(picks.items()):
        if any(r.camid >= 0 and r.camid != cam for r in gallery):
            query.append(pick)
        else:
            gallery.append(pick)
    return query, gallery

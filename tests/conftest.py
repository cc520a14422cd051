"""Shared fixtures: a tiny Market-layout dataset with learnable identity structure."""
from pathlib import Path

import gclreid  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP; docs/benchmarks.md)

import numpy as np
import pytest
from PIL import Image


# The generator and discriminator at their smallest (for GCL / DG-Net tests on 64×32 images); add
# generator.mlp_dim to taste.
TINY_GENERATOR = [
    "generator.dim=4", "generator.n_res=1", "generator.n_downsample=1", "generator.dec_n_upsample=1",
    "generator.dec_n_res=2", "generator.id_chunks=2", "generator.dis_dim=8", "generator.dis_n_res=1",
    "generator.dis_num_scales=2",
]

# A tiny SynthReID (true novel views included) and GCL on it at 64×32, for the tests that need the
# true views (test_gcl_generation, test_gcl_views); add gcl.stage and the rest per test.
TINY_SYNTH = dict(train_ids=4, test_ids=3, distractors=2, cams=2, train_images_per_id=3.0, test_images_per_id=4.0)
TINY_H, TINY_W = 64, 32
TINY_SYNTH_GCL = [
    "data.name=synthreid", f"data.height={TINY_H}", f"data.width={TINY_W}", "data.workers=0",
    "model.arch=resnet18", "model.pretrained=false", "model.embed_dim=32",
    *TINY_GENERATOR, "generator.mlp_dim=32",
    "train.method=gcl", "train.batch_size=4", "train.log_every=100", "train.eval_every=0", "eval.batch_size=32",
    "cluster.k1=4", "cluster.k2=2", "cluster.eps=0.5", "cluster.min_samples=2", "gcl.num_negatives=8", "run.seed=0",
]


def make_tiny_synth(root: Path) -> Path:
    """Generate :data:`TINY_SYNTH` (demo preset, seed 0) into ``root``."""
    from gclreid.synth import generate, preset
    generate(preset("demo", seed=0, **TINY_SYNTH), str(root), workers=1, progress=False)
    return root


def make_stripe_people(root: Path, train_ids: int = 12, test_ids: int = 8, per_cam: int = 3, cams: int = 3,
                       height: int = 32, width: int = 16, seed: int = 0, palette: int = 0, cast: float = 0.3,
                       noise: float = 12.0) -> Path:
    """Market-1501-layout folders of tiny 'people': each identity is three coloured bands (head, upper,
    lower body) with per-image noise, a per-camera colour cast and a small vertical jitter. Query holds
    one image per (test identity, camera); the gallery the rest. `palette` > 0 draws band colours from
    that many colours (identities then share colours, which makes the task harder)."""
    rng = np.random.default_rng(seed)
    casts = rng.uniform(1 - cast, 1 + cast, size=(cams, 3))
    colours_of = rng.uniform(20, 235, size=(max(palette, 1), 3))
    folders = {s: root / s for s in ("bounding_box_train", "query", "bounding_box_test")}
    for f in folders.values():
        f.mkdir(parents=True, exist_ok=True)
    for pid in range(1, train_ids + test_ids + 1):
        colours = colours_of[rng.integers(0, palette, 3)] if palette else rng.uniform(20, 235, size=(3, 3))
        for cam in range(cams):
            for k in range(per_cam):
                img = np.zeros((height, width, 3))
                shift = rng.integers(-2, 3)
                bounds = np.array([0, height // 4, height * 5 // 8, height]) + shift
                for band in range(3):
                    img[max(bounds[band], 0):max(bounds[band + 1], 0)] = colours[band] * casts[cam]
                img += rng.normal(0, noise, img.shape)
                name = f"{pid:04d}_c{cam + 1}s1_{k:06d}_00.jpg"
                if pid <= train_ids:
                    split = "bounding_box_train"
                else:
                    split = "query" if k == 0 else "bounding_box_test"
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folders[split] / name, quality=95)
    return root


def add_body_structures(root: Path, height: int, width: int, seed: int = 0) -> Path:
    """Write a structure map for every image of the Market-layout dataset at `root` and every angle
    (0°…315°) under root/structures: a grey 'body' whose width depends on the angle."""
    from gclreid.data import build_dataset
    from gclreid.structures import ANGLES, structure_path
    ds = build_dataset("market1501", root)
    rng = np.random.default_rng(seed)
    for rec in ds.train + ds.query + ds.gallery:
        for angle in (0, *ANGLES):
            body = np.zeros((height, width), dtype=np.uint8)
            half = max(2, int(8 * abs(np.cos(np.radians(angle)))) + 2)
            body[6:height - 4, width // 2 - half:width // 2 + half] = 200 + rng.integers(0, 40)
            path = structure_path(root / "structures", rec, angle)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(body).save(path)
    return root


@pytest.fixture
def stripe_people(tmp_path):
    return make_stripe_people(tmp_path / "people")


class ConvDtypes:
    """``with ConvDtypes() as convs:`` records in ``convs.seen`` the output dtype of every Conv2d forward
    with gradients on (training steps) while active: a global module hook."""

    def __enter__(self):
        import torch
        self.seen = set()

        def hook(module, args, output):
            if isinstance(module, torch.nn.Conv2d) and torch.is_grad_enabled():
                self.seen.add(output.dtype)

        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()

"""GCL (seed 000/001): the view generator (stage 2) and joint generative–contrastive training (stage 3).

One iteration, with x an image, s its structure map and s' the map turned by a random angle:

    parts, f      = Eid(x)                    part features (generator input) and embedding
    x'_ori, x'_new = G(Estr(s), parts), G(Estr(s'), parts)
    parts_new, f'_new = Eid(x'_new)
    x''_ori       = G(Estr(s), parts_new)     cycle back to the original view

D step on (x; x'_ori, x'_new, x''_ori), then one backward of
L = λimg·L_img + λfeat·L_feat + L_gan (+ L_vi + L'_vi + L''_vi in stage 3) that steps G (and Eid in
stage 3). Stage 2 freezes Eid's parameters (no gradients computed for them) and its BatchNorm
(eval mode); gradients still flow through it to the generated images for L_feat. Stage 3 keeps a
memory bank of all training images (Eq. 5), clusters it every epoch and trains everything jointly.

``gcl.views`` chooses the image that plays x'_new in the view-invariant losses (the generated view,
or as oracle and controls the true view, the mirrored input, the input); generation is unchanged.

To see it work: PNG grids of fixed training and test images at the end of every epoch (and every
``gcl.grid_every`` iterations), and, on datasets with true novel views (SynthReID's ``views/``),
SSIM/PSNR/L1 of the generated views against them in each epoch record (``generation``); on any
dataset the cosine of the encoder's features of fixed training images and of their generated views
(``view_cos``: does the encoder recognise the views the view-invariant losses use?).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import random
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import SubsetRandomSampler

from ..checkpoint import load_model_state, read_checkpoint
from ..config import GD_SCHEDULES, VIEW_POSITIVES, ConfigError, OptimConfig
from ..errors import CheckpointError
from ..losses import (ViewContrastLoss, ViewSample, discriminator_loss, feature_reconstruction_loss,
                      generator_adversarial_loss, image_reconstruction_loss)
from ..models import build_discriminator, build_generator, flatten_parts
from ..structures import ANGLES, structure_path
from ..structures.layout import structure_split
from . import distributed
from .common import (build_encoder, check_cameras_for_clustering, forward_chunks, running_stats_frozen, train_features,
                     update_pseudo_labels)
from .data import Limited, usable_train_records
from .method import Method, register_method
from .optim import build_optimizer, fix_lr_factor, lr_factor
from .recompute import recompute_cheap_ops

log = logging.getLogger("gclreid")

LOSS_TERMS = ("gan", "lvi", "lvi2", "lvi3", "contrast_only")
# Fixed test sample for the test grid and the novel-view metrics (`gcl.gen_eval_images` overrides it
# when the config has that field).
GEN_EVAL_IMAGES = 16
PSNR_CAP_DB = 100.0  # identical images would give inf, which is not JSON


def _requires_grad(module: torch.nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def true_view_path(views_root, record, angle: int) -> Path:
    """SynthReID's true novel view of `record` turned by `angle`: ``<views_root>/<train|test>/view_<deg>/<file>``."""
    return Path(views_root) / structure_split(record) / f"view_{int(angle)}" / record.relpath


@register_method("gcl")
class GCL(Method):
    def __init__(self, cfg, dataset, device):
        super().__init__(cfg, dataset, device)
        g = cfg.gcl
        if g.stage not in (2, 3):
            raise ConfigError(f"gcl.stage={g.stage} must be 2 (generator warm-up) or 3 (joint training)")
        unknown = set(g.losses) - set(LOSS_TERMS)
        if unknown or not g.losses:
            raise ConfigError(f"gcl.losses={list(g.losses)}: expected a non-empty subset of {list(LOSS_TERMS)}")
        if g.stage == 2 and "gan" not in g.losses:
            raise ConfigError("gcl.stage=2 trains the generator: gcl.losses must include 'gan'")
        if g.fake_bn not in ("update", "freeze"):
            raise ConfigError(f"gcl.fake_bn={g.fake_bn!r}: expected 'update' (official) or 'freeze'")
        if g.gd_schedule not in GD_SCHEDULES:
            raise ConfigError(f"gcl.gd_schedule={g.gd_schedule!r}: expected one of {', '.join(GD_SCHEDULES)}")
        if g.views not in VIEW_POSITIVES:
            hint = " (YAML reads a bare true as a boolean: the oracle is true_view)" if g.views == "True" else ""
            raise ConfigError(f"gcl.views={g.views!r}: expected one of {', '.join(VIEW_POSITIVES)}{hint}")
        # gcl.views only matters where the view-invariant losses run: stage 3 with generation.
        self.view_positive_used = g.stage == 3 and "gan" in g.losses and bool({"lvi", "lvi2", "lvi3"} & set(g.losses))
        if g.views != "generated" and not self.view_positive_used:
            log.warning("gcl.views=%s has no effect: it replaces x'_new in the view-invariant losses, which this run "
                        "(gcl.stage=%s, gcl.losses=%s) does not compute", g.views, g.stage, list(g.losses))
        if g.views == "true_view" and self.view_positive_used and not self.views_root().is_dir():
            raise ConfigError(f"gcl.views=true_view needs the dataset's true novel views, but {self.views_root()} "
                              "does not exist (SynthReID writes them under <data.root>/views/ unless made with "
                              "--no-views; other datasets have none): use gcl.views=generated, flip or input")
        self.records = usable_train_records(dataset, cfg)
        if g.stage == 3:  # stage 3 clusters the memory bank
            check_cameras_for_clustering(cfg, [r.camid for r in self.records])
        encoder = build_encoder(cfg, device)
        generator = build_generator(cfg.generator, encoder.part_dim).to(device)
        discriminator = build_discriminator(cfg.generator).to(device)
        self.models = {"identity_encoder": encoder, "generator": generator, "discriminator": discriminator}
        if g.init:
            self._load_init(g.init)
        adam = dict(name="adam", weight_decay=g.weight_decay_gd, betas=list(g.betas_gd))
        self.optimizers = {
            "generator": build_optimizer([generator], OptimConfig(lr=g.lr_g, **adam), cfg.train.batch_size),
            "discriminator": build_optimizer([discriminator], OptimConfig(lr=g.lr_d, **adam), cfg.train.batch_size),
        }
        if g.stage == 3:
            self.optimizers["identity_encoder"] = build_optimizer([encoder], cfg.optim, cfg.train.batch_size)
            gd_factor = self._gd_lr_factor()
            if gd_factor is not None:
                for name in ("generator", "discriminator"):
                    fix_lr_factor(self.optimizers[name], gd_factor)
        self.contrast: Optional[ViewContrastLoss] = None
        if g.stage == 3:
            options = {k: getattr(g, k) for k in ("shared_positive", "outliers_as_negatives", "anchor_as_positive")
                       if getattr(g, k) is not None}
            if g.lvi2_positive:
                options["lvi2_positive"] = g.lvi2_positive
            self.contrast = ViewContrastLoss(len(self.records), encoder.embed_dim, temperature=g.temperature,
                                             momentum=g.memory_momentum, num_negatives=g.num_negatives,
                                             preset=g.view_contrast, **options).to(device)
        self.memory_ready = False
        self.labels = np.full(len(self.records), -1, dtype=np.int64)
        self.grid_images = None
        self._test_sample: Optional[dict] = None  # fixed query images for the test grid / metrics
        self._train_sample: Optional[dict] = None  # fixed training images for `view_cos`
        self._items = None  # the StructureDataset, built on first use
        self.iteration = 0  # optimisation steps so far (for gcl.grid_every)
        # Compute pattern switches (results are equal either way, up to float rounding;
        # bench/bench_gcl_iteration.py compares them): fakes through D as one batch in the G step, the
        # D step's parts back-propagated one at a time (less peak memory), and no parameter gradients
        # for the frozen Eid in stage 2. The official code does none of these (batch_fakes=False,
        # stream_d_backward=False, freeze_encoder_grads=False, and share_real=False).
        self.batch_fakes = True
        self.stream_d_backward = True
        self.freeze_encoder_grads = True

    # -- set-up ---------------------------------------------------------------------------------------
    def _load_init(self, path: str) -> None:
        """Identity encoder, generator and discriminator from a GCL run (stage 2 or 3): all three must be
        there, so that nothing is left at its random initialisation without a word."""
        payload = read_checkpoint(path)
        found = [name for name in self.models if name in payload["models"]]
        if not found:
            raise CheckpointError(f"gcl.init={path} holds none of {sorted(self.models)} (it has "
                                  f"{sorted(payload['models'])})")
        method = ((payload.get("config") or {}).get("train") or {}).get("method")
        missing = [name for name in self.models if name not in payload["models"]]
        if missing or (method and method != "gcl"):
            written = f"was written by method {method!r} and " if method else ""
            raise CheckpointError(
                f"gcl.init={path} {written}holds {sorted(payload['models'])}; it must be a GCL run (stage 2 or 3) with "
                f"{', '.join(self.models)}, or {', '.join(missing) or 'its networks'} would stay random. To start "
                "the generator from a stage-1 / supervised encoder, run gcl.stage=2 with train.init=<that last.pt>")
        for name in found:
            load_model_state(self.models[name], payload["models"][name], source=f"model {name!r} in {path}")
        log.info("loaded %s from %s", ", ".join(found), path)

    def _gd_lr_factor(self) -> Optional[float]:
        """Stage 3's fixed lr factor of G and D under ``gcl.gd_schedule`` (None: they follow the optim schedule).

        The official code rebuilds the G/D MultiStepLR schedulers for stage 3 with ``last_epoch`` = the
        stage-2 iteration count (tens of thousands): on torch >= 1.4 (chainable schedulers) the lr then
        never reaches a milestone and stays at lr_g / lr_d; on its pinned torch 1.2 (closed form
        ``base_lr * gamma ** bisect(milestones, last_epoch)``) every milestone has already passed.
        """
        g, o = self.cfg.gcl, self.cfg.optim
        if g.gd_schedule == "paper":
            return None
        if g.gd_schedule == "official_current_torch":
            return 1.0
        if o.schedule == "cosine":
            raise ConfigError("gcl.gd_schedule=official_torch12 reproduces a MultiStepLR: it needs optim.schedule=step "
                              "or constant, not cosine")
        return lr_factor(o, math.inf, self.cfg.train.epochs)  # all milestones passed: gamma ** len(milestones)

    def structure_root(self) -> Path:
        return Path(self.cfg.gcl.structure_root or Path(self.cfg.data.root) / "structures")

    def _dataset(self, records, augment: bool, views: bool = False):
        """The StructureDataset of `records`; with `views` its items also hold ``view_new``, the true novel
        view at the drawn angle (test transform: resized and normalised like the generator's output)."""
        from ..data import build_test_transform, build_train_transform
        from ..structures import StructureDataset
        d = self.cfg.data
        transform = build_train_transform(d) if augment else build_test_transform(d)
        extra = {}
        if views:
            extra = dict(view_path=functools.partial(true_view_path, self.views_root()),
                         view_transform=build_test_transform(d))
        return StructureDataset(records, self.structure_root(), transform, d.height, d.width,
                                angles=tuple(self.cfg.gcl.angles), **extra)

    # -- epoch ------------------------------------------------------------------------------------------
    def start_epoch(self, epoch):
        if self.cfg.gcl.stage == 2:
            return {}
        if not self.memory_ready:
            self.contrast.memory.initialise(train_features(self.encoder, self.records, self.cfg, self.device))
            self.memory_ready = True
        # GCL clusters the memory bank (momentum-averaged features), not freshly extracted ones; under
        # torchrun once, on rank 0 (every rank holds the same bank and gets its labels).
        self.labels, stats = distributed.on_main(lambda: update_pseudo_labels(
            self.contrast.memory.features.cpu(), self.cfg, [r.pid for r in self.records], epoch,
            cameras=[r.camid for r in self.records], device=self.device))
        self.contrast.memory.set_labels(self.labels)
        return stats

    def loader(self, epoch):
        from ..data import build_loader
        t = self.cfg.train
        if self._items is None:
            self._items = self._dataset(self.records, self.cfg.gcl.augment,
                                        views=self.cfg.gcl.views == "true_view" and self.view_positive_used)
        # Stage 3 trains on clustered images only (as the official code); `index` stays the memory row.
        keep = np.arange(len(self.records)) if self.cfg.gcl.stage == 2 else np.flatnonzero(self.labels >= 0)
        if len(keep) < t.batch_size:
            from ..errors import DatasetError
            raise DatasetError(f"only {len(keep)} training images are usable this epoch, fewer than one batch "
                               f"(train.batch_size={t.batch_size})")
        # Under torchrun every rank draws the same global batches (rank 0's seed) and loads its share.
        seed = distributed.from_main(lambda: int(torch.randint(0, 2**62, ()).item()))
        generator = torch.Generator().manual_seed(seed)
        sampler = SubsetRandomSampler(keep.tolist(), generator=generator)
        loader = build_loader(self._items, distributed.rank_batch(t.batch_size), sampler=sampler,
                              workers=self.cfg.data.workers, drop_last=True, shard=distributed.shard_spec())
        return Limited(loader, t.iters_per_epoch)

    def train_mode(self):
        super().train_mode()
        if self.cfg.gcl.stage == 2:
            self.encoder.eval()
            _requires_grad(self.encoder, not self.freeze_encoder_grads)

    # -- iteration --------------------------------------------------------------------------------------
    def encode_generated(self, images: torch.Tensor):
        """Eid on generated images; its BN running statistics move only with ``gcl.fake_bn=update``."""
        with running_stats_frozen(self.encoder, self.cfg.gcl.fake_bn == "freeze"):
            return forward_chunks(self.encoder, images, self.cfg.train.bn_batch_size)

    def generate(self, x, s0, s1, with_cycle: bool = True) -> Dict[str, torch.Tensor]:
        """All forward passes of one iteration (no losses): the dict holds every image and feature."""
        eid, gen = self.encoder, self.models["generator"]
        out = forward_chunks(eid, x, self.cfg.train.bn_batch_size)
        code0, code1 = gen.encode_structure(s0), gen.encode_structure(s1)
        x_ori = self.decode(code0, out.parts)
        x_new = self.decode(code1, out.parts)
        out_new = self.encode_generated(x_new)
        r = {"x": x, "parts": flatten_parts(out.parts), "f": out.embedding, "x_ori": x_ori, "x_new": x_new,
             "parts_new": flatten_parts(out_new.parts), "f_new": out_new.embedding}
        if with_cycle:
            r["x_cycle"] = self.decode(code0, out_new.parts)
        return r

    def view_positive(self, batch, r: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The image that plays x'_new in Eq. 6-8 under ``gcl.views``: the generated view (``generated``),
        the true novel view at the same angle (``true_view``), the input mirrored (``flip``) or the input
        itself (``input``); `r` is :meth:`generate`'s output for the batch. Only the contrast sees it:
        the generation losses always use the generator's own x'_new."""
        views = self.cfg.gcl.views
        if views == "generated":
            return r["x_new"]
        if views == "true_view":
            if "view_new" not in batch:
                raise ConfigError("gcl.views=true_view but the batch holds no true view: the training items were built "
                                  "without them (a stage-3 run with generation and view-invariant losses loads them)")
            return batch["view_new"].to(self.device)
        if views == "flip":
            return r["x"].flip(-1)
        if views == "input":
            return r["x"]
        raise ConfigError(f"gcl.views={views!r}: expected one of {', '.join(VIEW_POSITIVES)}")

    def decode(self, code, parts):
        """G(code, parts); with ``gcl.checkpoint_decoder`` only the decoder's convolution outputs are kept
        for the backward and its element-wise intermediates recomputed there (exact: the decoder
        normalises per sample)."""
        gen = self.models["generator"]
        if not self.cfg.gcl.checkpoint_decoder:
            return gen.decode(code, parts)
        return recompute_cheap_ops(gen.decode, code, parts)

    def step(self, batch):
        g = self.cfg.gcl
        x = batch["image"].to(self.device)
        s0, s1 = batch["structure"].to(self.device), batch["structure_new"].to(self.device)
        index = batch["index"].to(self.device)
        losses: Dict[str, torch.Tensor] = {}
        use_gan = "gan" in g.losses
        eid = self.encoder
        if not use_gan:  # contrast only: no generation at all (Table 3, rows 2-3)
            with self.autocast():
                f = forward_chunks(eid, x, self.cfg.train.bn_batch_size).embedding
            total = self.contrast.contrast_only(f, index, sample=self.view_sample(index))
            losses["contrast_only"] = total
            self.optimise(total, ["identity_encoder"])
            self.contrast.memory.update(distributed.all_gather(index), distributed.all_gather(f.detach()))
            self.iteration += 1
            return {k: v.detach() for k, v in {**losses, "loss": total}.items()}

        with self.autocast():
            r = self.generate(x, s0, s1)
        # Not a loss: how close the encoder finds the generated view to its real image (mean cosine of
        # Eid(x) and Eid(x'_new)). Near 0, the view-invariant losses pull real features towards
        # features of images the encoder does not recognise (docs/results.md, issue 15).
        losses["view_cos"] = F.cosine_similarity(r["f"].detach().float(), r["f_new"].detach().float()).mean()
        fakes = [r["x_ori"], r["x_new"], r["x_cycle"]]
        # D step on detached fakes.
        D = self.models["discriminator"]
        self.zero_grad(["discriminator"])
        with self.autocast():
            # each part back-propagated at once (`backward=True`): only one of D's graphs is alive
            # at a time next to the generation graph kept for the G step
            d_loss = discriminator_loss(D, x, fakes, gan_type=g.gan_type, r1_weight=g.r1_weight,
                                        share_real=g.share_real, batch_fakes=self.batch_fakes,
                                        backward=self.stream_d_backward)
        if not self.stream_d_backward:  # the official pattern: one backward of the whole D loss
            d_loss.total.backward()
        self.apply_gradients(["discriminator"])
        losses.update(d_total=d_loss.total, d_r1=d_loss.r1)

        # G (+ Eid) step.
        _requires_grad(D, False)
        try:
            with self.autocast():
                adv = generator_adversarial_loss(D, fakes, gan_type=g.gan_type, batch_fakes=self.batch_fakes)
                l_img = image_reconstruction_loss(x, r["x_ori"], r["x_cycle"])
                f_ori = flatten_parts(self.encode_generated(r["x_ori"]).parts)
                f_cycle = None if g.feat_target == "new" else flatten_parts(self.encode_generated(r["x_cycle"]).parts)
                if g.feat_target == "new":
                    l_feat = feature_reconstruction_loss(r["parts"], f_ori, f_new=r["parts_new"], target="new")
                else:
                    l_feat = feature_reconstruction_loss(r["parts"], f_ori, f_cycle=f_cycle, target=g.feat_target)
            generation = g.gan_weight * adv + g.lambda_img * l_img + g.lambda_feat * l_feat
            total = generation
            view_terms = []  # the view-invariant part of `total`
            losses.update(g_adv=adv, l_img=l_img, l_feat=l_feat)
            if g.stage == 3:
                f_view = r["f_new"]  # gcl.views=generated: Eid(x'_new), the method
                if g.views != "generated":  # the same contrast with another image as x'_new
                    with self.autocast():
                        f_view = self.encode_generated(self.view_positive(batch, r)).embedding
                vi = self.contrast(r["f"], f_view, index, sample=self.view_sample(index))
                for name in ("lvi", "lvi2", "lvi3"):
                    if name in g.losses:
                        total = total + vi[name]
                        losses[name] = vi[name]
                        view_terms.append(vi[name])
                if "contrast_only" in g.losses:
                    extra = self.contrast.contrast_only(r["f"], index, sample=self.view_sample(index))
                    total = total + extra
                    losses["contrast_only"] = extra
                    view_terms.append(extra)
            if g.stage == 3 and not g.generation_trains_encoder:
                # the generation losses reach the generator only; the view-invariant ones both networks
                self.zero_grad(["generator", "identity_encoder"])
                generator_params = [p for group in self.optimizers["generator"].param_groups for p in group["params"]]
                generation.backward(inputs=generator_params, retain_graph=True)
                if view_terms:
                    sum(view_terms).backward()
                self.apply_gradients(["generator", "identity_encoder"])
            else:
                self.optimise(total, ["generator", "identity_encoder"] if g.stage == 3 else ["generator"])
        finally:
            _requires_grad(D, True)
        if g.stage == 3:  # under torchrun every rank applies the whole global batch: all hold the same bank
            self.contrast.memory.update(distributed.all_gather(index), distributed.all_gather(r["f"].detach()))
        losses["loss"] = total
        self.iteration += 1
        if g.grid_every > 0 and self.iteration % g.grid_every == 0 and distributed.is_main():
            grids = Path(self.cfg.run.out) / "grids"
            self.save_grid(grids / f"iter_{self.iteration:07d}.png")
            self.save_test_grid(grids / f"test_iter_{self.iteration:07d}.png")
        return {k: v.detach() for k, v in losses.items()}

    def view_sample(self, index: torch.Tensor) -> Optional[ViewSample]:
        """The memory rows (positives, negatives) of this rank's anchors: under torchrun drawn on rank 0
        for the whole global batch, as one process draws them, and sent to every rank. None in one
        process (the loss draws them itself)."""
        if not distributed.is_distributed():
            return None
        everyone = distributed.all_gather(index)
        if distributed.is_main():
            sample = self.contrast.sample(everyone)
        else:
            b, k = len(everyone), min(self.contrast.num_negatives, self.contrast.memory.num_samples)
            rows = dict(dtype=torch.long, device=index.device)
            sample = ViewSample(torch.empty(b, **rows), torch.empty(b, **rows), torch.empty(b, k, **rows),
                                torch.empty(b, k, dtype=torch.bool, device=index.device))
        distributed.broadcast_(*sample)
        lo = distributed.rank() * len(index)
        return ViewSample(*(t[lo:lo + len(index)] for t in sample))

    # -- end of epoch: pictures and novel-view metrics ----------------------------------------------------
    def end_epoch(self, epoch):
        grids = Path(self.cfg.run.out) / "grids"
        self.save_grid(grids / f"epoch_{epoch + 1:03d}.png")
        self.save_test_grid(grids / f"test_epoch_{epoch + 1:03d}.png")
        out = {}
        metrics = self.generation_metrics()
        if metrics:
            out["generation"] = metrics
        recognised = self.view_recognition()
        if recognised:
            out["view_cos"] = recognised
        return out

    @torch.no_grad()
    def save_grid(self, path: Path, count: int = 6) -> Path:
        """(input, structure 0°, reconstruction, structure at a new angle, novel view, cycle) for fixed
        training images (the new angle drawn once, when the images are first picked)."""
        from ..evaluation.visual import save_image_grid
        if self.grid_images is None:
            picks = np.linspace(0, len(self.records) - 1, num=min(count, len(self.records))).astype(int)
            # The dataset draws the new angles with Python's `random`: keep the training stream as it
            # was, so that grids (and resuming, which picks them again) do not change the run.
            py_state = random.getstate()
            try:
                items = [self._dataset([self.records[i] for i in picks], augment=False)[k] for k in range(len(picks))]
            finally:
                random.setstate(py_state)
            self.grid_images = {k: torch.stack([torch.as_tensor(it[k]) for it in items])
                                for k in ("image", "structure", "structure_new")}
        b = self.grid_images
        with self.eval_models():
            r = self.generate(b["image"].to(self.device), b["structure"].to(self.device),
                              b["structure_new"].to(self.device))
        return save_image_grid([b["image"], b["structure"], r["x_ori"], b["structure_new"], r["x_new"], r["x_cycle"]],
                               ["input", "s 0deg", "recon", "s new", "novel", "cycle"], path)

    def views_root(self) -> Path:
        """Where true novel views live (SynthReID: ``<data.root>/views/<train|test>/view_<deg>/``)."""
        return Path(self.cfg.data.root) / "views"

    def test_sample(self) -> dict:
        """A fixed sample of query images with their structure maps and, where they exist, true views.

        Images are spread evenly over the query list (`gcl.gen_eval_images`, default 16). Keys:
        ``image`` (B×3×H×W, normalised), ``structure`` (B×1×H×W, 0°), ``angles`` (the angles whose
        maps exist for every sampled image), ``structures`` (A×B×1×H×W), ``view_angles`` (those of
        ``angles`` with a true view for every image) and ``views`` (V×B×3×H×W, in [0, 1]). Empty when
        there is no query split or the maps of the test images are missing. Loaded once and cached;
        it draws no random numbers (training stays reproducible with or without it).
        """
        if self._test_sample is not None:
            return self._test_sample
        from ..data import build_test_transform, denormalize, load_image
        self._test_sample = {}
        query = list(self.dataset.query)
        if getattr(self.dataset, "validation", None):
            # Validation queries are training images: their maps and true views are under train/, not test/.
            query = [dataclasses.replace(r, split="train") for r in query]
        if not query:
            return self._test_sample
        root = self.structure_root()
        records = [r for r in self._spread(query) if structure_path(root, r, 0).is_file()]
        if not records:
            return self._test_sample
        angles = [a for a in ANGLES if all(structure_path(root, r, a).is_file() for r in records)]
        views = self.views_root()
        view_angles = []
        if views.is_dir():
            view_angles = [a for a in angles if all(self._view_path(r, a).is_file() for r in records)]
            if len(view_angles) < len(angles):
                log.warning("true views missing under %s for angles %s of the test sample; they are not scored",
                            views, sorted(set(angles) - set(view_angles)))
        transform = build_test_transform(self.cfg.data)
        maps = functools.partial(self._stacked_maps, records)
        self._test_sample = {
            "records": records,
            "image": torch.stack([transform(load_image(r.path)) for r in records]),
            "structure": maps(0),
            "angles": angles,
            "structures": torch.stack([maps(a) for a in angles]) if angles else None,
            "view_angles": view_angles,
            "views": torch.stack([denormalize(torch.stack([transform(load_image(self._view_path(r, a)))
                                                           for r in records])) for a in view_angles])
            if view_angles else None,
        }
        return self._test_sample

    def _spread(self, records) -> list:
        """`gcl.gen_eval_images` records spread evenly over `records` (each at most once)."""
        n = min(max(int(self.cfg.gcl.gen_eval_images), 1), len(records))
        return [records[i] for i in sorted(set(np.linspace(0, len(records) - 1, num=n).astype(int).tolist()))]

    def _stacked_maps(self, records, angle: int) -> torch.Tensor:
        """The structure maps of `records` at `angle`, B×1×H×W at the training size."""
        from ..structures.dataset import load_structure
        d = self.cfg.data
        return torch.stack([load_structure(structure_path(self.structure_root(), r, angle), d.height, d.width)
                            for r in records])

    def _view_path(self, record, angle: int) -> Path:
        return true_view_path(self.views_root(), record, angle)

    @torch.no_grad()
    def save_test_grid(self, path: Path, count: int = 6) -> Optional[Path]:
        """The grid of :meth:`save_grid` for fixed test (query) images, row i turned by the i-th angle
        (cycling), plus a ``true`` column when the dataset has true views; None without test maps."""
        from ..evaluation.visual import save_image_grid
        sample = self.test_sample()
        if not sample or not sample["angles"]:
            return None
        k = min(count, len(sample["records"]))
        angles = [sample["angles"][i % len(sample["angles"])] for i in range(k)]
        rows = torch.arange(k)
        a_index = torch.tensor([sample["angles"].index(a) for a in angles])
        x, s0 = sample["image"][:k], sample["structure"][:k]
        s1 = sample["structures"][a_index, rows]
        with self.eval_models(), self.autocast():
            r = self.generate(x.to(self.device), s0.to(self.device), s1.to(self.device))
        columns = [x, s0, r["x_ori"].float(), s1, r["x_new"].float()]
        titles = ["input", "s 0deg", "recon", "s new", "novel"]
        if all(a in sample["view_angles"] for a in angles):
            from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
            v_index = torch.tensor([sample["view_angles"].index(a) for a in angles])
            true = sample["views"][v_index, rows]
            mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
            columns.append((true - mean) / std)  # the grid expects normalised images
            titles.append("true")
        columns.append(r["x_cycle"].float())
        titles.append("cycle")
        return save_image_grid([c.cpu() for c in columns], titles, path)

    @torch.no_grad()
    def generation_metrics(self, batch_size: int = 16) -> Dict[str, float]:
        """SSIM / PSNR / L1 of generated novel views against the true views of the test sample.

        ``ssim``, ``psnr``, ``l1``: means over the sample and all scored angles; ``ssim_<deg>`` etc.
        per angle; ``recon_*``: the 0° reconstruction against the input; ``copy_*``: the input image
        itself scored against the true views (what a generator that ignores the angle would get);
        ``flip_*``: the mirrored input against the true views; ``body_ssim``, ``body_copy_ssim``,
        ``body_flip_ssim``: SSIM over the person only (where the structure map at 0° or at the new
        angle shows the body, grown by 2 pixels), which leaves out the background that copying gets
        right for free; ``images``: sample size. Images are compared in [0, 1] RGB (generated ones
        clamped). Empty (nothing logged) when the dataset has no true views.
        """
        from ..data import denormalize
        from ..evaluation.generation import image_metrics, ssim
        sample = self.test_sample()
        if not sample or not sample["view_angles"]:
            return {}
        eid, gen = self.encoder, self.models["generator"]
        angles = sample["view_angles"]
        a_index = [sample["angles"].index(a) for a in angles]
        sums: Dict[str, float] = {}

        # Every image is scored on the CPU in float32, moved there once.
        def add(prefix: str, a: torch.Tensor, b: torch.Tensor) -> None:
            for name, values in image_metrics(a, b, max_db=PSNR_CAP_DB).items():
                sums[prefix + name] = sums.get(prefix + name, 0.0) + float(values.sum())

        def add_body(key: str, a: torch.Tensor, b: torch.Tensor, body: torch.Tensor) -> None:
            values = ssim(a, b, mask=body).nan_to_num(0.0)
            sums[key] = sums.get(key, 0.0) + float(values.sum())

        def body_mask(*maps: torch.Tensor) -> torch.Tensor:
            shown = torch.stack([m > -1 + 1e-3 for m in maps]).any(0).float()  # maps are black (−1) off the body
            return F.max_pool2d(shown, kernel_size=5, stride=1, padding=2)

        n = len(sample["records"])
        with self.eval_models(), self.autocast():
            for lo in range(0, n, batch_size):
                x = sample["image"][lo:lo + batch_size].to(self.device)
                real = denormalize(x.float()).cpu()
                mirrored = real.flip(-1)
                parts = eid(x).parts
                s0 = sample["structure"][lo:lo + batch_size]
                add("recon_", denormalize(gen.decode(gen.encode_structure(s0.to(self.device)), parts).float()).cpu(), real)
                for v, (angle, a) in enumerate(zip(angles, a_index)):
                    s = sample["structures"][a, lo:lo + batch_size]
                    fake = denormalize(gen.decode(gen.encode_structure(s.to(self.device)), parts).float()).cpu()
                    true = sample["views"][v, lo:lo + batch_size].float().cpu()
                    body = body_mask(s0, s)
                    add(f"gen_{angle}_", fake, true)
                    add("copy_", real, true)
                    add("flip_", mirrored, true)
                    add_body("body_gen_ssim", fake, true, body)
                    add_body("body_copy_ssim", real, true, body)
                    add_body("body_flip_ssim", mirrored, true, body)
        out: Dict[str, float] = {"images": n}
        views = n * len(angles)
        for name in ("ssim", "psnr", "l1"):
            per_angle = [sums[f"gen_{a}_{name}"] / n for a in angles]
            out[name] = float(np.mean(per_angle))
            out.update({f"{name}_{a}": v for a, v in zip(angles, per_angle)})
            out[f"recon_{name}"] = sums[f"recon_{name}"] / n
            out[f"copy_{name}"] = sums[f"copy_{name}"] / views
            out[f"flip_{name}"] = sums[f"flip_{name}"] / views
        out["body_ssim"] = sums["body_gen_ssim"] / views
        out["body_copy_ssim"] = sums["body_copy_ssim"] / views
        out["body_flip_ssim"] = sums["body_flip_ssim"] / views
        return out

    def train_sample(self) -> dict:
        """A fixed sample of training images with their structure maps, for :meth:`view_recognition`.

        `gcl.gen_eval_images` images spread evenly over the training list; keys ``image`` (B×3×H×W,
        normalised, test transform), ``structure`` (B×1×H×W, 0°), ``angles`` (those of `gcl.angles`
        whose maps exist for every sampled image) and ``structures`` (A×B×1×H×W). Empty when no map
        at 0° exists. Loaded once and cached; it draws no random numbers.
        """
        if self._train_sample is not None:
            return self._train_sample
        from ..data import build_test_transform, load_image
        self._train_sample = {}
        root = self.structure_root()
        records = [r for r in self._spread(self.records) if structure_path(root, r, 0).is_file()]
        angles = [a for a in self.cfg.gcl.angles if all(structure_path(root, r, a).is_file() for r in records)]
        if len(records) < 2 or not angles:
            return self._train_sample
        transform = build_test_transform(self.cfg.data)
        self._train_sample = {"records": records, "image": torch.stack([transform(load_image(r.path)) for r in records]),
                              "structure": self._stacked_maps(records, 0), "angles": angles,
                              "structures": torch.stack([self._stacked_maps(records, a) for a in angles])}
        return self._train_sample

    @torch.no_grad()
    def view_recognition(self, batch_size: int = 16) -> Dict[str, float]:
        """Does the identity encoder recognise the generated views? Needs no true views, so it works on
        any dataset (real Market-1501 too): the cosine of Eid(x) and Eid(G(x, s_angle)) in eval mode.

        On :meth:`train_sample`: ``novel`` (mean over the images and the training angles, the eval-mode
        twin of the ``view_cos`` loss entry of stage 3), ``novel_<deg>`` per angle, ``recon`` (the 0°
        reconstruction), and two baselines: ``mirror`` (the mirrored input: what a view the encoder
        certainly recognises scores) and ``other`` (another image of the sample, half the sample
        away: a stranger, as a rule). The view-invariant losses of stage 3 pull Eid(x) towards Eid(x'_new);
        with ``novel`` near ``other`` they pull each person towards strangers (docs/results.md, Market).
        """
        sample = self.train_sample()
        if not sample:
            return {}
        eid, gen = self.encoder, self.models["generator"]
        x_all, angles = sample["image"], sample["angles"]
        n = len(x_all)
        sums = {k: 0.0 for k in ["recon", "mirror", *[f"novel_{a}" for a in angles]]}
        feats = []

        def cos(a, b):
            return float(F.cosine_similarity(a.float(), b.float()).sum())

        with self.eval_models(), self.autocast():
            for lo in range(0, n, batch_size):
                x = x_all[lo:lo + batch_size].to(self.device)
                out = eid(x)
                f, parts = out.embedding, out.parts
                feats.append(f.float().cpu())
                sums["mirror"] += cos(f, eid(x.flip(-1)).embedding)
                s0 = sample["structure"][lo:lo + batch_size].to(self.device)
                sums["recon"] += cos(f, eid(gen.decode(gen.encode_structure(s0), parts)).embedding)
                for a_i, angle in enumerate(angles):
                    s = sample["structures"][a_i, lo:lo + batch_size].to(self.device)
                    sums[f"novel_{angle}"] += cos(f, eid(gen.decode(gen.encode_structure(s), parts)).embedding)
        f = torch.cat(feats)
        out = {k: v / n for k, v in sums.items()}
        out["novel"] = float(np.mean([out[f"novel_{a}"] for a in angles]))
        out["other"] = cos(f, f.roll(n // 2, 0)) / n
        out["images"] = n
        return out

    # -- checkpoint state ---------------------------------------------------------------------------------
    def state(self):
        state = {"labels": self.labels, "memory_ready": self.memory_ready, "iteration": self.iteration}
        if self.contrast is not None:
            state["memory"] = self.contrast.memory.state_dict()
        return state

    def load_state(self, state):
        self.labels = self.check_per_image_state(state.get("labels", self.labels), self.records)
        self.memory_ready = bool(state.get("memory_ready", False))
        self.iteration = int(state.get("iteration", 0))
        if self.contrast is not None and "memory" in state:
            self.contrast.memory.load_state_dict(state["memory"])

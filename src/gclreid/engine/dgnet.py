"""DG-Net (seed 004): joint discriminative and generative learning for supervised person re-identification.

Networks: the appearance encoder Ea (:class:`gclreid.models.AppearanceEncoder`: GCL's identity
encoder with max pooling and two classifier heads), and GCL's structure encoder (on the grey image),
AdaIN decoder and multi-scale discriminator. One iteration on a batch of pairs (a, positive of a,
b, positive of b), l_a ≠ l_b guaranteed (:class:`gclreid.data.pairs.PairSampler`)::

    f, logits    = Ea(x_a, x_pa, x_b, x_pb)          (logits on random-erased copies when erasing is on)
    s_a, s_b     = Es(gray(x_a)), Es(gray(x_b))
    x_ba, x_ab   = G(s_b, f_a), G(s_a, f_b)           cross-identity generation
    x_a^a, x_a^p = G(s_a, f_a), G(s_a, f_pa)          self-identity generation (and for b)

1. D step on (x_a vs x_ba) + (x_b vs x_ab), fakes detached (LSGAN + R1 as the official code).
2. One backward of Eq. 10 that steps G (Es + decoder + MLPs) and Ea:
   λimg·(Eq. 1 + Eq. 2) + λgan·Eq. 7 + λid·Eq. 6 + λcode(t)·(Eq. 4 + Eq. 5) + λcycle(t)·cycle
   + λid_real·Eq. 3 + λprim(t)·Eq. 8 + λfine(t)·Eq. 9 (+ λfine(t)·fine head on real images),
   λfine = α·λprim, the (t) weights ramped by iteration (:class:`LossRamps`, kept in the checkpoint).

Gradient routing (docs/dgnet.md):

* Ea is trained by the re-ID losses only when ``dgnet.detach_appearance`` (official): the decoder gets
  the appearance code detached. ``false`` lets the reconstruction and generation losses reach Ea too
  (the paper's reading of Eq. 2).
* Eq. 4 and Eq. 6 re-encode the generated images with a *frozen* Ea (parameters detached, dropout
  off, BatchNorm on the batch's statistics without touching the running ones): their gradient trains
  G through the generated image, never Ea. (The official code deep-copies Ea every iteration and, because
  Ea detaches its code, its Eq. 4 has no gradient at all; here it trains G.)
* Eq. 5: with probability ``structure_reencode_p`` Es re-encodes the *detached* generated image (Es is
  trained), otherwise a frozen Es encodes the live image (G is trained) — the official two-step policy.
* Eq. 8 and 9 train Ea on the *detached* generated images; the teacher runs under no_grad.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from ..checkpoint import load_model_state, read_checkpoint
from ..config import ConfigError, OptimConfig, load_config
from ..errors import CheckpointError, DatasetError
from ..losses import (fine_grained_loss, generated_identity_loss, l1_reconstruction,
                      paired_discriminator_loss, paired_generator_loss, soft_label_kl, teacher_soft_labels, to_gray)
from ..losses.gan import GAN_TYPES
from ..models import build_appearance_encoder, build_discriminator, build_generator, build_identity_encoder
from ..models.appearance_encoder import TEST_FEATURES
from . import distributed
from .common import forward_chunks
from .data import Limited, usable_train_records
from .method import Method, register_method
from .optim import build_optimizer

log = logging.getLogger("gclreid")

STREAMS = ("a", "pa", "b", "pb")
SINGLE_IMAGE_POLICIES = ("error", "drop", "self")
TEACHER_BN = ("batch", "running")


# ---------------------------------------------------------------------------------------------- helpers

@contextlib.contextmanager
def _eval_except_bn(module: nn.Module, bn_batch_stats: bool):
    """``module`` in eval mode (no dropout), its BatchNorm layers in training mode when ``bn_batch_stats``
    (normalising with the batch's statistics); every module's mode is restored afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    if bn_batch_stats:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def frozen_forward(module: nn.Module, x: torch.Tensor, bn_batch_stats: bool = True):
    """``module(x)`` as a frozen copy: parameters detached (gradients reach ``x`` only), dropout off,
    BatchNorm on the batch statistics (``bn_batch_stats``) or the running ones, and the module's own
    buffers (running statistics) left untouched. Replaces the official per-iteration ``deepcopy``."""
    params = {k: v.detach() for k, v in module.named_parameters()}
    buffers = {k: v.clone() for k, v in module.named_buffers()}
    with _eval_except_bn(module, bn_batch_stats):
        return torch.func.functional_call(module, (params, buffers), (x,))


@dataclass
class Ramp:
    """Weight 0 before iteration ``start``, then linear to ``max`` over ``iters`` iterations."""
    max: float
    start: int
    iters: int

    def __call__(self, iteration: int) -> float:
        if iteration < self.start:
            return 0.0
        if self.iters <= 0:
            return float(self.max)
        return float(self.max) * min(1.0, (iteration - self.start + 1) / self.iters)


class LossRamps:
    """DG-Net's scheduled weights as functions of the iteration (the optimisation steps done so far):
    ``prim`` (λprim, Eq. 8), ``fine`` (= α·λprim, Eq. 9), ``code`` (Eq. 4–5), ``cycle``. The official
    code ramps them by mutating its config dict, which a resume loses; here the iteration is part of
    the method state in the checkpoint, so a resumed run continues the ramps where they were."""

    def __init__(self, d) -> None:
        def ramp(r, name):
            if r.max < 0 or r.start < 0 or r.iters < 0:
                raise ConfigError(f"dgnet.{name}: max, start and iters must be >= 0, got {dict(r)}")
            return Ramp(float(r.max), int(r.start), int(r.iters))
        if d.alpha < 0:
            raise ConfigError(f"dgnet.alpha={d.alpha}; expected >= 0")
        self.prim = ramp(d.lambda_prim, "lambda_prim")
        self.code = ramp(d.lambda_code, "lambda_code")
        self.cycle = ramp(d.lambda_cycle, "lambda_cycle")
        self.alpha = float(d.alpha)
        self.iteration = 0

    def weights(self, iteration: Optional[int] = None) -> Dict[str, float]:
        it = self.iteration if iteration is None else iteration
        prim = self.prim(it)
        return {"prim": prim, "fine": self.alpha * prim, "code": self.code(it), "cycle": self.cycle(it)}

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "weights": self.weights()}

    def load_state_dict(self, state: dict) -> None:
        self.iteration = int(state["iteration"])


# ---------------------------------------------------------------------------------------------- teacher

class Teacher(nn.Module):
    """The teacher of primary feature learning: a `supervised` run's identity encoder and classifier,
    frozen. :meth:`soft_labels` gives q(k|x) for Eq. 8."""

    def __init__(self, encoder: nn.Module, classifier: nn.Linear, bn: str = "batch", flip: bool = True):
        super().__init__()
        if bn not in TEACHER_BN:
            raise ConfigError(f"dgnet.teacher_bn={bn!r}; expected one of {', '.join(TEACHER_BN)}")
        self.encoder, self.classifier, self.bn, self.flip = encoder, classifier, bn, flip
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x).embedding)

    @torch.no_grad()
    def soft_labels(self, x: torch.Tensor) -> torch.Tensor:
        batch_stats = self.bn == "batch"
        logits = frozen_forward(self, x, batch_stats)
        flipped = frozen_forward(self, torch.flip(x, dims=[3]), batch_stats) if self.flip else None
        return teacher_soft_labels(logits, flipped)


def load_teacher(path: str, num_classes: int, cfg, device: torch.device) -> Teacher:
    """The teacher from a gclreid checkpoint of a `supervised` run; its classes must be DG-Net's."""
    payload = read_checkpoint(path)
    saved = payload.get("config") or {}
    method = (saved.get("train") or {}).get("method")
    if method and method != "supervised":
        raise CheckpointError(f"dgnet.teacher={path} was written by method {method!r}; the teacher must be a "
                              "`supervised` run (identity encoder + classifier)")
    models = payload["models"]
    missing = [k for k in ("identity_encoder", "classifier") if k not in models]
    if missing:
        raise CheckpointError(f"dgnet.teacher={path} has no {' and '.join(missing)} (it holds {sorted(models)}); "
                              "the teacher must be a `supervised` run")
    model_cfg = dict(saved.get("model") or {})
    model_cfg["pretrained"] = False
    encoder = build_identity_encoder(model_cfg)
    load_model_state(encoder, models["identity_encoder"], source=f"teacher identity encoder in {path}")
    weight = models["classifier"]["weight"]
    if weight.shape[0] != num_classes:
        raise CheckpointError(f"dgnet.teacher={path} classifies {weight.shape[0]} identities, but the DG-Net "
                              f"training set has {num_classes}; train the teacher on the same training set")
    classifier = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in models["classifier"])
    load_model_state(classifier, models["classifier"], source=f"teacher classifier in {path}")
    data = saved.get("data") or {}
    if data and (data.get("name") != cfg.data.name or Path(str(data.get("root"))).resolve() != Path(cfg.data.root).resolve()):
        log.warning("the teacher %s was trained on %s at %s, DG-Net trains on %s at %s; its classes only mean "
                    "the same identities when both training sets are the same", path, data.get("name"),
                    data.get("root"), cfg.data.name, cfg.data.root)
    return Teacher(encoder, classifier, cfg.dgnet.teacher_bn, cfg.dgnet.teacher_flip).to(device)


def teacher_run_config(cfg):
    """The config of the teacher run DG-Net trains when ``dgnet.teacher`` is empty: ``dgnet.teacher_config``,
    with DG-Net's dataset (``data.name/root/options/height/width/workers/skip_bad_images/val_*``) and ``model``
    section, then ``dgnet.teacher_overrides``, run folder ``<run.out>/teacher`` and DG-Net's seed/device."""
    d = cfg.dgnet
    tcfg = load_config(d.teacher_config)
    data = {k: OmegaConf.to_container(cfg.data, resolve=True)[k]
            for k in ("name", "root", "options", "height", "width", "workers", "skip_bad_images", "val_identities",
                      "val_seed")}
    try:
        tcfg.data.options = {}
        tcfg = OmegaConf.merge(tcfg, {"data": data, "model": OmegaConf.to_container(cfg.model, resolve=True)})
        if d.teacher_overrides:
            bad = [o for o in d.teacher_overrides if "=" not in o]
            if bad:
                raise ConfigError(f"dgnet.teacher_overrides entry {bad[0]!r} must look like key.sub=value")
            tcfg = OmegaConf.merge(tcfg, OmegaConf.from_dotlist(list(d.teacher_overrides)))
    except ConfigError:
        raise
    except Exception as exc:  # omegaconf validation errors
        raise ConfigError(f"dgnet.teacher_overrides do not fit the config schema: {exc}") from exc
    tcfg.run.out = str(Path(cfg.run.out) / "teacher")
    tcfg.run.seed, tcfg.run.device, tcfg.run.deterministic = cfg.run.seed, cfg.run.device, cfg.run.deterministic
    if tcfg.train.method != "supervised":
        raise ConfigError(f"dgnet.teacher_config={d.teacher_config} trains method {tcfg.train.method!r}; the teacher "
                          "must be trained by the `supervised` method")
    return tcfg


def prepare_teacher(cfg, dataset) -> str:
    """The teacher checkpoint: ``dgnet.teacher``, or ``<run.out>/teacher/last.pt`` — trained now with
    :func:`teacher_run_config` unless a finished one is already there (an unfinished one is resumed).
    The global RNG state is restored afterwards, so DG-Net itself starts the same either way."""
    from ..runtime import rng_state, set_rng_state
    from .loop import train
    if cfg.dgnet.teacher:
        if not Path(cfg.dgnet.teacher).is_file():
            raise CheckpointError(f"dgnet.teacher={cfg.dgnet.teacher} does not exist (leave it empty to train the "
                                  "teacher into <run.out>/teacher/ first)")
        return cfg.dgnet.teacher
    tcfg = teacher_run_config(cfg)
    ckpt = Path(tcfg.run.out) / "last.pt"
    if ckpt.is_file() and read_checkpoint(ckpt).get("epoch", 0) >= tcfg.train.epochs:
        log.info("DG-Net teacher: reusing %s", ckpt)
        return str(ckpt)
    log.info("DG-Net teacher: training a `supervised` model (%s, %d epochs) into %s", cfg.dgnet.teacher_config,
             tcfg.train.epochs, tcfg.run.out)
    state = rng_state()
    try:
        train(tcfg, resume="auto", dataset=dataset)
    finally:
        set_rng_state(state)
    return str(ckpt)


# ---------------------------------------------------------------------------------------------- method

@register_method("dgnet")
class DGNet(Method):
    def __init__(self, cfg, dataset, device):
        super().__init__(cfg, dataset, device)
        d = cfg.dgnet
        self._check_config(d)
        self.records = usable_train_records(dataset, cfg)
        pids = np.array([r.pid for r in self.records])
        if (pids < 0).any():
            raise DatasetError(f"train.method=dgnet needs identity labels, but {int((pids < 0).sum())} training images "
                               f"of {dataset.name!r} at {dataset.root} have none (DG-Net is supervised; GCL is the "
                               "unsupervised method)")
        # Labels as the `supervised` method numbers them, so that the teacher's classes line up.
        _, self.labels = np.unique(pids, return_inverse=True)
        self.num_classes = int(self.labels.max()) + 1
        if d.num_classes and d.num_classes != self.num_classes:
            raise ConfigError(f"dgnet.num_classes={d.num_classes}, but the training set of {dataset.name!r} at "
                              f"{dataset.root} has {self.num_classes} identities (set it to {self.num_classes}, or 0)")
        counts = np.bincount(self.labels)
        self.usable = counts[self.labels] > 1 if d.single_image_ids == "drop" else np.ones(len(self.labels), bool)
        if d.single_image_ids == "drop" and (~self.usable).any():
            log.warning("DG-Net: %d identities with a single training image are left out of the pairs "
                        "(dgnet.single_image_ids=drop)", int((counts == 1).sum()))
        from ..data.pairs import PairSampler
        PairSampler(self.labels, seed=0, allow_self_positive=d.single_image_ids == "self", usable=self.usable)  # checks

        self.teacher_path = prepare_teacher(cfg, dataset)
        self.teacher = load_teacher(self.teacher_path, self.num_classes, cfg, device)

        ea = build_appearance_encoder(cfg.model, d, self.num_classes)
        if cfg.train.init:
            self._init_appearance(ea, cfg.train.init)
        elif d.init_from_teacher:
            report = load_model_state(ea, self.teacher.encoder.state_dict(), source=f"teacher {self.teacher_path}",
                                      strict=False)
            log.info("initialised Ea's backbone and primary bottleneck from the teacher (%d head tensors keep their "
                     "initial values)", len(report["missing"]))
        ea = ea.to(device)
        generator = build_generator(cfg.generator, ea.part_dim).to(device)
        if generator.structure_encoder.input_channels != 1:
            raise ConfigError(f"generator.input_channels={cfg.generator.input_channels}: DG-Net's structure encoder "
                              "reads the grey image (1 channel)")
        discriminator = build_discriminator(cfg.generator).to(device)
        self.models = {"appearance_encoder": ea, "generator": generator, "discriminator": discriminator}
        adam = dict(name="adam", weight_decay=d.weight_decay_gd, betas=list(d.betas_gd))
        self.optimizers = {
            "generator": build_optimizer([generator], OptimConfig(lr=d.lr_g, **adam), cfg.train.batch_size),
            "discriminator": build_optimizer([discriminator], OptimConfig(lr=d.lr_d, **adam), cfg.train.batch_size),
            "appearance_encoder": self._encoder_optimizer(ea),
        }
        self.ramps = LossRamps(d)
        self.teacher_eval: Optional[dict] = None
        self.real_ssim: Optional[float] = None
        self._pairs = None
        self._grid_train: Optional[torch.Tensor] = None
        self._grid_test: Optional[torch.Tensor] = None
        self._test_sample: Optional[torch.Tensor] = None

    # -- set-up -----------------------------------------------------------------------------------------
    @staticmethod
    def _check_config(d) -> None:
        if d.single_image_ids not in SINGLE_IMAGE_POLICIES:
            raise ConfigError(f"dgnet.single_image_ids={d.single_image_ids!r}; expected one of "
                              f"{', '.join(SINGLE_IMAGE_POLICIES)}")
        if d.teacher_bn not in TEACHER_BN:
            raise ConfigError(f"dgnet.teacher_bn={d.teacher_bn!r}; expected one of {', '.join(TEACHER_BN)}")
        if d.gan_type not in GAN_TYPES:
            raise ConfigError(f"dgnet.gan_type={d.gan_type!r}; expected one of {', '.join(GAN_TYPES)}")
        if not 0 <= d.structure_reencode_p <= 1:
            raise ConfigError(f"dgnet.structure_reencode_p={d.structure_reencode_p}; expected a probability in [0, 1]")
        if d.test_feature not in TEST_FEATURES:
            raise ConfigError(f"dgnet.test_feature={d.test_feature!r}; expected one of {', '.join(TEST_FEATURES)}")
        bad = [f for f in d.eval_features if f not in TEST_FEATURES]
        if bad:
            raise ConfigError(f"dgnet.eval_features has {bad}; expected a subset of {list(TEST_FEATURES)}")
        for name in ("lambda_img", "lambda_id", "lambda_id_real", "lambda_gan", "head_lr_mult", "lr_g", "lr_d"):
            if getattr(d, name) < 0:
                raise ConfigError(f"dgnet.{name}={getattr(d, name)}; expected >= 0")

    def _init_appearance(self, ea: nn.Module, path: str) -> None:
        """train.init: a DG-Net checkpoint's Ea (exactly), or a GCL/supervised checkpoint's identity encoder
        (backbone + primary bottleneck; the heads keep their initial values, and are listed)."""
        payload = read_checkpoint(path)
        models = payload["models"]
        if "appearance_encoder" in models:
            load_model_state(ea, models["appearance_encoder"], source=f"model 'appearance_encoder' in {path}")
        elif "identity_encoder" in models:
            report = load_model_state(ea, models["identity_encoder"], source=f"model 'identity_encoder' in {path}",
                                      strict=False)
            log.info("initialised Ea from %s; not in the file (initial values kept): %s", path,
                     ", ".join(report["missing"]))
        else:
            raise CheckpointError(f"train.init={path} holds neither 'appearance_encoder' nor 'identity_encoder' "
                                  f"(it has {sorted(models)})")

    def _encoder_optimizer(self, ea: nn.Module) -> torch.optim.Optimizer:
        """SGD (Nesterov) for Ea: backbone at optim.lr, heads at optim.lr × dgnet.head_lr_mult (official
        0.002 / 0.02, weight decay 5e-4 on everything)."""
        o, d = self.cfg.optim, self.cfg.dgnet
        backbone = [p for p in ea.backbone.parameters() if p.requires_grad]
        ids = {id(p) for p in backbone}
        heads = [p for p in ea.parameters() if p.requires_grad and id(p) not in ids]
        groups = [{"params": backbone, "lr": o.lr}, {"params": heads, "lr": o.lr * d.head_lr_mult}]
        if o.name == "sgd":
            return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                   nesterov=bool(d.nesterov) and o.momentum > 0)
        if o.name == "adam":
            return torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        raise ConfigError(f"optim.name={o.name!r}: DG-Net's appearance encoder trains with sgd (official) or adam")

    @property
    def encoder(self) -> nn.Module:
        return self.models["appearance_encoder"]

    # -- data -------------------------------------------------------------------------------------------
    def _pair_dataset(self):
        from ..data import RandomErasing, build_train_transform
        from ..data.pairs import PairDataset
        data = OmegaConf.create(OmegaConf.to_container(self.cfg.data, resolve=True))
        erasing_p, fill = float(data.transforms.erasing_p), str(data.transforms.erasing_fill)
        data.transforms.erasing_p = 0.0  # G, Es and D see un-erased images
        id_transform = RandomErasing(erasing_p, fill=fill) if erasing_p > 0 else None
        return PairDataset(self.records, self.labels.tolist(), build_train_transform(data), id_transform)

    def loader(self, epoch):
        from ..data import build_loader
        from ..data.pairs import PairSampler
        t = self.cfg.train
        if self._pairs is None:
            self._pairs = self._pair_dataset()
        # Under torchrun every rank draws the same global batches (rank 0's seed) and loads its share.
        sampler = PairSampler(self.labels, seed=distributed.shared_seed(),
                              allow_self_positive=self.cfg.dgnet.single_image_ids == "self", usable=self.usable)
        loader = build_loader(self._pairs, distributed.rank_batch(t.batch_size), sampler=sampler,
                              workers=self.cfg.data.workers, drop_last=True, shard=distributed.shard_spec())
        if len(loader) == 0:
            raise DatasetError(f"no complete batch of {t.batch_size} pairs: only {len(sampler)} usable training images "
                               f"(train.batch_size={t.batch_size})")
        return Limited(loader, t.iters_per_epoch)

    def train_mode(self):
        super().train_mode()
        self.teacher.eval()

    # -- iteration --------------------------------------------------------------------------------------
    def forward(self, batch: dict) -> Dict[str, torch.Tensor]:
        """Every forward pass that does not depend on the loss weights; returns a dict of tensors."""
        dev, d = self.device, self.cfg.dgnet
        ea, gen = self.encoder, self.models["generator"]
        x = {s: batch[f"image_{s}"].to(dev, non_blocking=True) for s in STREAMS}
        labels = {s: torch.as_tensor(batch[f"label_{s}"]).to(dev) for s in STREAMS}
        n = len(x["a"])
        bn = self.cfg.train.bn_batch_size
        out = forward_chunks(ea, torch.cat([x[s] for s in STREAMS]), bn)
        codes = out.flat_parts()
        dec = codes.detach() if d.detach_appearance else codes
        fd = dict(zip(STREAMS, dec.split(n)))
        if f"erased_{STREAMS[0]}" in batch:  # ID losses on random-erased copies (official)
            out_id = forward_chunks(ea, torch.cat([batch[f"erased_{s}"].to(dev, non_blocking=True) for s in STREAMS]),
                                    bn)
        else:
            out_id = out
        s_a, s_b = gen.encode_structure(to_gray(torch.cat([x["a"], x["b"]]))).split(n)
        images = gen.decode(torch.cat([s_b, s_a, s_a, s_b, s_a, s_b]),
                            torch.cat([fd["a"], fd["b"], fd["a"], fd["b"], fd["pa"], fd["pb"]])).split(n)
        r = {f"x_{s}": x[s] for s in STREAMS}
        r.update({f"l_{s}": labels[s] for s in STREAMS})
        r.update(dict(zip(("x_ba", "x_ab", "x_a_rec", "x_b_rec", "x_a_rec_p", "x_b_rec_p"), images)))
        r.update({f"f_{s}": f for s, f in zip(STREAMS, codes.split(n))}, s_a=s_a, s_b=s_b,
                 logits_prim=out_id.logits_prim, logits_fine=out_id.logits_fine)
        return r

    def discriminator_loss(self, r: Dict[str, torch.Tensor]):
        d = self.cfg.dgnet
        return paired_discriminator_loss(self.models["discriminator"], [(r["x_a"], r["x_ba"]), (r["x_b"], r["x_ab"])],
                                         gan_type=d.gan_type, r1_weight=d.r1_weight)

    def generator_losses(self, r: Dict[str, torch.Tensor], w: Dict[str, float]) -> Dict[str, torch.Tensor]:
        """The unweighted loss terms of Eq. 10 for the forward results ``r`` (terms whose weight ``w`` is 0
        this iteration are not computed, as in the official code)."""
        d = self.cfg.dgnet
        ea, gen, D = self.encoder, self.models["generator"], self.models["discriminator"]
        l_a, l_b = r["l_a"], r["l_b"]
        n = len(l_a)
        losses: Dict[str, torch.Tensor] = {}
        losses["adv"] = paired_generator_loss(D, [r["x_ba"], r["x_ab"]], gan_type=d.gan_type)
        losses["img1"] = l1_reconstruction(r["x_a_rec"], r["x_a"]) + l1_reconstruction(r["x_b_rec"], r["x_b"])
        losses["img2"] = l1_reconstruction(r["x_a_rec_p"], r["x_a"]) + l1_reconstruction(r["x_b_rec_p"], r["x_b"])
        generated = torch.cat([r["x_ba"], r["x_ab"]])
        frozen = frozen_forward(ea, generated, bn_batch_stats=True)
        losses["id_gen"] = generated_identity_loss(*frozen.logits_prim.split(n), l_a, l_b)
        if w["code"] > 0 or w["cycle"] > 0:
            f_a_rec, f_b_rec = frozen.flat_parts().split(n)
            swapped = torch.cat([r["x_ab"], r["x_ba"]])  # structure of a, structure of b
            # one draw for all ranks (rank 0's, under torchrun): every rank trains the same networks
            if distributed.from_main(lambda: float(torch.rand(()))) < d.structure_reencode_p:
                s_rec = gen.encode_structure(to_gray(swapped.detach()))
            else:
                s_rec = frozen_forward(gen.structure_encoder, to_gray(swapped))
            s_a_rec, s_b_rec = s_rec.split(n)
            if w["code"] > 0:
                losses["code_s"] = l1_reconstruction(s_a_rec, r["s_a"]) + l1_reconstruction(s_b_rec, r["s_b"])
                losses["code_f"] = l1_reconstruction(f_a_rec, r["f_a"]) + l1_reconstruction(f_b_rec, r["f_b"])
            if w["cycle"] > 0:
                cyc_a, cyc_b = gen.decode(s_rec, torch.cat([f_a_rec, f_b_rec])).split(n)
                losses["cycle"] = l1_reconstruction(cyc_a, r["x_a"]) + l1_reconstruction(cyc_b, r["x_b"])
        logits = dict(zip(STREAMS, r["logits_prim"].split(n)))
        losses["id_real"] = sum(F.cross_entropy(logits[s].float(), r[f"l_{s}"]) for s in STREAMS)
        if w["fine"] > 0 and d.fine_on_real:
            fine = dict(zip(STREAMS, r["logits_fine"].split(n)))
            losses["fine_real"] = F.cross_entropy(fine["a"].float(), l_a) + F.cross_entropy(fine["b"].float(), l_b)
        if w["prim"] > 0 or w["fine"] > 0:
            generated = generated.detach()
            student = forward_chunks(ea, generated, self.cfg.train.bn_batch_size)
            if w["prim"] > 0:
                q = self.teacher.soft_labels(generated)
                p_ba, p_ab = student.logits_prim.split(n)
                losses["prim"] = soft_label_kl(p_ba, q[:n]) + soft_label_kl(p_ab, q[n:])
            if w["fine"] > 0:
                losses["fine"] = fine_grained_loss(*student.logits_fine.split(n), l_a, l_b)
        return losses

    def total_loss(self, losses: Dict[str, torch.Tensor], w: Dict[str, float]) -> torch.Tensor:
        """Eq. 10 (plus the official cycle term and fine head on real images)."""
        d = self.cfg.dgnet
        weight = {"adv": d.lambda_gan, "img1": d.lambda_img, "img2": d.lambda_img, "id_gen": d.lambda_id,
                  "code_s": w["code"], "code_f": w["code"], "cycle": w["cycle"], "id_real": d.lambda_id_real,
                  "fine_real": w["fine"], "prim": w["prim"], "fine": w["fine"]}
        return sum(weight[k] * v for k, v in losses.items())

    def step(self, batch):
        w = self.ramps.weights()
        D = self.models["discriminator"]
        with self.autocast():
            r = self.forward(batch)
            d_loss = self.discriminator_loss(r)
        self.optimise(self.cfg.dgnet.lambda_gan * d_loss.total, ["discriminator"])
        for p in D.parameters():
            p.requires_grad_(False)
        try:
            with self.autocast():
                losses = self.generator_losses(r, w)
            total = self.total_loss(losses, w)
            self.optimise(total, ["generator", "appearance_encoder"])
        finally:
            for p in D.parameters():
                p.requires_grad_(True)
        self.ramps.iteration += 1
        n = len(r["l_a"])
        accuracy = (r["logits_prim"][:n].argmax(1) == r["l_a"]).float().mean()
        g = self.cfg.dgnet.grid_every
        if g > 0 and self.ramps.iteration % g == 0 and distributed.is_main():
            self.save_swap_grids(f"iter_{self.ramps.iteration:07d}")
        logged = {k: v.detach() for k, v in losses.items()}
        logged.update(loss=total.detach(), d_total=d_loss.total.detach(), d_r1=d_loss.r1.detach(),
                      accuracy=accuracy.detach(), **{f"w_{k}": torch.tensor(v) for k, v in w.items()})
        return logged

    # -- end of epoch: extra evaluations, grids, SSIM ------------------------------------------------------
    def _eval_due(self, epoch: int) -> bool:
        t = self.cfg.train
        evaluable = bool(self.dataset.query) and bool(self.dataset.gallery)
        return evaluable and ((t.eval_every and (epoch + 1) % t.eval_every == 0) or epoch + 1 == t.epochs)

    def end_epoch(self, epoch):
        record: Dict[str, object] = {"loss_weights": self.ramps.weights(), "iteration": self.ramps.iteration}
        self.save_swap_grids(f"epoch_{epoch + 1:03d}")
        gen = self.generation_metrics()
        if gen:
            record["generation"] = gen
        if self._eval_due(epoch):
            record.update(self.extra_evaluations())
        return record

    def extra_evaluations(self) -> Dict[str, dict]:
        """``eval_<feature>`` for each of ``dgnet.eval_features`` (the loop's ``eval`` is ``dgnet.test_feature``)
        and ``eval_teacher`` (the baseline; evaluated once, kept in the checkpoint)."""
        from ..evaluation.pipeline import evaluate_model
        ea, d = self.encoder, self.cfg.dgnet

        def summary(result):
            return {"mAP": result["mAP"], "mINP": result["mINP"],
                    **{f"rank{k}": float(result["cmc"][k - 1]) for k in (1, 5, 10) if k <= len(result["cmc"])}}

        out: Dict[str, dict] = {}
        chosen = ea.test_feature
        try:
            for feature in d.eval_features:
                if feature == chosen:
                    continue
                ea.set_test_feature(feature)
                out[f"eval_{feature}"] = summary(evaluate_model(ea, self.dataset, self.cfg.data, self.cfg.eval,
                                                                self.device, progress=log, desc=f"eval_{feature}"))
        finally:
            ea.set_test_feature(chosen)
        if d.eval_teacher:
            if self.teacher_eval is None:
                self.teacher_eval = summary(evaluate_model(self.teacher.encoder, self.dataset, self.cfg.data,
                                                           self.cfg.eval, self.device, progress=log,
                                                           desc="eval_teacher"))
            out["eval_teacher"] = self.teacher_eval
        for name, values in out.items():
            log.info("%s: mAP %.2f%%  rank-1 %.2f%%", name, 100 * values["mAP"], 100 * values.get("rank1", 0.0))
        return out

    def _images(self, records) -> torch.Tensor:
        from ..data import build_test_transform, load_image
        transform = build_test_transform(self.cfg.data)
        return torch.stack([transform(load_image(r.path)) for r in records])

    def _distinct_identity_records(self, records, count: int) -> List:
        """The first image of up to ``count`` identities spread evenly over the (pid-sorted) identities."""
        first: Dict[int, object] = {}
        for r in records:
            if r.pid >= 0 and r.pid not in first:
                first[r.pid] = r
        pids = sorted(first)
        if not pids:
            return []
        picks = sorted(set(np.linspace(0, len(pids) - 1, num=min(count, len(pids))).astype(int).tolist()))
        return [first[pids[i]] for i in picks]

    @torch.no_grad()
    def swap_matrix(self, images: torch.Tensor) -> torch.Tensor:
        """G(s_j, f_i) for every pair: an n×n×3×H×W tensor, row i = appearance of image i, column j =
        structure of image j (the diagonal is the reconstruction)."""
        ea, gen = self.encoder, self.models["generator"]
        n = len(images)
        with self.eval_models(), self.autocast():
            x = images.to(self.device)
            codes = ea(x).flat_parts()
            s = gen.encode_structure(to_gray(x))
            rows = [gen.decode(s, codes[i:i + 1].expand(n, -1)) for i in range(n)]
        return torch.stack(rows).float().cpu()

    def save_swap_grid(self, images: torch.Tensor, path: Path) -> Path:
        """The paper's Fig. 1: first row the structure providers, first column the appearance providers."""
        from ..evaluation.visual import save_image_grid
        swaps = self.swap_matrix(images)
        blank = torch.zeros_like(images[:1])  # ImageNet mean grey
        columns = [torch.cat([blank, images])] + [torch.cat([images[j:j + 1], swaps[:, j]]) for j in range(len(images))]
        titles = ["app\\str"] + [f"s{j + 1}" for j in range(len(images))]
        return save_image_grid(columns, titles, path)

    def save_swap_grids(self, tag: str, count: int = 6) -> None:
        grids = Path(self.cfg.run.out) / "grids"
        if self._grid_train is None:
            self._grid_train = self._images(self._distinct_identity_records(self.records, count))
        self.save_swap_grid(self._grid_train, grids / f"swap_{tag}.png")
        if self._grid_test is None and self.dataset.query:
            self._grid_test = self._images(self._distinct_identity_records(self.dataset.query, count))
        if self._grid_test is not None and len(self._grid_test) >= 2:
            self.save_swap_grid(self._grid_test, grids / f"test_swap_{tag}.png")

    @torch.no_grad()
    def generation_metrics(self) -> Dict[str, float]:
        """SSIM diversity (the paper's Table 2): for ``dgnet.gen_eval_images`` query images of distinct
        identities, each appearance code is combined with every other image's structure code, and
        ``ssim_generated`` is the mean SSIM over pairs of images generated from the same appearance
        (intra-class similarity of generated images); ``ssim_real`` is the same over pairs of real test
        images of one identity. ``recon_ssim`` / ``recon_l1``: G(s_i, f_i) against x_i. Images in [0, 1]."""
        from ..data import denormalize
        from ..evaluation.generation import l1_error, ssim
        if self._test_sample is None:
            records = self._distinct_identity_records(self.dataset.query, int(self.cfg.dgnet.gen_eval_images))
            self._test_sample = self._images(records) if len(records) >= 3 else torch.empty(0)
        x = self._test_sample
        n = len(x)
        if n < 3:
            return {}
        swaps = denormalize(self.swap_matrix(x))  # n×n×3×H×W, row = appearance
        real = denormalize(x.clone())
        diag = torch.arange(n)
        values = []
        for i in range(n):
            others = [j for j in range(n) if j != i]
            u = torch.tensor([others[p] for p, _ in combinations(range(n - 1), 2)])
            v = torch.tensor([others[q] for _, q in combinations(range(n - 1), 2)])
            values.append(ssim(swaps[i, u], swaps[i, v]))
        out = {"images": n, "ssim_generated": float(torch.cat(values).mean()),
               "recon_ssim": float(ssim(swaps[diag, diag], real).mean()),
               "recon_l1": float(l1_error(swaps[diag, diag], real).mean())}
        if self.real_ssim is None:
            self.real_ssim = self._real_intra_ssim(n)
        if self.real_ssim is not None:
            out["ssim_real"] = self.real_ssim
        return out

    def _real_intra_ssim(self, count: int, per_id: int = 8) -> Optional[float]:
        from ..data import denormalize
        from ..evaluation.generation import ssim
        by_id: Dict[int, list] = {}
        for r in list(self.dataset.query) + list(self.dataset.gallery):
            if r.pid >= 0:
                by_id.setdefault(r.pid, []).append(r)
        ids = [pid for pid in sorted(by_id) if len(by_id[pid]) >= 2][:count]
        values = []
        for pid in ids:
            images = denormalize(self._images(by_id[pid][:per_id]))
            index = list(combinations(range(len(images)), 2))
            values.append(ssim(images[[u for u, _ in index]], images[[v for _, v in index]]))
        return float(torch.cat(values).mean()) if values else None

    # -- checkpoint state -------------------------------------------------------------------------------
    def state(self):
        return {"ramps": self.ramps.state_dict(), "teacher": self.teacher_path, "teacher_eval": self.teacher_eval,
                "real_ssim": self.real_ssim}

    def load_state(self, state):
        if "ramps" not in state:
            raise CheckpointError("the checkpoint has no DG-Net state (loss ramps); it was not written by dgnet")
        self.ramps.load_state_dict(state["ramps"])
        self.teacher_eval = state.get("teacher_eval")
        self.real_ssim = state.get("real_ssim")
        if state.get("teacher") and state["teacher"] != self.teacher_path:
            log.warning("the checkpoint was trained with teacher %s, this run uses %s", state["teacher"],
                        self.teacher_path)

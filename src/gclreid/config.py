"""Typed configuration: dataclass schemas, YAML files with `_base_` inheritance, `a.b=value` overrides.

A config file is YAML whose keys follow :class:`Config`. It may name one or more base files with
``_base_: other.yaml`` (relative to the file, or a bare name of a file shipped in
``gclreid/configs/``; a `--config` path that does not exist is looked up there by file name too); bases are merged first, the file on top, then command-line overrides. Every
key is checked against the schema, so a typo is an error that names the key, not a silent no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import GclreidError

PACKAGE_CONFIGS = Path(__file__).parent / "configs"


class ConfigError(GclreidError, ValueError):
    """A configuration file or override that does not fit the schema."""


@dataclass
class TransformConfig:
    """Training-time augmentation (the test transform is resize + normalise only)."""
    flip_p: float = 0.5
    pad: int = 10  # pad-and-crop: pixels of padding before the random crop back to size; 0 disables
    crop_scale: List[float] = field(default_factory=lambda: [1.0, 1.0])  # random resized crop area range; [1,1] = off
    erasing_p: float = 0.5  # random erasing probability (Zhong et al.)
    erasing_fill: str = "random"  # random: random colours per pixel (Zhong et al.); mean: ImageNet mean
    color_jitter_p: float = 0.0
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    blur_p: float = 0.0  # Gaussian blur probability, sigma drawn from [0.1, 2.0]
    rotation_deg: float = 0.0  # small random rotation, uniform in [-deg, deg]


@dataclass
class DataConfig:
    name: str = "synthreid"
    root: str = "data/synthreid-demo"
    height: int = 256
    width: int = 128
    workers: int = 2
    skip_bad_images: bool = False  # skip (and count) undecodable images instead of failing
    # Reader-specific options, passed to the dataset class as keyword arguments
    # (e.g. include_val for msmt17, pattern / csv / unlabeled for folder).
    options: Dict[str, Any] = field(default_factory=dict)
    # Validation split (training only; docs/datasets.md): >0 holds this many training identities out of
    # train and evaluates during training on a query/gallery made from them, never on the test split.
    val_identities: int = 0
    val_seed: int = 0  # which identities are held out (and which images become queries)
    transforms: TransformConfig = field(default_factory=TransformConfig)


@dataclass
class ModelConfig:
    arch: str = "resnet50"  # resnet18 | resnet34 | resnet50 | resnet101 | mobilenet_v2 (models.build_backbone)
    pretrained: bool = True  # load ImageNet weights (see `weights`)
    weights: str = ""  # local ImageNet checkpoint; empty = look in $TORCH_HOME/hub/checkpoints/
    last_stride: int = 1
    embed_dim: int = 512  # ReID embedding (Linear + BN); 0 = use the pooled backbone feature
    num_parts: int = 4  # horizontal stripes of the part feature fed to the generator


@dataclass
class EvalConfig:
    batch_size: int = 128
    flip: bool = False  # average features of the image and its mirror
    rerank: bool = False  # k-reciprocal re-ranking (Zhong et al. 2017)
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    max_rank: int = 50
    query_chunk: int = 1024  # queries ranked at a time; bounds memory


@dataclass
class OptimConfig:
    name: str = "adam"  # sgd | adam | lars
    lr: float = 3.5e-4
    lr_batch_scale: int = 0  # >0: lr is scaled by batch_size / lr_batch_scale (TMP: 0.3 x batch/256)
    weight_decay: float = 5e-4
    momentum: float = 0.9  # sgd and lars
    nesterov: bool = False  # Nesterov momentum (sgd only, momentum > 0); the official GCL stage 3 uses it
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # adam
    exclude_bias_bn: bool = False  # no weight decay (and no LARS adaptation) for biases and norm layers
    lars_eta: float = 0.001  # LARS trust coefficient
    schedule: str = "step"  # step | cosine | constant
    milestones: List[int] = field(default_factory=list)  # epochs where lr is multiplied by gamma (step)
    gamma: float = 0.1
    warmup_epochs: float = 0.0  # linear warm-up from 0, in epochs (fractions allowed)


@dataclass
class ClusterConfig:
    """Pseudo labels: DBSCAN on the k-reciprocal Jaccard distance of the current features."""
    k1: int = 30
    k2: int = 6
    eps: float = 0.6  # DBSCAN radius; 0 = derive it from rho
    rho: float = 0.002  # eps = mean of the smallest rho-fraction of non-zero pairwise distances
    min_samples: int = 4
    outliers: str = "drop"  # drop: unclustered images leave this epoch | single: each is its own class
    instance_epochs: int = 0  # first epochs with every image its own class (instance discrimination), for
    #                           encoders trained from scratch whose first clustering would be meaningless
    camera_normalize: bool = False  # centre features per camera before clustering (camera-aware; docs/clustering.md)


@dataclass
class TrainConfig:
    method: str = "cluster_contrast"  # tmp | cluster_contrast | supervised | gcl | dgnet
    epochs: int = 50
    iters_per_epoch: int = 0  # 0 = one pass over the epoch's training set
    batch_size: int = 64
    bn_batch_size: int = 0  # >0: BatchNorm statistics over chunks of this many images (like per-GPU BN)
    # torchrun with several processes: BatchNorm statistics over the whole global batch (SyncBatchNorm, GPUs
    # only) instead of each process's share; see docs/training.md "Multi-GPU and multi-node".
    sync_bn: bool = False
    # BatchNorm layers stay in eval mode while training: they normalise with their running statistics (from
    # train.init / ImageNet), which never change; results then do not depend on how the batch is split.
    freeze_bn: bool = False
    num_instances: int = 4  # K images per identity/cluster in a batch (identity sampler); 0 = plain shuffle
    temperature: float = 0.05
    memory_momentum: float = 0.2  # cluster contrast: centroid momentum update
    label_smoothing: float = 0.1  # supervised
    triplet_margin: float = 0.3  # supervised; 0 = soft margin
    triplet_weight: float = 1.0  # supervised
    init: str = ""  # checkpoint (gclreid or a plain ResNet state dict) to initialise the encoder from
    init_key: str = "identity_encoder"
    eval_every: int = 1  # evaluate every N epochs (0 = only after the last); needs a query/gallery split
    log_every: int = 20  # iterations between log lines / TensorBoard points
    amp: bool = True  # bf16 autocast of the training steps on CUDA
    # bf16 autocast of the training steps on the CPU too: for CPUs with native bf16 (AVX512-BF16 or AMX:
    # `lscpu | grep -o 'avx512_bf16\|amx_bf16'`); 1.4-1.6x faster steps at 256x128 on one, none at 128x64
    # (docs/benchmarks.md)
    amp_cpu: bool = False
    max_grad_norm: float = 0.0  # >0: clip gradients
    # Divergence guard: training stops (last good checkpoint kept) when a parameter tensor's L2 norm exceeds
    # this (exploding weights) or is not finite; 0 = only the non-finite check. Losses are always checked.
    max_weight_norm: float = 1e6


@dataclass
class GeneratorConfig:
    """GCL's view generator (structure encoder, decoder, AdaIN MLPs) and multi-scale discriminator; also
    used by DG-Net. Defaults = the GCL paper / official configuration (docs/gcl-networks.md)."""
    input_channels: int = 1  # structure map channels (1: grey mesh render; DG-Net: grey image)
    dim: int = 16  # structure encoder base width
    n_downsample: int = 2  # stride-2 steps of the structure encoder (256x128 -> 64x32)
    n_res: int = 4  # structure encoder residual blocks
    aspp: bool = True  # the official encoder's ASPP block (not in the paper); doubles the code channels
    activation: str = "lrelu"
    pad_type: str = "reflect"
    dec_n_res: int = 4  # decoder AdaIN residual blocks (2 AdaIN layers each)
    dec_n_upsample: int = 2  # x2 up-sampling steps of the decoder
    dec_dropout: float = 0.0
    dec_tanh: bool = False  # off: the decoder outputs ImageNet-normalised images
    out_channels: int = 3  # image channels (decoder output, discriminator input)
    mlp_dim: int = 512  # hidden width of the AdaIN parameter MLPs
    mlp_blocks: int = 3  # Linear layers per MLP
    id_dim: int = 0  # flattened identity feature length; 0 = the identity encoder's (channels x model.num_parts)
    id_chunks: int = 4  # the identity feature is cut into this many chunks, one scale MLP + one shift MLP each
    init: str = "kaiming"  # generator init: kaiming | gaussian | xavier | orthogonal | default
    dis_dim: int = 32
    dis_n_layer: int = 2  # stride-2 steps per discriminator scale
    dis_n_res: int = 4
    dis_num_scales: int = 3
    dis_norm: str = "none"  # none | in | ln
    dis_init: str = "gaussian"  # N(0, 0.02)
    # Generator and D in channels-last memory format: their low-channel, full-resolution convolutions run
    # ~2x faster on CPU (oneDNN) and use tensor cores better on GPU; the identity encoder stays NCHW.
    channels_last: bool = True


@dataclass
class GCLConfig:
    """GCL stages 2 and 3 (train.method: gcl). Defaults follow the paper; `official` switches in comments."""
    stage: int = 3  # 2: generator warm-up with the identity encoder frozen | 3: joint training
    init: str = ""  # gclreid checkpoint (e.g. stage 2's last.pt) to load the identity encoder, generator and D from
    structure_root: str = ""  # folder with <train|test>/render[_deg]/; empty = <data.root>/structures
    angles: List[int] = field(default_factory=lambda: [45, 90, 135, 180, 225, 270, 315])  # official: 45…270
    lambda_img: float = 5.0
    lambda_feat: float = 5.0
    feat_target: str = "new"  # L_feat on Eid(x'_new) (paper Eq. 2) | ori: Eid(x'_ori) and Eid(x''_ori) (code)
    gan_type: str = "lsgan"  # lsgan (+R1, official code) | nsgan (paper Eq. 3)
    gan_weight: float = 1.0
    r1_weight: float = 0.01
    share_real: bool = True  # D(real) and R1 once per D step, scaled (official: recomputed for each fake)
    lr_g: float = 1e-4  # Adam, structure encoder + decoder + MLPs
    lr_d: float = 1e-4  # Adam, discriminator
    betas_gd: List[float] = field(default_factory=lambda: [0.0, 0.999])
    weight_decay_gd: float = 5e-4
    # Stage 3 lr of G and D: paper (the optim schedule, x0.1 after epoch 10, as Eid) | official_current_torch
    # (constant lr_g / lr_d: the official code's rebuilt schedulers on torch >= 1.4) | official_torch12
    # (lr x gamma^len(milestones) throughout: the same code under its pinned torch 1.2). docs/training.md
    gd_schedule: str = "paper"
    view_contrast: str = "paper"  # preset of the view-contrast options: paper | official
    lvi2_positive: str = ""  # live (paper Eq. 7) | memory (code); empty = the preset's
    shared_positive: Optional[bool] = None  # one f_pos for Eq. 6 and 8 (paper) vs independent (code)
    outliers_as_negatives: Optional[bool] = None  # unclustered memory rows are negatives (code: yes)
    anchor_as_positive: Optional[bool] = None  # the anchor's own row may be drawn as f_pos (code: yes)
    temperature: float = 0.04
    num_negatives: int = 8192
    memory_momentum: float = 0.2  # Eq. 5: M[i] <- normalise(0.2 M[i] + 0.8 f)
    # Loss terms (the paper's Table 3 rows are subsets): gan (adversarial + reconstruction), lvi, lvi2,
    # lvi3, contrast_only (L_vi without generation: sim(f, f_pos) against memory negatives).
    losses: List[str] = field(default_factory=lambda: ["gan", "lvi", "lvi2", "lvi3"])
    augment: bool = False  # traditional augmentation (data.transforms) of the real image (code: none)
    # Stage 3: what plays x'_new in the view-invariant losses (Eq. 6-8): generated (the method) | true_view
    # (the dataset's true novel view at the drawn angle, SynthReID's views/: the oracle) | flip (the
    # input mirrored) | input (the input itself). Generation and its losses are the same in every case.
    views: str = "generated"
    # Stage 3: Eid's BN running statistics (used by test features) come from the real images only
    # (freeze), or also move on the three passes over generated images (update, official code).
    fake_bn: str = "freeze"
    # Stage 3: the generation losses (adversarial, image and feature reconstruction) also train the
    # identity encoder (true: paper and official code), or only the generator (false: Eid learns from the
    # view-invariant losses alone, which still reach the generator through x'_new). docs/training.md, GCL.
    generation_trains_encoder: bool = True
    checkpoint_decoder: bool = False  # recompute the decoder's activations in the backward: ~half the memory, some time
    gen_eval_images: int = 16  # SynthReID: query images whose generated views are scored against the true views
    grid_every: int = 0  # iterations between PNG grids of generated images (0: only at the end of each epoch)


@dataclass
class RampConfig:
    """A loss weight that is 0 before iteration `start`, then rises linearly to `max` over `iters`
    iterations (0 = jumps to `max` at `start`). Iterations count optimisation steps from 0."""
    max: float = 0.0
    start: int = 0
    iters: int = 0


@dataclass
class DGNetConfig:
    """DG-Net (train.method: dgnet; docs/dgnet.md). Defaults = the paper / official code (configs/latest.yaml)."""
    # Teacher (dynamic soft labels, Eq. 8): a gclreid checkpoint of a `supervised` run on the same dataset.
    # Empty: DG-Net first trains one into <run.out>/teacher/ with `teacher_config` (reused on resume).
    teacher: str = ""
    teacher_config: str = "supervised_base.yaml"  # config of that run; data.* and model.* come from this config
    teacher_overrides: List[str] = field(default_factory=list)  # key=value overrides for the teacher run
    teacher_bn: str = "batch"  # batch: BN on the generated batch's statistics (official) | running: eval mode
    teacher_flip: bool = True  # soft label = mean of the image's and its mirror's softmax (official)
    init_from_teacher: bool = False  # start Ea's backbone + primary bottleneck from the teacher (official: ImageNet)
    # Appearance encoder Ea (ResNet from model.*): two heads Linear -> BN -> Dropout -> classifier.
    num_classes: int = 0  # training identities; 0 = from the dataset (a positive value is checked against it)
    bottleneck: int = 512  # f_prim / f_fine size
    dropout_prim: float = 0.5
    dropout_fine: float = 0.75
    head_lr_mult: float = 10.0  # heads' lr = optim.lr x this (official 0.02 vs 0.002)
    nesterov: bool = True  # SGD for Ea (optim.name: sgd)
    # Generator / discriminator optimisers (Adam).
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas_gd: List[float] = field(default_factory=lambda: [0.0, 0.999])
    weight_decay_gd: float = 5e-4
    gan_type: str = "lsgan"  # lsgan (+R1, official) | nsgan (paper Eq. 7)
    r1_weight: float = 0.01
    # Loss weights (Eq. 10).
    lambda_img: float = 5.0  # Eq. 1 + Eq. 2 (self-identity reconstruction)
    lambda_id: float = 0.5  # Eq. 6 (identity of generated images, appearance label)
    lambda_id_real: float = 1.0  # Eq. 3 (primary head on real images and positives)
    lambda_gan: float = 1.0  # Eq. 7
    lambda_prim: RampConfig = field(default_factory=lambda: RampConfig(max=2.0, start=30000, iters=4000))  # Eq. 8
    alpha: float = 0.2  # lambda_fine = alpha x lambda_prim (Eq. 9)
    lambda_code: RampConfig = field(default_factory=lambda: RampConfig(max=1.0, start=30000, iters=2000))  # Eq. 4-5
    lambda_cycle: RampConfig = field(default_factory=lambda: RampConfig(max=2.0, start=30000, iters=4000))  # code only
    fine_on_real: bool = True  # also train the fine head on real images with lambda_fine (official)
    # Gradient routing.
    detach_appearance: bool = True  # the decoder gets Ea's code without gradient (official); false: paper Eq. 2
    structure_reencode_p: float = 0.5  # P(E_s trained on the detached generated image) vs frozen E_s -> G
    single_image_ids: str = "error"  # identities with one training image: error | drop | self (own positive)
    # Test feature: [normalised f_prim, sqrt(beta) x normalised f_fine] / sqrt(1 + beta) (ranks as prim + beta fine).
    beta: float = 0.5
    test_feature: str = "combined"  # combined | prim | fine
    eval_features: List[str] = field(default_factory=lambda: ["prim", "fine"])  # also evaluated and recorded
    eval_teacher: bool = True  # record the teacher's evaluation (Table 3's baseline row)
    gen_eval_images: int = 16  # query images for the swap grid and the SSIM diversity each epoch
    grid_every: int = 0  # iterations between swap grids (0: at the end of each epoch only)


@dataclass
class RunConfig:
    out: str = "runs/default"
    seed: int = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = False
    # torchrun: the longest (seconds) a process waits for the others (rank 0 clusters and evaluates alone;
    # a process that died or hangs ends the job after this at the latest).
    dist_timeout: float = 1800.0
    # Written by `gclreid train` (any value given is replaced): the number of processes (torchrun) and each
    # one's share of train.batch_size (the global batch).
    world_size: int = 1
    batch_per_rank: int = 0


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    gcl: GCLConfig = field(default_factory=GCLConfig)
    dgnet: DGNetConfig = field(default_factory=DGNetConfig)
    run: RunConfig = field(default_factory=RunConfig)


def _resolve_base(name: str, relative_to: Path) -> Path:
    candidates = [relative_to / name, PACKAGE_CONFIGS / name]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(f"base config {name!r} named in {relative_to} not found; looked at "
                      + ", ".join(str(p) for p in candidates))


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key repeated in one mapping (PyYAML keeps the last copy silently, so a
    second `train:` block would drop every setting of the first)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (first at line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _yaml_reason(exc: yaml.YAMLError) -> str:
    """One line: what is wrong and where (PyYAML's message spans several lines with the text quoted)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def _read_yaml_with_bases(path: Path, seen: Sequence[Path] = ()) -> List[Dict[str, Any]]:
    """Return the chain of YAML dicts to merge, bases first."""
    return [data for _, data in _read_yaml_chain(path, seen)]


def _read_yaml_chain(path: Path, seen: Sequence[Path] = ()) -> List[Tuple[Path, Dict[str, Any]]]:
    """The chain of (file, YAML dict) to merge, bases first."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config {path} inherits from itself (cycle through {', '.join(map(str, seen))})")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_reason(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, got {type(data).__name__}")
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"config file {path}: _base_ must be a file name or a list of file names, got {bases!r}")
    chain: List[Tuple[Path, Dict[str, Any]]] = []
    for base in bases:
        chain += _read_yaml_chain(_resolve_base(base, path.parent), (*seen, path))
    chain.append((path, data))
    return chain


def _omegaconf_reason(exc: Exception) -> str:
    """The first line of an omegaconf error (it appends full_key / object_type lines)."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def load_config(path: Optional[os.PathLike] = None, overrides: Sequence[str] = (), schema: type = Config) -> DictConfig:
    """Build a config: schema defaults ← base files ← `path` ← `overrides` (``a.b=value`` strings)."""
    cfg = OmegaConf.structured(schema)
    if path and not Path(path).is_file() and (PACKAGE_CONFIGS / Path(path).name).is_file():
        # `configs/tmp_market1501.yaml` or a bare `tmp_market1501.yaml` outside the repo: the shipped copy
        path = PACKAGE_CONFIGS / Path(path).name
    layers = _read_yaml_chain(Path(path)) if path else []
    for bad in [o for o in overrides if "=" not in o]:
        raise ConfigError(f"override {bad!r} must look like key.sub=value")
    for source, layer in layers:
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"config file {source} does not fit the schema: {_omegaconf_reason(exc)}") from None
    # One override at a time, so that an error names the override (not the YAML file) that caused it.
    for override in overrides:
        key, value = override.split("=", 1)
        if value == "" and isinstance(OmegaConf.select(cfg, key, default=None), str):
            override = f"{key}=''"  # `train.init=` empties a text setting (omegaconf would read None)
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([override]))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override {override!r} does not fit the config schema: {_omegaconf_reason(exc)}") from None
        except yaml.YAMLError as exc:  # the value is read as YAML: `[0-9]+_c…` or `{…` is not a valid one
            raise ConfigError(f"override {override!r}: its value is not valid YAML ({_yaml_reason(exc)}); quote it, e.g. "
                              f"{key}=\"'{value}'\" in a shell") from None
    OmegaConf.set_readonly(cfg, False)
    return cfg


def save_config(cfg: DictConfig, path: os.PathLike) -> None:
    """Write the resolved config as YAML (what a run actually used)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(OmegaConf.to_yaml(cfg, resolve=True))


def to_dict(cfg: DictConfig) -> Dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)


# Largest optimiser learning rate accepted (optim.lr, gcl.lr_g/lr_d, dgnet.lr_g/lr_d): no setting of the
# shipped methods comes near it (LARS at 0.3 x batch/256 is the largest); above it training only diverges.
MAX_LR = 10.0
# Adam above this is almost certainly a typo (its step is ~lr per weight whatever the gradient): warned.
ADAM_WARN_LR = 0.1
# Methods whose training batches come from train.num_instances (identity sampler when > 0).
_SAMPLER_METHODS = ("tmp", "cluster_contrast", "supervised")
_CLUSTER_METHODS = ("tmp", "cluster_contrast", "gcl")
# gcl.gd_schedule and gcl.views (docs/training.md, GCL).
GD_SCHEDULES = ("paper", "official_current_torch", "official_torch12")
VIEW_POSITIVES = ("generated", "true_view", "flip", "input")


def validate_config(cfg, evaluation_only: bool = False) -> List[str]:
    """Check the values a training run needs before any work starts (data loading, feature extraction);
    with `evaluation_only`, only those an evaluation or embedding needs (data size, ``eval.*``, device).

    Raises :class:`ConfigError` naming every bad value in one line; returns warnings (values that are
    allowed but very likely wrong, e.g. Adam with lr > 0.1) for the caller to log."""
    import math

    problems: List[str] = []
    warnings_: List[str] = []

    def number(key: str, value, *, minimum=None, above=None, maximum=None, integer=False) -> None:
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{key}={value!r} must be a number")
            return
        if not math.isfinite(value):
            problems.append(f"{key}={value} must be finite")
        elif above is not None and not value > above:
            problems.append(f"{key}={value} must be > {above}")
        elif minimum is not None and value < minimum:
            problems.append(f"{key}={value} must be >= {minimum}")
        elif maximum is not None and value > maximum:
            problems.append(f"{key}={value} must be <= {maximum}")

    def lr(key: str, value) -> None:
        number(key, value, above=0)
        if isinstance(value, (int, float)) and math.isfinite(value) and value > MAX_LR:
            problems.append(f"{key}={value} is far beyond any working learning rate (the limit is {MAX_LR:g}; "
                            "a run at this rate only diverges)")

    def choice(key: str, value, allowed: Sequence[str]) -> None:
        if value not in allowed:
            problems.append(f"{key}={value!r} is not one of {', '.join(allowed)}")

    d, t, o, e, c, r = cfg.data, cfg.train, cfg.optim, cfg.eval, cfg.cluster, cfg.run
    number("data.height", d.height, minimum=1)
    number("data.width", d.width, minimum=1)
    number("data.workers", d.workers, minimum=0)
    number("eval.batch_size", e.batch_size, minimum=1)
    number("eval.max_rank", e.max_rank, minimum=1)
    number("eval.query_chunk", e.query_chunk, minimum=1)
    if not evaluation_only:
        method = t.method
        number("data.val_identities", d.val_identities, minimum=0)
        number("train.epochs", t.epochs, minimum=1)
        number("train.batch_size", t.batch_size, minimum=1)
        number("train.iters_per_epoch", t.iters_per_epoch, minimum=0)
        number("train.num_instances", t.num_instances, minimum=0)
        number("train.bn_batch_size", t.bn_batch_size, minimum=0)
        if t.sync_bn and isinstance(t.bn_batch_size, int) and t.bn_batch_size > 0:
            problems.append(f"train.sync_bn=true normalises over the whole global batch, train.bn_batch_size="
                            f"{t.bn_batch_size} over chunks of it: set one of them")
        if t.sync_bn and t.freeze_bn:
            problems.append("train.sync_bn=true and train.freeze_bn=true: frozen BatchNorm has no batch statistics to "
                            "synchronise; set one of them")
        number("run.dist_timeout", r.dist_timeout, above=0)
        number("train.log_every", t.log_every, minimum=1)
        number("train.eval_every", t.eval_every, minimum=0)
        number("train.max_grad_norm", t.max_grad_norm, minimum=0)
        number("train.max_weight_norm", t.max_weight_norm, minimum=0)
        number("train.temperature", t.temperature, above=0)
        if (method in _SAMPLER_METHODS and t.num_instances > 0 and t.batch_size >= 1
                and (t.batch_size < t.num_instances or t.batch_size % t.num_instances)):
            problems.append(f"train.batch_size={t.batch_size} must be a multiple of train.num_instances={t.num_instances} "
                            "(batches are P identities x K=num_instances images; num_instances=0 shuffles plainly)")
        choice("optim.name", o.name, ("sgd", "adam", "lars"))
        choice("optim.schedule", o.schedule, ("step", "cosine", "constant"))
        lr("optim.lr", o.lr)
        if o.name == "adam" and isinstance(o.lr, (int, float)) and ADAM_WARN_LR < o.lr <= MAX_LR:
            warnings_.append(f"optim.lr={o.lr} is very large for Adam (its steps are about lr per weight); expect "
                             "divergence (the run stops if it diverges)")
        number("optim.lr_batch_scale", o.lr_batch_scale, minimum=0)
        number("optim.weight_decay", o.weight_decay, minimum=0)
        number("optim.momentum", o.momentum, minimum=0, maximum=1)
        if o.nesterov is True and o.name != "sgd":
            problems.append(f"optim.nesterov=true needs optim.name=sgd (got {o.name!r})")
        elif o.nesterov is True and isinstance(o.momentum, (int, float)) and not o.momentum > 0:
            problems.append(f"optim.nesterov=true needs optim.momentum > 0 (got {o.momentum})")
        if o.nesterov is True and method == "dgnet":
            warnings_.append("optim.nesterov is ignored by train.method=dgnet: its appearance encoder's SGD follows "
                             "dgnet.nesterov")
        number("optim.gamma", o.gamma, above=0)
        number("optim.warmup_epochs", o.warmup_epochs, minimum=0)
        if method in _CLUSTER_METHODS:
            number("cluster.k1", c.k1, minimum=1)
            number("cluster.k2", c.k2, minimum=1)
            number("cluster.min_samples", c.min_samples, minimum=1)
            number("cluster.eps", c.eps, minimum=0)
            if c.eps == 0:
                number("cluster.rho", c.rho, above=0, maximum=1)
            number("cluster.instance_epochs", c.instance_epochs, minimum=0)
            choice("cluster.outliers", c.outliers, ("drop", "single"))
        if method == "gcl":
            lr("gcl.lr_g", cfg.gcl.lr_g)
            lr("gcl.lr_d", cfg.gcl.lr_d)
            choice("gcl.gd_schedule", cfg.gcl.gd_schedule, GD_SCHEDULES)
            choice("gcl.views", cfg.gcl.views, VIEW_POSITIVES)
            angles = list(cfg.gcl.angles)
            if not angles or not all(isinstance(a, int) and not isinstance(a, bool) and 0 < a < 360 for a in angles):
                # 0 (or 360) would be the original view's map: the "novel" view would not be novel
                problems.append(f"gcl.angles={angles} must be a non-empty list of whole degrees in 1..359 (the "
                                "structure maps are made at 45, 90, ..., 315)")
            if cfg.gcl.gd_schedule == "official_torch12" and o.schedule == "cosine":
                problems.append("gcl.gd_schedule=official_torch12 reproduces a MultiStepLR: it needs optim.schedule=step "
                                "or constant, not cosine")
        if method == "dgnet":
            lr("dgnet.lr_g", cfg.dgnet.lr_g)
            lr("dgnet.lr_d", cfg.dgnet.lr_d)
            number("dgnet.head_lr_mult", cfg.dgnet.head_lr_mult, above=0)
        for key, value, user in (("gcl.init", cfg.gcl.init, "gcl"), ("dgnet.teacher", cfg.dgnet.teacher, "dgnet")):
            if value and method != user:
                warnings_.append(f"{key}={value} is ignored: train.method={method} does not use it (only {user} does)")
    device = str(r.device)
    if device != "auto":
        import torch
        try:
            parsed = torch.device(device)
        except (RuntimeError, ValueError):
            problems.append(f"run.device={device!r} is not a device (auto, cpu, cuda, cuda:N)")
        else:
            if parsed.type == "cuda" and not torch.cuda.is_available():
                problems.append(f"run.device={device!r} but CUDA is not available here (use run.device=cpu or auto)")
    if problems:
        raise ConfigError("; ".join(problems))
    return warnings_

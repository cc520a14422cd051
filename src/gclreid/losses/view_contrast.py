"""GCL's View Contrast module: the instance memory bank (Eq. 5) and the view-invariant losses (Eq. 6–8).

Notation (paper Sec. 3.2): f = Eid(x) and f'_new = Eid(x'_new) are the ReID embeddings (512-d BN
output) of the real image and of its generated novel view; M is the memory (one L2-normalised row per
training image); sim is the cosine similarity; τ = 0.04; k_1..k_K are K = 8192 memory rows with
another pseudo label; f_pos is a memory row with the anchor's pseudo label.

* Eq. 6 ``lvi``:   ``log(1 + Σ_i exp(sim(f'_new, k_i)/τ) / exp(sim(f, f_pos)/τ))``
* Eq. 7 ``lvi2``:  the same with positive ``sim(f'_new, f)`` (``lvi2_positive="live"``, the paper:
  gradient flows into f and f'_new) or ``sim(f'_new, M[i])`` (``"memory"``, the official code: the
  anchor's own memory row, read before this iteration's update, so no gradient reaches f).
* Eq. 8 ``lvi3``:  the same with positive ``sim(f'_new, f_pos)``.
* ``contrast_only_loss``: Table 3's L_vi^woGAN, ``sim(f, f_pos)`` against ``sim(f, k_i)``.

Each is ``logsumexp([pos, negs]/τ) − pos/τ`` averaged over the batch (= cross-entropy with target 0,
what the official code computes). All sampling is vectorised over the batch (no per-sample loop):

* **negatives** — every anchor draws K rows uniformly *without replacement* from its eligible rows, as
  the top-K of i.i.d. uniform scores with the ineligible rows scored −1. Eligible = rows whose pseudo
  label differs from the anchor's; unclustered rows (label −1) are negatives of everyone when
  ``outliers_as_negatives`` (official), never otherwise. An outlier anchor (label −1) is its own
  instance: every other row is a candidate (clustered rows, and other outliers when
  ``outliers_as_negatives``). **Fewer than K eligible rows**: the anchor keeps all of them and the
  missing slots are padding, masked to −inf logits (``negative_valid`` is False there), so no anchor
  is truncated to another anchor's count and nothing crashes (the official code's ``torch.stack``
  does). An anchor with no negative at all contributes ``log(1 + 0) = 0``.
* **positives** — uniform over the rows sharing the anchor's label; the anchor's own row is one of
  them when ``anchor_as_positive`` (official), else excluded unless it is the only one. An outlier
  anchor's only positive is its own memory row. ``shared_positive=True`` uses one f_pos for Eq. 6
  and 8 (the paper's single f_pos); ``False`` draws them independently (official).
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError

__all__ = ["VIEW_CONTRAST_PRESETS", "ViewMemory", "ViewSample", "positive_mask", "negative_mask",
           "sample_view_contrast", "view_invariant_losses", "contrast_only_loss", "ViewContrastLoss"]

LVI2_POSITIVES = ("live", "memory")
NEGATIVE_ANCHORS = ("new", "original")

# Option sets for ViewContrastLoss: the paper's reading and the official code's behaviour (reference §3, §7.1).
VIEW_CONTRAST_PRESETS: Dict[str, Dict[str, object]] = {
    "paper": dict(lvi2_positive="live", shared_positive=True, outliers_as_negatives=True, anchor_as_positive=True),
    "official": dict(lvi2_positive="memory", shared_positive=False, outliers_as_negatives=True,
                     anchor_as_positive=True),
}

Indices = Union[torch.Tensor, Sequence[int], np.ndarray]


def _occurrence_rank(idx: torch.Tensor) -> torch.Tensor:
    """For each position, how many earlier positions hold the same value (0 for a first occurrence)."""
    order = torch.sort(idx, stable=True).indices
    s = idx[order]
    new_group = torch.ones_like(s, dtype=torch.bool)
    new_group[1:] = s[1:] != s[:-1]
    pos = torch.arange(len(idx), device=idx.device)
    start = torch.where(new_group, pos, torch.zeros_like(pos)).cummax(0).values
    rank = torch.empty_like(pos)
    rank[order] = pos - start
    return rank


class ViewMemory(nn.Module):
    """N×D memory of L2-normalised instance features plus their pseudo labels (both in the state dict).

    Eq. 5 is ``M[i]ᵗ = α·M[i]ᵗ⁻¹ + (1 − α)·fᵗ`` with α = 0.2: α weighs the *old* row, so the new feature
    dominates (0.8) — the paper calls α a "momentum coefficient" but a small α means little momentum.
    The official code does the same, then re-normalises the row, as :meth:`update` does.
    Labels start at −1 (unclustered) until :meth:`set_labels`.
    """

    def __init__(self, num_samples: int, num_features: int = 512, momentum: float = 0.2):
        super().__init__()
        if num_samples < 1 or num_features < 1:
            raise ValueError(f"memory needs at least one row and one feature, got {num_samples}×{num_features}")
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"memory momentum (alpha of Eq. 5) must lie in [0, 1], got {momentum}")
        self.momentum = momentum
        self.register_buffer("features", torch.zeros(num_samples, num_features))
        self.register_buffer("labels", torch.full((num_samples,), -1, dtype=torch.long))

    @property
    def num_samples(self) -> int:
        return self.features.shape[0]

    @property
    def num_features(self) -> int:
        return self.features.shape[1]

    @torch.no_grad()
    def initialise(self, features: torch.Tensor) -> None:
        """Fill the memory with (L2-normalised) features of all N training images, row i = image i."""
        if tuple(features.shape) != tuple(self.features.shape):
            raise ValueError(f"memory of {self.num_samples}×{self.num_features} cannot be initialised from "
                             f"features of shape {tuple(features.shape)}")
        self.features = F.normalize(features.detach().float(), dim=1).to(self.features.device)

    @torch.no_grad()
    def set_labels(self, labels: Indices) -> None:
        """Pseudo labels of all N rows (−1 = unclustered outlier)."""
        labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
        if labels.shape != (self.num_samples,):
            raise ValueError(f"expected {self.num_samples} pseudo labels (one per memory row), got shape "
                             f"{tuple(labels.shape)}")
        if labels.is_floating_point() or (len(labels) and int(labels.min()) < -1):
            raise ValueError("pseudo labels must be integers >= -1 (-1 = outlier)")
        self.labels = labels.long().to(self.labels.device)

    @torch.no_grad()
    def update(self, indices: Indices, features: torch.Tensor) -> None:
        """``M[i] ← normalise(α·M[i] + (1 − α)·normalise(f))`` for each (i, f) of the batch.

        Repeated indices are applied one after the other in batch order (like a per-sample loop). The
        buffer is replaced, not modified in place, so a loss computed from the old memory earlier in the
        iteration can still be back-propagated after the update.
        """
        idx = torch.as_tensor(indices, device=self.features.device).long().flatten()
        if features.dim() != 2 or len(idx) != features.shape[0] or features.shape[1] != self.num_features:
            raise ValueError(f"update needs one {self.num_features}-d feature per index; got {len(idx)} indices "
                             f"and features of shape {tuple(features.shape)}")
        if len(idx) == 0:
            return
        if int(idx.min()) < 0 or int(idx.max()) >= self.num_samples:
            raise ValueError(f"memory indices must lie in [0, {self.num_samples}), got {int(idx.min())}..{int(idx.max())}")
        f = F.normalize(features.detach().float(), dim=1).to(self.features.device)
        memory = self.features.clone()
        rank = _occurrence_rank(idx)
        for r in range(int(rank.max()) + 1):
            sel = rank == r
            rows = idx[sel]
            memory[rows] = F.normalize(self.momentum * memory[rows] + (1 - self.momentum) * f[sel], dim=1)
        self.features = memory

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, num_features={self.num_features}, momentum={self.momentum}"


class ViewSample(NamedTuple):
    """Memory rows drawn for a batch of anchors."""
    positive: torch.Tensor  # (B,) f_pos of Eq. 6
    positive_new: torch.Tensor  # (B,) f_pos of Eq. 8 (the same tensor when shared)
    negatives: torch.Tensor  # (B, K) memory rows k_1..k_K
    negative_valid: torch.Tensor  # (B, K) bool; False = padding where fewer than K negatives exist


def _anchor_labels(labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    if indices.dim() != 1:
        raise ValueError(f"anchor indices must be a 1-D tensor, got shape {tuple(indices.shape)}")
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= len(labels)):
        raise ValueError(f"anchor indices must lie in [0, {len(labels)}), got {int(indices.min())}..{int(indices.max())}")
    return labels[indices]


def positive_mask(labels: torch.Tensor, indices: torch.Tensor, anchor_as_positive: bool = True) -> torch.Tensor:
    """B×N: rows that may serve as f_pos for each anchor (see the module docstring). Never empty."""
    y = _anchor_labels(labels, indices)
    mask = (labels[None, :] == y[:, None]) & (y[:, None] >= 0)
    rows = torch.arange(len(indices), device=labels.device)
    if not anchor_as_positive:
        mask[rows, indices] = False
    # Outliers, and anchors alone in their cluster without self-positives, fall back to their own row.
    mask[rows, indices] |= ~mask.any(1)
    return mask


def negative_mask(labels: torch.Tensor, indices: torch.Tensor, outliers_as_negatives: bool = True) -> torch.Tensor:
    """B×N: rows that may serve as negatives k_i for each anchor (see the module docstring)."""
    y = _anchor_labels(labels, indices)
    row_label = labels[None, :]
    # An outlier anchor's "different label" is every other row, other outliers included.
    mask = (row_label != y[:, None]) | ((y[:, None] < 0) & (row_label < 0))
    if not outliers_as_negatives:
        mask &= row_label >= 0
    mask[torch.arange(len(indices), device=labels.device), indices] = False
    return mask


def _draw_one(mask: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    scores = torch.rand(mask.shape, generator=generator, device=mask.device).masked_fill_(~mask, -1.0)
    return scores.argmax(1)


def sample_view_contrast(labels: torch.Tensor, indices: Indices, num_negatives: int = 8192, *,
                         shared_positive: bool = True, anchor_as_positive: bool = True,
                         outliers_as_negatives: bool = True,
                         generator: Optional[torch.Generator] = None) -> ViewSample:
    """Draw f_pos (one or two per anchor) and K negatives for a batch of anchors (memory rows ``indices``).

    ``K = min(num_negatives, N)`` columns are returned; an anchor with fewer eligible rows gets all of
    them plus padding (``negative_valid`` False). ``generator`` (on ``labels``' device) makes it reproducible.
    """
    if num_negatives < 0:
        raise ConfigError(f"number of negatives K must be >= 0, got {num_negatives}")
    indices = torch.as_tensor(indices, device=labels.device).long()
    pos_mask = positive_mask(labels, indices, anchor_as_positive)
    positive = _draw_one(pos_mask, generator)
    positive_new = positive if shared_positive else _draw_one(pos_mask, generator)
    neg_mask = negative_mask(labels, indices, outliers_as_negatives)
    k = min(num_negatives, labels.shape[0])
    scores = torch.rand(neg_mask.shape, generator=generator, device=labels.device).masked_fill_(~neg_mask, -1.0)
    top, negatives = scores.topk(k, dim=1)  # top-K of i.i.d. uniforms = a uniform K-subset
    return ViewSample(positive, positive_new, negatives, top >= 0)


def _info_nce(pos: torch.Tensor, neg_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """mean_b log(1 + Σ_i exp(neg_i) / exp(pos/τ)), neg_logits already divided by τ (−inf = padding)."""
    logits = torch.cat([pos[:, None] / temperature, neg_logits], dim=1)
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


def _negative_logits(anchor: torch.Tensor, memory: torch.Tensor, sample: ViewSample, temperature: float) -> torch.Tensor:
    # One B×N product and a gather: far cheaper than gathering B×K×D memory rows.
    sims = (anchor @ memory.t()).gather(1, sample.negatives)
    return sims.masked_fill(~sample.negative_valid, float("-inf")) / temperature


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """At least float32 (features from bf16 autocast are promoted), float64 when anything is."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _check_inputs(f: torch.Tensor, memory: torch.Tensor, indices: torch.Tensor, sample: ViewSample) -> None:
    if f.dim() != 2 or f.shape[1] != memory.shape[1]:
        raise ValueError(f"features of shape {tuple(f.shape)} do not match a memory of width {memory.shape[1]}")
    if not (len(indices) == len(f) == len(sample.positive) == len(sample.negatives)):
        raise ValueError(f"batch sizes disagree: {len(f)} features, {len(indices)} indices, "
                         f"{len(sample.negatives)} sampled rows")


def view_invariant_losses(f: torch.Tensor, f_new: torch.Tensor, indices: Indices, memory: torch.Tensor,
                          sample: ViewSample, *, temperature: float = 0.04, lvi2_positive: str = "live",
                          negative_anchor: str = "new") -> Dict[str, torch.Tensor]:
    """Eq. 6–8 for a batch: ``{"lvi", "lvi2", "lvi3"}`` (scalars, batch means).

    Args:
        f, f_new: B×D embeddings of x and x'_new (normalised here; gradients flow through both).
        indices: memory rows of the anchors (their dataset indices).
        memory: N×D memory rows (``ViewMemory.features``; treated as constants).
        sample: from :func:`sample_view_contrast` (or built by hand for a fixed draw).
        lvi2_positive: ``"live"`` (paper, sim(f'_new, f)) or ``"memory"`` (official, sim(f'_new, M[i])).
        negative_anchor: ``"new"`` (paper and code: sim(f'_new, k_i)) or ``"original"`` (sim(f, k_i),
            the alternative the paper mentions and finds worse).
    """
    if lvi2_positive not in LVI2_POSITIVES:
        raise ConfigError(f"unknown lvi2_positive {lvi2_positive!r}; expected one of {', '.join(LVI2_POSITIVES)}")
    if negative_anchor not in NEGATIVE_ANCHORS:
        raise ConfigError(f"unknown negative_anchor {negative_anchor!r}; expected one of {', '.join(NEGATIVE_ANCHORS)}")
    indices = torch.as_tensor(indices, device=memory.device).long()
    dtype = _compute_dtype(memory, f, f_new)
    memory = memory.detach().to(dtype)
    f, f_new = F.normalize(f.to(dtype), dim=1), F.normalize(f_new.to(dtype), dim=1)
    _check_inputs(f, memory, indices, sample)
    if f_new.shape != f.shape:
        raise ValueError(f"f {tuple(f.shape)} and f_new {tuple(f_new.shape)} must have the same shape")
    neg = _negative_logits(f_new if negative_anchor == "new" else f, memory, sample, temperature)
    pos_vi = (f * memory[sample.positive]).sum(1)
    pos_vi2 = (f_new * (f if lvi2_positive == "live" else memory[indices])).sum(1)
    pos_vi3 = (f_new * memory[sample.positive_new]).sum(1)
    return {"lvi": _info_nce(pos_vi, neg, temperature), "lvi2": _info_nce(pos_vi2, neg, temperature),
            "lvi3": _info_nce(pos_vi3, neg, temperature)}


def contrast_only_loss(f: torch.Tensor, indices: Indices, memory: torch.Tensor, sample: ViewSample, *,
                       temperature: float = 0.04) -> torch.Tensor:
    """Table 3's L_vi^woGAN: ``log(1 + Σ_i exp(sim(f, k_i)/τ) / exp(sim(f, f_pos)/τ))``, no generated view."""
    indices = torch.as_tensor(indices, device=memory.device).long()
    dtype = _compute_dtype(memory, f)
    memory = memory.detach().to(dtype)
    f = F.normalize(f.to(dtype), dim=1)
    _check_inputs(f, memory, indices, sample)
    return _info_nce((f * memory[sample.positive]).sum(1), _negative_logits(f, memory, sample, temperature),
                     temperature)


class ViewContrastLoss(nn.Module):
    """The View Contrast module: a :class:`ViewMemory` plus the sampling and loss options.

    ``loss(f, f_new, indices)`` returns ``{"lvi", "lvi2", "lvi3"}``; call ``memory.update(indices, f)``
    afterwards (official order: loss first, then the update with the real image's feature).
    ``state_dict()`` holds the memory rows and labels. ``preset`` ("paper" or "official") sets the
    options of :data:`VIEW_CONTRAST_PRESETS`; explicit keyword arguments override it.
    """

    def __init__(self, num_samples: int, num_features: int = 512, *, temperature: float = 0.04,
                 momentum: float = 0.2, num_negatives: int = 8192, preset: str = "paper", **options):
        super().__init__()
        if preset not in VIEW_CONTRAST_PRESETS:
            raise ConfigError(f"unknown view-contrast preset {preset!r}; expected one of "
                              f"{', '.join(VIEW_CONTRAST_PRESETS)}")
        allowed = {"lvi2_positive", "shared_positive", "outliers_as_negatives", "anchor_as_positive", "negative_anchor"}
        unknown = set(options) - allowed
        if unknown:
            raise ConfigError(f"unknown view-contrast option(s) {sorted(unknown)}; expected {sorted(allowed)}")
        opts = {"negative_anchor": "new", **VIEW_CONTRAST_PRESETS[preset], **options}
        if opts["lvi2_positive"] not in LVI2_POSITIVES:
            raise ConfigError(f"unknown lvi2_positive {opts['lvi2_positive']!r}; expected one of {', '.join(LVI2_POSITIVES)}")
        if opts["negative_anchor"] not in NEGATIVE_ANCHORS:
            raise ConfigError(f"unknown negative_anchor {opts['negative_anchor']!r}; expected one of "
                              f"{', '.join(NEGATIVE_ANCHORS)}")
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.memory = ViewMemory(num_samples, num_features, momentum)
        self.temperature, self.num_negatives = temperature, num_negatives
        self.lvi2_positive: str = opts["lvi2_positive"]
        self.shared_positive: bool = bool(opts["shared_positive"])
        self.outliers_as_negatives: bool = bool(opts["outliers_as_negatives"])
        self.anchor_as_positive: bool = bool(opts["anchor_as_positive"])
        self.negative_anchor: str = opts["negative_anchor"]

    def sample(self, indices: Indices, generator: Optional[torch.Generator] = None) -> ViewSample:
        return sample_view_contrast(self.memory.labels, indices, self.num_negatives,
                                    shared_positive=self.shared_positive, anchor_as_positive=self.anchor_as_positive,
                                    outliers_as_negatives=self.outliers_as_negatives, generator=generator)

    def forward(self, f: torch.Tensor, f_new: torch.Tensor, indices: Indices,
                generator: Optional[torch.Generator] = None, sample: Optional[ViewSample] = None) -> Dict[str, torch.Tensor]:
        sample = self.sample(indices, generator) if sample is None else sample
        return view_invariant_losses(f, f_new, indices, self.memory.features, sample, temperature=self.temperature,
                                     lvi2_positive=self.lvi2_positive, negative_anchor=self.negative_anchor)

    def contrast_only(self, f: torch.Tensor, indices: Indices, generator: Optional[torch.Generator] = None,
                      sample: Optional[ViewSample] = None) -> torch.Tensor:
        sample = self.sample(indices, generator) if sample is None else sample
        return contrast_only_loss(f, indices, self.memory.features, sample, temperature=self.temperature)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, num_negatives={self.num_negatives}, "
                f"lvi2_positive={self.lvi2_positive!r}, shared_positive={self.shared_positive}, "
                f"outliers_as_negatives={self.outliers_as_negatives}, anchor_as_positive={self.anchor_as_positive}, "
                f"negative_anchor={self.negative_anchor!r}")

"""Pseudo labels: DBSCAN on the sparse k-reciprocal Jaccard graph, eps fixed or derived from rho."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import DBSCAN

from ._checks import ArrayLike, FeatureError
from .camera import camera_centered
from .jaccard import Device, DistanceBlock, jaccard_blocks, symmetric_from_strict_upper
from .kreciprocal import DEFAULT_WORK
from .stats import ClusterStats, cluster_statistics

OUTLIER_POLICIES = ("drop", "single")


@dataclass
class PseudoLabels:
    """Result of :func:`pseudo_labels`.

    `labels` follow the outlier policy: under ``"drop"`` outliers are −1 (leave them out of this
    epoch's training set); under ``"single"`` outlier number t (in sample order) gets label
    ``num_clusters + t``, so every sample has a class. `dbscan_labels` are DBSCAN's own labels
    (−1 = outlier) under either policy."""
    labels: np.ndarray
    dbscan_labels: np.ndarray
    eps: float
    num_clusters: int
    num_outliers: int
    outliers: str
    stats: Optional[ClusterStats] = None
    timings: dict = field(default_factory=dict)  # seconds: knn, encode, jaccard, dbscan

    @property
    def num_classes(self) -> int:
        """Classes to train on: clusters, plus one per outlier under the ``"single"`` policy."""
        return self.num_clusters + (self.num_outliers if self.outliers == "single" else 0)

    def as_dict(self) -> dict:
        """The scalars, JSON-ready (for per-epoch metrics)."""
        out = {"eps": self.eps, "num_clusters": self.num_clusters, "num_outliers": self.num_outliers,
               "num_classes": self.num_classes, "outliers": self.outliers}
        if self.stats is not None:
            out.update({f"cluster_{k}": v for k, v in self.stats.as_dict().items() if v is not None})
        return out


def eps_from_rho(distance: sp.spmatrix, rho: float) -> float:
    """eps as in the GCL / SpCL code: the mean of the smallest `rho`-fraction of the non-zero
    entries of the strict upper triangle of the dense distance matrix.

    `distance` is the sparse matrix of :func:`~gclreid.clustering.jaccard_distance` (absent = 1).
    The set of values is exactly the dense one: the stored upper entries that are not 0, plus one
    value 1 for every absent upper entry. With size = N(N−1)/2 − (stored upper zeros),
    ``top_num = round(rho · size)`` (numpy rounding, half to even) and eps is the mean of the
    top_num smallest values of that set (computed in float64)."""
    coo = sp.triu(distance, k=1, format="coo")
    n = distance.shape[0]
    return _eps_from_values(coo.data, n, rho)


def _check_rho(rho: float, n: int) -> int:
    if not 0 < rho <= 1:
        raise FeatureError(f"rho must be in (0, 1], got {rho!r}")
    return int(np.round(rho * (n * (n - 1) // 2)))


def _eps_from_values(upper: np.ndarray, n: int, rho: float, zeros: Optional[int] = None) -> float:
    """eps from the upper-triangle stored values (or the smallest of them: any superset of the
    smallest top_num positive ones). `zeros` = number of stored upper zeros if `upper` is partial."""
    _check_rho(rho, n)
    upper = np.asarray(upper, dtype=np.float64)
    zeros = int((upper == 0).sum()) if zeros is None else zeros
    size = n * (n - 1) // 2 - zeros
    top_num = int(np.round(rho * size))
    if top_num < 1:
        raise FeatureError(f"rho={rho} selects no pair among the {size} non-zero pairwise distances of "
                           f"{n} samples; use a larger rho or a fixed eps")
    positive = upper[upper > 0]
    if top_num <= positive.size:
        return float(np.partition(positive, top_num - 1)[:top_num].mean())
    # The rest of the smallest values are absent entries, i.e. distance 1.
    return float((positive.sum() + (top_num - positive.size)) / top_num)


class _GraphCollector:
    """Consumes upper-triangle blocks and keeps only what DBSCAN and eps need: the pairs within
    eps (fixed), or — for eps from rho — the smallest top_max positive values and every pair not
    larger than the current top_max-th smallest value (eps can never exceed it)."""

    def __init__(self, n: int, eps: Optional[float], rho: float):
        self.n, self.eps, self.rho = n, eps, rho
        self.top_max = _check_rho(rho, n) if eps is None else 0
        self.bound = np.inf if eps is None else eps
        self.pool: list = []
        self.pool_size = 0
        self.zeros = 0
        self.rows: list = []
        self.cols: list = []
        self.dist: list = []

    def add(self, block: DistanceBlock) -> None:
        strict = block.cols > block.rows
        d = block.dist[strict]
        keep = d <= self.bound
        self.rows.append(block.rows[strict][keep])
        self.cols.append(block.cols[strict][keep])
        self.dist.append(d[keep])
        if self.eps is None:
            self.zeros += int((d == 0).sum())
            candidates = d[keep & (d > 0)]
            self.pool.append(candidates)
            self.pool_size += candidates.size
            if self.top_max and self.pool_size > 2 * self.top_max:
                self._shrink()

    def _shrink(self) -> None:
        pool = np.concatenate(self.pool)
        pool = np.partition(pool, self.top_max - 1)[:self.top_max]
        self.pool, self.pool_size = [pool], pool.size
        self.bound = float(pool.max())
        self._filter(self.bound)

    def _filter(self, bound: float) -> None:
        rows, cols, dist = (np.concatenate(a) for a in (self.rows, self.cols, self.dist))
        keep = dist <= bound
        self.rows, self.cols, self.dist = [rows[keep]], [cols[keep]], [dist[keep]]

    def finish(self):
        """(eps, upper rows, cols, distances within eps)."""
        if self.eps is None:
            pool = np.concatenate(self.pool) if self.pool else np.zeros(0)
            # The pool holds every positive value ≤ bound seen, which includes the smallest
            # top_num ≤ top_max of all positive values: eps from it equals eps from all of them.
            eps = _eps_from_values(pool, self.n, self.rho, zeros=self.zeros)
        else:
            eps = self.eps
        self._filter(eps)
        return eps, self.rows[0], self.cols[0], self.dist[0]


def dbscan_precomputed(distance: sp.csr_matrix, eps: float, min_samples: int = 4) -> np.ndarray:
    """scikit-learn DBSCAN (metric="precomputed") on a sparse distance matrix whose absent entries
    mean "farther than eps" (e.g. distance 1 with eps < 1). Stored zeros count as neighbours.
    Rows are sorted by value first, so scikit-learn does not sort them one by one in Python."""
    graph = sp.csr_matrix(distance, copy=True)  # keeps explicit zeros
    row_ids = np.repeat(np.arange(graph.shape[0]), np.diff(graph.indptr))
    order = np.lexsort((graph.data, row_ids))
    graph.data, graph.indices = graph.data[order], graph.indices[order]
    graph.has_sorted_indices = False
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(graph).astype(np.int64)


def pseudo_labels(features: ArrayLike, eps: Optional[float] = None, rho: float = 0.002,
                  min_samples: int = 4, k1: int = 30, k2: int = 6, outliers: str = "drop", *,
                  true_ids: Optional[np.ndarray] = None, device: Device = None,
                  chunk_rows: Optional[int] = None, work: int = DEFAULT_WORK,
                  knn_backend: str = "torch", cameras: Optional[ArrayLike] = None) -> PseudoLabels:
    """Cluster `features` (N×D) into pseudo identities: DBSCAN (min_samples, precomputed metric)
    on the k-reciprocal Jaccard distance (k1, k2; see :func:`jaccard_distance`).

    eps is fixed, or — when None — derived from rho as in the GCL code (:func:`eps_from_rho`;
    GCL uses rho=0.002 for Market/Duke and 0.0012 for MSMT17, k1=30, k2=6, min_samples=4). The
    Jaccard matrix is streamed block by block and only the pairs within eps are kept, so memory
    stays O(N·k); the labels are identical to DBSCAN on the dense matrix. `outliers` is
    ``"drop"`` (label −1) or ``"single"`` (each outlier its own class). With `true_ids` the
    result carries NMI / ARI / purity (analysis only). With `cameras` (one id per sample) the
    features are first centred per camera (:func:`~gclreid.clustering.camera_centered`)."""
    if outliers not in OUTLIER_POLICIES:
        raise FeatureError(f"pseudo_labels: outliers must be one of {OUTLIER_POLICIES}, got {outliers!r}")
    if isinstance(min_samples, bool) or not isinstance(min_samples, (int, np.integer)) or min_samples < 1:
        raise FeatureError(f"pseudo_labels: min_samples must be a positive integer, got {min_samples!r}")
    if eps is not None and not eps > 0:
        raise FeatureError(f"pseudo_labels: eps must be positive, got {eps!r}")
    if cameras is not None:
        features = camera_centered(features, cameras)
    bound = {"value": np.inf if eps is None else float(eps)}
    timings: dict = {}
    n, blocks = jaccard_blocks(features, k1, k2, device=device, chunk_rows=chunk_rows, work=work,
                               knn_backend=knn_backend, max_distance=lambda: bound["value"], upper=True,
                               timings=timings)
    start = time.perf_counter()
    if true_ids is not None and len(true_ids) != n:
        raise FeatureError(f"pseudo_labels: {len(true_ids)} true ids for {n} samples")
    if eps is not None and eps >= 1:
        eps_used = float(eps)
    else:
        collector = _GraphCollector(n, eps, rho)
        for block in blocks:
            collector.add(block)
            bound["value"] = collector.bound
        eps_used, rows, cols, dist = collector.finish()
    timings["jaccard"] = time.perf_counter() - start
    start = time.perf_counter()
    if eps_used >= 1:
        # Every pair of the dense matrix (all distances ≤ 1) is a neighbour: one cluster.
        raw = np.zeros(n, dtype=np.int64) if n >= min_samples else np.full(n, -1, dtype=np.int64)
    else:
        # Blocks arrive in (row, col) order and filtering keeps it: the rows are CSR-ready.
        graph = symmetric_from_strict_upper(n, np.bincount(rows, minlength=n), cols, dist)
        raw = dbscan_precomputed(graph, eps_used, min_samples)
    timings["dbscan"] = time.perf_counter() - start
    result = _apply_policy(raw, eps_used, outliers, true_ids)
    result.timings = timings
    return result


def _apply_policy(raw: np.ndarray, eps: float, outliers: str, true_ids: Optional[Iterable]) -> PseudoLabels:
    num_clusters = int(raw.max(initial=-1) + 1)
    is_outlier = raw < 0
    labels = raw.copy()
    if outliers == "single":
        labels[is_outlier] = num_clusters + np.arange(int(is_outlier.sum()))
    stats = cluster_statistics(raw, None if true_ids is None else np.asarray(true_ids))
    return PseudoLabels(labels=labels, dbscan_labels=raw, eps=float(eps), num_clusters=num_clusters,
                        num_outliers=int(is_outlier.sum()), outliers=outliers,
                        stats=stats if true_ids is not None else None)

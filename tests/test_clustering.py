"""Sparse k-reciprocal Jaccard distance and DBSCAN pseudo labels against a straightforward dense
transcription of the algorithm the GCL / SpCL / cluster-contrast code uses."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from gclreid.clustering import (FeatureError, cluster_statistics, dbscan_precomputed, eps_from_rho,
                                jaccard_distance, knn, pseudo_labels)
from gclreid.clustering import kreciprocal
from gclreid.errors import GclreidError


def clustered_features(n_ids=100, per_id=18, dim=64, noise=1.4, n_noise=200, seed=0):
    """Gaussian clusters around random unit centres plus uniform-ish noise points."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    ids = np.repeat(np.arange(n_ids), per_id)
    x = centres[ids] + noise * rng.standard_normal((ids.size, dim)) / np.sqrt(dim)
    x = np.concatenate([x, rng.standard_normal((n_noise, dim))])
    ids = np.concatenate([ids, -1 - np.arange(n_noise)])
    perm = rng.permutation(ids.size)
    return x[perm].astype(np.float32), ids[perm]


# ---- the dense reference: a direct transcription, per-sample loops and N×N matrices -----------

def k_reciprocal_neigh(initial_rank, i, k1):
    forward = initial_rank[i, :k1 + 1]
    backward = initial_rank[forward, :k1 + 1]
    return forward[np.where(backward == i)[0]]


def dense_jaccard(features, k1, k2):
    x = torch.nn.functional.normalize(torch.as_tensor(features, dtype=torch.float32), dim=1)
    n = x.shape[0]
    sim = (x @ x.T).numpy()
    initial_rank = np.argsort(-sim, axis=1, kind="stable")[:, :k1]  # k1 columns, self first
    nn_k1 = [k_reciprocal_neigh(initial_rank, i, k1) for i in range(n)]
    nn_half = [k_reciprocal_neigh(initial_rank, i, int(np.around(k1 / 2))) for i in range(n)]
    V = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        r = nn_k1[i]
        expansion = r
        for c in r:
            half = nn_half[c]
            if len(np.intersect1d(half, r)) > 2 / 3 * len(half):
                expansion = np.append(expansion, half)
        expansion = np.unique(expansion)
        dist = 2 - 2 * torch.mm(x[i].unsqueeze(0), x[expansion].t())
        V[i, expansion] = torch.softmax(-dist, dim=1).view(-1).numpy()
    if k2 != 1:
        V = np.stack([np.mean(V[initial_rank[i, :k2], :], axis=0) for i in range(n)])
    inv = [np.where(V[:, k] != 0)[0] for k in range(n)]
    jaccard = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        temp_min = np.zeros((1, n), dtype=np.float32)
        for k in np.where(V[i, :] != 0)[0]:
            temp_min[0, inv[k]] += np.minimum(V[i, k], V[inv[k], k])
        jaccard[i] = 1 - temp_min / (2 - temp_min)
    jaccard[jaccard < 0] = 0
    return jaccard


def dense_eps(jaccard, rho):
    """The GCL code: upper triangle, non-zero entries, sorted, mean of the smallest round(rho·size)."""
    tri = np.triu(jaccard, 1)
    tri = np.sort(tri[np.nonzero(tri)], axis=None)
    top_num = np.round(rho * tri.size).astype(int)
    return float(tri[:top_num].astype(np.float64).mean())


def densify(matrix):
    """Sparse distance matrix → dense with absent entries = 1 (stored zeros stay 0)."""
    coo = matrix.tocoo()
    out = np.ones(matrix.shape, dtype=np.float32)
    out[coo.row, coo.col] = coo.data
    return out


@pytest.fixture(scope="module")
def data():
    x, ids = clustered_features()
    ref = dense_jaccard(x, k1=30, k2=6)
    sparse = jaccard_distance(x, k1=30, k2=6)
    return x, ids, ref, sparse


# ---- Jaccard distance --------------------------------------------------------------------------

def test_jaccard_matches_dense_reference_on_every_entry(data):
    x, _, ref, sparse = data
    assert isinstance(sparse, sp.csr_matrix) and sparse.dtype == np.float32 and sparse.shape == (2000, 2000)
    assert np.abs(densify(sparse) - ref).max() < 1e-5
    # Exactly the pairs below 1 are stored (nothing near 1 hides the count), plus the diagonal.
    assert sparse.nnz == int((ref < 1).sum())


def test_jaccard_structure_is_canonical(data):
    _, _, _, sparse = data
    coo = sparse.tocoo()
    assert np.array_equal(np.sort(coo.row[coo.row == coo.col]), np.arange(2000))  # explicit diagonal
    assert np.all(coo.data[coo.row == coo.col] == 0)
    assert (sparse != sparse.T).nnz == 0  # symmetric
    assert sparse.has_sorted_indices
    for i in (0, 999, 1999):
        row = sparse.indices[sparse.indptr[i]:sparse.indptr[i + 1]]
        assert np.all(np.diff(row) > 0)
    assert np.all((sparse.data >= 0) & (sparse.data < 1))


def test_missing_diagonal_entries_are_added_as_explicit_zeros():
    from gclreid.clustering.jaccard import with_zero_diagonal
    m = sp.csr_matrix((np.array([0.5, 0.0, 0.5], np.float32), np.array([1, 2, 0]), np.array([0, 2, 3, 3])),
                      shape=(3, 3))
    out = with_zero_diagonal(m)
    assert out.nnz == 6 and out.has_sorted_indices
    assert np.array_equal(out.indices, [0, 1, 2, 0, 1, 2]) and np.array_equal(out.indptr, [0, 3, 5, 6])
    assert np.array_equal(out.data, [0, 0.5, 0, 0.5, 0, 0])  # the stored zero at (0, 2) stays


def test_jaccard_small_work_blocks_and_scratch_give_the_same_matrix(data, monkeypatch):
    x, _, _, sparse = data
    monkeypatch.setattr(kreciprocal, "SCRATCH", 2000 * 7)  # 7 rows per block
    small = jaccard_distance(x, k1=30, k2=6, work=3000, chunk_rows=97)
    assert (small != sparse).nnz == 0


def test_overlap_blocks_on_one_or_several_threads_are_identical(data):
    """The compiled overlap loop runs blocks on torch.get_num_threads() threads, each with its own
    accumulator: the result must not depend on the thread count or on the block size."""
    x, _, _, sparse = data
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = jaccard_distance(x, k1=30, k2=6, work=5000)
        torch.set_num_threads(3)
        three = jaccard_distance(x, k1=30, k2=6, work=5000)
    finally:
        torch.set_num_threads(threads)
    for out in (one, three):
        assert np.array_equal(out.indptr, sparse.indptr) and np.array_equal(out.indices, sparse.indices)
        assert np.array_equal(out.data, sparse.data)


@pytest.mark.parametrize("min_col", ["diagonal", 7])
def test_min_overlap_blocks_equal_brute_force_sums(min_col):
    """S[i, j] = Σ_k min(V[i, k], V[j, k]) from the compiled loop against numpy on a dense V, with
    a row range, a column restriction and a threshold that changes from block to block."""
    rng = np.random.default_rng(3)
    n = 40
    dense = rng.random((n, n)).astype(np.float32) * (rng.random((n, n)) < 0.15)
    csr = sp.csr_matrix(dense)
    v = kreciprocal.SparseRows(csr.indptr.astype(np.int64), csr.indices.astype(np.int64), csr.data, n)
    s = np.minimum(dense[:, None, :], dense[None, :, :]).sum(axis=2)
    thresholds = iter([0.0, 0.3, 0.6] + [0.45] * n)
    used = []

    def min_value():
        used.append(next(thresholds))
        return used[-1]

    got = np.zeros((n, n), dtype=np.float32)
    row_threshold = np.full(n, np.nan)
    for block in kreciprocal.min_overlap_blocks(v, rows=(5, 33), min_col=min_col, min_value=min_value, work=60):
        assert np.all(np.diff(block.keys) > 0)  # ascending keys
        rows, cols = block.rows_cols()
        got[rows, cols] = block.values
        row_threshold[block.row_start:] = used[-1]  # until the next block starts
    assert len(set(used)) > 2  # several blocks, several thresholds
    expect = np.zeros((n, n), dtype=bool)
    for i in range(5, 33):
        first = i if min_col == "diagonal" else min_col
        expect[i, first:] = (s[i, first:] > 0) & (s[i, first:] >= row_threshold[i])
    assert np.array_equal(got > 0, expect)
    assert np.allclose(got[got > 0], s[got > 0], atol=1e-6)


@pytest.mark.parametrize("k1,k2", [(7, 3), (10, 1), (25, 6)])
def test_jaccard_other_k_match_dense_reference(k1, k2):
    # odd k1 (half = round(3.5) = 4, numpy rounds half to even), no query expansion, k1 = 25 → 12
    x, _ = clustered_features(n_ids=20, per_id=12, n_noise=40, seed=k1)
    ref = dense_jaccard(x, k1, k2)
    out = jaccard_distance(torch.from_numpy(x), k1=k1, k2=k2)
    assert np.abs(densify(out) - ref).max() < 1e-5


def test_jaccard_max_distance_keeps_exactly_the_closer_pairs(data):
    x, _, _, sparse = data
    close = jaccard_distance(x, k1=30, k2=6, max_distance=0.5)
    full = densify(sparse)
    keep = (full < 0.5)
    assert close.nnz == int(keep.sum())
    assert np.array_equal(densify(close)[keep], full[keep])


def test_knn_is_exact_with_chunks():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    res = knn(x, 9, chunk_rows=41, return_row_max=True)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = np.maximum(2 - 2 * xn @ xn.T, 0)
    expected = np.argsort(d, axis=1, kind="stable")[:, :9]
    assert np.array_equal(res.indices.numpy(), expected)
    assert np.allclose(res.distances.numpy(), np.take_along_axis(d, expected, 1), atol=1e-5)
    assert np.all(res.distances.numpy()[:, 0] == 0)  # self, exactly 0
    assert np.allclose(res.row_max.numpy(), d.max(axis=1), atol=1e-5)
    raw = knn(x, 5, normalize=False)
    d_raw = ((x[:, None] - x[None]) ** 2).sum(-1)
    assert np.array_equal(raw.indices.numpy(), np.argsort(d_raw, axis=1, kind="stable")[:, :5])


def test_knn_faiss_backend_matches_torch():
    pytest.importorskip("faiss")
    x = np.random.default_rng(4).standard_normal((200, 8)).astype(np.float32)
    a, b = knn(x, 6), knn(x, 6, backend="faiss")
    assert np.array_equal(a.indices.numpy(), b.indices.numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_jaccard_on_gpu_matches_cpu(data):
    x, _, _, sparse = data
    gpu = jaccard_distance(torch.from_numpy(x).cuda(), k1=30, k2=6)
    assert np.abs(densify(gpu) - densify(sparse)).max() < 1e-5


# ---- eps from rho and DBSCAN -------------------------------------------------------------------

def test_eps_from_rho_is_the_dense_definition_on_the_same_values(data):
    _, _, ref, sparse = data
    for rho in (0.002, 0.0012, 0.01):
        assert eps_from_rho(sparse, rho) == pytest.approx(dense_eps(densify(sparse), rho), abs=1e-9)
        # Against the reference matrix: equal up to pairs whose distance is 0 in one and ~1e-7 in
        # the other (samples with the same k2 nearest neighbours have identical V_qe rows, and the
        # GCL code's "non-zero" test then depends on rounding).
        assert abs(eps_from_rho(sparse, rho) - dense_eps(ref, rho)) < 1e-3


def test_eps_from_rho_and_labels_equal_dense_pipeline_without_rounding_ties():
    x, ids = clustered_features(n_ids=50, per_id=18, noise=2.0, n_noise=100, seed=1)
    ref = dense_jaccard(x, 30, 6)
    off = ref[np.triu_indices(len(x), 1)]
    assert not np.any((off > 0) & (off < 1e-4))  # precondition: no rounding ties at 0
    eps = dense_eps(ref, 0.002)
    result = pseudo_labels(x, rho=0.002, k1=30, k2=6)
    assert result.eps == pytest.approx(eps, abs=1e-6)
    dense_labels = DBSCAN(eps=eps, min_samples=4, metric="precomputed").fit_predict(ref)
    assert np.array_equal(result.dbscan_labels, dense_labels)
    assert result.num_clusters > 10


def test_eps_from_rho_definition_with_zeros_ones_and_padding():
    # A hand-made symmetric "distance" matrix: explicit zeros (excluded from the set), absent
    # entries (value 1, included), and a rho large enough to reach past the stored values.
    rng = np.random.default_rng(5)
    n = 40
    dense = np.ones((n, n), dtype=np.float32)
    iu = np.triu_indices(n, 1)
    vals = rng.uniform(0.05, 0.95, iu[0].size).astype(np.float32)
    vals[rng.random(vals.size) < 0.7] = 1  # absent
    vals[:6] = 0  # duplicates
    dense[iu] = vals
    dense = np.minimum(dense, dense.T)
    np.fill_diagonal(dense, 0)
    mask = dense < 1
    sparse = sp.csr_matrix((dense[mask], np.nonzero(mask)[1], np.concatenate([[0], np.cumsum(mask.sum(1))])),
                           shape=(n, n))
    assert (sparse.data == 0).sum() == n + 12  # explicit zeros survive construction
    for rho in (0.01, 0.1, 0.3, 0.6, 0.95):
        assert eps_from_rho(sparse, rho) == pytest.approx(dense_eps(dense, rho), abs=1e-6)
    with pytest.raises(FeatureError, match="rho"):
        eps_from_rho(sparse, 1e-6)


def test_dbscan_on_sparse_graph_equals_dense_dbscan(data):
    x, _, ref, _ = data
    for eps in (0.3, 0.5, 0.7):
        dense_labels = DBSCAN(eps=eps, min_samples=4, metric="precomputed").fit_predict(ref)
        result = pseudo_labels(x, eps=eps, k1=30, k2=6)
        assert np.array_equal(result.dbscan_labels, dense_labels)
        assert result.eps == eps
    assert len(set(dense_labels)) > 20  # a non-trivial clustering


def test_pseudo_labels_eps_from_rho_streamed_equals_full_matrix(data):
    x, ids, ref, sparse = data
    result = pseudo_labels(x, rho=0.002, k1=30, k2=6, true_ids=ids)
    assert result.eps == pytest.approx(eps_from_rho(sparse, 0.002), abs=1e-12)  # streamed = full matrix
    dense_labels = DBSCAN(eps=result.eps, min_samples=4, metric="precomputed").fit_predict(ref)
    assert np.array_equal(result.dbscan_labels, dense_labels)
    assert result.num_clusters == dense_labels.max() + 1 > 50
    assert result.num_outliers == int((dense_labels == -1).sum())
    assert result.labels.dtype == np.int64
    assert result.stats.num_clusters == result.num_clusters and result.stats.nmi > 0.5


def test_outlier_policies(data):
    x, _, _, _ = data
    drop = pseudo_labels(x, eps=0.5, k1=30, outliers="drop")
    single = pseudo_labels(x, eps=0.5, k1=30, outliers="single")
    outliers = drop.labels == -1
    c = drop.num_clusters
    assert drop.num_outliers == outliers.sum() > 0
    assert drop.num_classes == c
    assert np.array_equal(single.labels[~outliers], drop.labels[~outliers])
    assert np.array_equal(single.labels[outliers], c + np.arange(outliers.sum()))  # in sample order
    assert single.num_classes == c + drop.num_outliers == single.labels.max() + 1
    assert np.array_equal(single.dbscan_labels, drop.labels)


def test_dbscan_keeps_explicit_zeros_and_ignores_absent_entries():
    # Four points at distance 0 of each other (stored zeros) form a cluster; a fifth point is
    # absent from everyone's row (distance 1 in the dense view) and must stay an outlier even
    # with eps close to 1.
    n = 5
    rows = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4]
    cols = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 4]
    graph = sp.csr_matrix((np.zeros(len(rows), np.float32), (rows, cols)), shape=(n, n))
    assert graph.nnz == len(rows)
    labels = dbscan_precomputed(graph, eps=0.99, min_samples=4)
    dense = np.ones((n, n)); dense[rows, cols] = 0
    assert np.array_equal(labels, DBSCAN(eps=0.99, min_samples=4, metric="precomputed").fit_predict(dense))
    assert labels.tolist() == [0, 0, 0, 0, -1]


def test_eps_of_one_or_more_is_one_cluster_like_dense():
    x, _ = clustered_features(n_ids=5, per_id=6, n_noise=5)
    result = pseudo_labels(x, eps=1.0, k1=8)
    dense = DBSCAN(eps=1.0, min_samples=4, metric="precomputed").fit_predict(dense_jaccard(x, 8, 6))
    assert np.array_equal(result.dbscan_labels, dense) and result.num_clusters == 1


# ---- statistics --------------------------------------------------------------------------------

def test_cluster_statistics_against_known_labels():
    labels = np.array([0, 0, 0, 1, 1, -1, -1, 2])
    truth = np.array([5, 5, 6, 7, 7, 8, 9, 9])
    stats = cluster_statistics(labels, truth)
    assert (stats.num_clusters, stats.num_outliers, stats.num_samples) == (3, 2, 8)
    assert stats.largest_cluster == 3 and stats.mean_cluster_size == pytest.approx(6 / 3)
    assert stats.num_true_ids == 5
    assert stats.purity == pytest.approx(5 / 6)  # cluster 0: 2 of 3 share an id; 1 and 2 pure
    singletons = np.array([0, 0, 0, 1, 1, 3, 4, 2])
    assert stats.nmi == pytest.approx(normalized_mutual_info_score(truth, singletons))
    assert stats.ari == pytest.approx(adjusted_rand_score(truth, singletons))
    perfect = cluster_statistics(np.array([1, 1, 0, 0]), np.array([7, 7, 3, 3]))
    assert perfect.nmi == pytest.approx(1) and perfect.ari == pytest.approx(1) and perfect.purity == 1
    plain = cluster_statistics(np.array([-1, -1]))
    assert plain.num_clusters == 0 and plain.nmi is None and plain.purity is None
    with pytest.raises(FeatureError):
        cluster_statistics(np.array([0, -2]))


def test_pseudo_labels_reports_statistics(data):
    x, ids, _, _ = data
    result = pseudo_labels(x, eps=0.5, k1=30, true_ids=ids)
    expected = cluster_statistics(result.dbscan_labels, ids)
    assert result.stats == expected
    info = result.as_dict()
    assert info["num_clusters"] == result.num_clusters and info["cluster_nmi"] == expected.nmi


# ---- bad input ---------------------------------------------------------------------------------

def test_bad_input_is_rejected_clearly(monkeypatch):
    x, _ = clustered_features(n_ids=5, per_id=6, n_noise=5)
    bad = x.copy()
    bad[3, 1] = np.nan
    bad[7, 0] = np.inf
    with pytest.raises(FeatureError, match=r"2 row\(s\) contain NaN or Inf.*\[3, 7\]"):
        jaccard_distance(bad)
    # the scan goes block by block: a bad row in a later block, or only in the last, is found too
    from gclreid.clustering import _checks
    monkeypatch.setattr(_checks, "FINITE_CHECK_ROWS", 4)
    late = x.copy()
    late[len(x) - 1, 2] = -np.inf
    with pytest.raises(FeatureError, match=rf"1 row\(s\) contain NaN or Inf.*\[{len(x) - 1}\]"):
        jaccard_distance(late)
    with pytest.raises(FeatureError, match=r"2 row\(s\) contain NaN or Inf.*\[3, 7\]"):
        jaccard_distance(bad)
    assert _checks.as_feature_tensor(late, check_finite=False).shape == x.shape  # left to the caller
    with pytest.raises(FeatureError, match="k1=35 must be smaller than the number of samples"):
        jaccard_distance(x, k1=35)
    with pytest.raises(FeatureError, match="2-D"):
        jaccard_distance(x[0])
    with pytest.raises(FeatureError, match="2-D"):
        pseudo_labels(x[None])
    with pytest.raises(FeatureError, match="k2=9 must not exceed"):
        jaccard_distance(x, k1=8, k2=9)
    with pytest.raises(FeatureError, match="numpy array or torch tensor"):
        jaccard_distance(x.tolist())
    with pytest.raises(FeatureError, match="outliers"):
        pseudo_labels(x, k1=8, outliers="keep")
    with pytest.raises(FeatureError, match="eps must be positive"):
        pseudo_labels(x, eps=0.0, k1=8)
    with pytest.raises(FeatureError, match="selects no pair"):
        pseudo_labels(x, rho=1e-5, k1=8)
    with pytest.raises(FeatureError, match="true ids"):
        pseudo_labels(x, k1=8, true_ids=np.zeros(3))
    assert issubclass(FeatureError, GclreidError) and issubclass(FeatureError, ValueError)

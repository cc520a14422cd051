"""k-reciprocal re-ranking against a direct dense transcription of Zhong et al.'s original code."""
import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from gclreid.clustering import FeatureError
from gclreid.evaluation.rerank import re_ranking


def features(n_ids=50, per_id=20, dim=32, noise=1.5, scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim))
    ids = np.repeat(np.arange(n_ids), per_id)
    x = scale * (centres[ids] / np.linalg.norm(centres[ids], axis=1, keepdims=True)
                 + noise * rng.standard_normal((ids.size, dim)) / np.sqrt(dim))
    perm = rng.permutation(ids.size)
    return x[perm].astype(np.float32)


def zhong_re_ranking(qf, gf, k1=20, k2=6, lambda_value=0.3):
    """The original re_ranking (person-re-ranking, python version) on features: squared Euclidean
    distances over query ∪ gallery, column-max normalisation, dense V, per-sample loops."""
    query_num = qf.shape[0]
    feat = np.concatenate([qf, gf]).astype(np.float64)
    original_dist = np.power(cdist(feat, feat), 2).astype(np.float32)
    all_num = original_dist.shape[0]
    original_dist = np.transpose(original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist, kind="stable").astype(np.int32)
    for i in range(all_num):
        forward = initial_rank[i, :k1 + 1]
        backward = initial_rank[forward, :k1 + 1]
        k_reciprocal_index = forward[np.where(backward == i)[0]]
        expansion = k_reciprocal_index
        for candidate in k_reciprocal_index:
            c_forward = initial_rank[candidate, :int(np.around(k1 / 2.)) + 1]
            c_backward = initial_rank[c_forward, :int(np.around(k1 / 2.)) + 1]
            c_index = c_forward[np.where(c_backward == candidate)[0]]
            if len(np.intersect1d(c_index, k_reciprocal_index)) > 2. / 3 * len(c_index):
                expansion = np.append(expansion, c_index)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        V[i, expansion] = 1. * weight / np.sum(weight)
    original_dist = original_dist[:query_num, ]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
        nonzero = np.where(V[i, :] != 0)[0]
        for k in nonzero:
            temp_min[0, inv_index[k]] += np.minimum(V[i, k], V[inv_index[k], k])
        jaccard_dist[i] = 1 - temp_min / (2. - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]


@pytest.fixture(scope="module")
def split():
    x = features()
    return x[:150], x[150:]


def test_re_ranking_matches_original_algorithm(split):
    q, g = split
    ours = re_ranking(q, g)
    assert ours.shape == (150, 850) and ours.dtype == np.float32
    assert np.abs(ours - zhong_re_ranking(q, g)).max() < 1e-5
    # Re-ranking changes the ranking (the Jaccard term matters for many pairs).
    assert (ours < 0.7 + 0.3 * 0.5).sum() > 150


@pytest.mark.parametrize("k1,k2,lam", [(10, 1, 0.3), (7, 3, 0.0), (20, 6, 1.0), (15, 8, 0.5)])
def test_re_ranking_other_parameters(split, k1, k2, lam):
    q, g = split[0][:40], split[1][:300]
    ours = re_ranking(torch.from_numpy(q), torch.from_numpy(g), k1=k1, k2=k2, lambda_value=lam, work=5000)
    assert np.abs(ours - zhong_re_ranking(q, g, k1, k2, lam)).max() < 1e-5


def test_re_ranking_lambda_one_is_the_normalised_original_distance(split):
    q, g = split
    d = cdist(np.concatenate([q, g]), np.concatenate([q, g]), "sqeuclidean")
    expected = (d / d.max(axis=1, keepdims=True))[:150, 150:]
    assert np.abs(re_ranking(q, g, lambda_value=1.0) - expected).max() < 1e-5


def test_re_ranking_bad_input(split):
    q, g = split
    with pytest.raises(FeatureError, match="dimensions differ"):
        re_ranking(q, g[:, :5])
    with pytest.raises(FeatureError, match="NaN"):
        re_ranking(np.full_like(q, np.nan), g)
    with pytest.raises(FeatureError, match="k1=20 must be smaller"):
        re_ranking(q[:5], g[:10])
    with pytest.raises(FeatureError, match="2-D"):
        re_ranking(q[0], g)
    with pytest.raises(FeatureError, match="lambda_value"):
        re_ranking(q, g, lambda_value=1.5)

"""evaluate_ranking against a straightforward per-query reference, hand-computed cases, bad input."""
import numpy as np
import pytest
import torch

from gclreid.evaluation import evaluate_features, evaluate_ranking, pairwise_distance
from gclreid.evaluation import ranking as ranking_module


@pytest.fixture(params=["auto", "dense", "candidates"])
def kernel_path(request, monkeypatch):
    """Run a test with the automatic choice, or force the dense or the candidate kernel (the latter
    applies to float32 distances; float64 always takes the dense one)."""
    forced = {"auto": ranking_module._CANDIDATE_MAX_FRACTION, "dense": -1.0, "candidates": 2.0}
    monkeypatch.setattr(ranking_module, "_CANDIDATE_MAX_FRACTION", forced[request.param])
    if request.param == "dense":
        monkeypatch.setattr(ranking_module, "_TIE_PIECE", 50)  # resolve ties in many small pieces
    return request.param


def reference_ranking(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """The textbook loop: stable argsort per query, drop same-id-same-camera, read off the metrics."""
    distmat = np.asarray(distmat)
    aps, inps, cmcs = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")  # ties: lower gallery index first
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        matches = (g_pids[order] == q_pids[i])[keep]
        if not matches.any():
            continue
        ranks = np.flatnonzero(matches) + 1
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
        inps.append(len(ranks) / ranks[-1])
        cmc = np.cumsum(matches)[:max_rank] >= 1
        cmcs.append(np.concatenate([cmc, np.full(max_rank - len(cmc), cmc[-1])]))
    return {"mAP": np.mean(aps), "mINP": np.mean(inps), "cmc": np.mean(cmcs, axis=0),
            "num_valid_queries": len(aps), "ap": aps}


def random_problem(rng, num_q, num_g, num_ids, num_cams, decimals=None, dtype=np.float32):
    q_pids = rng.integers(0, num_ids, num_q)
    g_pids = rng.integers(0, num_ids, num_g)
    q_cams = rng.integers(0, num_cams, num_q)
    g_cams = rng.integers(0, num_cams, num_g)
    dist = rng.random((num_q, num_g))
    if decimals is not None:
        dist = np.round(dist, decimals)  # lots of exact ties
    return dist.astype(dtype), q_pids, g_pids, q_cams, g_cams


def assert_matches_reference(result, ref, max_rank):
    assert result["num_valid_queries"] == ref["num_valid_queries"]
    assert result["num_queries"] == result["num_valid_queries"] + result["num_skipped_queries"]
    assert result["mAP"] == pytest.approx(ref["mAP"], abs=1e-6)
    assert result["mINP"] == pytest.approx(ref["mINP"], abs=1e-6)
    assert result["cmc"].shape == (max_rank,)
    np.testing.assert_allclose(result["cmc"], ref["cmc"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("decimals,dtype,chunk", [
    (None, np.float32, 7),     # continuous distances
    (1, np.float32, 16),       # ten distinct values: ties everywhere
    (2, np.float64, 1000),     # float64 input, one chunk
    (0, np.float32, 5),        # only 0 and 1: huge tie blocks
])
def test_matches_reference_on_random_data(decimals, dtype, chunk, kernel_path):
    rng = np.random.default_rng(0 if decimals is None else decimals + 1)
    dist, qp, gp, qc, gc = random_problem(rng, 60, 300, 30, 3, decimals, dtype)
    # Queries whose identity is absent from the gallery (no valid match) ...
    qp[:4] = 1000 + np.arange(4)
    # ... and queries whose only same-identity gallery entries share their camera.
    gp[gp == 5] = 6
    gp[:3], gc[:3] = 5, 2
    qp[4:7], qc[4:7] = 5, 2
    max_rank = 20
    ref = reference_ranking(dist, qp, gp, qc, gc, max_rank)
    assert ref["num_valid_queries"] <= 60 - 7
    result = evaluate_ranking(dist, qp, gp, qc, gc, max_rank=max_rank, query_chunk=chunk)
    assert_matches_reference(result, ref, max_rank)
    assert result["num_skipped_queries"] >= 7


def test_per_query_values_match_reference(kernel_path):
    rng = np.random.default_rng(11)
    dist, qp, gp, qc, gc = random_problem(rng, 40, 120, 12, 4, decimals=1)
    qp[0] = 99
    ref = reference_ranking(dist, qp, gp, qc, gc, 10)
    result = evaluate_ranking(dist, qp, gp, qc, gc, max_rank=10, return_per_query=True)
    assert not result["valid"][0] and np.isnan(result["ap"][0]) and result["first_match_rank"][0] == 0
    np.testing.assert_allclose(result["ap"][result["valid"]], ref["ap"], atol=1e-12)


def test_torch_input_string_labels_and_short_gallery(kernel_path):
    rng = np.random.default_rng(3)
    dist, qp, gp, qc, gc = random_problem(rng, 25, 30, 5, 2, decimals=1)
    max_rank = 50  # longer than the gallery: the CMC tail keeps its last value (1.0)
    ref = reference_ranking(dist, qp, gp, qc, gc, max_rank)
    result = evaluate_ranking(torch.from_numpy(dist), torch.from_numpy(qp), gp,
                              [f"c{c}" for c in qc], np.array([f"c{c}" for c in gc]), max_rank=max_rank)
    assert_matches_reference(result, ref, max_rank)
    result = evaluate_ranking(dist, [f"id{p}" for p in qp], [f"id{p}" for p in gp],
                              torch.from_numpy(qc), torch.from_numpy(gc), max_rank=max_rank)
    assert_matches_reference(result, ref, max_rank)
    assert result["cmc"][-1] == 1.0


def test_hand_computed_single_query():
    # Gallery (pid, cam): 0:(1,1) 1:(2,1) 2:(1,0) 3:(3,1) 4:(1,1); query pid 1, camera 0.
    # Entry 2 is junk (same id, same camera). Ranking by distance: 0, 3, 1, 4 → positives at ranks 1, 4.
    dist = [[0.1, 0.5, 0.3, 0.2, 0.9]]
    result = evaluate_ranking(dist, [1], [1, 2, 1, 3, 1], [0], [1, 1, 0, 1, 1], max_rank=5)
    assert result["mAP"] == pytest.approx((1 / 1 + 2 / 4) / 2)
    assert result["mINP"] == pytest.approx(2 / 4)
    np.testing.assert_array_equal(result["cmc"], [1, 1, 1, 1, 1])
    assert (result["num_queries"], result["num_valid_queries"], result["num_skipped_queries"]) == (1, 1, 0)


def test_hand_computed_ties_use_gallery_index(kernel_path):
    # All distances equal: the ranking is the gallery order 0..4 (junk 1 removed) → positives 2 and 4
    # sit at filtered ranks 2 and 4.
    dist = np.zeros((1, 5))
    result = evaluate_ranking(dist, [7], [3, 7, 7, 3, 7], [0], [1, 0, 1, 1, 2], max_rank=3)
    assert result["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert result["mINP"] == pytest.approx(2 / 4)
    np.testing.assert_array_equal(result["cmc"], [0, 1, 1])


def test_two_queries_one_skipped():
    dist = [[0.3, 0.1, 0.2], [0.3, 0.1, 0.2]]
    # Query 0 (pid 1, cam 0): positives 0 (rank 3) and 2 (rank 2) → AP (1/2 + 2/3) / 2, INP 2/3.
    # Query 1 (pid 9): no such identity in the gallery → skipped.
    result = evaluate_ranking(dist, [1, 9], [1, 2, 1], [0, 0], [1, 1, 1], max_rank=3)
    assert result["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result["mINP"] == pytest.approx(2 / 3)
    np.testing.assert_array_equal(result["cmc"], [0, 1, 1])
    assert (result["num_valid_queries"], result["num_skipped_queries"]) == (1, 1)


def test_no_camera_information_keeps_every_same_id_entry():
    dist = [[0.2, 0.1, 0.3]]
    # Same camera everywhere would make entry 0 junk; without cameras both pid-4 entries count.
    with_cams = evaluate_ranking(dist, [4], [4, 5, 4], [0], [0, 0, 1])
    no_cams = evaluate_ranking(dist, [4], [4, 5, 4], None, None)
    assert with_cams["mAP"] == pytest.approx(1 / 2)
    assert no_cams["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_infinite_distances_are_ranked_last(kernel_path):
    dist = np.array([[np.inf, 0.5, -np.inf, np.inf]])
    q, g = [1], [1, 2, 1, 1]
    ref = reference_ranking(dist, np.array(q), np.array(g), np.array([0]), np.array([1, 1, 1, 1]), 4)
    result = evaluate_ranking(dist, q, g, [0], [1, 1, 1, 1], max_rank=4)
    assert_matches_reference(result, ref, 4)


def test_negative_and_signed_zero_distances(kernel_path):
    # Negated similarities are valid distances; -0.0 and +0.0 are equal and tie by gallery index.
    rng = np.random.default_rng(8)
    dist, qp, gp, qc, gc = random_problem(rng, 30, 80, 8, 3, decimals=1)
    dist = dist - np.float32(0.5)
    dist[:, ::7] = np.float32(-0.0)
    dist[:, 3::7] = np.float32(0.0)
    ref = reference_ranking(dist, qp, gp, qc, gc, 10)
    noncontiguous = torch.from_numpy(np.ascontiguousarray(dist.T)).T
    assert_matches_reference(evaluate_ranking(noncontiguous, qp, gp, qc, gc, max_rank=10, query_chunk=8), ref, 10)
    result = evaluate_ranking([[-0.0, 0.0, -0.0]], [1], [1, 2, 1], [0], [1, 1, 1], max_rank=3)
    assert result["mAP"] == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_evaluate_features_equals_ranking_of_distances():
    rng = np.random.default_rng(5)
    qf, gf = rng.normal(size=(30, 8)).astype(np.float32), rng.normal(size=(90, 8)).astype(np.float32)
    qp, gp = rng.integers(0, 10, 30), rng.integers(0, 10, 90)
    qc, gc = rng.integers(0, 3, 30), rng.integers(0, 3, 90)
    for metric in ("euclidean", "cosine"):
        full = evaluate_ranking(pairwise_distance(qf, gf, metric), qp, gp, qc, gc, max_rank=10)
        chunked = evaluate_features(qf, gf, qp, gp, qc, gc, metric=metric, max_rank=10, query_chunk=7)
        assert chunked["mAP"] == full["mAP"] and chunked["mINP"] == full["mINP"]
        np.testing.assert_array_equal(chunked["cmc"], full["cmc"])


@pytest.mark.parametrize("args,message", [
    (dict(distmat=np.zeros((2, 3)), query_pids=[1], gallery_pids=[1, 2, 3]), "query_pids has 1 entries"),
    (dict(distmat=np.zeros((2, 3)), query_pids=[1, 2], gallery_pids=[1, 2]), "gallery_pids has 2 entries"),
    (dict(distmat=np.zeros((2, 3)), query_camids=[0, 0, 0]), "query_camids has 3 entries"),
    (dict(distmat=np.zeros((2, 3)), gallery_camids=[0]), "gallery_camids has 1 entries"),
    (dict(distmat=np.zeros(3)), "must be 2-D"),
    (dict(distmat=np.zeros((0, 3)), query_pids=[], query_camids=[]), "is empty"),
    (dict(distmat=np.full((2, 3), np.nan)), "6 NaN"),
    (dict(distmat=np.zeros((2, 3)), query_pids=[[1], [2]]), "query_pids must be 1-D"),
    (dict(distmat=np.zeros((2, 3)), max_rank=0), "max_rank"),
    (dict(distmat=np.zeros((2, 3)), query_chunk=0), "query_chunk"),
    (dict(distmat=np.zeros((2, 3)), query_camids=None), "both query_camids and gallery_camids"),
    (dict(distmat=np.zeros((2, 3)), query_pids=[8, 9]), "none of the 2 queries has a valid match"),
    (dict(distmat=np.zeros((2, 3), dtype=bool)), "real distances"),
])
def test_bad_input_raises_clear_error(args, message):
    kwargs = dict(query_pids=[1, 2], gallery_pids=[1, 2, 3], query_camids=[0, 0], gallery_camids=[1, 1, 1])
    kwargs.update(args)
    with pytest.raises(ValueError, match=message):
        evaluate_ranking(**kwargs)

"""Camera-aware clustering: per-camera centring of the features before the Jaccard distance."""
import numpy as np
import pytest
import torch

from gclreid.clustering import FeatureError, camera_centered, pseudo_labels
from gclreid.config import ConfigError, load_config
from gclreid.engine.common import update_pseudo_labels


def test_camera_centered_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5)).astype(np.float32)
    cams = rng.integers(0, 3, size=30)
    cams[0] = 7  # a camera with one image keeps that image's feature
    expected = x.copy()
    for c in np.unique(cams):
        if (cams == c).sum() > 1:
            expected[cams == c] -= x[cams == c].mean(axis=0)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = camera_centered(x, cams)
    assert torch.allclose(got, torch.from_numpy(expected), atol=1e-6)


def camera_dominated(n_ids=20, per_cam=3, cams=4, seed=0):
    """Identity signal small next to a strong per-camera offset, each identity seen by all cameras."""
    rng = np.random.default_rng(seed)
    ident = rng.normal(size=(n_ids, 32))
    offset = 6 * rng.normal(size=(cams, 32))
    rows, pids, camids = [], [], []
    for p in range(n_ids):
        for c in range(cams):
            for _ in range(per_cam):
                rows.append(ident[p] + offset[c] + 0.15 * rng.normal(size=32))
                pids.append(p)
                camids.append(c)
    return np.asarray(rows, dtype=np.float32), np.asarray(pids), np.asarray(camids)


def test_camera_centring_turns_camera_clusters_into_identity_clusters():
    x, pids, cams = camera_dominated()
    plain = pseudo_labels(x, eps=0.5, k1=12, k2=6, true_ids=pids)
    aware = pseudo_labels(x, eps=0.5, k1=12, k2=6, true_ids=pids, cameras=cams)
    # Without centring the camera offset decides the neighbours; with it, identities do.
    assert plain.stats.ari < 0.3
    assert aware.stats.ari > 0.9 and aware.stats.purity > 0.95
    # Same result as clustering the centred features directly.
    direct = pseudo_labels(camera_centered(x, cams), eps=0.5, k1=12, k2=6)
    assert np.array_equal(direct.labels, aware.labels)


def test_camera_ids_must_fit_the_features():
    x, _, cams = camera_dominated(n_ids=3)
    with pytest.raises(FeatureError, match="one camera id per feature row"):
        camera_centered(x, cams[:-1])


def test_update_pseudo_labels_uses_cameras_and_rejects_missing_ones():
    x, pids, cams = camera_dominated()
    cfg = load_config("cluster_contrast_base.yaml", ["cluster.eps=0.5", "cluster.k1=12", "cluster.camera_normalize=true"])
    labels, stats = update_pseudo_labels(torch.from_numpy(x), cfg, pids, cameras=cams)
    assert stats["cluster_ari"] > 0.9
    with pytest.raises(ConfigError, match="one camera id per image"):
        update_pseudo_labels(torch.from_numpy(x), cfg, pids)
    with pytest.raises(ConfigError, match="camid -1"):
        update_pseudo_labels(torch.from_numpy(x), cfg, pids, cameras=np.full(len(x), -1))


def test_update_pseudo_labels_clusters_on_the_given_device(monkeypatch):
    """The training device reaches the kNN / Jaccard computation (a GPU run clusters on the GPU)."""
    import gclreid.clustering as clustering
    seen = {}
    real = clustering.pseudo_labels

    def spy(features, **kwargs):
        seen["device"] = kwargs.get("device")
        return real(features, **kwargs)

    monkeypatch.setattr(clustering, "pseudo_labels", spy)
    x, pids, cams = camera_dominated()
    cfg = load_config("cluster_contrast_base.yaml", ["cluster.eps=0.5", "cluster.k1=12", "cluster.camera_normalize=true"])
    labels, _ = update_pseudo_labels(torch.from_numpy(x), cfg, pids, cameras=cams, device=torch.device("cpu"))
    assert seen["device"] == torch.device("cpu")
    unset, _ = update_pseudo_labels(torch.from_numpy(x), cfg, pids, cameras=cams)
    assert seen["device"] is None and np.array_equal(labels, unset)

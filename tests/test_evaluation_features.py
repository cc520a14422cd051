"""pairwise_distance against brute force; extract_features with a tiny model, flip and ordering."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from gclreid.evaluation import extract_features, pairwise_distance


# ----------------------------------------------------------------------------- distances


def test_euclidean_is_squared_distance_for_any_chunk():
    gen = torch.Generator().manual_seed(0)
    q, g = torch.randn(13, 6, generator=gen), torch.randn(29, 6, generator=gen)
    brute = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    for chunk in (1, 4, 13, 100):
        d = pairwise_distance(q, g, "euclidean", chunk=chunk)
        assert d.shape == (13, 29) and d.dtype == torch.float32
        torch.testing.assert_close(d, brute, atol=1e-5, rtol=1e-5)
    assert (pairwise_distance(q, q).diagonal() >= 0).all()  # clamped: never negative


def test_cosine_and_normalised_euclidean():
    gen = torch.Generator().manual_seed(1)
    q, g = torch.randn(7, 5, generator=gen), torch.randn(11, 5, generator=gen)
    cos = (q @ g.T) / (q.norm(dim=1)[:, None] * g.norm(dim=1)[None, :])
    torch.testing.assert_close(pairwise_distance(q, g, "cosine", chunk=3), 1 - cos, atol=1e-6, rtol=0)
    qn, gn = F.normalize(q, dim=1), F.normalize(g, dim=1)
    torch.testing.assert_close(pairwise_distance(qn, gn, "euclidean"), 2 - 2 * cos, atol=1e-5, rtol=0)


def test_float64_and_numpy_inputs():
    rng = np.random.default_rng(2)
    q, g = rng.normal(size=(4, 3)), rng.normal(size=(6, 3))
    d = pairwise_distance(q, g)
    assert d.dtype == torch.float64
    np.testing.assert_allclose(d.numpy(), ((q[:, None] - g[None]) ** 2).sum(-1), atol=1e-12)


@pytest.mark.parametrize("q,g,kwargs,message", [
    (torch.zeros(3, 4), torch.zeros(5, 3), {}, "feature dimensions differ: query 4, gallery 3"),
    (torch.zeros(4), torch.zeros(5, 4), {}, "query features must be 2-D"),
    (torch.zeros(3, 4), torch.zeros(0, 4), {}, "gallery features are empty"),
    (torch.zeros(3, 4), torch.zeros(5, 4), {"metric": "manhattan"}, "unknown metric 'manhattan'"),
    (torch.zeros(3, 4), torch.zeros(5, 4), {"chunk": 0}, "chunk must be >= 1"),
])
def test_distance_bad_input(q, g, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pairwise_distance(q, g, **kwargs)


# ----------------------------------------------------------------------------- features


class TinyImages(Dataset):
    """Random 3×4×6 images with the gclreid batch keys."""

    def __init__(self, n=10):
        gen = torch.Generator().manual_seed(3)
        self.images = torch.randn(n, 3, 4, 6, generator=gen)
        self.pids = [100 + i % 4 for i in range(n)]
        self.camids = [i % 3 for i in range(n)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "pid": self.pids[i], "camid": self.camids[i], "index": i}


class TinyEncoder(torch.nn.Module):
    """Linear over the flattened image (not mirror-symmetric, so flipping changes the output) plus
    dropout, which must be off during extraction. ``forward`` returns something else on purpose."""

    def __init__(self, dim=5):
        super().__init__()
        torch.manual_seed(4)
        self.fc = torch.nn.Linear(3 * 4 * 6, dim)
        self.drop = torch.nn.Dropout(0.5)

    def embed(self, x):
        return self.fc(self.drop(x.flatten(1)))

    def forward(self, x):
        return self.embed(x) * 0 + 1


def test_features_in_dataset_order_with_flip():
    data, model = TinyImages(), TinyEncoder()
    loader = DataLoader(data, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(0))
    model.train()
    feats, pids, camids = extract_features(model, loader, "cpu", flip=False, progress=False)
    assert model.training  # mode restored
    assert feats.dtype == torch.float32 and feats.shape == (10, 5) and feats.device.type == "cpu"
    with torch.no_grad():
        plain = model.fc(data.images.flatten(1))
        mirrored = model.fc(torch.flip(data.images, dims=[3]).flatten(1))
    torch.testing.assert_close(feats, F.normalize(plain, dim=1))
    np.testing.assert_array_equal(pids, data.pids)
    np.testing.assert_array_equal(camids, data.camids)

    flipped, _, _ = extract_features(model, loader, torch.device("cpu"), flip=True, progress=False)
    torch.testing.assert_close(flipped, F.normalize((plain + mirrored) / 2, dim=1))
    assert not torch.allclose(flipped, feats)
    raw, _, _ = extract_features(model, loader, "cpu", normalize=False, progress=False)
    torch.testing.assert_close(raw, plain)


def test_model_without_embed_uses_forward():
    class Plain(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    data = TinyImages(5)
    feats, _, _ = extract_features(Plain(), DataLoader(data, batch_size=2), "cpu", progress=False)
    torch.testing.assert_close(feats, F.normalize(data.images.mean(dim=(2, 3)), dim=1))


def test_feature_extraction_bad_input():
    data = TinyImages(4)
    with pytest.raises(ValueError, match="missing index"):
        extract_features(TinyEncoder(), [{"image": data.images[:2], "pid": [1, 2], "camid": [0, 0]}], "cpu",
                         progress=False)
    with pytest.raises(ValueError, match="index 0 more than once"):
        batch = {"image": data.images[:2], "pid": [1, 2], "camid": [0, 0], "index": torch.tensor([0, 1])}
        extract_features(TinyEncoder(), [batch, batch], "cpu", progress=False)
    with pytest.raises(ValueError, match=r"must be a \(2, D\) tensor, got \(2, 3, 4, 6\)"):
        batch = {"image": data.images[:2], "pid": [1, 2], "camid": [0, 0], "index": [0, 1]}
        extract_features(torch.nn.Identity(), [batch], "cpu", progress=False)
    with pytest.raises(ValueError, match="no batches"):
        extract_features(TinyEncoder(), [], "cpu", progress=False)

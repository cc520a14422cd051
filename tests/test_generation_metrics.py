"""SSIM / PSNR / L1 of gclreid.evaluation.generation against direct transcriptions and known values."""
import math

import numpy as np
import pytest
import torch

from gclreid.evaluation.generation import gaussian_window, image_metrics, l1_error, psnr, ssim


def ssim_loops(a: np.ndarray, b: np.ndarray, size=11, sigma=1.5, data_range=1.0, mask=None) -> float:
    """Wang et al. (2004) written out: a Gaussian-weighted window at every valid position of every channel;
    with `mask` (H×W), the windows whose centre pixel is masked out are left out."""
    ax = np.arange(size) - (size - 1) / 2
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma ** 2))
    g /= g.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for c in range(a.shape[0]):
        for i in range(a.shape[1] - size + 1):
            for j in range(a.shape[2] - size + 1):
                if mask is not None and not mask[i + size // 2, j + size // 2]:
                    continue
                pa, pb = a[c, i:i + size, j:j + size], b[c, i:i + size, j:j + size]
                mu_a, mu_b = (g * pa).sum(), (g * pb).sum()
                var_a = (g * (pa - mu_a) ** 2).sum()
                var_b = (g * (pb - mu_b) ** 2).sum()
                cov = (g * (pa - mu_a) * (pb - mu_b)).sum()
                values.append((2 * mu_a * mu_b + c1) * (2 * cov + c2)
                              / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
    return float(np.mean(values))


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    a = rng.random((3, 3, 16, 13))
    b = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1)
    b[1] = rng.random(b[1].shape)  # an unrelated image
    b[2] = a[2] * 0.5 + 0.25  # contrast and brightness change only
    return a, b


def test_gaussian_window_is_the_normalised_gaussian():
    g = gaussian_window(11, 1.5, torch.float64)
    ax = np.arange(11) - 5
    ref = np.exp(-ax ** 2 / 4.5)
    assert np.allclose(g.numpy(), ref / ref.sum(), atol=1e-15)
    assert int(g.argmax()) == 5 and math.isclose(float(g.sum()), 1.0)


def test_ssim_matches_the_loop_transcription(pair):
    a, b = pair
    got = ssim(torch.from_numpy(a), torch.from_numpy(b))
    assert got.dtype == torch.float64 and got.shape == (3,)
    for k in range(3):
        assert got[k].item() == pytest.approx(ssim_loops(a[k], b[k]), abs=1e-10)
    # float32 inputs agree closely as well; other data ranges scale the constants
    got32 = ssim(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    assert torch.allclose(got32.double(), got, atol=1e-5)
    got255 = ssim(torch.from_numpy(a * 255), torch.from_numpy(b * 255), data_range=255.0)
    assert torch.allclose(got255, got, atol=1e-10)


def test_masked_ssim_averages_the_windows_centred_on_the_mask(pair):
    a, b = pair
    rng = np.random.default_rng(1)
    mask = rng.random((3, 1, 16, 13)) < 0.5
    got = ssim(torch.from_numpy(a), torch.from_numpy(b), mask=torch.from_numpy(mask))
    for k in range(3):
        assert got[k].item() == pytest.approx(ssim_loops(a[k], b[k], mask=mask[k, 0]), abs=1e-10)
    full = torch.ones(3, 1, 16, 13)
    assert torch.allclose(ssim(torch.from_numpy(a), torch.from_numpy(b), mask=full),
                          ssim(torch.from_numpy(a), torch.from_numpy(b)), atol=1e-12)
    with pytest.raises(ValueError, match="mask must be 3×1×16×13"):
        ssim(torch.from_numpy(a), torch.from_numpy(b), mask=torch.ones(3, 3, 16, 13))


def test_ssim_known_values(pair):
    a, b = pair
    x = torch.from_numpy(a)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64), atol=1e-12)
    s = ssim(torch.from_numpy(a), torch.from_numpy(b))
    assert s[1] < 0.2 < s[0] < 1  # noise lowers it; an unrelated image is near 0
    # two constant images: only the luminance term remains, (2·c·d + C1) / (c² + d² + C1)
    c, d, c1 = 0.3, 0.7, 0.01 ** 2
    const = ssim(torch.full((1, 3, 12, 12), c, dtype=torch.float64), torch.full((1, 3, 12, 12), d, dtype=torch.float64))
    assert const.item() == pytest.approx((2 * c * d + c1) / (c * c + d * d + c1), abs=1e-12)


def test_psnr_and_l1_known_values():
    a = torch.zeros(2, 3, 8, 8)
    b = a.clone()
    b[0] += 0.1
    b[1, :, :4] = 0.5  # half the pixels off by 0.5
    assert torch.allclose(psnr(a, b), torch.tensor([20.0, 10 * math.log10(1 / 0.125)]), atol=1e-4)
    assert torch.allclose(l1_error(a, b), torch.tensor([0.1, 0.25]), atol=1e-6)
    assert torch.isinf(psnr(a, a)).all() and (psnr(a, a) > 0).all()
    assert torch.equal(psnr(a, a, max_db=100.0), torch.tensor([100.0, 100.0]))
    assert torch.allclose(psnr(a * 255, b * 255, data_range=255.0), psnr(a, b), atol=1e-4)


def test_metrics_match_direct_formulas_and_each_other(pair):
    a, b = (torch.from_numpy(v) for v in pair)
    m = image_metrics(a, b)
    mse = ((pair[0] - pair[1]) ** 2).reshape(3, -1).mean(1)
    assert np.allclose(m["psnr"].numpy(), 10 * np.log10(1 / mse), atol=1e-10)
    assert np.allclose(m["l1"].numpy(), np.abs(pair[0] - pair[1]).reshape(3, -1).mean(1), atol=1e-12)
    assert torch.equal(m["ssim"], ssim(a, b))
    # symmetric in its arguments
    assert torch.allclose(ssim(b, a), m["ssim"], atol=1e-12)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="shape"):
        ssim(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 15))
    with pytest.raises(ValueError, match="at least"):
        ssim(torch.zeros(1, 3, 10, 16), torch.zeros(1, 3, 10, 16))
    with pytest.raises(ValueError, match="B×C×H×W"):
        psnr(torch.zeros(3, 16, 16), torch.zeros(3, 16, 16))

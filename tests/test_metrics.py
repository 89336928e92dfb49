"""PSNR/SSIM against values known in closed form and an independent loop implementation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mstt_stvsr.core.training import metrics as M


def test_identical_images():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    assert M.psnr(a, a) == math.inf
    assert M.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    s = M.frame_scores(a, a)
    assert s["psnr_y"] == math.inf and s["ssim_y"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_constant_offset_psnr_exact(k):
    rng = np.random.default_rng(k)
    a = rng.integers(20, 200, (16, 16, 3)).astype(np.uint8)
    b = a + np.uint8(k)
    assert M.psnr(a, b) == pytest.approx(20 * math.log10(255 / k), abs=1e-9)
    # Y moves by k * (65.481 + 128.553 + 24.966) / 255 = k * 219 / 255
    assert M.psnr(M.to_y(a), M.to_y(b)) == pytest.approx(20 * math.log10(255 / (k * 219 / 255)), abs=1e-9)


def test_y_is_matlab_rgb2ycbcr():
    assert M.to_y(np.array([0, 0, 0])) == pytest.approx(16.0)
    assert M.to_y(np.array([255, 255, 255])) == pytest.approx(235.0)
    # MATLAB rgb2ycbcr([1 0 0]) -> Y = 81.481 / 255 * 255
    assert M.to_y(np.array([255, 0, 0])) == pytest.approx(16 + 65.481)


def test_ssim_constant_images_closed_form():
    """Flat images: variances are 0, so SSIM = (2 ma mb + C1) / (ma^2 + mb^2 + C1)."""
    a, b = np.full((15, 15), 100.0), np.full((15, 15), 120.0)
    c1 = (0.01 * 255) ** 2
    assert M.ssim(a, b) == pytest.approx((2 * 100 * 120 + c1) / (100 ** 2 + 120 ** 2 + c1), rel=1e-12)


def ssim_loop(a, b):
    """Wang et al. written out: explicit Gaussian weights, every valid window, plain loops."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    r = np.arange(11) - 5
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5 ** 2))
    g /= g.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for y in range(a.shape[0] - 10):
        for x in range(a.shape[1] - 10):
            pa, pb = a[y:y + 11, x:x + 11], b[y:y + 11, x:x + 11]
            ma, mb = (g * pa).sum(), (g * pb).sum()
            va, vb = (g * (pa - ma) ** 2).sum(), (g * (pb - mb) ** 2).sum()
            cov = (g * (pa - ma) * (pb - mb)).sum()
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_loop_reference():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (17, 19)).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    ref = ssim_loop(a, b)
    assert 0.5 < ref < 0.99  # a non-trivial value
    assert M.ssim(a, b) == pytest.approx(ref, abs=1e-10)
    rgb_a = np.stack([a, b, a], -1)
    rgb_b = np.stack([b, a, a], -1)
    assert M.ssim(rgb_a, rgb_b) == pytest.approx((2 * ref + 1) / 3, abs=1e-10)


def test_clip_scores_average_frames():
    rng = np.random.default_rng(4)
    gt = rng.integers(20, 200, (3, 16, 16, 3)).astype(np.uint8)
    pred = gt.copy()
    pred[1] += 5
    pred[2] += 10
    s = M.clip_scores(pred, gt, frames=[1, 2])
    assert s["psnr_rgb"] == pytest.approx((20 * math.log10(255 / 5) + 20 * math.log10(255 / 10)) / 2)
    with pytest.raises(ValueError):
        M.ssim(np.zeros((8, 8)), np.zeros((8, 8)))

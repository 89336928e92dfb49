"""PSNR and SSIM as video SR papers report them (RGB and Y of BT.601, full frame, 8-bit scale).

* Y: MATLAB ``rgb2ycbcr`` luma, ``Y = 16 + (65.481 R + 128.553 G + 24.966 B)`` with R, G, B in
  [0, 1] (so Y spans 16..235), kept in floating point (not rounded), peak 255.
* PSNR: ``10 log10(255^2 / MSE)`` over all pixels (and channels for RGB); identical frames give inf.
* SSIM: Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255,
  statistics where the window fits inside the frame ('valid', as MATLAB ``ssim_index``); RGB is
  the mean of the three channels' SSIM.
* No border is cropped ("full frame"). A clip's score is the mean over its frames.

Inputs are uint8 arrays or floats on the 0..255 scale; (H, W, 3) frames.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

PEAK = 255.0
Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0


def to_y(rgb: np.ndarray) -> np.ndarray:
    """(…, 3) RGB on 0..255 -> (…) BT.601 luma on 16..235, float64."""
    return 16.0 + np.asarray(rgb, np.float64) @ Y_WEIGHTS


def psnr(a: np.ndarray, b: np.ndarray, peak: float = PEAK) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ {a.shape} vs {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def _gauss_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    g = cv2.getGaussianKernel(size, sigma, cv2.CV_64F)
    return g @ g.T


def ssim_channel(a: np.ndarray, b: np.ndarray, peak: float = PEAK) -> float:
    """SSIM of two single-channel images, mean over 'valid' window positions."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim: need equal 2-D images, got {a.shape} vs {b.shape}")
    if min(a.shape) < 11:
        raise ValueError(f"ssim: image {a.shape} is smaller than the 11x11 window")
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    win = _gauss_window()

    def filt(x):  # correlation with the window, kept where it fits entirely
        return cv2.filter2D(x, cv2.CV_64F, win, borderType=cv2.BORDER_REFLECT)[5:-5, 5:-5]

    mu_a, mu_b = filt(a), filt(b)
    saa = filt(a * a) - mu_a ** 2
    sbb = filt(b * b) - mu_b ** 2
    sab = filt(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * sab + c2)
    den = (mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2)
    return float(np.mean(num / den))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """(H, W) or (H, W, C): channels' SSIM averaged."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim == 2:
        return ssim_channel(a, b)
    return float(np.mean([ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[-1])]))


def frame_scores(pred: np.ndarray, gt: np.ndarray) -> dict:
    """PSNR/SSIM in RGB and Y of one (H, W, 3) frame."""
    yp, yg = to_y(pred), to_y(gt)
    return {"psnr_rgb": psnr(pred, gt), "ssim_rgb": ssim(pred, gt), "psnr_y": psnr(yp, yg), "ssim_y": ssim(yp, yg)}


def clip_scores(pred: np.ndarray, gt: np.ndarray, frames=None) -> dict:
    """Mean over frames (all, or the given indices) of :func:`frame_scores`; (T, H, W, 3) inputs."""
    idx = range(len(gt)) if frames is None else frames
    per = [frame_scores(pred[t], gt[t]) for t in idx]
    return {k: float(np.mean([p[k] for p in per])) for k in per[0]}

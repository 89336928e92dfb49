"""What a video is like, measured the same way on real frames and on synthetic clips, so that the
synthesis can be calibrated to real satellite video (README's synthesis table).

Every statistic takes native / HR frames, (T, H, W, 3) uint8, consecutive in time:

* ``global_motion``: the platform's motion, phase correlation between consecutive frames
  (sub-pixel, Hann window): the mean shift per frame (drift) and the spread of the shifts about
  it (jitter), native px.
* ``moving``: what moves on its own: the share of pixels whose luma changes by more than
  MOVING_DN between consecutive frames (a fixed level, so that real and synthetic clips are
  compared alike; opened by a 3 x 3 kernel so that noise specks do not count), and the speed of
  those pixels (DIS optical flow), native px per frame.
* ``noise``: temporal noise in flat, static areas: the robust spread (1.4826 MAD) of the
  difference of consecutive frames, over the pixels whose local gradient is in the lowest
  quarter and that do not move, divided by sqrt 2: DN per frame.
* ``blockiness``: JPEG-like block artefacts: the mean absolute difference across 8-px block
  borders over that inside the blocks (1.0 = none; the ratio is for the luma plane).
* ``flicker``: brightness change between frames: the spread of each frame's mean over the
  clip's mean, relative, after a linear trend is taken out (the trend is reported too).
* ``sharpness``: how much fine detail the frames hold: the power of the luma spectrum at
  0.25-0.5 cycles/px over that at 0.05-0.15 cycles/px (log10), mean over the frames. In a
  single frame the temporal noise dominates that finest band (blurring a noisy synthetic frame
  more can even raise it), so ``detail`` takes the same ratio of the clip's mean frame, where
  the noise averages out: the measure the synthesis fits its optics blur to (clips.fit_psf).
"""
from __future__ import annotations

import math

import cv2
import numpy as np


def luma(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, H, W) float32 BT.601 luma in DN."""
    f = np.asarray(frames, np.float32)
    return f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114


def global_motion(y: np.ndarray) -> dict:
    """Phase-correlation shifts between consecutive frames: drift (mean |shift| per frame of
    the mean shift vector), jitter (std of the shifts about their mean), the largest shift."""
    win = cv2.createHanningWindow(y.shape[1:][::-1], cv2.CV_32F)
    shifts = np.array([cv2.phaseCorrelate(y[t].astype(np.float32), y[t + 1].astype(np.float32), win)[0]
                       for t in range(len(y) - 1)])
    mean = shifts.mean(0)
    return {"drift_px": float(np.hypot(*mean)), "jitter_px": float(np.sqrt(((shifts - mean) ** 2).sum(1).mean())),
            "max_shift_px": float(np.hypot(shifts[:, 0], shifts[:, 1]).max())}


def temporal_noise(y: np.ndarray) -> tuple[float, np.ndarray]:
    """Noise sigma (DN) from frame differences in flat, static areas, and the flat mask."""
    gx = np.abs(cv2.Sobel(y[0], cv2.CV_32F, 1, 0, ksize=3)) + np.abs(cv2.Sobel(y[0], cv2.CV_32F, 0, 1, ksize=3))
    grad = cv2.blur(gx, (5, 5))
    flat = grad <= np.quantile(grad, 0.25)
    d = np.diff(y, axis=0)
    vals = d[:, flat]
    mad = np.median(np.abs(vals - np.median(vals)))
    sigma = 1.4826 * mad / math.sqrt(2)
    # drop what moves (a flat road crossed by a car): differences far above that noise
    keep = np.abs(vals) < 6 * max(sigma * math.sqrt(2), 0.5)
    sigma = float(vals[keep].std() / math.sqrt(2)) if keep.any() else float(sigma)
    return sigma, flat


MOVING_DN = 30.0  # a car against asphalt changes luma by more; 4 DN noise (x sqrt 2) seldom does


def moving(frames: np.ndarray, y: np.ndarray, thr: float = MOVING_DN) -> dict:
    """Share of pixels that move on their own and their speed (native px per frame)."""
    kernel = np.ones((3, 3), np.uint8)
    shares, speeds = [], []
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    g = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    for t in range(len(y) - 1):
        m = cv2.morphologyEx((np.abs(y[t + 1] - y[t]) > thr).astype(np.uint8), cv2.MORPH_OPEN, kernel) > 0
        shares.append(float(m.mean()))
        if m.any():
            flow = dis.calc(g[t], g[t + 1], None)
            speeds.append(np.hypot(flow[..., 0], flow[..., 1])[m])
    sp = np.concatenate(speeds) if speeds else np.zeros(1)
    return {"moving_share": float(np.mean(shares)), "moving_speed_median_px": float(np.median(sp)),
            "moving_speed_p90_px": float(np.quantile(sp, 0.9))}


def blockiness(y: np.ndarray, block: int = 8) -> float:
    """Mean |horizontal + vertical step| across block borders over that inside blocks."""
    dx = np.abs(np.diff(y, axis=2))
    dy = np.abs(np.diff(y, axis=1))
    bx = (np.arange(dx.shape[2]) % block) == block - 1
    by = (np.arange(dy.shape[1]) % block) == block - 1
    at = dx[:, :, bx].mean() + dy[:, by, :].mean()
    inside = dx[:, :, ~bx].mean() + dy[:, ~by, :].mean()
    return float(at / max(inside, 1e-9))


def flicker(y: np.ndarray) -> dict:
    means = y.reshape(len(y), -1).mean(1)
    rel = means / means.mean()
    t = np.arange(len(y), dtype=np.float64)
    slope, icpt = np.polyfit(t, rel, 1)
    return {"flicker_rel": float((rel - (slope * t + icpt)).std()), "trend_rel_per_frame": float(slope)}


def band_power(y2d: np.ndarray, lo: float, hi: float) -> float:
    f = np.fft.fftshift(np.abs(np.fft.fft2(y2d - y2d.mean())) ** 2)
    h, w = y2d.shape
    fy = np.fft.fftshift(np.fft.fftfreq(h))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(w))[None, :]
    r = np.hypot(fy, fx)
    return float(f[(r >= lo) & (r < hi)].mean())


def band_ratio(y2d: np.ndarray) -> float:
    """log10 of spectral power at 0.25-0.5 cycles/px over 0.05-0.15, one frame."""
    return math.log10(band_power(y2d, 0.25, 0.5) / band_power(y2d, 0.05, 0.15))


def sharpness(y: np.ndarray) -> float:
    """``band_ratio``, mean over the frames."""
    return float(np.mean([band_ratio(f) for f in y]))


def detail(y: np.ndarray) -> float:
    """``sharpness``'s band ratio of the clip's mean frame (T, H, W luma): the temporal noise,
    which dominates a single frame's finest band, averages out of a stabilised clip's mean, so
    this follows the optics' and the scene's fine detail."""
    return float(band_ratio(np.asarray(y, np.float64).mean(0)))


def video_stats(frames: np.ndarray) -> dict:
    """Every statistic above for one clip of consecutive native / HR frames."""
    y = luma(frames)
    noise, _ = temporal_noise(y)
    return {**global_motion(y), **moving(frames, y), "noise_dn": noise, "blockiness": blockiness(y),
            **flicker(y), "sharpness_log10": sharpness(y), "detail_log10": detail(y)}


def summarise(rows: list[dict]) -> dict:
    """Mean, min and max of each statistic over clips."""
    return {k: {"mean": float(np.mean([r[k] for r in rows])), "min": float(np.min([r[k] for r in rows])),
                "max": float(np.max([r[k] for r in rows]))} for k in rows[0]}

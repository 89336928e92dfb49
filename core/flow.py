"""Optical flow between LR frames (OpenCV DIS) and warping of tensors with it.

Convention everywhere: ``flow`` (H, W, 2) = (dx, dy) in pixels with src(p) ≈ dst(p + flow(p)),
so backward-warping dst with it reproduces src. Flow is computed on whole frames (not tiles)
so that all tiles of a scene agree on motion.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def to_gray_u8(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if a.ndim == 3:
        a = cv2.cvtColor(np.ascontiguousarray(a[..., :3]), cv2.COLOR_RGB2GRAY) if a.shape[2] >= 3 else a[..., 0]
    return np.ascontiguousarray(a)


def _dis():
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0)
    dis.setPatchSize(8)
    dis.setPatchStride(3)
    dis.setGradientDescentIterations(25)
    dis.setVariationalRefinementIterations(10)
    dis.setUseSpatialPropagation(True)
    return dis


def estimate_flow(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    a, b = to_gray_u8(src), to_gray_u8(dst)
    if a.shape != b.shape:
        raise ValueError(f"frames differ in size: {a.shape} vs {b.shape}")
    if min(a.shape) < 8:  # too small for a pyramid: no motion information
        return np.zeros((*a.shape, 2), np.float32)
    return _dis().calc(a, b, None).astype(np.float32)


def pair_flows(a: np.ndarray, b: np.ndarray):
    """Flows from the middle time to a and to b, symmetric under linear motion."""
    f_ab, f_ba = estimate_flow(a, b), estimate_flow(b, a)
    mid_to_a = 0.25 * (f_ba - f_ab)
    return mid_to_a, -mid_to_a


def middle_flows(frames) -> np.ndarray:
    """(T, H, W, C) -> (T-1, 4, H, W): [mid->prev dx, dy, mid->next dx, dy] per pair."""
    grays = [to_gray_u8(f) for f in frames]
    out = []
    for a, b in zip(grays[:-1], grays[1:]):
        to_a, to_b = pair_flows(a, b)
        out.append(np.concatenate([to_a, to_b], axis=-1).transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def flows_tensor(lr: torch.Tensor) -> torch.Tensor:
    """lr (B, T, 3, H, W) -> (B, T-1, 4, H, W) on lr's device and dtype."""
    frames = lr.detach().float().clamp(0, 1).permute(0, 1, 3, 4, 2).cpu().numpy()
    out = np.stack([middle_flows(clip) for clip in frames])
    return torch.from_numpy(out).to(device=lr.device, dtype=lr.dtype)


def flow_warp(x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros", mode: str = "bilinear") -> torch.Tensor:
    """Sample x (N, C, H, W) at p + flow(p); flow (N, 2, H, W) in pixels; bilinear or bicubic."""
    n, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=x.dtype),
                            torch.arange(w, device=x.device, dtype=x.dtype), indexing="ij")
    flow = flow.to(x.dtype)
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    return F.grid_sample(x, torch.stack([gx, gy], dim=-1), mode=mode,
                         padding_mode=padding_mode, align_corners=True)

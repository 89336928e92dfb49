"""Optical flow between LR frames (OpenCV DIS) and warping of tensors with it.

Convention everywhere: ``flow`` (H, W, 2) = (dx, dy) in pixels with src(p) ≈ dst(p + flow(p)),
so backward-warping dst with it reproduces src. Flow is computed on whole frames (not tiles)
so that all tiles of a scene agree on motion.

DIS settings (medium preset, finest scale 0, patch 8, stride 4, 25 descent and 5 variational
iterations) recover uniform and affine sub-pixel motion on aerial imagery to ~0.04 px median;
more refinement, smaller strides or bigger patches cost 1.5-4x the time for no measured gain,
while stopping at scale 1 doubles the error. Frames of a clip are contrast-stretched jointly
(one linear map, so brightness constancy holds) before the 8-bit quantisation DIS needs: dim,
low-contrast satellite frames would otherwise lose most of their grey levels (on a scene
spanning 8 of 256 levels the error falls from ~0.1 to ~0.03 px; stretching after an 8-bit
rounding gains almost nothing, so callers should hand over float gray, see to_gray).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from ..net.spec import FLOW_FULL, FLOW_MIDDLE

_LUMA = (0.299, 0.587, 0.114)
_DIS_MIN_SIZE = 12  # OpenCV's DIS refuses smaller frames; Farneback handles them


def to_gray(img) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, >=3 RGB) as float32 gray; uint8 scaled to [0, 1], others as given."""
    a = np.asarray(img)
    scale = 1.0 / 255.0 if a.dtype == np.uint8 else 1.0
    a = a.astype(np.float32, copy=False)
    if a.ndim == 3:
        a = a[..., 0] if a.shape[2] < 3 else a[..., 0] * _LUMA[0] + a[..., 1] * _LUMA[1] + a[..., 2] * _LUMA[2]
    elif a.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, C) frame, got shape {a.shape}")
    return a * scale if scale != 1.0 else a


def quantize_jointly(grays) -> list[np.ndarray]:
    """Float gray frames -> uint8 with one shared linear stretch (0.5..99.5 percentiles).
    Any value range works (uint16 counts too); NaN (nodata) pixels become the darkest level."""
    sample = np.concatenate([g[::4, ::4].ravel() for g in grays])
    with np.errstate(all="ignore"):
        lo, hi = np.nanpercentile(sample, (0.5, 99.5)) if np.isfinite(sample).any() else (0.0, 1.0)
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-6:
        lo, hi = 0.0, 1.0
    k = 255.0 / (hi - lo)
    out = []
    for g in grays:
        q = np.clip(np.rint((g - lo) * k), 0, 255)
        out.append(np.ascontiguousarray(np.nan_to_num(q, nan=0.0).astype(np.uint8)))
    return out


def _dis():
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0)
    dis.setPatchSize(8)
    dis.setPatchStride(4)
    dis.setGradientDescentIterations(25)
    dis.setVariationalRefinementIterations(5)
    dis.setUseSpatialPropagation(True)
    dis.setUseMeanNormalization(True)
    return dis


def _farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    levels = max(0, min(4, int(np.log2(max(min(a.shape), 1) / 8))))
    return cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=levels, winsize=13,
                                        iterations=5, poly_n=7, poly_sigma=1.5, flags=0)


def flow_u8(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flow between two already-quantised uint8 gray frames (same convention as estimate_flow)."""
    if a.shape != b.shape:
        raise ValueError(f"frames differ in size: {a.shape} vs {b.shape}")
    if min(a.shape) < 2:  # nothing to match on a single row or column
        return np.zeros((*a.shape, 2), np.float32)
    if hasattr(cv2, "DISOpticalFlow_create") and min(a.shape) >= _DIS_MIN_SIZE:
        f = _dis().calc(a, b, None)
    else:
        f = _farneback(a, b)
    return np.ascontiguousarray(f, dtype=np.float32)


def estimate_flow(src, dst) -> np.ndarray:
    """(H, W, 2) float32 flow with src(p) ≈ dst(p + flow(p)); frames float [0, 1] or uint8, gray or RGB."""
    a, b = quantize_jointly([to_gray(src), to_gray(dst)])
    return flow_u8(a, b)


def _mid_flows_u8(a: np.ndarray, b: np.ndarray):
    f_ab, f_ba = flow_u8(a, b), flow_u8(b, a)
    mid_to_a = 0.25 * (f_ba - f_ab)
    return mid_to_a, -mid_to_a


def pair_flows(a, b):
    """Flows from the time halfway between a and b to a and to b, under linear motion.

    With velocity v: f_ab ≈ v, f_ba ≈ -v, and the middle frame m(p) = a(p - v/2) = b(p + v/2),
    so mid->a = -v/2 = (f_ba - f_ab) / 4 and mid->b = -(mid->a); using both directions
    cancels first-order errors of either estimate."""
    ua, ub = quantize_jointly([to_gray(a), to_gray(b)])
    return _mid_flows_u8(ua, ub)


def _full_flows_u8(a: np.ndarray, b: np.ndarray):
    """Upstream's flows: the backward one warps a into b's geometry, the forward one b into a's."""
    return flow_u8(b, a), flow_u8(a, b)


def _pair_flows_gray(grays, kind: str = FLOW_MIDDLE) -> np.ndarray:
    """Each pair is stretched on its own two frames, so a pair's flows do not depend on which
    clip, window or time order it is seen in (pipeline windows, training clips, mirrors)."""
    if kind not in (FLOW_MIDDLE, FLOW_FULL):
        raise ValueError(f"flow kind {kind!r}: expected {FLOW_MIDDLE!r} or {FLOW_FULL!r}")
    fields = _full_flows_u8 if kind == FLOW_FULL else _mid_flows_u8
    out = np.empty((len(grays) - 1, 4, *grays[0].shape), np.float32)
    for i in range(len(grays) - 1):
        to_a, to_b = fields(*quantize_jointly(grays[i:i + 2]))
        out[i, 0:2] = to_a.transpose(2, 0, 1)
        out[i, 2:4] = to_b.transpose(2, 0, 1)
    return out


def middle_flows(frames, kind: str = FLOW_MIDDLE) -> np.ndarray:
    """(T, H, W[, C]) -> (T-1, 4, H, W) per consecutive pair: [dx, dy applied to the earlier
    frame, dx, dy applied to the later frame]. ``kind`` "middle": from the middle time to each
    frame (ours); "full": full frame-to-frame flows (upstream checkpoints, ``MSTT.flow_kind``)."""
    if len(frames) < 2:
        raise ValueError(f"middle_flows needs at least 2 frames, got {len(frames)}")
    return _pair_flows_gray([to_gray(f) for f in frames], kind)


@torch.no_grad()
def flows_tensor(lr: torch.Tensor, kind: str = FLOW_MIDDLE) -> torch.Tensor:
    """lr (B, T, 3, H, W) in [0, 1] -> (B, T-1, 4, H, W) flows of ``kind`` (see middle_flows)
    on lr's device and dtype.

    Gray conversion happens on lr's device so only one channel crosses to the CPU."""
    if lr.dim() != 5 or lr.shape[2] != 3 or lr.shape[1] < 2:
        raise ValueError(f"flows_tensor expects lr of shape (B, T>=2, 3, H, W), got {tuple(lr.shape)}")
    luma = torch.tensor(_LUMA, device=lr.device, dtype=torch.float32).view(1, 1, 3, 1, 1)
    gray = (lr.detach().float() * luma).sum(dim=2).cpu().numpy()  # (B, T, H, W), as to_gray
    out = np.stack([_pair_flows_gray(list(clip), kind) for clip in gray])
    return torch.from_numpy(out).to(device=lr.device, dtype=lr.dtype)

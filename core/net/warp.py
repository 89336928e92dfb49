"""Backward warping of feature maps or images by a dense flow field (the network's warp op).

Convention: ``flow`` (N, 2, H, W) = (dx, dy) in pixels, and the output at p samples the input at
p + flow(p); estimating such flows (OpenCV) is the run layer's job (``core.run.flow``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def flow_warp(x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros", mode: str = "bilinear",
              align_corners: bool = True) -> torch.Tensor:
    """Sample x (N, C, H, W) at p + flow(p); flow (N, 2, H, W) = (dx, dy) in pixels.

    align_corners=True with the grid normalised by (size - 1) makes flow 0 the identity.
    ``align_corners=False`` reproduces upstream MSTT's warp, which normalises the grid the same
    way but samples with PyTorch's default: there a zero flow is a slight zoom about the centre
    (a pixel at x moves by (x - (W-1)/2) / (W-1) of a pixel), and weights trained with it expect that.
    Half/bfloat16 inputs are sampled in float32: their mantissa cannot hold pixel positions."""
    n, _, h, w = x.shape
    if flow.dim() != 4 or flow.shape[0] != n or flow.shape[1] != 2 or tuple(flow.shape[-2:]) != (h, w):
        raise ValueError(f"flow {tuple(flow.shape)} does not fit x {tuple(x.shape)}: expected ({n}, 2, {h}, {w})")
    ct = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=ct),
                            torch.arange(w, device=x.device, dtype=ct), indexing="ij")
    flow = flow.to(device=x.device, dtype=ct)
    # a 1-px axis has no span to normalise by; any finite factor maps it onto its only pixel
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    out = F.grid_sample(x.to(ct), torch.stack([gx, gy], dim=-1), mode=mode,
                        padding_mode=padding_mode, align_corners=align_corners)
    return out.to(x.dtype)

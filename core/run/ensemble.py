"""Test-time self-ensemble: the network on the 8 flips and rotations of a window, each output
turned back and the 8 averaged (8x the cost). Flows are transformed with their frames: a flip
negates the motion across its axis, a transpose swaps the two components."""
from __future__ import annotations

import torch

# (transpose, flip rows, flip columns): the 8 symmetries of the square
TRANSFORMS = tuple((t, fy, fx) for t in (False, True) for fy in (False, True) for fx in (False, True))


def transform_frames(x: torch.Tensor, t: bool, fy: bool, fx: bool) -> torch.Tensor:
    """(..., H, W) frames: flip columns, then rows, then transpose (the inverse runs backwards)."""
    if fx:
        x = x.flip(-1)
    if fy:
        x = x.flip(-2)
    return x.transpose(-1, -2) if t else x


def untransform_frames(x: torch.Tensor, t: bool, fy: bool, fx: bool) -> torch.Tensor:
    if t:
        x = x.transpose(-1, -2)
    if fy:
        x = x.flip(-2)
    return x.flip(-1) if fx else x


def transform_flows(f: torch.Tensor, t: bool, fy: bool, fx: bool) -> torch.Tensor:
    """(..., 4, H, W) flows [dx, dy, dx, dy] moved and re-oriented like their frames."""
    f = f.clone()
    if fx:
        f[..., 0::2, :, :] *= -1
    if fy:
        f[..., 1::2, :, :] *= -1
    f = transform_frames(f, False, fy, fx)
    if t:
        f = f[..., [1, 0, 3, 2], :, :].transpose(-1, -2)
    return f


def ensemble_forward(net, lr: torch.Tensor, flows: torch.Tensor, keep=None) -> torch.Tensor:
    """Mean over TRANSFORMS of the network's output on the transformed window, turned back.
    lr (B, 4, 3, H, W), flows (B, 3, 4, H, W) -> as ``net(lr, flows, keep=keep)``."""
    total = None
    for tf in TRANSFORMS:
        y = untransform_frames(net(transform_frames(lr, *tf), transform_flows(flows, *tf), keep=keep), *tf)
        total = y.float() if total is None else total + y.float()
    return total / len(TRANSFORMS)

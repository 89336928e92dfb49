"""Modulated deformable convolution (DCNv2).

torchvision's fused op is used when it imports (GPU machines); otherwise our pure-PyTorch
version, which samples all kernel points with one grid_sample and contracts with one matmul,
so that autograd gives all gradients and it runs on any device. Both share torchvision's
offset layout: per deformable group and kernel point (row-major), channels (dy, dx).
"""
from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

try:  # pragma: no cover - depends on the machine
    from torchvision.ops import deform_conv2d as _tv_deform_conv2d
except Exception:  # torchvision absent or built for another torch
    _tv_deform_conv2d = None


def deform_conv_backend() -> str:
    forced = os.environ.get("MSTT_DCN_BACKEND", "").strip().lower()
    if forced == "pure":
        return "pure"
    if forced == "torchvision":
        if _tv_deform_conv2d is None:
            raise RuntimeError("MSTT_DCN_BACKEND=torchvision but torchvision.ops.deform_conv2d is not importable")
        return "torchvision"
    return "torchvision" if _tv_deform_conv2d is not None else "pure"


def modulated_deform_conv2d_pure(x, offset, mask, weight, bias=None, stride=1, padding=1, dilation=1):
    b, c, h, w = x.shape
    cout, cin, kh, kw = weight.shape
    if cin != c:
        raise ValueError(f"weight expects {cin} input channels, input has {c}")
    ho, wo = offset.shape[-2:]
    k = kh * kw
    g = offset.shape[1] // (2 * k)
    if g * 2 * k != offset.shape[1] or c % g or mask.shape[1] != g * k:
        raise ValueError(f"offset {tuple(offset.shape)} / mask {tuple(mask.shape)} do not fit a {kh}x{kw} kernel on {c} channels")
    dev, dt = x.device, x.dtype
    base_y = (torch.arange(ho, device=dev, dtype=dt) * stride - padding).view(1, 1, 1, ho, 1)
    base_x = (torch.arange(wo, device=dev, dtype=dt) * stride - padding).view(1, 1, 1, 1, wo)
    ky, kx = torch.meshgrid(torch.arange(kh, device=dev, dtype=dt) * dilation,
                            torch.arange(kw, device=dev, dtype=dt) * dilation, indexing="ij")
    off = offset.view(b, g, k, 2, ho, wo)
    py = base_y + ky.reshape(1, 1, k, 1, 1) + off[:, :, :, 0]
    px = base_x + kx.reshape(1, 1, k, 1, 1) + off[:, :, :, 1]
    # align_corners=True maps -1..1 onto pixel centres 0..size-1; zeros outside, as torchvision
    gx = px * (2.0 / max(w - 1, 1)) - 1.0
    gy = py * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1).view(b * g, k * ho, wo, 2)
    sampled = F.grid_sample(x.reshape(b * g, c // g, h, w), grid, mode="bilinear",
                            padding_mode="zeros", align_corners=True)
    sampled = sampled.view(b, g, c // g, k, ho, wo) * mask.view(b, g, 1, k, ho, wo)
    cols = sampled.reshape(b, c * k, ho * wo)
    out = torch.matmul(weight.reshape(cout, c * k), cols).view(b, cout, ho, wo)
    if bias is not None:
        out = out + bias.view(1, cout, 1, 1)
    return out


def modulated_deform_conv2d(x, offset, mask, weight, bias=None, stride=1, padding=1, dilation=1):
    if deform_conv_backend() == "torchvision":
        return _tv_deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding,
                                 dilation=dilation, mask=mask)
    return modulated_deform_conv2d_pure(x, offset, mask, weight, bias, stride, padding, dilation)


class DCNv2Pack(nn.Module):
    """DCNv2 whose offsets and mask are predicted from a separate feature map (EDVR's pack)."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, dilation=1, deformable_groups=8):
        super().__init__()
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.conv_offset_mask = nn.Conv2d(in_channels, deformable_groups * 3 * kernel_size * kernel_size,
                                          kernel_size, stride, padding, dilation=dilation)
        nn.init.zeros_(self.conv_offset_mask.weight)  # start as a plain conv (mask 0.5)
        nn.init.zeros_(self.conv_offset_mask.bias)
        self._warned = False

    def forward(self, x, feat):
        o1, o2, m = torch.chunk(self.conv_offset_mask(feat), 3, dim=1)
        offset = torch.cat([o1, o2], dim=1)
        if not self._warned and offset.detach().abs().mean() > 50:
            log.warning("DCNv2 offset mean %.1f > 50: alignment has likely diverged", offset.detach().abs().mean())
            self._warned = True
        return modulated_deform_conv2d(x, offset, torch.sigmoid(m), self.weight, self.bias,
                                       self.stride, self.padding, self.dilation)

"""Modulated deformable convolution (DCNv2).

torchvision's fused op is used when it imports (GPU machines); otherwise our pure-PyTorch
version, which samples all kernel points with one grid_sample and contracts with one batched
matmul, so that autograd gives all gradients and it runs on any device. Both share
torchvision's offset layout: per deformable group and kernel point (row-major), channels
(dy, dx); the mask multiplies each sample; samples outside the input read zeros. On CPU the
pure version costs ~5x a plain 3x3 conv of the same size (forward) and, at inference, holds
at most 16 MiB of sampled columns at a time.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

try:  # pragma: no cover - depends on the machine
    from torchvision.ops import deform_conv2d as _tv_deform_conv2d
except Exception:  # torchvision absent or built for another torch
    _tv_deform_conv2d = None


BACKENDS = ("auto", "pure", "torchvision")


def deform_conv_backend(requested: str = "auto") -> str:
    """The implementation that ``requested`` resolves to: "auto" = torchvision's fused op when
    it imports, else the pure-PyTorch one; "torchvision" fails clearly where it cannot run."""
    name = (requested or "auto").strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"deformable-conv backend {requested!r}: expected one of {', '.join(BACKENDS)}")
    if name == "torchvision" and _tv_deform_conv2d is None:
        raise RuntimeError("deformable-conv backend 'torchvision' requested, but torchvision.ops.deform_conv2d "
                           "cannot be imported (torchvision missing or built for another torch); use 'pure'")
    if name == "auto":
        return "torchvision" if _tv_deform_conv2d is not None else "pure"
    return name


def set_backend(model: nn.Module, backend: str = "auto") -> str:
    """Make every DCNv2Pack in ``model`` run on ``backend``; returns the resolved name."""
    resolved = deform_conv_backend(backend)
    for m in model.modules():
        if isinstance(m, DCNv2Pack):
            m.backend = resolved
    return resolved


def _pair(v):
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


# Inference takes output rows in chunks whose k-fold column tensor holds at most this many
# elements (16 MiB in float32), so a chunk's sampling, modulation and matmul reuse the cache:
# on 2 cores of an Intel Xeon, the network's 6 aligned 64-channel maps (tools/dcn_chunks.py) take
# 1.4x less time than in 64 MiB chunks at 80 x 80 and at 160 x 160 LR px; 8 and 4 MiB are slower
# again. Training keeps one chunk: autograd would keep every chunk anyway.
CHUNK_ELEMENTS = 1 << 22


def modulated_deform_conv2d_pure(x, offset, mask, weight, bias=None, stride=1, padding=1, dilation=1,
                                 chunk_elements: int = CHUNK_ELEMENTS):
    """torchvision.ops.deform_conv2d(x, offset, weight, bias, ..., mask=mask) in plain PyTorch.

    All kernel points of a deformable group are sampled by one grid_sample (zeros outside,
    align_corners=True so the grid is the pixel grid), then one batched matmul applies the
    weight. Half/bfloat16 inputs are computed in float32: sampling positions need the mantissa."""
    b, c, h, w = x.shape
    cout, cin, kh, kw = weight.shape
    if cin != c:
        raise ValueError(f"weight {tuple(weight.shape)} expects {cin} input channels, input has {c}")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    ho, wo = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    k = kh * kw
    g = offset.shape[1] // (2 * k) if offset.dim() == 4 else 0
    if g < 1 or g * 2 * k != offset.shape[1] or c % g or tuple(offset.shape[-2:]) != (ho, wo) or offset.shape[0] != b:
        raise ValueError(f"offset {tuple(offset.shape)} does not fit a {kh}x{kw} kernel on input {tuple(x.shape)}: "
                         f"expected ({b}, 2*G*{k}, {ho}, {wo}) with G dividing {c}")
    if tuple(mask.shape) != (b, g * k, ho, wo):
        raise ValueError(f"mask {tuple(mask.shape)} does not fit offset {tuple(offset.shape)}: "
                         f"expected {(b, g * k, ho, wo)}")
    out_dtype = x.dtype
    ct = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    # one copy into the compute type and the plain layout the sampling reshapes (channels_last
    # would otherwise be copied twice); offset and mask are copied chunk by chunk in _dcn_rows
    x = x.to(ct, memory_format=torch.contiguous_format)
    weight = weight.to(ct)
    # align_corners=True cannot address a 1-px axis; one zero pixel on each side fixes that and
    # changes nothing else (outside pixels count as zero anyway).
    pad = 1 if min(h, w) == 1 else 0
    if pad:
        x = F.pad(x, (1, 1, 1, 1))
    geom = (sh, sw, ph - pad, pw - pad, dh, dw, kh, kw)
    wmat = weight.reshape(1, cout, c * k)
    training = torch.is_grad_enabled() and any(t.requires_grad for t in (x, offset, mask, weight))
    rows = ho if training else max(1, chunk_elements // max(1, b * c * k * wo))
    if rows >= ho:
        out = _dcn_rows(x, offset, mask, wmat, g, 0, geom)
    else:
        out = torch.cat([_dcn_rows(x, offset[..., r:r + rows, :], mask[..., r:r + rows, :], wmat, g, r, geom)
                         for r in range(0, ho, rows)], dim=2)
    if bias is not None:
        out = out + bias.to(ct).view(1, cout, 1, 1)
    return out.to(out_dtype)


def _dcn_rows(x, offset, mask, wmat, g, row0, geom):
    """Output rows row0.. of the modulated deformable conv (offset/mask hold just those rows, in
    any layout and dtype: they are copied to ``x``'s here, a chunk at a time, where a channels_last
    chunk is one block of memory and its copy stays in cache)."""
    sh, sw, ph, pw, dh, dw, kh, kw = geom
    b, c, h, w = x.shape
    offset, mask = (z.to(x.dtype, memory_format=torch.contiguous_format) for z in (offset, mask))
    ho, wo = offset.shape[-2:]
    k, cout = kh * kw, wmat.shape[1]
    dev, ct = x.device, x.dtype
    base_y = ((torch.arange(ho, device=dev, dtype=ct) + row0) * sh - ph).view(1, 1, 1, ho, 1)
    base_x = (torch.arange(wo, device=dev, dtype=ct) * sw - pw).view(1, 1, 1, 1, wo)
    ky, kx = torch.meshgrid(torch.arange(kh, device=dev, dtype=ct) * dh,
                            torch.arange(kw, device=dev, dtype=ct) * dw, indexing="ij")
    off = offset.reshape(b, g, k, 2, ho, wo)
    # normalised coordinates: -1..1 over pixel centres 0..size-1
    gy = (base_y + ky.reshape(1, 1, k, 1, 1) + off[:, :, :, 0]) * (2.0 / (h - 1)) - 1.0
    gx = (base_x + kx.reshape(1, 1, k, 1, 1) + off[:, :, :, 1]) * (2.0 / (w - 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1).view(b * g, k * ho, wo, 2)
    del gx, gy
    sampled = F.grid_sample(x.reshape(b * g, c // g, h, w), grid, mode="bilinear",
                            padding_mode="zeros", align_corners=True)
    del grid
    sampled = sampled.view(b, g, c // g, k, ho, wo)
    m = mask.reshape(b, g, 1, k, ho, wo)
    if torch.is_grad_enabled() and (sampled.requires_grad or m.requires_grad):
        sampled = sampled * m
    else:  # inference: modulate in place, the k-fold column tensor is the memory peak
        sampled.mul_(m)
    # bmm with the weight expanded keeps every forward and backward operand contiguous; a
    # broadcast matmul folds the batch into a transposed mm and copies the column tensor twice
    out = torch.bmm(wmat.expand(b, cout, c * k), sampled.view(b, c * k, ho * wo))
    return out.view(b, cout, ho, wo)


def modulated_deform_conv2d(x, offset, mask, weight, bias=None, stride=1, padding=1, dilation=1,
                            backend: str = "auto"):
    """DCNv2 with torchvision's argument semantics, on ``backend`` (see deform_conv_backend)."""
    if deform_conv_backend(backend) == "torchvision":
        return _tv_deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding,
                                 dilation=dilation, mask=mask)
    return modulated_deform_conv2d_pure(x, offset, mask, weight, bias, stride, padding, dilation)


class DCNv2Pack(nn.Module):
    """DCNv2 whose offsets and mask are predicted from a separate feature map (EDVR's pack).

    conv_offset_mask starts at zero: the layer begins as a plain conv with mask 0.5 and learns
    to deform. Mean |offset| above 50 px means training has diverged; it is logged once."""

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
        self.backend = "auto"  # a plain attribute (not in the state_dict); see set_backend

    def forward(self, x, feat):
        om = self.conv_offset_mask(feat)
        n = om.shape[1] // 3  # [o1, o2, mask]: the offsets are cat([o1, o2]), the first 2n channels
        offset, m = om[:, :2 * n], om[:, 2 * n:]
        if not self._warned and not offset.is_meta:  # shape-only (meta) tensors have no values
            # every 4th row and column: a mean of hundreds of px shows as well, at 1/16 of the
            # memory traffic of the whole (strided, channels_last) offset map
            mean = float(offset.detach()[..., ::4, ::4].abs().mean())
            if mean > 50:
                log.warning("DCNv2 mean |offset| %.1f px > 50: the alignment has likely diverged", mean)
                self._warned = True
        return modulated_deform_conv2d(x, offset, torch.sigmoid(m), self.weight, self.bias,
                                       self.stride, self.padding, self.dilation, backend=self.backend)

"""Small building blocks shared by the MSTT network."""
from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """conv3x3 - ReLU - conv3x3 + identity, no batch norm (EDVR/MSTT style)."""

    def __init__(self, nf: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        # Small init keeps a deep stack of identity blocks stable from the first step.
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


def make_layer(nf: int, n: int) -> nn.Sequential:
    return nn.Sequential(*[ResidualBlock(nf) for _ in range(n)])


def in_layout(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """x in ``memory_format`` (a copy only when it is not already): stages hand features on in
    the convolutions' layout, so that no convolution converts its input."""
    return x if x.is_contiguous(memory_format=memory_format) else x.contiguous(memory_format=memory_format)


def weight_layout(conv: nn.Conv2d) -> torch.memory_format:
    """The memory format ``conv``'s weight was put in (``module.to(memory_format=...)``)."""
    w = conv.weight
    cl = w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def frames_at(feats: torch.Tensor, index) -> torch.Tensor:
    """feats (B, T, C, H, W) -> (B * K, C, H, W): frames ``index`` (K of 0..T-1) of every window,
    window by window. Indexing keeps the features' memory layout, where a reshape of a slice
    would copy into NCHW."""
    b, t, c, h, w = feats.shape
    rows = torch.arange(b, device=feats.device).view(b, 1) * t + torch.as_tensor(index, device=feats.device)
    return feats.reshape(b * t, c, h, w)[rows.reshape(-1)]

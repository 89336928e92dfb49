"""Multi-scale deformable alignment (MSD_align): align a neighbour's features to a target's.

Offsets come from a 3x3 conv on both features and three parallel receptive fields (3, 5, 7),
so that both small drift and larger vehicle motion can be captured; a modulated deformable
conv (DCNv2) then samples the neighbour at the learned positions.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import in_layout, weight_layout
from .dcn import DCNv2Pack


class MSDAlign(nn.Module):
    def __init__(self, nf: int = 64, groups: int = 8):
        super().__init__()
        self.offset_conv1 = nn.Conv2d(2 * nf, nf, 3, 1, 1)
        self.mul_scale1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.mul_scale2 = nn.Conv2d(nf, nf, 5, 1, 2)
        self.mul_scale3 = nn.Conv2d(nf, nf, 7, 1, 3)
        self.offset_conv2 = nn.Conv2d(3 * nf, nf, 3, 1, 1)
        self.dcnpack = DCNv2Pack(nf, nf, 3, stride=1, padding=1, dilation=1, deformable_groups=groups)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, neighbour: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        o1 = self.lrelu(self.offset_conv1(torch.cat([neighbour, target], dim=1)))
        scales = [self.lrelu(conv(o1)) for conv in (self.mul_scale1, self.mul_scale2, self.mul_scale3)]
        o2 = self.lrelu(self.offset_conv2(torch.cat(scales, dim=1)))
        return in_layout(self.lrelu(self.dcnpack(neighbour, o1 + o2)), weight_layout(self.offset_conv1))

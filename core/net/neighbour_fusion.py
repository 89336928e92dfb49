"""Each input frame's features fused with its neighbours', aligned by the flows (our addition).

Upstream MSTT lets a neighbouring frame reach an input time only through the transformer, whose
tokens are patches on a fixed grid at half LR resolution: the neighbour's patch is not aligned
to the frame, so the sub-pixel detail its different aliasing carries cannot land where it
belongs (measured with our weights: the input times' PSNR did not change, to 0.001 dB, when the
neighbours were replaced by copies of the frame). Here the previous and the next input frame's
features are warped onto the frame's grid by the frame-to-frame motion the pair flows imply and
merged by a small residual CNN (the BasicVSR recipe: flow-aligned features, learned fusion).
Its last conv starts at zero, so a network gains the module as an exact no-op and training
grows it.

Bilinear warping alone hides what multi-frame super-resolution needs: a neighbour sampled
half a pixel off is averaged over two of its pixels, which cancels the very frequencies its
different aliasing carries, and the merge cannot tell at which sub-pixel phase a neighbour was
seen. With ``subpixel=True`` the merge also gets each neighbour's features at the nearest
pixel, unblended, and the offset of that sample from the frame's pixel (the flow's fraction,
in [-0.5, 0.5] LR px): the samples and where they lie, as in classical shift-and-add
reconstruction. That branch is a separate, zero-initialised conv added to the merge, so it
joins trained weights as an exact no-op too.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import frames_at, in_layout, make_layer, weight_layout
from .warp import flow_warp

FUSION_BLOCKS = 2  # residual blocks between the merge conv and the zero-initialised output conv
OFFSET_CHANNELS = 4  # sub-pixel offsets (dx, dy) of the previous and the next neighbour's samples


def neighbour_flows(flows: torch.Tensor) -> torch.Tensor:
    """Pair flows (B, T-1, 4, H, W) [mid->earlier, mid->later] -> (B, T, 4, H, W): for each input
    frame [flow to the previous frame, flow to the next frame] on the frame's own grid, zero where
    it has no such neighbour (the window's ends).

    Under the linear motion the pair flows assume, mid->later - mid->earlier is the earlier
    frame's flow to the later one; taking it on the earlier frame's grid (and its negative on
    the later frame's) shifts the field by half the motion, harmless for the smooth motion of
    satellite video (drift, rotation, parallax)."""
    fwd = flows[:, :, 2:4] - flows[:, :, 0:2]  # (B, T-1, 2, H, W) earlier -> later
    zero = torch.zeros_like(fwd[:, :1])
    to_prev = torch.cat([zero, -fwd], dim=1)
    to_next = torch.cat([fwd, zero], dim=1)
    return torch.cat([to_prev, to_next], dim=2)


class NeighbourFusion(nn.Module):
    def __init__(self, nf: int = 64, n_blocks: int = FUSION_BLOCKS, subpixel: bool = False):
        super().__init__()
        self.merge = nn.Conv2d(3 * nf, nf, 3, 1, 1)
        self.subpixel = nn.Conv2d(2 * nf + OFFSET_CHANNELS, nf, 3, 1, 1) if subpixel else None
        self.body = make_layer(nf, n_blocks)
        self.out = nn.Conv2d(nf, nf, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)
        for conv in (self.out, self.subpixel):
            if conv is not None:
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def aligned_neighbours(self, feats: torch.Tensor, flows: torch.Tensor,
                           mode: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, T, nf, H, W), pair flows (B, T-1, 4, H, W) -> the previous and the next
        frame's features warped onto each frame (``mode`` of the sampling), each
        (B * T, nf, H, W); at the ends the frame itself stands in (zero flow: no new information)."""
        b, t, c, h, w = feats.shape
        prev = frames_at(feats, [0, *range(t - 1)])
        nxt = frames_at(feats, [*range(1, t), t - 1])
        fl = neighbour_flows(flows).reshape(b * t, 4, h, w)
        both = flow_warp(torch.cat([prev, nxt]), torch.cat([fl[:, 0:2], fl[:, 2:4]]), padding_mode="border",
                         mode=mode)
        return both.chunk(2, dim=0)

    @staticmethod
    def sample_offsets(flows: torch.Tensor) -> torch.Tensor:
        """Pair flows (B, T-1, 4, H, W) -> (B * T, 4, H, W): for the previous and the next
        neighbour, the flow minus its nearest whole pixel, i.e. where (in LR px, in
        [-0.5, 0.5]) the sample that nearest-pixel warping takes lies from the frame's pixel."""
        fl = neighbour_flows(flows)
        fl = fl.reshape(-1, *fl.shape[2:])
        return fl - torch.round(fl)

    def forward(self, feats: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
        """feats (B, T, nf, H, W), pair flows (B, T-1, 4, H, W) -> fused features, same shape."""
        b, t, c, h, w = feats.shape
        f4 = feats.reshape(b * t, c, h, w)
        fmt = weight_layout(self.merge)
        w_prev, w_next = (in_layout(x, fmt) for x in self.aligned_neighbours(feats, flows))
        x = self.merge(torch.cat([in_layout(f4, fmt), w_prev, w_next], dim=1))
        if self.subpixel is not None:
            s_prev, s_next = (in_layout(s, fmt) for s in self.aligned_neighbours(feats, flows, mode="nearest"))
            offsets = in_layout(self.sample_offsets(flows).to(f4.dtype), fmt)
            x = x + self.subpixel(torch.cat([s_prev, s_next, offsets], dim=1))
        x = self.out(self.body(self.lrelu(x)))
        return (f4 + x).view(b, t, c, h, w)

"""MSTT: 4 LR frames (1, 3, 5, 7 of a clip) -> 7 HR frames, x4 in space, 2x in time.

Layer names follow the upstream ``MSTTr`` so that an upstream state_dict loads with strict=True.
Our additions: with ``skip=True`` the network predicts a residual over a parameter-free base
made of bicubic x4 of each input frame and, for each new middle frame, bicubic x4 of the
flow-warped average of its two neighbours, so an untrained or briefly trained network starts
from a motion-compensated baseline instead of from zero; with ``attention="cosine"`` the
transformer scores tokens by cosine similarity (see spec.ATTENTIONS); with ``neighbours=True``
each input frame's features are fused with its neighbours', aligned by the flows
(neighbour_fusion.py; ``subpixel=True`` also gives it the neighbours' unblended samples and
their sub-pixel offsets). Upstream weights need skip=False, dot attention and no neighbour fusion
(``upstream_exact``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import frames_at, in_layout, make_layer, weight_layout
from .msd_align import MSDAlign
from .neighbour_fusion import NeighbourFusion
from .spec import ATTENTION_DOT, FLOW_FULL, FLOW_MIDDLE, MULTIPLE, N_IN, SCALE
from .transformer import MSSTFormer
from .warp import flow_warp


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad the last two dims up to a multiple; repeat reflections if the image is small."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    shape = x.shape
    x = x.reshape(-1, *shape[-3:])
    while ph or pw:
        h, w = x.shape[-2:]
        # reflect needs pad < size; a 1-px image can only be replicated
        sh = min(ph, h - 1) if h > 1 else 0
        sw = min(pw, w - 1) if w > 1 else 0
        if sh == 0 and sw == 0:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
            ph = pw = 0
            break
        x = F.pad(x, (0, sw, 0, sh), mode="reflect")
        ph, pw = ph - sh, pw - sw
    return x.reshape(*shape[:-2], *x.shape[-2:])


# The stages after the first x2 upsampling run in strips of this many rows (at 2x LR) when no
# gradient is needed; each strip also computes HR_HALO rows on each side, which is what its
# outputs read: upconv2's 3x3 one row at 2x, HRconv's and conv_last's 3x3 two rows at 4x.
HR_STRIP_ROWS = 64
HR_HALO = 2


class MSTT(nn.Module):
    def __init__(self, nf: int = 64, groups: int = 8, front_RBs: int = 5, back_RBs: int = 10,  # noqa: N803
                 skip: bool = True, upstream_exact: bool = False, attention: str = ATTENTION_DOT,
                 neighbours: bool = False, subpixel: bool = False):
        super().__init__()
        skip = bool(skip) and not upstream_exact  # upstream has no parameter-free base
        if upstream_exact and attention != ATTENTION_DOT:
            raise ValueError("the upstream-exact variant has upstream's dot-product attention")
        if upstream_exact and neighbours:
            raise ValueError("the upstream-exact variant has no neighbour fusion")
        if subpixel and not neighbours:
            raise ValueError("subpixel adds the neighbours' sub-pixel samples to the neighbour fusion: it needs neighbours=True")
        self.config = dict(nf=nf, groups=groups, front_RBs=front_RBs, back_RBs=back_RBs, skip=skip,
                           upstream_exact=bool(upstream_exact))
        if attention != ATTENTION_DOT:  # files without the key (older ones, upstream's) mean "dot"
            self.config["attention"] = attention
        if neighbours:  # likewise: files without the key have no neighbour fusion
            self.config["neighbours"] = True
        if subpixel:  # and those without this one fuse bilinearly warped neighbours only
            self.config["subpixel"] = True
        self.attention = attention
        self.skip, self.upstream_exact = skip, bool(upstream_exact)
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
        self.feature_extraction = make_layer(nf, front_RBs)
        self.MSD_align = MSDAlign(nf, groups)
        self.neighbour_fusion = NeighbourFusion(nf, subpixel=bool(subpixel)) if neighbours else None
        self.fusion = nn.Conv2d(2 * nf, nf, 1)
        self.blending = nn.Conv2d(2 * nf, nf, 1)
        self.MSST_former = MSSTFormer(nf, d_model=4 * nf, attention=attention)
        self.recon_trunk = make_layer(nf, back_RBs)
        self.upconv1 = nn.Conv2d(nf, nf * 4, 3, 1, 1)
        self.upconv2 = nn.Conv2d(nf, 64 * 4, 3, 1, 1)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.HRconv = nn.Conv2d(64, 64, 3, 1, 1)
        self.conv_last = nn.Conv2d(64, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)
        self.hr_strips = True  # a plain attribute (not in the state_dict): see reconstruct
        if skip:  # start exactly at the base; the residual grows as training finds it
            nn.init.zeros_(self.conv_last.weight)
            nn.init.zeros_(self.conv_last.bias)

    @property
    def flow_kind(self) -> str:
        """Which flows ``forward`` expects (see spec): full ones for the upstream variant."""
        return FLOW_FULL if self.upstream_exact else FLOW_MIDDLE

    @property
    def variant(self) -> str:
        if self.upstream_exact:
            return "upstream-exact"
        name = "mstt_stvsr (with base)" if self.skip else "mstt_stvsr"
        if self.attention != ATTENTION_DOT:
            name += f", {self.attention} attention"
        if self.neighbour_fusion is None:
            return name
        return name + (", neighbour fusion with sub-pixel samples" if self.neighbour_fusion.subpixel is not None
                       else ", neighbour fusion")

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout of the convolutions' weights (``model.to(memory_format=...)``): features
        are kept in it between stages, so that no convolution converts its input (channels_last
        on CPU and CUDA, see core/run/device.py)."""
        return weight_layout(self.conv_first)

    # -- stages ---------------------------------------------------------------------------
    def extract(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, nf, H, W) per-frame features."""
        return self.feature_extraction(self.lrelu(self.conv_first(frames)))

    def middle_features(self, feats: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
        """Features of the 3 missing frames. feats (B, 4, nf, H, W), flows (B, 3, 4, H, W):
        per pair [flow applied to the earlier frame, flow applied to the later frame]."""
        b, t, c, h, w = feats.shape
        prev, nxt = frames_at(feats, range(t - 1)), frames_at(feats, range(1, t))
        fl = flows.reshape(b * (t - 1), 4, h, w)
        if self.upstream_exact:
            return self.upstream_middle_features(prev, nxt, fl).view(b, t - 1, c, h, w)
        # both directions of all pairs in one batch: align(prev -> next) and align(next -> prev)
        aligned = self.MSD_align(torch.cat([prev, nxt]), torch.cat([nxt, prev]))
        warped = torch.cat([flow_warp(prev, fl[:, 0:2]), flow_warp(nxt, fl[:, 2:4])])
        fused = self.fusion(torch.cat([aligned, in_layout(warped, self.memory_format)], dim=1))
        f_prev, f_next = fused.chunk(2, dim=0)
        mid = self.blending(torch.cat([f_prev, f_next], dim=1))
        return mid.view(b, t - 1, c, h, w)

    def upstream_middle_features(self, prev: torch.Tensor, nxt: torch.Tensor, fl: torch.Tensor) -> torch.Tensor:
        """Upstream's wiring, for checkpoints trained with it. prev, nxt (N, nf, H, W), fl
        (N, 4, H, W) full frame-to-frame flows -> (N, nf, H, W). One branch fuses [prev aligned
        towards nxt, nxt warped by the forward flow], the other [prev warped by the backward
        flow, nxt warped by the forward flow]; warps sample as upstream's does."""
        aligned = self.MSD_align(prev, nxt)
        w_prev = flow_warp(prev, fl[:, 0:2], align_corners=False)
        w_next = flow_warp(nxt, fl[:, 2:4], align_corners=False)
        fused = self.fusion(torch.cat([torch.cat([aligned, w_next], dim=1), torch.cat([w_prev, w_next], dim=1)]))
        f1, f2 = fused.chunk(2, dim=0)
        return self.blending(torch.cat([f1, f2], dim=1))

    def reconstruct(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, nf, H, W) -> (N, 3, 4H, 4W)."""
        x = self.recon_trunk(feats)
        x = self.lrelu(self.pixel_shuffle(self.upconv1(x)))
        rows = x.shape[2]
        if torch.is_grad_enabled() or not self.hr_strips or rows <= HR_STRIP_ROWS:
            return self.high_res(x)
        # Frame by frame in strips of rows (with the halo their 3x3 convs read, computed and
        # cropped): a whole frame's 4x activations do not stay in cache, a strip's do. Same
        # outputs; the HR stages take 83 ms instead of 121 per 640 x 640 output frame (2-core
        # AMD EPYC, bf16).
        frames = []
        for n in range(x.shape[0]):
            out = []
            for r0 in range(0, rows, HR_STRIP_ROWS):
                r1 = min(rows, r0 + HR_STRIP_ROWS)
                a, b = max(0, r0 - HR_HALO), min(rows, r1 + HR_HALO)
                y = self.high_res(x[n:n + 1, :, a:b])
                out.append(y[:, :, 2 * (r0 - a): 2 * (r1 - a)])
            frames.append(torch.cat(out, dim=2))
        return torch.cat(frames)

    def high_res(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 64, 2H, 2W) features after the first x2 upsampling -> (N, 3, 4H, 4W)."""
        x = self.lrelu(self.pixel_shuffle(self.upconv2(x)))
        return self.conv_last(self.lrelu(self.HRconv(x)))

    def base(self, lr: torch.Tensor, flows: torch.Tensor, keep=None) -> torch.Tensor:
        """Parameter-free motion-compensated bicubic base, (B, 7, 3, 4H, 4W), or only the
        output positions in ``keep``.

        Input times: bicubic x4 of the frame. New times: the two neighbours upsampled first,
        then warped at HR (bicubic sampling, flows upsampled and scaled x4) and averaged;
        warping before upsampling blurs more than the motion compensation gains."""
        b, t, c, h, w = lr.shape
        keep = list(range(2 * t - 1)) if keep is None else list(keep)
        need = sorted({k // 2 + d for k in keep for d in ((0,) if k % 2 == 0 else (0, 1))})
        up = dict(zip(need, F.interpolate(lr[:, need].reshape(-1, c, h, w), scale_factor=SCALE, mode="bicubic",
                                          align_corners=False).view(b, len(need), c, SCALE * h, SCALE * w).unbind(1)))
        mids = [k // 2 for k in keep if k % 2]
        warped = {}
        if mids:
            fl = F.interpolate(flows[:, mids].reshape(-1, 4, h, w), scale_factor=SCALE, mode="bilinear",
                               align_corners=False).view(b, len(mids), 4, SCALE * h, SCALE * w) * SCALE
            prev = torch.cat([up[k] for k in mids])
            nxt = torch.cat([up[k + 1] for k in mids])
            f = fl.transpose(0, 1).reshape(-1, 4, SCALE * h, SCALE * w)
            mid = 0.5 * (flow_warp(prev, f[:, 0:2], padding_mode="border", mode="bicubic")
                         + flow_warp(nxt, f[:, 2:4], padding_mode="border", mode="bicubic"))
            warped = dict(zip(mids, mid.view(len(mids), b, c, SCALE * h, SCALE * w).unbind(0)))
        return torch.stack([up[k // 2] if k % 2 == 0 else warped[k // 2] for k in keep], dim=1)

    # -- forward --------------------------------------------------------------------------
    def forward(self, lr: torch.Tensor, flows: torch.Tensor, keep=None) -> torch.Tensor:
        """lr (B, 4, 3, H, W) in [0, 1], flows (B, 3, 4, H, W) -> (B, 7, 3, 4H, 4W).

        ``flows``: per consecutive pair, [mid->earlier dx, dy, mid->later dx, dy] in LR pixels
        (``core.run.flow.flows_tensor`` estimates them; the network itself has no optical flow).

        ``keep``: output positions (0..6) to make, in that order, e.g. the 2-3 outputs a
        pipeline window owns. The per-frame reconstruction (10 residual blocks, x4 upsampling,
        HR convs) is about half of the cost, so skipping the others saves about a third; kept
        frames are then reconstructed one at a time, which bounds peak memory to one HR
        frame's activations. Without ``keep`` all 7 go in one batch (training)."""
        if lr.dim() != 5 or lr.shape[1] != N_IN or lr.shape[2] != 3:
            raise ValueError(f"MSTT expects lr of shape (B, {N_IN}, 3, H, W), got {tuple(lr.shape)}")
        b, t, c, h, w = lr.shape
        if keep is not None and (not keep or any(not 0 <= int(k) < 2 * t - 1 for k in keep)):
            raise ValueError(f"keep must list output positions 0..{2 * t - 2}, got {keep!r}")
        if flows is None or flows.shape != (b, t - 1, 4, h, w):
            got = None if flows is None else tuple(flows.shape)
            raise ValueError(f"flows must have shape {(b, t - 1, 4, h, w)}, got {got}")
        flows = flows.to(lr.dtype)
        lr_p = pad_to_multiple(lr, MULTIPLE)
        fl_p = pad_to_multiple(flows, MULTIPLE)
        hp, wp = lr_p.shape[-2:]

        feats = self.extract(lr_p.reshape(b * t, c, hp, wp)).view(b, t, -1, hp, wp)
        if self.neighbour_fusion is not None:
            feats = self.neighbour_fusion(feats, fl_p)
        mids = self.middle_features(feats, fl_p)
        seq = interleave(feats, mids, self.memory_format)  # F1 M12 F3 M34 F5 M56 F7
        seq = self.MSST_former(seq)
        # Reconstruction is local: crop the padding beyond its receptive field before it runs
        # at 4x resolution. Pixels inside (h, w) are unchanged; padded sizes cost far less.
        rf = 2 * len(self.recon_trunk) + 4
        hc, wc = min(hp, h + rf), min(wp, w + rf)
        seq = seq.reshape(b * (2 * t - 1), -1, hp, wp)[..., :hc, :wc]  # a view: seq is one 4-D tensor
        seq = in_layout(seq, self.memory_format).view(b, 2 * t - 1, -1, hc, wc)
        if keep is None:
            out = self.reconstruct(seq.reshape(b * (2 * t - 1), -1, hc, wc))
            out = out.view(b, 2 * t - 1, 3, SCALE * hc, SCALE * wc)
        else:
            out = torch.stack([self.reconstruct(seq[:, int(k)]) for k in keep], dim=1)
        out = out[..., : SCALE * h, : SCALE * w]
        if self.skip:
            out = out + self.base(lr, flows, keep)
        return out


def interleave(frames: torch.Tensor, mids: torch.Tensor,
               memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """(B, T, C, H, W) and (B, T-1, C, H, W) -> (B, 2T-1, C, H, W) as f0 m0 f1 m1 ... f(T-1),
    a view of a (B * (2T-1), C, H, W) tensor in ``memory_format``."""
    b, t, c, h, w = frames.shape
    out = torch.empty((b * (2 * t - 1), c, h, w), dtype=frames.dtype, device=frames.device,
                      memory_format=memory_format).view(b, 2 * t - 1, c, h, w)
    out[:, 0::2] = frames
    out[:, 1::2] = mids
    return out

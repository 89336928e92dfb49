#!/usr/bin/env python3
"""What the neighbouring frames carry on a held-out set, measured without learning.

``mstt-stvsr eval --multiframe`` measures how much the *network* gains from its neighbours. This
asks how much there is to gain: for input time k of a clip, an HR frame x is fitted to LR frames
by gradient descent on

    sum_j | D(W_j x) - y_j |  +  lam * TV(x)

where D is the known degradation (anti-aliased bicubic x4, ``downsample_tensor``), W_j moves
frame k's geometry into frame j's by the LR flow the network gets too (``estimate_flow``,
upsampled x4), and the TV term is the only prior. ``single`` uses y_k alone, ``multi`` all 4
inputs (``near`` only k's two neighbours). multi - single is what classical multi-frame
reconstruction (iterative back-projection) gains from the neighbours with the same flows: a
lower bound of what the frames carry (a learned prior can use them better), and a measure of
how much sub-pixel information a held-out set holds at all. Each mode gets its best lam of the
grid, so neither is handicapped by the regulariser.

Usage:
  .venv/bin/python tools/multiframe_bound.py --data build/data/test --clips 6 --times 1,2
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT.parent) not in sys.path:
    sys.path.insert(0, str(ROOT.parent))

MODES = ("single", "near", "multi")
BORDER_LR = 4  # LR pixels at each edge left out of the data term: a neighbour's motion may carry them out of view


def charbonnier(d, eps: float = 1e-3):
    """Robust (L1-like) data term: moving vehicles and flow errors at edges are outliers that a
    squared error would let drag the whole fit (Farsiu et al. 2004, robust multi-frame SR)."""
    return (d * d + eps * eps).sqrt().mean()


def fit(ys, ws, x0, lam: float, iters: int):
    """HR (1, 3, H, W) minimising the back-projection loss over LR frames ``ys`` (each
    (1, 3, h, w)) seen through warps ``ws`` (callables HR -> HR in that frame's geometry)."""
    import torch
    import torch.nn.functional as F

    def degrade(x):  # downsample_tensor (the clips' degradation, PIL-bicubic twin) without its rounding
        h, w = x.shape[-2:]
        return F.interpolate(x, size=(h // 4, w // 4), mode="bicubic", align_corners=False, antialias=True)

    x = x0.clone().requires_grad_(True)
    # per-frame photometric gain and offset (the clips' illumination drifts ~1 % a frame)
    gain = torch.ones(len(ys), 3, 1, 1, requires_grad=True)
    offset = torch.zeros(len(ys), 3, 1, 1, requires_grad=True)
    opt = torch.optim.Adam([x, gain, offset], lr=2e-3)
    b = BORDER_LR
    for _ in range(iters):
        opt.zero_grad()
        loss = sum(charbonnier((degrade(w(x)) * gain[i] + offset[i] - y)[..., b:-b, b:-b])
                   for i, (y, w) in enumerate(zip(ys, ws)))
        if lam:
            loss = loss + lam * ((x[..., 1:, :] - x[..., :-1, :]).abs().mean()
                                 + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())
        loss.backward()
        opt.step()
    return x.detach().clamp(0, 1)


def hr_warp(lr_src, lr_dst):
    """HR -> HR in ``lr_src``'s geometry: samples at p + 4 x (LR flow src->dst upsampled)."""
    import torch
    import torch.nn.functional as F

    from mstt_stvsr.core.net.warp import flow_warp
    from mstt_stvsr.core.run.flow import estimate_flow

    f = torch.from_numpy(estimate_flow(lr_src, lr_dst)).permute(2, 0, 1).unsqueeze(0)
    f = F.interpolate(f, scale_factor=4, mode="bilinear", align_corners=False) * 4.0
    return lambda x: flow_warp(x, f, padding_mode="border")


def clip_scores(lr_u8, hr_u8, k: int, lams, iters: int) -> dict:
    import torch

    from mstt_stvsr.core.net.spec import INPUT_POS
    from mstt_stvsr.core.training.evaluate import bicubic_up
    from mstt_stvsr.core.training.metrics import psnr

    def t(a):
        return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0).float().div(255)

    gt = hr_u8[INPUT_POS[k]]
    x0 = t(bicubic_up(lr_u8[k:k + 1])[0])
    frames = {"single": [k], "near": [j for j in (k - 1, k, k + 1) if 0 <= j < len(lr_u8)],
              "multi": list(range(len(lr_u8)))}
    out = {"bicubic": psnr(bicubic_up(lr_u8[k:k + 1])[0], gt)}
    warps = {j: (lambda x: x) if j == k else hr_warp(lr_u8[j], lr_u8[k]) for j in frames["multi"]}
    for mode in MODES:
        ys = [t(lr_u8[j]) for j in frames[mode]]
        ws = [warps[j] for j in frames[mode]]
        best = -1.0
        for lam in lams:
            x = fit(ys, ws, x0, lam, iters)
            u8 = x[0].permute(1, 2, 0).mul(255).round().byte().numpy()
            best = max(best, psnr(u8, gt))
        out[mode] = best
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a held-out set (build/data/test, build/data/test_soft)")
    p.add_argument("--clips", type=int, default=6)
    p.add_argument("--times", default="1,2", help="input times k to reconstruct (0-3)")
    p.add_argument("--lams", default="0,0.003,0.01", help="TV weights tried per mode (best kept)")
    p.add_argument("--iters", type=int, default=150)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)

    import torch

    from mstt_stvsr.core.training.datasets import open_dataset

    torch.set_num_threads(args.threads)
    ds = open_dataset(args.data)
    times = [int(k) for k in args.times.split(",")]
    lams = [float(v) for v in args.lams.split(",")]
    rows, t0 = [], time.monotonic()
    for i in range(min(args.clips, len(ds))):
        c = ds.clip(i)
        for k in times:
            r = clip_scores(c.lr[:4], c.hr[:7], k, lams, args.iters)
            rows.append({"clip": c.name, "k": k, **r})
            print(json.dumps({kk: (round(v, 3) if isinstance(v, float) else v) for kk, v in rows[-1].items()}),
                  file=sys.stderr)
    mean = {m: float(np.mean([r[m] for r in rows])) for m in ("bicubic", *MODES)}
    res = {"data": args.data, "rows": len(rows), "iters": args.iters, "lams": lams, "mean": mean,
           "gain_multi_over_single": mean["multi"] - mean["single"],
           "gain_near_over_single": mean["near"] - mean["single"], "seconds": round(time.monotonic() - t0, 1)}
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps({**res, "per_row": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How much the network uses its neighbouring frames: the multi-frame gain.

For each input time k of a clip, the network's output at k is scored three ways: with the
clip's real frames, and with neighbours that carry no new information about frame k:
``copies`` (every input is frame k: no motion at all) and ``warped`` (each neighbour is frame k
warped by the estimated motion to that neighbour's time: motion as in real video, but no
sub-pixel detail frame k lacks). The gain is the PSNR with real neighbours minus each control's;
a network that fuses frames gains there, a single-image super-resolver does not.
"""
from __future__ import annotations

import numpy as np
import torch

from ..net.spec import INPUT_POS, N_IN, N_OUT
from ..net.warp import flow_warp
from ..run.flow import estimate_flow, flows_tensor
from .metrics import psnr

CONTROLS = ("copies", "warped")


def to_tensor(lr_u8: np.ndarray) -> torch.Tensor:
    """(T, h, w, 3) uint8 -> (1, T, 3, h, w) float in [0, 1]."""
    return torch.from_numpy(lr_u8).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)


def warped_to(frame: torch.Tensor, src_u8: np.ndarray, dst_u8: np.ndarray) -> torch.Tensor:
    """``frame`` (3, h, w) moved into ``dst``'s geometry by the motion estimated from src to dst."""
    f = estimate_flow(dst_u8, src_u8)  # dst(p) ~ src(p + f(p))
    flow = torch.from_numpy(f).permute(2, 0, 1).unsqueeze(0)
    out = flow_warp(frame.unsqueeze(0), flow, padding_mode="border", mode="bicubic")
    return out[0].clamp(0, 1)


def control_clip(lr_u8: np.ndarray, k: int, control: str) -> torch.Tensor:
    """(1, 4, 3, h, w): the 4 inputs with every frame but k replaced as ``control`` says."""
    lr = to_tensor(lr_u8)
    if control == "copies":
        return lr[:, [k] * N_IN]
    frames = [lr[0, k] if j == k else warped_to(lr[0, k], lr_u8[k], lr_u8[j]) for j in range(N_IN)]
    return torch.stack(frames).unsqueeze(0)


@torch.no_grad()
def outputs_at(model, lr: torch.Tensor, ks) -> list:
    """The network's HR frames at input times ``ks``, each (H, W, 3) uint8, from one forward
    (each kept frame is reconstructed on its own, so one frame or several give the same)."""
    y = model(lr, flows_tensor(lr, model.flow_kind), keep=[INPUT_POS[k] for k in ks])[0]
    return [f.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy() for f in y]


def clip_gain(model, lr_u8: np.ndarray, hr_u8: np.ndarray) -> dict:
    """Mean PSNR over the clip's input times with real neighbours (one forward for all of them)
    and with each control (one forward per time: each control clip is made for its time)."""
    gts = [hr_u8[INPUT_POS[k]] for k in range(N_IN)]
    scores = {"real": [psnr(y, gt) for y, gt in zip(outputs_at(model, to_tensor(lr_u8), range(N_IN)), gts)],
              **{c: [] for c in CONTROLS}}
    for k in range(N_IN):
        for c in CONTROLS:
            scores[c].append(psnr(outputs_at(model, control_clip(lr_u8, k, c), [k])[0], gts[k]))
    return {name: float(np.mean(v)) for name, v in scores.items()}


def multiframe_gain(model, clips, names=None) -> dict:
    """Over (lr_u8, hr_u8) clips (of a long clip, its first window): mean PSNR of input times per
    condition, the gains, and each clip's gains (``names`` label them; default their order), with
    the worst clip's: a fusion that helps on average can still hurt one scene."""
    per = [clip_gain(model, lr[:N_IN], hr[:N_OUT]) for lr, hr in clips]
    if not per:
        raise ValueError("no clips to measure the multi-frame gain on")
    names = list(names) if names is not None else [str(i) for i in range(len(per))]
    mean = {name: float(np.mean([p[name] for p in per])) for name in per[0]}
    per_clip = [{"clip": n, "psnr": p, "gain": {c: p["real"] - p[c] for c in CONTROLS}} for n, p in zip(names, per)]
    worst = {c: min(per_clip, key=lambda r: r["gain"][c]) for c in CONTROLS}
    return {"psnr": mean, "gain": {c: mean["real"] - mean[c] for c in CONTROLS}, "clips": len(per),
            "per_clip": per_clip, "worst": {c: {"clip": w["clip"], "gain": w["gain"][c]} for c, w in worst.items()}}

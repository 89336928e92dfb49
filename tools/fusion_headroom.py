"""How much any fusion of neighbouring frames could gain at input times, on real video.

    python tools/fusion_headroom.py --data ../shared/realvideo/viso012 --crop 512 [--json F]

For each clip (frames as ``mstt-stvsr eval --data`` reads them, LR made by ``downsample``) and
each input time k with two input neighbours, the bicubic HR of LR_k is compared with the bicubic
HR of LR_k blended towards the mean of its neighbours, at blend weights up to 0.5, whole and
high-pass only. The neighbours are not motion-compensated: stabilised satellite video moves
~0.02 px a frame (README, synthesis table), far below what a warp would correct.

The score uses the ground truth, so the best weight is an oracle: an upper bound for what a
linear temporal fusion at LR resolution buys. When even a 2 % blend lowers PSNR on every clip,
what differs between frame k and its neighbours belongs to frame k's ground truth (its own
noise, compression and moving objects), so the neighbours cannot denoise it, and with no
sub-pixel motion they hold no detail frame k lacks: the multi-frame gain at input times has no
room on that video.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

WEIGHTS = (0.02, 0.05, 0.1, 0.2, 0.5)
HIGHPASS_SIGMA = 1.0  # LR px: the band where sensor noise and JPEG blocks live


def high_pass(x: np.ndarray) -> np.ndarray:
    return x - cv2.GaussianBlur(x, (0, 0), HIGHPASS_SIGMA)


def clip_headroom(lr: np.ndarray, hr: np.ndarray) -> dict:
    """lr (T, h, w, 3) uint8 inputs, hr (2T-1, H, W, 3) uint8 -> PSNR change per blend weight."""
    from mstt_stvsr.core.net.spec import SCALE
    from mstt_stvsr.core.training.metrics import psnr

    def score(x: np.ndarray, t: int) -> float:
        # float bicubic, no 8-bit rounding: a 2 % blend of a 4 DN difference would round away
        up = cv2.resize(x, (x.shape[1] * SCALE, x.shape[0] * SCALE), interpolation=cv2.INTER_CUBIC)
        return psnr(np.clip(up, 0, 255), hr[t])

    lr = lr.astype(np.float32)
    out = {"whole": {w: [] for w in WEIGHTS}, "high_pass": {w: [] for w in WEIGHTS}, "temporal_diff_dn": []}
    for k in range(1, len(lr) - 1):
        own, mean = lr[k], (lr[k - 1] + lr[k + 1]) / 2
        base = score(own, 2 * k)
        out["temporal_diff_dn"].append(float(np.std(own - mean)))
        for w in WEIGHTS:
            out["whole"][w].append(score(own + w * (mean - own), 2 * k) - base)
            out["high_pass"][w].append(score(own + w * (high_pass(mean) - high_pass(own)), 2 * k) - base)
    return {"temporal_diff_dn": float(np.mean(out["temporal_diff_dn"])),
            **{band: {str(w): float(np.mean(v)) for w, v in out[band].items()} for band in ("whole", "high_pass")}}


def main(argv=None) -> int:
    from mstt_stvsr.core.errors import InputError
    from mstt_stvsr.core.net.spec import N_IN, N_OUT
    from mstt_stvsr.core.training.evaluate import open_eval_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True, help="clip folders, or a folder of clip folders")
    ap.add_argument("--crop", type=int, help="centre crop of the native frames (HR px)")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args(argv)
    try:
        ds = open_eval_data(args.data if len(args.data) > 1 else args.data[0], "frames", args.crop)
    except InputError as e:
        print(f"fusion_headroom: {e}", file=sys.stderr)
        return 2
    rows = {}
    for i in range(len(ds)):
        c = ds.clip(i)
        rows[c.name] = clip_headroom(c.lr[:N_IN], c.hr[:N_OUT])
    print("PSNR change (dB) of bicubic at input times when LR_k is blended towards its neighbours' mean "
          "(whole / high-pass only), oracle upper bound of linear fusion")
    print("| clip | LR_k - neighbours (DN, std) | " + " | ".join(f"weight {w}" for w in WEIGHTS) + " |")
    print("|---|---|" + "---|" * len(WEIGHTS))
    for name, r in rows.items():
        cells = " | ".join(f"{r['whole'][str(w)]:+.4f} / {r['high_pass'][str(w)]:+.4f}" for w in WEIGHTS)
        print(f"| {name} | {r['temporal_diff_dn']:.2f} | {cells} |")
    gains = [max(0.0, *r["whole"].values(), *r["high_pass"].values()) for r in rows.values()]
    print(f"best blend over all weights, mean over clips: {np.mean(gains):+.4f} dB")
    if args.json:
        Path(args.json).write_text(json.dumps({"crop": args.crop, "weights": WEIGHTS, "clips": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

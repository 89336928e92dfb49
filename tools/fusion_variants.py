"""What the neighbour fusion's parts are worth on real video: one weights file scored as it is,
with its sub-pixel branch off, and with the whole fusion off (their output convs zeroed: both
join the network as exact no-ops, so "off" is the network without them).

    python tools/fusion_variants.py --weights W --data ../shared/realvideo/viso012/clip_* \
        --crop 512 --out build/eval/fusion_variants.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def variants(model):
    """(name, model) for each variant the weights have."""
    fusion = model.neighbour_fusion
    yield "as trained", model
    if fusion is None:
        return
    if fusion.subpixel is not None:
        with torch.no_grad():
            keep = fusion.subpixel.weight.clone()
            fusion.subpixel.weight.zero_()
        yield "sub-pixel branch off", model
        with torch.no_grad():
            fusion.subpixel.weight.copy_(keep)
    with torch.no_grad():
        keep_out = fusion.out.weight.clone(), fusion.out.bias.clone() if fusion.out.bias is not None else None
        fusion.out.weight.zero_()
        if fusion.out.bias is not None:
            fusion.out.bias.zero_()
    yield "fusion off", model
    with torch.no_grad():
        fusion.out.weight.copy_(keep_out[0])
        if keep_out[1] is not None:
            fusion.out.bias.copy_(keep_out[1])


def main(argv=None) -> int:
    from mstt_stvsr.core.net.weights import load_model
    from mstt_stvsr.core.training.evaluate import evaluate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--crop", type=int)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    model = load_model(args.weights).eval()
    rows = {}
    for name, m in variants(model):
        r = evaluate(args.data, model=m, weights=args.weights, progress=False, multiframe=True, crop=args.crop,
                     layout="frames", log=lambda s: None)
        mean = r["mean"]
        rows[name] = {"gain": mean["mstt"]["all"]["psnr_rgb"] - mean["baseline"]["all"]["psnr_rgb"],
                      "inputs_gain": mean["mstt"]["inputs"]["psnr_rgb"] - mean["baseline"]["inputs"]["psnr_rgb"],
                      "multiframe": r["multiframe"]["gain"], "clips": r["clips"]}
        print(f"{name}: gain {rows[name]['gain']:+.3f} dB, input times {rows[name]['inputs_gain']:+.3f}, "
              f"multi-frame {rows[name]['multiframe']}", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

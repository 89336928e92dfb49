"""``mstt-stvsr eval``: PSNR/SSIM of MSTT against "bicubic x4 + linear blend in time".

For each held-out 7-frame clip the model gets the LR frames 1, 3, 5, 7 and makes all 7 HR
frames; the baseline makes frames 1, 3, 5, 7 by bicubic x4 upsampling (PIL, the inverse of the
degradation) and frames 2, 4, 6 as the average of their neighbours' bicubic frames. Outputs are
rounded to 8 bit like a written GeoTIFF before scoring. Scores (metrics.py) are per clip
(mean over its frames) and the mean over clips, for all frames, the input-time frames and the
new frames. When the network has the bicubic/flow ``skip`` base, that parameter-free base is
scored too: the gap between it and MSTT is what training added.

Writes ``<out>/eval.md`` (markdown tables), ``<out>/eval.json`` and ``<out>/eval_crops.png``
(GT | baseline | MSTT crops of an input-time and a new frame).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..net.spec import INPUT_POS, NEW_POS, SCALE
from ..run.options import WINDOW_MODES
from .datasets import open_dataset
from .metrics import clip_scores

KEYS = ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y")


def bicubic_up(lr: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """(T, h, w, 3) uint8 -> (T, scale h, scale w, 3) uint8, PIL bicubic."""
    return np.stack([np.asarray(Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.BICUBIC))
                     for f in lr])


def baseline(lr: np.ndarray) -> np.ndarray:
    """Bicubic x4 of the 4 inputs; each new frame the rounded mean of its two neighbours."""
    up = bicubic_up(lr).astype(np.float32)
    out = np.empty((2 * len(lr) - 1, *up.shape[1:]), np.float32)
    out[0::2] = up
    out[1::2] = 0.5 * (up[:-1] + up[1:])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_u8(x) -> np.ndarray:
    """(1, T, 3, H, W) float tensor in [0, 1] -> (T, H, W, 3) uint8."""
    a = x[0].detach().float().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return np.ascontiguousarray(a)


def run_model(model, lr_u8: np.ndarray, device, windows: str = "fast", ensemble: bool = False):
    """Model outputs (and its parameter-free base, if any) for one clip's LR frames, each
    output from the window the ``windows`` plan gives it (for 4 frames, "fast" is the one
    window of all 4 inputs; "central" mirrors the clip's ends as a long stack's are)."""
    import torch

    from ..run.clip import run_clip
    from ..run.flow import flows_tensor

    lr = torch.from_numpy(lr_u8).permute(0, 3, 1, 2).float().div(255).unsqueeze(0).to(device)
    with torch.no_grad():
        out = to_u8(run_clip(model, lr, windows, ensemble))
        base = to_u8(model.base(lr, flows_tensor(lr, model.flow_kind))) if getattr(model, "skip", False) else None
    return out, base


def score(pred, gt) -> dict:
    return {"all": clip_scores(pred, gt), "inputs": clip_scores(pred, gt, INPUT_POS),
            "new": clip_scores(pred, gt, NEW_POS)}


def evaluate(data, weights=None, out=None, device="cpu", limit=None, model=None, log=None, progress=True,
             windows: str = "fast", multiframe: bool = False, ensemble: bool = False) -> dict:
    """Score every clip of ``data`` (any layout of datasets.py); returns the results dict."""
    import torch

    log = log or (lambda m: print(m, file=sys.stderr))
    ds = open_dataset(data, list_file=None) if not hasattr(data, "clip") else data
    if model is None:
        from ..net.weights import default_weights_path, load_model

        model = load_model(weights)
        weights = weights or default_weights_path()
    model = model.to(device).eval()
    n = len(ds) if limit is None else min(limit, len(ds))
    methods = ["baseline", "base", "mstt"] if getattr(model, "skip", False) else ["baseline", "mstt"]
    rows, fig_data = [], None
    it = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="eval", unit="clip", file=sys.stderr)
    t0 = time.monotonic()
    for i in it:
        c = ds.clip(i)
        preds = {"baseline": baseline(c.lr)}
        preds["mstt"], base = run_model(model, c.lr, device, windows, ensemble)
        if base is not None:
            preds["base"] = base
        rows.append({"clip": c.name, **{m: score(preds[m], c.hr) for m in methods}})
        if fig_data is None:
            fig_data = (c.name, c.hr, preds)
    seconds = time.monotonic() - t0
    mean = {m: {part: {k: float(np.mean([r[m][part][k] for r in rows])) for k in KEYS}
                for part in ("all", "inputs", "new")} for m in methods}
    result = {"data": str(getattr(ds, "root", data)), "weights": str(weights) if weights else None,
              "clips": n, "methods": methods, "windows": windows, "ensemble": ensemble, "per_clip": rows, "mean": mean, "seconds": round(seconds, 1),
              "torch_threads": torch.get_num_threads()}
    if multiframe:
        from .multiframe import multiframe_gain

        result["multiframe"] = multiframe_gain(model, ((ds.clip(i).lr, ds.clip(i).hr) for i in range(n)))
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(result, indent=1))
        (out / "eval.md").write_text(markdown(result))
        if fig_data is not None:
            crops_figure(*fig_data, out / "eval_crops.png")
        log(f"wrote {out / 'eval.md'}, {out / 'eval.json'}, {out / 'eval_crops.png'}")
    return result


LABELS = {"baseline": "bicubic + linear blend", "base": "flow base (untrained part)", "mstt": "MSTT"}


def markdown(res: dict) -> str:
    m = res["methods"]
    lines = [f"Data: `{res['data']}` ({res['clips']} clips); weights: `{res['weights']}`.",
             "PSNR (dB) / SSIM, full frame, mean over each clip's frames then over clips.", "",
             "| frames | method | PSNR RGB | SSIM RGB | PSNR Y | SSIM Y |", "|---|---|---|---|---|---|"]
    for part, name in (("all", "all 7"), ("inputs", "1,3,5,7 (input times)"), ("new", "2,4,6 (new)")):
        for meth in m:
            s = res["mean"][meth][part]
            lines.append(f"| {name} | {LABELS[meth]} | {s['psnr_rgb']:.2f} | {s['ssim_rgb']:.4f} | "
                         f"{s['psnr_y']:.2f} | {s['ssim_y']:.4f} |")
    gain = res["mean"]["mstt"]["all"]["psnr_rgb"] - res["mean"]["baseline"]["all"]["psnr_rgb"]
    lines += ["", f"MSTT - baseline (all frames, RGB): {gain:+.2f} dB"]
    if "multiframe" in res:
        mf = res["multiframe"]
        lines += ["", "Multi-frame gain (input times, PSNR RGB): real neighbours "
                  f"{mf['psnr']['real']:.3f} dB; neighbours replaced by copies of the frame "
                  f"{mf['psnr']['copies']:.3f} dB ({mf['gain']['copies']:+.3f}), by the frame warped to their "
                  f"times {mf['psnr']['warped']:.3f} dB ({mf['gain']['warped']:+.3f})"]
    lines += ["", "Per clip (all 7 frames, PSNR RGB / Y):", "",
              "| clip | " + " | ".join(LABELS[x] for x in m) + " |", "|---|" + "---|" * len(m)]
    for r in res["per_clip"]:
        lines.append(f"| {r['clip']} | " + " | ".join(f"{r[x]['all']['psnr_rgb']:.2f} / {r[x]['all']['psnr_y']:.2f}"
                                                    for x in m) + " |")
    return "\n".join(lines) + "\n"


def crops_figure(name: str, gt: np.ndarray, preds: dict, path, size: int = 96) -> Path:
    """GT | baseline | MSTT, for frame 3 (an input time) and frame 4 (a new frame), 2x enlarged.

    The crop is where the baseline errs most on the new frame (moving objects), so the figure
    shows what the time axis asks of a method.
    """
    h, w = gt.shape[1:3]
    size = min(size, h, w)
    err = np.abs(preds["baseline"][3].astype(np.float32) - gt[3]).mean(-1)
    k = size // 4
    small = err[: h - h % k, : w - w % k].reshape(h // k, k, w // k, k).mean((1, 3))
    cy, cx = np.unravel_index(int(np.argmax(small)), small.shape)
    y = int(np.clip(cy * k + k // 2 - size // 2, 0, h - size))
    x = int(np.clip(cx * k + k // 2 - size // 2, 0, w - size))
    cols = [("ground truth", gt), ("bicubic + blend", preds["baseline"]), ("MSTT", preds["mstt"])]
    z, pad, top = 2, 4, 16
    cw = size * z
    fig = Image.new("RGB", (len(cols) * (cw + pad) + pad + 70, 2 * (cw + pad + top) + pad), "white")
    d = ImageDraw.Draw(fig)
    for r, (t, label) in enumerate(((2, "frame 3\n(input)"), (3, "frame 4\n(new)"))):
        oy = pad + r * (cw + pad + top)
        d.text((4, oy + top + cw // 2 - 10), label, fill="black")
        for j, (title, frames) in enumerate(cols):
            ox = 70 + pad + j * (cw + pad)
            crop = Image.fromarray(frames[t][y:y + size, x:x + size]).resize((cw, cw), Image.NEAREST)
            fig.paste(crop, (ox, oy + top))
            d.text((ox, oy + 2), title, fill="black")
    fig.save(path)
    return Path(path)


# -- CLI ----------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, help="held-out clips (septuplet / split / GeoTIFF layout)")
    parser.add_argument("--weights", help="safetensors or upstream .pth (default: the shipped weights)")
    parser.add_argument("--out", help="folder for eval.md, eval.json, eval_crops.png")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--limit", type=int, help="only the first N clips")
    parser.add_argument("--windows", default="fast", choices=WINDOW_MODES,
                        help="window plan over each clip's inputs, as `mstt-stvsr run --windows` (default fast: "
                             "for 4 inputs the one window of all of them)")
    parser.add_argument("--multiframe", action="store_true",
                        help="also measure the multi-frame gain: input times with real neighbours vs neighbours "
                             "that carry no new information (copies of the frame; the frame warped to their times)")
    parser.add_argument("--ensemble", action="store_true", help="the 8 flips/rotations of each window, averaged")
    parser.add_argument("--quiet", action="store_true")


def main(args) -> int:
    from ..run.device import resolve_device, set_threads

    if args.threads:
        set_threads(args.threads)
    res = evaluate(args.data, args.weights, args.out, resolve_device(args.device), args.limit, progress=not args.quiet,
                   windows=args.windows, multiframe=args.multiframe, ensemble=args.ensemble)
    print(markdown(res))
    return 0

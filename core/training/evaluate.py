"""``mstt-stvsr eval``: PSNR/SSIM of MSTT against "bicubic x4 + linear blend in time".

For each held-out clip of 2N-1 HR frames (7, or more in long clips) the model gets the N odd LR
frames and makes all HR frames; the baseline makes the odd frames by bicubic x4 upsampling (PIL,
the inverse of the degradation) and the even ones as the average of their neighbours' bicubic
frames. Without ``tile`` each clip runs in memory, every window on whole frames (``run.clip``);
with ``tile`` it runs through the real pipeline (``run_stack`` on a GeoTIFF stack in a
temporary folder: tiles, overlap, blending, precision as ``mstt-stvsr run`` does them). Outputs are
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

from ..net.spec import SCALE
from ..run.options import PRECISIONS, WINDOW_MODES
from ..errors import InputError
from .datasets import FrameFoldersDataset, image_files, open_dataset
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
    from .multiframe import to_tensor

    with torch.no_grad():
        out = to_u8(run_clip(model, to_tensor(lr_u8).to(device), windows, ensemble))
    return out, run_base(model, lr_u8, device)


def run_base(model, lr_u8: np.ndarray, device):
    """The network's parameter-free bicubic/flow base for a clip, or None if it has none."""
    import torch

    from ..run.flow import flows_tensor
    from .multiframe import to_tensor

    if not getattr(model, "skip", False):
        return None
    lr = to_tensor(lr_u8).to(device)
    with torch.no_grad():
        return to_u8(model.base(lr, flows_tensor(lr, model.flow_kind)))


def run_pipeline(model, lr_u8: np.ndarray, options) -> np.ndarray:
    """The outputs ``mstt-stvsr run`` writes for these LR frames with ``options``
    (``core.run.options.RunOptions``), read back as (2N-1, H, W, 3) uint8."""
    import tempfile

    import rasterio

    from ..geo.synthetic import write_frames
    from ..run.pipeline import run_stack

    with tempfile.TemporaryDirectory(prefix="mstt_eval_") as tmp:
        inputs = write_frames(Path(tmp) / "in", list(lr_u8))
        paths = run_stack(inputs, Path(tmp) / "out", options, model=model)
        frames = []
        for p in paths:
            with rasterio.open(p) as ds:
                frames.append(ds.read([1, 2, 3]).transpose(1, 2, 0))
    return np.stack(frames)


def score(pred, gt) -> dict:
    """Scores over all frames, the input times (even positions) and the new frames (odd)."""
    t = len(gt)
    return {"all": clip_scores(pred, gt), "inputs": clip_scores(pred, gt, range(0, t, 2)),
            "new": clip_scores(pred, gt, range(1, t, 2))}


def evaluate(data, weights=None, out=None, device="cpu", limit=None, model=None, log=None, progress=True,
             windows: str = "fast", multiframe: bool = False, ensemble: bool = False, tile: int | None = None,
             overlap: int | None = None, precision: str = "fp32", layout: str = "auto",
             crop: int | None = None) -> dict:
    """Score every clip of ``data`` (any layout of datasets.py); returns the results dict.
    ``tile``: run each clip through the pipeline with this tile size (and ``overlap``,
    ``precision``) instead of whole frames in memory. ``data``: a dataset, a folder, or a list
    of folders (see :func:`open_eval_data`)."""
    import torch

    log = log or (lambda m: print(m, file=sys.stderr))
    ds = data if hasattr(data, "clip") else open_eval_data(data, layout, crop)
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
        if tile:
            from ..run.options import RunOptions

            opts = RunOptions(tile_size=tile, overlap=overlap, precision=precision, device=str(device),
                              windows=windows, ensemble=ensemble)
            preds["mstt"], base = run_pipeline(model, c.lr, opts), run_base(model, c.lr, device)
        else:
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
              "clips": n, "methods": methods, "windows": windows, "ensemble": ensemble,
              "crop": crop, "tile": tile, "overlap": overlap, "precision": precision if tile else "fp32", "per_clip": rows,
              "mean": mean, "seconds": round(seconds, 1), "torch_threads": torch.get_num_threads()}
    if multiframe:
        from .multiframe import multiframe_gain

        clips = [ds.clip(i) for i in range(n)]
        result["multiframe"] = multiframe_gain(model, ((c.lr, c.hr) for c in clips), names=[c.name for c in clips])
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(result, indent=1))
        (out / "eval.md").write_text(markdown(result))
        if fig_data is not None:
            crops_figure(*fig_data, out / "eval_crops.png")
        log(f"wrote {out / 'eval.md'}, {out / 'eval.json'}, {out / 'eval_crops.png'}")
    return result


def open_eval_data(data, layout: str = "auto", crop: int | None = None):
    """The clips to score: the held-out layouts of datasets.py, or real video, folders of native
    frames, one clip each (``layout="frames"``; "auto" picks it for several folders, a folder of
    clip folders, or a folder of PNG/JPEG frames). ``crop``: centre crop (real video only)."""
    folders = [Path(d) for d in ([data] if isinstance(data, (str, Path)) else data)]
    if layout == "auto":
        one = folders[0]
        if len(folders) > 1 or not one.is_dir():
            layout = "frames"
        elif any((one / n).is_file() for n in ("sep_trainlist.txt", "sep_testlist.txt")) or (one / "train" / "GT").is_dir():
            layout = "auto"
        elif files := image_files(one):
            layout = "frames" if any(p.suffix.lower() not in (".tif", ".tiff") for p in files) else "auto"
        elif any(d.is_dir() and image_files(d) for d in one.iterdir()):
            layout = "frames"
    if layout == "frames":
        return FrameFoldersDataset(folders, crop)
    if crop:
        raise InputError("--crop applies to real video (folders of native frames) only")
    if len(folders) > 1:
        raise InputError(f"--data takes one folder for the {layout} layout, got {len(folders)}")
    return open_dataset(folders[0], layout, list_file=None)


LABELS = {"baseline": "bicubic + linear blend", "base": "flow base (untrained part)", "mstt": "MSTT"}


def markdown(res: dict) -> str:
    m = res["methods"]
    lines = [f"Data: `{res['data']}` ({res['clips']} clips); weights: `{res['weights']}`.",
             "PSNR (dB) / SSIM, full frame, mean over each clip's frames then over clips.", "",
             "| frames | method | PSNR RGB | SSIM RGB | PSNR Y | SSIM Y |", "|---|---|---|---|---|---|"]
    for part, name in (("all", "all"), ("inputs", "input times (odd frames)"), ("new", "new (even frames)")):
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
        if "per_clip" in mf:
            w = mf["worst"]
            lines += [f"Worst clip: {w['copies']['clip']} {w['copies']['gain']:+.4f} dB against copies, "
                      f"{w['warped']['clip']} {w['warped']['gain']:+.4f} dB against the warped frame", "",
                      "| clip | real neighbours | gain vs copies | gain vs warped |", "|---|---|---|---|"]
            lines += [f"| {r['clip']} | {r['psnr']['real']:.3f} | {r['gain']['copies']:+.4f} | "
                      f"{r['gain']['warped']:+.4f} |" for r in mf["per_clip"]]
    lines += ["", "Per clip (all frames, PSNR RGB / Y):", "",
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
    parser.add_argument("--data", required=True, nargs="+", metavar="FOLDER",
                        help="held-out clips (septuplet / split / GeoTIFF layout), or real video: folders of "
                             "native frames (PNG / JPEG / TIFF), one clip each, or a folder of such folders; "
                             "the LR is their Jilin-189 degradation")
    parser.add_argument("--layout", default="auto", choices=("auto", "frames", "septuplet", "split", "geotiff"),
                        help="how --data is laid out (auto: frames for folders of PNG/JPEG or of clip folders)")
    parser.add_argument("--crop", type=int, help="real video: score a centre crop of this many HR px a side")
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
    parser.add_argument("--tile", type=int, help="run each clip through the pipeline with this tile size (LR px), "
                                                 "as `mstt-stvsr run --tile-size`; default: whole frames in memory")
    parser.add_argument("--overlap", type=int, help="with --tile: tile overlap (LR px; default as `mstt-stvsr run`)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="with --tile: network precision (default fp32, as the in-memory path)")
    parser.add_argument("--quiet", action="store_true")


def main(args) -> int:
    from ..run.allocator import keep_freed_memory
    from ..run.device import resolve_device, set_threads

    keep_freed_memory()  # this process is the evaluation: its forwards reuse their memory
    if args.threads:
        set_threads(args.threads)
    res = evaluate(args.data, args.weights, args.out, resolve_device(args.device), args.limit, progress=not args.quiet,
                   windows=args.windows, multiframe=args.multiframe, ensemble=args.ensemble, tile=args.tile,
                   overlap=args.overlap, precision=args.precision, layout=args.layout, crop=args.crop)
    print(markdown(res))
    return 0

#!/usr/bin/env python3
"""Quality against tile size and overlap: the measurement behind the pipeline's defaults.

A real-looking clip with ground truth (core/training/clips.py: real aerial ground with roads, vehicles and
platform drift, rendered at HR; LR = the Jilin-189 bicubic x4 reduction of every other frame)
is written as a georeferenced stack and run through the real pipeline (run_stack) once untiled
(one tile holds the whole scene) and once per tile size x overlap. For each run:

  psnr        mean PSNR (dB) of all 2N-1 outputs against the HR truth (8-bit)
  d_psnr      psnr - untiled psnr (tiles must stay within 0.1 dB)
  mad         mean |tiled - untiled| (DN; at most 1 expected)
  near / far  that difference within 4 HR px of a seam line / farther than 16 px from any
  step        jump across seam lines in the tiled output / the same in the untiled one
  work        LR pixels the network processed / scene pixels (overlap and margin overhead)
  s           wall time of the run (shared CPU: indicative only)
A "base only" row runs the same network with its last layer zeroed (the parameter-free
bicubic/flow base): its mad is how much the network changes the image at all.

Usage (the shipped weights by default; a random network if they are missing, which measures
only the parameter-free bicubic/flow base):
  .venv/bin/python tools/tile_study.py --lr-size 288 --frames 2 --tiles 80,160,240 --overlaps 0,8,16,32
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT.parent) not in sys.path:
    sys.path.insert(0, str(ROOT.parent))


def make_stack(folder: Path, lr_size: int, frames: int, seed: int):
    """Write the LR inputs as GeoTIFFs; return (paths, HR truth (2N-1, H, W, 3) uint8, clip info)."""
    from affine import Affine

    from mstt_stvsr.core.geo.synthetic import write_frames
    from mstt_stvsr.core.training.clips import make_clip
    from mstt_stvsr.core.training.degrade import downsample
    from mstt_stvsr.core.training.imagery import IMAGERY_DIR

    imagery = IMAGERY_DIR if IMAGERY_DIR.is_dir() else None
    hr, info = make_clip(seed, size=(4 * lr_size, 4 * lr_size), frames=2 * frames - 1, split="test",
                         imagery=imagery, kind="urban")
    paths = write_frames(folder, downsample(hr[0::2]), names="clip_{i:02d}.tif", crs="EPSG:32633",
                         transform=Affine(2.0, 0, 500000, 0, -2.0, 4600000))
    return [str(p) for p in paths], hr, info


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def read_outputs(paths):
    import rasterio

    out = []
    for p in paths:
        with rasterio.open(p) as ds:
            out.append(ds.read())
    return np.stack(out)  # (2N-1, 3, H, W)


def run(paths, out_dir, model, tile, overlap, margin=None):
    from mstt_stvsr.core.run.options import RunOptions
    from mstt_stvsr.core.run.pipeline import run_stack

    t = time.perf_counter()
    out = run_stack(paths, out_dir, RunOptions(tile_size=tile, overlap=overlap, margin=margin, overwrite=True), model=model)
    return read_outputs(out), time.perf_counter() - t


def work_ratio(grid) -> float:
    px = sum(s.size for s in grid.rows) * sum(s.size for s in grid.cols)
    return px / (grid.height * grid.width)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", help="weights file (default: the shipped weights)")
    ap.add_argument("--lr-size", type=int, default=288, help="LR scene side in pixels")
    ap.add_argument("--frames", type=int, default=2, help="input frames N (N-1 windows per tile)")
    ap.add_argument("--tiles", default="80,160,240")
    ap.add_argument("--overlaps", default="0,8,16,32")
    ap.add_argument("--margins", default="auto", help="comma list of reflect margins; auto = overlap/2")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", help="write the table here")
    ap.add_argument("--threads", type=int)
    return ap.parse_args(argv)


def study_model(weights):
    """(model, name): the given or shipped weights, else a random full model."""
    import torch

    from mstt_stvsr.core.net.weights import default_weights_path, load_model

    wpath = Path(weights) if weights else default_weights_path()
    if wpath.exists():
        return load_model(wpath), wpath.name
    from mstt_stvsr.core.net.model import MSTT

    torch.manual_seed(0)
    return MSTT().eval(), "RANDOM (no weights: measures the bicubic/flow base only)"


def psnr_row(out, gt) -> dict:
    return dict(psnr=round(np.mean([psnr(out[i], gt[i]) for i in range(len(gt))]), 3),
                psnr_in=round(np.mean([psnr(out[i], gt[i]) for i in range(0, len(gt), 2)]), 3),
                psnr_new=round(np.mean([psnr(out[i], gt[i]) for i in range(1, len(gt), 2)]), 3))


def reference_rows(paths, tmp, model, gt, info, lr_size) -> tuple:
    """(untiled output, rows): the whole scene as one tile, and the parameter-free base alone
    (how much the network adds to its base: if little, tiling cannot matter much)."""
    import copy

    import torch

    from mstt_stvsr.core.run.device import round_tile
    from mstt_stvsr.core.run.pipeline import make_grid

    whole_tile = round_tile(lr_size)
    whole, secs = run(paths, tmp / "whole", model, whole_tile, 0, 0)
    wgrid = make_grid(info.height, info.width, whole_tile, 0, 0)
    rows = [dict(tile="whole", overlap=0, margin=-wgrid.rows[0].start, tiles=1, work=round(work_ratio(wgrid), 3),
                 s=round(secs, 1), **psnr_row(whole, gt))]
    print(rows[-1], flush=True)
    if getattr(model, "skip", False):
        base_model = copy.deepcopy(model)
        torch.nn.init.zeros_(base_model.conv_last.weight)
        torch.nn.init.zeros_(base_model.conv_last.bias)
        base, secs = run(paths, tmp / "base", base_model, whole_tile, 0, 0)
        rows.append(dict(tile="base only", overlap=0, margin=-wgrid.rows[0].start, tiles=1, s=round(secs, 1),
                         psnr=psnr_row(base, gt)["psnr"], mad=round(float(np.abs(base.astype(np.float64) - whole).mean()), 3)))
        print(rows[-1], "(mad: the network's contribution over its bicubic/flow base)", flush=True)
    return whole, rows


def tiled_rows(args, paths, tmp, model, gt, info, whole, base_psnr) -> list:
    """One row per tile size x overlap x margin that splits the scene."""
    from mstt_stvsr.core.run.pipeline import make_grid
    from mstt_stvsr.core.run.tiling import seam_stats

    rows = []
    margins = [None if m == "auto" else int(m) for m in args.margins.split(",")]
    for tile in [int(t) for t in args.tiles.split(",")]:
        for ov in [int(o) for o in args.overlaps.split(",")]:
            for margin in margins:
                grid = make_grid(info.height, info.width, tile, ov, margin)
                if ov * 2 > tile or len(grid) == 1:
                    continue
                out, secs = run(paths, tmp / "tiled", model, tile, ov, margin)
                st = seam_stats(out, whole, *grid.seam_lines())
                scores = psnr_row(out, gt)
                rows.append(dict(
                    tile=tile, overlap=ov, margin=grid.margin, tiles=f"{len(grid.rows)}x{len(grid.cols)}",
                    work=round(work_ratio(grid), 3), s=round(secs, 1), psnr=scores["psnr"],
                    d_psnr=round(scores["psnr"] - base_psnr, 3), psnr_in=scores["psnr_in"], psnr_new=scores["psnr_new"],
                    mad=round(st["mad"], 3), near=round(st["near"], 3), far=round(st["far"], 3), step=round(st["step"], 3)))
                print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    import shutil

    from mstt_stvsr.core.geo.stack import read_stack_info
    from mstt_stvsr.core.run.device import set_threads

    args = parse_args(argv)
    set_threads(args.threads)
    model, wname = study_model(args.weights)
    tmp = Path(tempfile.mkdtemp(prefix="tile_study_"))
    paths, hr, clip_info = make_stack(tmp / "in", args.lr_size, args.frames, args.seed)
    gt = hr.transpose(0, 3, 1, 2)
    info = read_stack_info(paths)
    print(f"weights: {wname}\nscene: {args.lr_size}x{args.lr_size} LR, N={args.frames}, clip {clip_info}", flush=True)
    whole, rows = reference_rows(paths, tmp, model, gt, info, args.lr_size)
    rows += tiled_rows(args, paths, tmp, model, gt, info, whole, rows[0]["psnr"])
    keys = ["tile", "overlap", "margin", "tiles", "work", "s", "psnr", "d_psnr", "psnr_in", "psnr_new", "mad", "near", "far", "step"]
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(weights=wname, lr_size=args.lr_size, frames=args.frames,
                                                   clip=clip_info, rows=rows), indent=1))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Peak memory of run_stack against scene size and tile size.

Each measurement runs in a fresh process (so peaks do not mix) on a synthetic georeferenced
stack of N frames (uint8 RGB, drifting texture, DEFLATE tiled GeoTIFFs) and reports the
process's peak RSS, its RSS before the run (Python + torch + network loaded), and the time.
The network is the tiny test configuration by default, because the point is the pipeline's
memory (windowed reads, streaming blend, flows on disk) and the full network on a 2-core CPU
would take hours for 4096 x 4096; ``--full`` uses the full-size untrained network instead
(same memory as trained weights). Expect: flat in scene size at a fixed tile, growing with tile.

  .venv/bin/python tools/memory_study.py --sizes 256,512 --tiles 80,160 --frames 4
  .venv/bin/python tools/memory_study.py --sizes 1024,4096 --tiles 160 --partial
"""
from __future__ import annotations

import argparse
import json
import shutil
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT.parent) not in sys.path:
    sys.path.insert(0, str(ROOT.parent))


def write_stack(folder: Path, size: int, frames: int) -> list:
    """Cheap uint8 texture with sub-pixel drift, one frame in memory at a time and written in
    row strips (core.geo.synthetic). Sizes up to 4096 stay well under a few hundred MB here."""
    import cv2
    import numpy as np
    from affine import Affine

    from mstt_stvsr.core.geo.synthetic import write_frames

    rng = np.random.default_rng(0)
    small = (rng.random((size // 8 + 4, size // 8 + 4, 3)) * 255).astype(np.uint8)
    base = cv2.resize(small, (size + 32, size + 32), interpolation=cv2.INTER_CUBIC)
    base = cv2.add(base, (rng.random((size + 32, size + 32, 3)) * 40).astype(np.uint8))

    def drifting():
        for t in range(frames):
            m = np.float32([[1, 0, 16 + 0.7 * t], [0, 1, 16 - 0.4 * t]])
            yield cv2.warpAffine(base, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)

    paths = write_frames(folder, drifting(), names="f_{i:02d}.tif", crs="EPSG:32633",
                         transform=Affine(1.0, 0, 400000, 0, -1.0, 5000000), compress=True, block=256)
    return [str(p) for p in paths]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(args) -> int:
    import torch

    from mstt_stvsr.core.errors import Canceled
    from mstt_stvsr.core.geo.stack import read_stack_info
    from mstt_stvsr.core.net.model import MSTT
    from mstt_stvsr.core.run.options import RunOptions
    from mstt_stvsr.core.run.pipeline import Hooks, make_grid, run_stack

    torch.manual_seed(0)
    model = MSTT() if args.full else MSTT(nf=8, groups=2, front_RBs=1, back_RBs=1)
    model.eval()
    paths = sorted(str(p) for p in Path(args.stack).glob("f_*.tif"))
    grid = make_grid(*read_stack_info(paths).shape, args.tile, args.overlap)
    # --partial: stop after the first tile row and two tiles of the second. By then the flows of
    # all pairs exist, the blend strip spans the whole width and a tile is in flight: every
    # term of the peak is present, and later tiles repeat the same pattern.
    limit = len(grid.cols) + 2 if args.partial and len(grid.rows) > 1 else None
    tiles = [0]

    def progress(frac, msg):
        if msg.startswith("window"):
            tiles[0] += 1

    before = rss_mb()
    t = time.perf_counter()
    try:
        out = run_stack(paths, args.out, RunOptions(tile_size=args.tile, overlap=args.overlap, overwrite=True), model=model, hooks=Hooks(progress=progress, is_canceled=lambda: limit is not None and tiles[0] > limit))
        out_mb = round(sum(Path(p).stat().st_size for p in out) / 2 ** 20, 1)
        done = "all"
    except Canceled:
        out, out_mb, done = [], None, f"{limit} of {len(grid)} tiles of window 1"
    secs = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(rss_before_mb=round(before), peak_rss_mb=round(peak), seconds=round(secs, 1),
                          tiles=f"{len(grid.rows)}x{len(grid.cols)}", processed=done, outputs=len(out), output_mb=out_mb)))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256,512,1024", help="LR scene sides")
    ap.add_argument("--tiles", default="160")
    ap.add_argument("--overlap", type=int, default=16)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--full", action="store_true", help="full-size network (slow)")
    ap.add_argument("--partial", action="store_true",
                    help="stop each run after the first tile row + 2 tiles (all peak terms present; for big scenes)")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--stack", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--tile", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)

    rows = []
    with tempfile.TemporaryDirectory(prefix="memory_study_") as tmp:
        for size in [int(s) for s in args.sizes.split(",")]:
            stack = Path(tmp) / f"stack{size}"
            write_stack(stack, size, args.frames)
            for tile in [int(t) for t in args.tiles.split(",")]:
                cmd = [sys.executable, __file__, "--child", "--stack", str(stack), "--out", str(Path(tmp) / "out"),
                       "--tile", str(tile), "--overlap", str(args.overlap)] + (["--full"] if args.full else []) + (
                    ["--partial"] if args.partial else [])
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    print(r.stderr[-2000:], file=sys.stderr)
                    return 1
                row = dict(size=size, tile=tile, overlap=args.overlap, frames=args.frames,
                           network="full" if args.full else "tiny", **json.loads(r.stdout.strip().splitlines()[-1]))
                rows.append(row)
                print(row, flush=True)
                shutil.rmtree(Path(tmp) / "out", ignore_errors=True)
            shutil.rmtree(stack, ignore_errors=True)
    keys = ["size", "tile", "frames", "network", "tiles", "processed", "rss_before_mb", "peak_rss_mb", "seconds", "output_mb"]
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

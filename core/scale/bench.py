"""Cluster benchmark (not a test): one process against ``local:N`` on the same synthetic stack.

``python -m mstt_stvsr.core.scale.bench [--size 512] [--frames 6] [--workers 2] [--weights W]``
prints the wall time of each, the speed-up, the largest difference between their frames, and
the task overhead: the share of the workers' wall time not spent inside a task (scheduling,
transfers, idle workers waiting on dependencies), and the extra network tiles that blocks
compute because each one also runs the tiles that touch it.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mstt_stvsr.core.scale.bench")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tile-size", type=int, default=None)
    p.add_argument("--block-tiles", type=int, default=None)
    p.add_argument("--weights", default=None)
    args = p.parse_args(argv)

    from ..bench.synthetic import write_synthetic_stack
    from ..run.options import RunOptions
    from ..run.pipeline import run_stack
    from . import run as cluster_run
    from . import tasks
    from .cluster import connect

    options = RunOptions(weights=args.weights, tile_size=args.tile_size, device="cpu")
    block = args.block_tiles or cluster_run.BLOCK_TILES
    with tempfile.TemporaryDirectory(prefix="mstt-cluster-bench-") as tmp:
        paths = write_synthetic_stack(Path(tmp) / "in", args.size, args.frames)
        t0 = time.perf_counter()
        single = run_stack(paths, Path(tmp) / "single", options)
        t_single = time.perf_counter() - t0
        with connect(f"local:{args.workers}") as client:
            from distributed import get_task_stream

            t0 = time.perf_counter()
            with get_task_stream(client) as stream:
                ours = cluster_run.run_stack_cluster(paths, Path(tmp) / "cluster", options, client, block_tiles=block)
            t_cluster = time.perf_counter() - t0
            busy = sum(s["stop"] - s["start"] for t in stream.data for s in t["startstops"] if s["action"] == "compute")
        worst = max(float(np.abs(rasterio.open(a).read().astype(int) - rasterio.open(b).read().astype(int)).max())
                    for a, b in zip(single, ours))
        spec_grid = grid_of(paths[0], options)
        regions = tasks.block_regions(spec_grid, block)
        computed = sum(len(tasks.touching(spec_grid, r)) for r in regions)
    print(f"stack: {args.frames} frames of {args.size} x {args.size}; tiles {len(spec_grid.rows)}x{len(spec_grid.cols)} "
          f"of {spec_grid.tile} px, {len(regions)} block(s) of up to {block}x{block} tiles")
    print(f"one process: {t_single:.1f} s; local:{args.workers}: {t_cluster:.1f} s; "
          f"speed-up {t_single / t_cluster:.2f}x; max difference {worst:.0f} DN")
    print(f"task overhead: {100 * (1 - busy / (t_cluster * args.workers)):.0f}% of the workers' wall time outside tasks; "
          f"blocks compute {computed} tiles per window for {len(spec_grid)} ({100 * (computed / len(spec_grid) - 1):.0f}% extra)")
    return 0


def grid_of(path, options):
    """The tile grid a run of ``options`` uses for this scene (CPU tile default)."""
    from ..run.pipeline import cpu_run_tile, make_grid

    overlap = options.overlap_px
    with rasterio.open(path) as ds:
        h, w = ds.height, ds.width
    tile = cpu_run_tile(h, w, options)
    return make_grid(h, w, tile, overlap, options.margin)


if __name__ == "__main__":
    raise SystemExit(main())

"""End to end: ``pipeline.run_stack`` on a synthetic 4-frame stack, timed by stage, with peak
host and GPU memory, and its network time set against the untiled throughput at the same tile
and precision. The analytic part of that overhead comes from tile overlap (tile area against
scene area) and from the time windows (4 frames give 3 windows, each reconstructing only the
outputs it owns; counted in FLOPs)."""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..net.spec import N_IN, SCALE
from ..run import cost, device
from ..run.options import RunOptions
from ..run.progress import STAGES
from .config import BenchConfig
from .flops import window_flop_plan
from .memory import reset_peak_rss, rss_bytes
from .synthetic import write_synthetic_stack
from .throughput import Meter, find_row

# busy seconds per stage (pipeline's progress.Clock): the reader thread reads and crops flows,
# the writer blends and writes, beside the network; wait_* is the network thread idling for them
# pipeline log lines worth keeping in the report: the tiling it chose and any out-of-memory retry
PIPELINE_LOG_KEPT = ("tiles:", "out of")
# a real run of the stack must take within this of the bench's figure for the row to stand
REAL_RUN_AGREEMENT = 0.15
REAL_RUN_DONE = re.compile(r"^wrote \d+ frames to .* in ([0-9.]+) s$", re.M)  # pipeline.run_stack's last line


def run_e2e(cfg: BenchConfig, meter: Meter, rows: list, log) -> dict:
    """The end-to-end result (see ``report.format_report``). When ``rows`` lacks the untiled
    reference (this tile and precision, batch 1), it is measured now and appended to ``rows``
    marked ``extra``."""
    from ..run.pipeline import make_grid

    dtype = device.resolve_precision(cfg.e2e_precision, meter.dev)
    precision = device.precision_name(dtype)
    overlap = RunOptions(overlap=cfg.overlap).overlap_px
    size = int(cfg.scene)
    # the tile a run of this scene would pick (on CUDA the largest that fits: its own untiled reference)
    tile = (device.round_tile(cfg.e2e_tile) if cfg.e2e_tile
            else cost.cpu_tile(size, size, overlap, None, precision) if meter.dev.type != "cuda"
            else device.default_tile_size(meter.dev, dtype, meter.model))
    res = {"scene": size, "frames": N_IN, "tile": tile, "overlap": overlap, "precision": precision}

    ref = find_row(rows, precision, tile, 1)
    if ref is None:
        log(f"  reference: {precision} tile {tile} batch 1")
        ref = dict(meter.measure(precision, dtype, tile, 1), extra=True)
        rows.append(ref)

    grid = make_grid(size, size, tile, overlap)
    res["grid"] = {"tiles": len(grid), "rows": len(grid.rows), "cols": len(grid.cols),
                   "area_factor": sum(r.size for r in grid.rows) * sum(c.size for c in grid.cols) / size ** 2}
    plan = window_flop_plan(meter.model, tile, N_IN, RunOptions().windows)
    res["windows"] = plan
    if ref.get("status") == "ok":
        est = len(grid) * plan["window_factor"] * ref["seconds"]
        log(f"  {len(grid)} tiles of {tile} x {plan['windows']} time windows: network time estimated "
            f"at {est / 60:.1f} min")

    options = RunOptions(tile_size=tile, overlap=overlap, device=str(meter.dev), precision=precision,
                         overwrite=True, threads=cfg.threads, tiles_per_forward=cfg.e2e_batch)
    res.update(timed_run(options, size, meter.model, meter.dev, cfg.workdir, real_run=cfg.e2e_check))
    if ref.get("status") == "ok":
        res.update(overheads(res, ref))
    return res


def timed_run(options: RunOptions, size: int, model, dev: torch.device, workdir=None, frames: int = N_IN,
              real_run: bool = False) -> dict:
    """Write a ``size`` x ``size`` synthetic stack in a temporary folder under ``workdir``, run
    the pipeline on it with ``options``, and remove both; seconds per stage, memory, outputs.
    ``real_run``: then also through the command line in a fresh process (see ``real_run_check``)."""
    # imported here: the pipeline needs rasterio, which the network throughput does not (a lent
    # GPU machine may lack it)
    from ..run.pipeline import Hooks, run_stack

    res = {}
    with tempfile.TemporaryDirectory(prefix="mstt-bench-", dir=workdir) as tmp:
        t0 = time.perf_counter()
        paths = write_synthetic_stack(Path(tmp) / "in", size, frames)
        res["synth_seconds"] = time.perf_counter() - t0
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        rss_before = rss_bytes("VmRSS")
        res["rss_peak_reset"] = reset_peak_rss()
        logs, timings = [], {}
        t0 = time.perf_counter()
        out = run_stack(paths, Path(tmp) / "out", options, model=model, hooks=Hooks(timings=timings, log=logs.append))
        wall = time.perf_counter() - t0
        stages = {s: float(timings.get(s, 0.0)) for s in STAGES}
        res["pipeline_log"] = [line for line in logs if line.startswith(PIPELINE_LOG_KEPT)]
        res["outputs"] = len(out)
        res["out_bytes"] = sum(Path(p).stat().st_size for p in out)
        if real_run:
            res["real_run"] = real_run_check(paths, Path(tmp), options, model, wall)
    res["rss_before_mb"] = (rss_before or 0) / 2 ** 20
    res["rss_peak_mb"] = (rss_bytes("VmHWM") or 0) / 2 ** 20
    res["rss_peak_scope"] = "this run" if res["rss_peak_reset"] else "whole process (peak could not be reset)"
    if dev.type == "cuda":
        res["gpu_peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 20
    out_mp = len(out) * (SCALE * size) ** 2 / 1e6
    # everything the network thread did not spend in the network: scene flow, waits, commit...
    res["not_model_seconds"] = max(0.0, wall - stages["model"])
    res.update(wall_seconds=wall, stages=stages, out_mp=out_mp, mp_per_s=out_mp / wall)
    return res


def real_run_check(paths, tmp: Path, options: RunOptions, model, bench_seconds: float) -> dict:
    """The stack through ``python -m mstt_stvsr.core run`` in a fresh process, with the same
    weights (saved from ``model``), tile, overlap, precision, threads and window plan: what a
    user's run of it costs. Compared is the time the run reports for itself (weights loaded
    and the work, no interpreter start) against ``bench_seconds``; beyond
    ``REAL_RUN_AGREEMENT`` the bench's row does not describe a real run and is marked so."""
    from ..net.weights import save_weights

    weights = save_weights(model, tmp / "weights.safetensors")
    opts = ["--tile-size", str(options.tile_size), "--overlap", str(options.overlap), "--device", torch.device(options.device).type,
            "--precision", options.precision, "--windows", options.windows]
    for flag, value in (("--threads", options.threads), ("--tiles-per-forward", options.tiles_per_forward)):
        if value:
            opts += [flag, str(value)]
    cmd = [sys.executable, "-m", "mstt_stvsr.core", "run", *map(str, paths), "-o", str(tmp / "real_run"),
           "--weights", str(weights), *opts]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    out = {"command": "mstt-stvsr run FRAMES -o OUT --weights W " + " ".join(opts),
           "process_seconds": time.perf_counter() - t0,
           "bench_seconds": bench_seconds, "tolerance": REAL_RUN_AGREEMENT}
    done = REAL_RUN_DONE.search(proc.stderr)
    if proc.returncode or done is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        out["unreliable"] = [f"the real run of this stack failed (exit {proc.returncode}): {tail}"]
        return out
    out["seconds"] = float(done.group(1))
    out["difference"] = out["seconds"] / bench_seconds - 1
    if abs(out["difference"]) > REAL_RUN_AGREEMENT:
        out["unreliable"] = [f"a real `mstt-stvsr run` of this stack took {out['seconds']:.1f} s, "
                             f"{100 * out['difference']:+.0f} % from the bench's {bench_seconds:.1f} s "
                             f"(tolerance {100 * REAL_RUN_AGREEMENT:.0f} %)"]
    return out


def overheads(res: dict, ref: dict) -> dict:
    """The run's network and wall time against the scene's outputs made at the untiled
    throughput of ``ref`` (one 7-output forward), split into tiling and time windows."""
    ideal = res["out_mp"] / ref["mp_per_s"]
    model, factor = res["stages"]["model"], res["windows"]["window_factor"]
    return {"model_ideal_seconds": ideal,
            "network_overhead": model / ideal - 1,  # tiles and time windows together
            "window_overhead_flops": factor - 1,
            "tiled_overhead": model / (ideal * factor) - 1,
            "tiled_overhead_expected": res["grid"]["area_factor"] - 1,
            "end_to_end_overhead": res["wall_seconds"] / ideal - 1}

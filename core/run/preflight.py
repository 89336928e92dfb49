"""Checks and estimates made before any work: the outputs this run may write (never an input),
whether they can fit on the disk, whether the overlap fits the tile, and how much work the run
is. A run that cannot succeed is refused while that costs nothing."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError, StorageError
from ..geo.outputs import OutputSet, output_names, output_prefix
from ..geo.stack import StackInfo
from ..geo.verify import free_bytes
from .cost import window_flops
from .options import RunOptions
from .scene_flow import FlowStore

# DEFLATE shrinks super-resolved imagery about 1.5-3x (the added detail is smooth). A run is
# refused only when the outputs would not fit even at this ratio, and warned about when they
# would not fit uncompressed.
BEST_RATIO = 4
# Network throughput per CPU thread (TFLOP/s), measured by `make bench` with 160-px tiles on a
# 2-vCPU Xeon with AMX (README, Performance): a rough guide to the run time on other CPUs.
CPU_TFLOPS_PER_THREAD = {"fp32": 0.085, "bf16": 0.115}


def output_set(info: StackInfo, out_dir, options: RunOptions) -> OutputSet:
    """The run's outputs; every file the frames are read from is an input they must not replace."""
    return OutputSet(out_dir, output_names(info, options.prefix), options.overwrite,
                     prefix=output_prefix(info, options.prefix), inputs=[*info.paths, *info.files],
                     resume=options.resume)


def open_run(inputs, out_dir, options: RunOptions, model=None) -> tuple:
    """What every run (one process or a cluster) checks before any work: the options, the
    stack, that its outputs may be written, and the weights (loaded unless ``model`` is given,
    so that a bad file fails here). Returns (info, outs, model, weights path or None)."""
    from ..geo.stack import read_stack_info
    from ..net.weights import default_weights_path, load_model

    options.check()
    info = read_stack_info(inputs, times=options.times)
    outs = output_set(info, out_dir, options)
    outs.check_existing()
    weights = None
    if model is None:
        model = load_model(options.weights)
        weights = options.weights or default_weights_path()
    return info, outs, model, weights


def check_overlap(overlap, tile, chosen: bool = False) -> None:
    """An overlap of half a tile or more leaves no tile its own pixels: refused whether the
    tile was given or chosen for the device."""
    if overlap is None or not tile or 2 * int(overlap) < tile:
        return
    how = ", chosen for this device; give a larger --tile-size or" if chosen else "; give"
    raise InputError(f"overlap {overlap} must be less than half the tile size ({tile}{how} a smaller --overlap)")


def _mb(n: float) -> str:
    for unit, size in (("GB", 2 ** 30), ("MB", 2 ** 20), ("KB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} bytes"


def flow_bytes(info: StackInfo, n_groups: int) -> int:
    """The flows of a run: float32 (4, H, W) per frame pair and band group."""
    return n_groups * (info.n_frames - 1) * 4 * info.height * info.width * 4


def flows_on_disk(info: StackInfo, n_groups: int) -> int:
    """The bytes of work files a run in one process writes besides the frames: its flows,
    where they are too large to keep in memory."""
    flows = flow_bytes(info, n_groups)
    return flows if flows > FlowStore.IN_MEMORY_BYTES else 0


def check_space(info: StackInfo, out_dir, cog: bool, work: int = 0) -> list:
    """Refuse (StorageError) when the outputs and ``work`` bytes of uncompressed work files
    (flows, a cluster's parts) cannot fit in the free space even with well compressed
    outputs; return the estimate as log lines (a note when they may not fit)."""
    frame = info.out_width * info.out_height * info.count * np.dtype(info.dtype).itemsize
    total = frame * info.n_outputs
    extra = work + (frame if cog else 0)  # a COG is copied from the frame: one extra at a time
    low, high = total / BEST_RATIO + extra, total + extra
    folder = Path(out_dir)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = free_bytes(folder)
    size = f"{info.n_outputs} frames, about {_mb(total / BEST_RATIO)} to {_mb(total)}" + \
        (f", and {_mb(work)} of work files" if work else "")
    if free is None:
        return [f"outputs: {size}"]
    if free < low:
        raise StorageError(f"not enough free space in {folder} for the outputs ({size}, at least {_mb(low)} "
                           f"with the run's work files): {_mb(free)} free; no output was written")
    lines = [f"outputs: {size}; {_mb(free)} free in {folder}"]
    if free < high:
        lines.append(f"note: the outputs may not fit in the {_mb(free)} free in {folder} (up to {_mb(high)}); "
                     "if the disk fills, the run stops and removes what it wrote")
    return lines


def work_estimate(n_windows: int, grid, n_groups: int, nf: int, dev, precision: str, threads: int) -> str:
    """The network calls and FLOPs ahead, and on a CPU a rough time from measured throughput."""
    calls = n_windows * len(grid) * n_groups
    flops = n_windows * n_groups * sum(window_flops(r.size, c.size, nf) for r in grid.rows for c in grid.cols)
    line = f"work: {calls} network call(s), about {flops / 1e12:.3g} TFLOP"
    rate = CPU_TFLOPS_PER_THREAD.get(precision) if dev.type == "cpu" else None
    if rate:
        seconds = flops / (rate * 1e12 * max(1, threads))
        line += f"; the network alone roughly {_duration(seconds)} on {threads} CPU thread(s)"
    return line


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"

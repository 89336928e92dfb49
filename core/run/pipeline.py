"""The product's main job: a stack of N georeferenced frames in, 2N-1 frames out, 4x finer.

Order of work, and why:
1. Validate everything (frames, times, options, existing outputs, weights, output folder)
   before any work, so that a mistake costs nothing and leaves nothing behind.
2. Optical flow once per consecutive frame pair (and band group) for the whole LR scene, in a
   background thread in time order (``scene_flow``); each window waits only for its own pairs.
3. For each time window (``windows.plan_windows``), for each tile in raster order: read the
   window's 4 frames for the tile (reflected at scene borders), run the network once per band
   group, and hand the outputs the window owns to a ``StreamBlender`` that writes finished HR
   blocks into that window's output GeoTIFFs. Windows outer, tiles inner: only the 1-3 files of
   one window are open. A reader thread prepares the next tiles and a writer thread blends and
   writes (``threads``), and several tiles can share one forward (GPU).
4. Outputs live under temporary names until everything succeeded, then are renamed together;
   any error or cancel removes them.

Memory therefore follows the tile size, not the scene (tools/memory_study.py, full network,
4 frames, peak RSS of the whole process: tile 160: 1.35 GB at 1024 x 1024 input pixels,
1.43 GB at 4096 x 4096; at 1024 x 1024: 0.76 GB with tile 80, 2.29 GB with tile 240).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import rasterio
import torch

from ..errors import MsttError
from ..geo.outputs import OutputSet
from ..geo.read import StackReaders, fill_invalid, read_block
from ..geo.stack import StackInfo, read_stack_info
from ..geo.times import output_sources, output_times
from ..geo.values import ValueScaler, value_scaler
from ..geo.write import block_writer, create_output, frame_tags, output_profile, source_extras, write_frame_metadata
from ..net.spec import MULTIPLE, SCALE
from ..net.weights import load_model
from . import compile as compiling
from . import cost, device, lifecycle, preflight, resume
from .ensemble import ensemble_forward
from .finish import commit, run_record
from .options import RunOptions
from .progress import Clock, Progress
from .scene_flow import FLOW_COST, FlowStore, FlowWorker, tile_flows
from .threads import AsyncWriter, HostStager, batches, prefetch, to_host
from .tiling import StreamBlender, TileGrid, read_reflected
from .windows import Window, plan_windows


@dataclass
class Hooks:
    """How a run reports: ``progress(fraction, message)``, ``is_canceled()``, ``log(line)``,
    ``timings``, a dict that receives seconds per stage (see ``progress.Clock``), and
    ``critical``, a context manager factory the final renames run inside (the CLI's signal
    handler makes a signal wait until they are done)."""

    progress: object = None
    is_canceled: object = None
    log: object = None
    timings: dict | None = None
    critical: object = None

    def say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)


@dataclass
class Job:
    """Everything one run decided before its first window: the stack, the network on its
    device, the tiling and the time windows; ``run_windows`` works through it."""

    info: StackInfo
    outs: OutputSet
    net: torch.nn.Module
    dev: torch.device
    dtype: torch.dtype
    tile: int
    overlap: int
    margin: int | None
    per_forward: int
    scaler: ValueScaler
    groups: list
    plan: list
    tracker: Progress
    clock: Clock
    stager: HostStager
    flows: FlowStore | None = None
    compiled: list = field(default_factory=list)  # names of the stages torch.compile wrapped
    flow_worker: FlowWorker | None = None
    windows: str = "central"
    ensemble: bool = False
    parts: resume.Parts | None = None  # the record of finished windows, for --resume
    finished: set = field(default_factory=set)  # windows whose frames are finished (reused or made)

    def grid(self) -> TileGrid:
        return make_grid(self.info.height, self.info.width, self.tile, self.overlap, self.margin)

    def total_units(self, flows_done: int = 0) -> tuple:
        """(done, total) progress units: flows of every pair, one network call per tile."""
        flow_units, window_units = FLOW_COST * len(self.groups), len(self.grid()) * len(self.groups)
        total = flow_units * (self.info.n_frames - 1) + len(self.plan) * window_units
        return flow_units * flows_done + len(self.finished) * window_units, total


# -- validation ------------------------------------------------------------------------------
def validate_stack(inputs, options: RunOptions = RunOptions(), out_dir=None, check_weights: bool = False) -> StackInfo:
    """Check a stack without doing any work; raise InputError / WeightsError naming the file.

    Returns a ``StackInfo`` (``.summary()`` for people, ``.as_dict()`` for programs). With
    ``out_dir``, also checks that no output would be overwritten (unless ``options.overwrite``)
    and lists the output names in ``info.outputs``; with ``options.weights`` or
    ``check_weights``, loads the weights (None = the shipped default)."""
    options.check()
    info = read_stack_info(inputs, times=options.times)
    if out_dir is not None:
        outs = preflight.output_set(info, out_dir, options)
        outs.check_existing()
        info.outputs = [str(p) for p in outs.final]
    if options.weights is not None or check_weights:
        load_model(options.weights)
    return info


def band_groups(n: int) -> list:
    """Positions of colour bands fed to the 3-channel network: (0,1,2), (3,4,5), ... with the
    last group padded by repeating its last band (a grey image, which the network handles)."""
    groups = []
    for s in range(0, n, 3):
        g = list(range(s, min(s + 3, n)))
        groups.append(tuple(g + [g[-1]] * (3 - len(g))))
    return groups


def make_grid(height: int, width: int, tile: int, overlap: int, margin: int | None = None) -> TileGrid:
    """The tile grid of a ``height`` x ``width`` LR scene: overlap capped at half a tile, margin
    half the overlap unless given, tiles in the network's 80-px unit."""
    ov = min(int(overlap), tile // 2)
    m = ov // 2 if margin is None else int(margin)
    return TileGrid(height, width, tile, ov, m, SCALE, multiple=MULTIPLE)


# -- the run ---------------------------------------------------------------------------------
def run_stack(inputs, out_dir, options: RunOptions = RunOptions(), *, model=None, hooks: Hooks | None = None) -> list:
    """Super-resolve a stack in space (x4) and time (2N-1 frames); return output paths in time
    order. ``model``: an MSTT to use instead of ``options.weights``. Raises InputError,
    WeightsError, StorageError or Canceled, and then leaves no output file behind."""
    hooks = hooks or Hooks()
    t_start = time.perf_counter()
    options.check()
    dev, dtype, known, pixels = job_pixels(options)
    info, outs, model, weights = preflight.open_run(inputs, out_dir, options, model)
    if known is None and dev.type != "cuda":  # the CPU's choice for this scene
        known = auto_cpu_tile(info.height, info.width, options, dtype)
    preflight.check_overlap(options.overlap, known, chosen=not options.tile_size)
    space = preflight.check_space(info, outs.out_dir, options.cog,
                                  work=preflight.flows_on_disk(info, len(band_groups(len(info.color_bands)))))
    was_training, job = model.training, None
    fingerprint = resume.fingerprint(info, weights, model, pixels)
    try:
        # claims the outputs; clears what an interrupted run of them left, or takes it over
        with lifecycle.job(outs, fingerprint, options, hooks, info) as committed:
            if committed is not None:
                return committed
            try:
                if outs.resumed is not None and not options.tile_size:  # the tile the interrupted run fitted
                    options = replace(options, tile_size=resume.read_job(outs.work)["tile"])
                job = plan_job(info, outs, model, dev, dtype, options, hooks)
                job.parts = resume.Parts(outs.work, {**fingerprint, "tile": job.tile})
                job.parts.begin()
                job.finished = resume.reusable_windows(job.parts, outs, job.plan, hooks.say)
                start_flows(job, resume.pairs_needed(job.plan, job.finished))
                for line in space:
                    hooks.say(line)
                preflight.check_overlap(options.overlap, job.tile, chosen=not options.tile_size)
                hooks.say(preflight.work_estimate(len(job.plan) - len(job.finished), job.grid(), len(job.groups),
                                                  device.model_width(job.net), job.dev,
                                                  device.precision_name(job.dtype), torch.get_num_threads()))
                run_windows(job, hooks)
                job.tracker.message("checking and writing" + (" cloud-optimised GeoTIFFs" if options.cog else ""))
                with job.clock("write"):
                    record = run_record(info, job.plan, job.net, job.tile, job.grid().overlap, job.dtype, job.dev,
                                        job.parts.job)
                    paths = commit(record, outs, options, weights, hooks)
            finally:
                if job is not None:
                    close_job(job, model)  # its flow thread stops before its files go
        job.tracker.done()
        hooks.say(f"wrote {len(paths)} frames to {outs.out_dir} in {time.perf_counter() - t_start:.1f} s")
        return paths
    finally:
        model.train(was_training)  # a caller's model (e.g. during training) is left as it was


def job_pixels(options: RunOptions) -> tuple:
    """(device, dtype, the tile if the options give it, else None, the options that change
    pixels as ``resume.fingerprint`` records them) of a run in this process. A tile the run
    chooses (for the scene on a CPU, fitted to memory on a GPU) is recorded with the run's parts
    and reused by ``--resume``, so the fingerprint, the same for every stack of a batch, holds
    None for it."""
    dev = device.resolve_device(options.device)
    dtype = device.resolve_precision(options.precision, dev)
    known = device.round_tile(options.tile_size) if options.tile_size else None
    return dev, dtype, known, resume.pixel_options(options, known, dev.type, device.precision_name(dtype))


def cpu_run_tile(height: int, width: int, options: RunOptions) -> int:
    """The tile a CPU run of this scene uses: the one asked for (rounded to the network's
    unit), else ``auto_cpu_tile`` at the precision ``options`` gives on the CPU."""
    if options.tile_size:
        return device.round_tile(options.tile_size)
    return auto_cpu_tile(height, width, options, device.resolve_precision(options.precision, torch.device("cpu")))


def auto_cpu_tile(height: int, width: int, options: RunOptions, dtype) -> int:
    """The CPU tile for a scene (``cost.cpu_tile``), for one process, a cluster and their benches."""
    return cost.cpu_tile(height, width, options.overlap_px, options.margin, device.precision_name(dtype))


def plan_job(info: StackInfo, outs: OutputSet, model, dev, dtype, options: RunOptions, hooks: Hooks) -> Job:
    """Put the network on its device, choose tiles and windows, and start the flow thread."""
    if dev.type == "cpu":
        device.set_threads(options.threads)
    compiling.configure_backends(dev)
    net = device.prepare_model(model, dev)
    compiled = compiling.compile_stages(net, log=hooks.log) if options.compile else []
    ov = options.overlap_px
    if options.tile_size:
        tile = device.round_tile(options.tile_size)
    elif dev.type != "cuda":  # the fastest tiling of this scene on this CPU
        tile = auto_cpu_tile(info.height, info.width, options, dtype)
    else:  # the cheapest tiling of this scene among the tiles that fit in memory
        tile = cost.choose_tile(info.height, info.width, device.default_tile_size(dev, dtype, net), ov,
                                options.margin, device.model_width(net))
    per_forward = int(options.tiles_per_forward
                      or cost.tiles_per_forward(dev, tile, dtype, device.model_width(net)))
    for line in info.summary().splitlines():
        hooks.say(line)
    scaler = value_scaler(info)
    groups = band_groups(len(info.color_bands))
    hooks.say(f"values: {scaler.how}; device {dev}, {device.precision_name(dtype)}; {len(groups)} band group(s) of 3")
    hooks.say(f"network: MSTT {net.variant} variant, {net.flow_kind} flows")
    job = Job(info=info, outs=outs, net=net, dev=dev, dtype=dtype, tile=tile, overlap=ov, margin=options.margin,
              per_forward=per_forward, scaler=scaler, groups=groups, plan=plan_windows(info.n_frames, options.windows),
              tracker=Progress(hooks.progress, hooks.is_canceled), clock=Clock(hooks.timings, dev),
              stager=HostStager(dev, slots=2), compiled=compiled, windows=options.windows,
              ensemble=options.ensemble)
    return job


def start_flows(job: Job, needed: set) -> None:
    """The flow thread, for the ``needed`` pairs only (a resumed run's finished windows need none)."""
    job.tracker.restart(*job.total_units())
    job.flows = FlowStore(len(job.groups), job.info.n_frames - 1, job.info.height, job.info.width, job.outs)
    job.flow_worker = FlowWorker(job.info, job.groups, job.scaler, job.flows, job.clock, kind=job.net.flow_kind,
                                 needed=needed)


def close_job(job: Job, model) -> None:
    if job.flow_worker is not None:
        job.flow_worker.close()  # before its files go
    if job.flows is not None:
        job.flows.close()
    compiling.uncompile_stages(model, job.compiled)  # the caller's model gets its own methods back


def run_windows(job: Job, hooks: Hooks) -> None:
    """Every window and tile under temporary names; out of memory, retry with fewer tiles per
    forward, then smaller tiles (each retry starts the windows again; flows are kept)."""
    where = "GPU memory" if job.dev.type == "cuda" else "memory"
    while True:
        grid = job.grid()
        hooks.say(f"tiles: {len(grid.rows)}x{len(grid.cols)} of {job.tile} px, overlap >= {grid.overlap} px, "
                  f"margin {grid.margin} px, {job.per_forward} per forward; {len(job.plan)} time window(s), {job.windows} plan")
        try:
            with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):  # masks inside the GeoTIFF, no .msk
                with StackReaders(job.info) as readers:
                    for wi, win in enumerate(job.plan):
                        if wi not in job.finished:
                            run_window(job, grid, wi, win, readers)
                            job.parts.record(resume.window_key(wi), resume.window_files(job.outs, win))
                            job.finished.add(wi)
            return
        except Exception as exc:
            if not device.is_oom(exc):
                raise
        device.free_memory(job.dev)
        if job.per_forward > 1:
            job.per_forward //= 2
            hooks.say(f"out of {where} with {2 * job.per_forward} tiles per forward; retrying with {job.per_forward}")
        else:
            smaller = device.smaller_tile(job.tile)
            if smaller is None:
                hint = "; use --device cpu" if job.dev.type == "cuda" else ""
                raise MsttError(f"out of {where} even with {job.tile}-px tiles{hint}") from None
            hooks.say(f"out of {where} with {job.tile}-px tiles; retrying with {smaller}")
            job.tile = smaller
            job.parts.restart({**job.parts.job, "tile": smaller})  # every window again, with this tile
            job.finished.clear()
        job.tracker.restart(*job.total_units(job.flow_worker.reported))


def run_window(job: Job, grid: TileGrid, wi: int, win: Window, readers: StackReaders) -> None:
    """One time window over every tile: its 1-3 outputs written (under temporary names)."""
    info, clock = job.info, job.clock
    out_idx = [p for p, _ in win.outputs]
    sources = output_sources(info.n_frames)
    with clock("wait_flow"):  # the flows this window needs (later ones are still computing)
        job.flow_worker.wait(max(min(a, b) for a, b in win.pairs), job.tracker)
    writers = []
    try:
        with clock("write"):
            profile = output_profile(info)
            writers += [create_output(job.outs.temp[p], profile) for p in out_idx]
        write = clock.wrap(block_writer(info, job.scaler, readers.masks, [sources[p] for p in out_idx], writers), "write")
        blender = StreamBlender(grid, (len(out_idx), len(info.color_bands)), write)
        with AsyncWriter(max_pending=2 * job.per_forward) as writer:
            ready = prefetch(lambda tile: load_tile(job, win, readers, tile), iter(grid), depth=job.per_forward + 1)
            try:
                while True:
                    with clock("wait_read"):  # the network idles here if reading is slower
                        chunk = next(batches(ready, job.per_forward), None)
                    if chunk is None:
                        break
                    hr = forward_tiles(job, grid, wi, win, chunk)
                    with clock("wait_write"):  # the writer is behind: its queue is full
                        for (tile, _, _), out in zip(chunk, hr):
                            writer.submit(clock.wrap(blender.add, "blend"), tile, out)
            finally:
                ready.close()
            with clock("wait_write"):
                writer.flush()
        if not blender.finished():
            raise AssertionError("blender did not write every pixel")  # a bug
        with clock("write"):
            times = output_times(info.times) if info.time_source != "none" else [None] * info.n_outputs
            for p, dst in zip(out_idx, writers):
                src = sources[p][0]  # a new frame takes tags, GCPs, RPCs from the earlier one
                write_frame_metadata(dst, info, source_extras(info.paths[src]),
                                     frame_tags(info, p, sources[p], times[p]))
    finally:
        with clock("write"):
            for dst in writers:
                dst.close()


def load_tile(job: Job, win: Window, readers: StackReaders, tile):
    """Reader thread: the window's frames (4, 3, th, tw) and flows (3, 4, th, tw) for one tile,
    per band group."""
    info = job.info
    with job.clock("read"):
        lr = {f: read_tile(readers.tiles[f], info.color_bands, tile, info, job.scaler) for f in set(win.frames)}
    with job.clock("flow"):
        fl = [tile_flows(job.flows, g, win.pairs, tile, info.height, info.width) for g in range(len(job.groups))]
    x = [np.stack([lr[f][list(group)] for f in win.frames]) for group in job.groups]
    return tile, x, fl


def forward_tiles(job: Job, grid: TileGrid, wi: int, win: Window, chunk) -> np.ndarray:
    """The network on a chunk of loaded tiles, each band group in turn: (B, outputs, bands,
    4th, 4tw) float32, a padded group's duplicated bands averaged."""
    positions = [pos for _, pos in win.outputs]
    nc = len(job.info.color_bands)
    tiles = [c[0] for c in chunk]
    first = tiles[0].row * len(grid.cols) + tiles[0].col + 1
    span = f"tile {first}" + (f"-{first + len(tiles) - 1}" if len(tiles) > 1 else "")
    hr_sum, counts = None, np.zeros(nc, np.float32)
    for g, group in enumerate(job.groups):
        job.tracker.step(f"window {wi + 1}/{len(job.plan)}, {span}/{len(grid)}", len(tiles))
        x = np.stack([c[1][g] for c in chunk])  # (B, 4, 3, th, tw)
        fl = np.stack([c[2][g] for c in chunk])  # (B, 3, 4, th, tw)
        with job.clock("model"), torch.inference_mode(), device.autocast(job.dev, job.dtype):
            lr_t, fl_t = job.stager.to_device(x), job.stager.to_device(fl)
            y = to_host(ensemble_forward(job.net, lr_t, fl_t, positions) if job.ensemble
                        else job.net(lr_t, fl_t, keep=positions))
        if hr_sum is None:
            hr_sum = np.zeros((*y.shape[:2], nc, *y.shape[-2:]), np.float32)
        for ch, pos in enumerate(group):
            hr_sum[:, :, pos] += y[:, :, ch]
            counts[pos] += 1
    return hr_sum / counts[None, None, :, None, None]


def read_tile(ds, color_bands, tile, info: StackInfo, scaler: ValueScaler) -> np.ndarray:
    """The tile of one frame in [0, 1], (bands, th, tw), reflected beyond the scene, nodata filled."""

    def read(y0, y1, x0, x1):
        data, valid = read_block(ds, color_bands, y0, y1, x0, x1)
        return np.stack([scaler.to_unit(data), valid.astype(np.float32)])

    block = read_reflected(read, tile, info.height, info.width)
    return np.ascontiguousarray(fill_invalid(block[0], block[1] > 0.5))

"""The product's main job: a stack of N georeferenced frames in, 2N-1 frames out, 4x finer.

Order of work, and why:
1. Validate everything (frames, times, options, existing outputs, weights, output folder)
   before any work, so that a mistake costs nothing and leaves nothing behind.
2. Optical flow once per consecutive frame pair (and band group) for the whole LR scene
   (scenes over 1024 px a side in overlapping blended blocks, so that its memory stays
   bounded), kept on disk beside the outputs when large: every tile crops the same motion,
   so tiles agree. A background thread computes the pairs in time order; each window waits
   only for its own, so later flows overlap the network's work on earlier windows.
3. For each time window (``timeline.plan_windows``), for each tile in raster order: read the
   window's 4 frames for the tile (reflect-padded at scene borders), run the network once per
   band group, and hand the outputs the window owns to a ``StreamBlender`` that writes
   finished HR blocks into that window's output GeoTIFFs. Windows outer, tiles inner: only
   the 1-3 files of one window are open, and blending memory covers those frames only.
   Reads and flow crops of the next tiles run in a reader thread, blending and writing in a
   writer thread, and several tiles can share one forward (GPU), so the network seldom waits.
4. Outputs live under temporary names until everything succeeded, then are renamed together;
   any error or cancel removes them.

Memory therefore follows the tile size, not the scene (tools/memory_study.py, full network,
4 frames, peak RSS of the whole process: tile 160: 1.35 GB at 1024 x 1024 input pixels,
1.43 GB at 4096 x 4096; at 1024 x 1024: 0.76 GB with tile 80, 2.29 GB with tile 240).
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from .errors import Canceled, InputError, MsttError
from .geoio import (
    OutputSet, StackInfo, _open, fill_invalid, output_names, output_profile, read_block, read_frame,
    read_stack_info, source_extras, time_tags, value_scaler, write_frame_metadata,
)
from .tiling import SCALE, StreamBlender, TileGrid, read_reflected, reflect_flow
from .timeline import output_sources, output_times, plan_windows

FLOW_COST = 0.5  # one pair's optical flow, in units of one network call on one tile (progress)


# -- validation ------------------------------------------------------------------------------
def validate_stack(inputs, *, times=None, out_dir=None, overwrite=False, prefix=None, weights=None,
                   check_weights=False) -> StackInfo:
    """Check a stack without doing any work; raise InputError / WeightsError naming the file.

    Returns a ``StackInfo`` (``.summary()`` for people, ``.as_dict()`` for programs). With
    ``out_dir``, also checks that no output would be overwritten (unless ``overwrite``) and
    lists the output names in ``info.outputs``; with ``weights`` or ``check_weights``, loads
    the weights (None = the shipped default)."""
    info = read_stack_info(inputs, times=times)
    if out_dir is not None:
        outs = OutputSet(out_dir, output_names(info, prefix), overwrite)
        outs.check_existing()
        info.outputs = [str(p) for p in outs.final]
    if weights is not None or check_weights:
        from .weights import load_model

        load_model(weights)
    return info


def check_tiling(tile_size, overlap) -> None:
    if tile_size is not None and (not isinstance(tile_size, (int, np.integer)) or tile_size < 1):
        raise InputError(f"tile size must be a positive number of pixels, got {tile_size!r}")
    if overlap is not None and (not isinstance(overlap, (int, np.integer)) or overlap < 0):
        raise InputError(f"overlap must be 0 or more pixels, got {overlap!r}")


# -- band groups -----------------------------------------------------------------------------
def band_groups(n: int) -> list:
    """Positions of colour bands fed to the 3-channel network: (0,1,2), (3,4,5), ... with the
    last group padded by repeating its last band (a grey image, which the network handles)."""
    groups = []
    for s in range(0, n, 3):
        g = list(range(s, min(s + 3, n)))
        groups.append(tuple(g + [g[-1]] * (3 - len(g))))
    return groups


# -- optical flow ----------------------------------------------------------------------------
class FlowStore:
    """Middle flows (4, H, W) per (band group, pair k -> k+1), on disk when large."""

    IN_MEMORY_BYTES = 64 * 2 ** 20

    def __init__(self, n_groups: int, n_pairs: int, height: int, width: int, outs: OutputSet):
        self.shape = (4, height, width)
        nbytes = n_groups * n_pairs * 4 * height * width * 4
        self.arrays = {}
        self.on_disk = nbytes > self.IN_MEMORY_BYTES
        self.outs = outs
        self.folder = None
        if self.on_disk:
            self.folder = outs.temp_path("flows")
            self.folder.mkdir()

    def writable(self, g: int, k: int) -> np.ndarray:
        """A zeroed (4, H, W) array to fill with the flows of pair k; then ``seal`` it."""
        if self.on_disk:
            return np.lib.format.open_memmap(self.folder / f"g{g}_p{k}.npy", mode="w+", dtype=np.float32,
                                             shape=self.shape)
        return np.zeros(self.shape, np.float32)

    def seal(self, g: int, k: int, arr: np.ndarray) -> None:
        if self.on_disk:
            arr.flush()
            del arr
            self.arrays[(g, k)] = np.load(self.folder / f"g{g}_p{k}.npy", mmap_mode="r")
        else:
            self.arrays[(g, k)] = arr

    def pair(self, g: int, a: int, b: int):
        """(array, swapped): flows of pair a->b; the pair b->a is the same with its two
        halves swapped (mid->a and mid->b exchange roles)."""
        if b == a + 1:
            return self.arrays[(g, a)], False
        if a == b + 1:
            return self.arrays[(g, b)], True
        raise ValueError(f"frames {a} and {b} are not neighbours")

    def close(self) -> None:
        self.arrays.clear()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


class FlowWorker:
    """Computes the flows of every consecutive pair (all band groups) in a background thread,
    in time order, while the network works on the windows whose pairs are ready: on a GPU the
    CPU's optical flow for later windows then costs no wall time. Progress, cancel and errors
    stay with the caller's thread (``wait``); ``close`` stops the thread between blocks.

    Each frame is read straight into the grey image the flow works on (the luma
    ``flows_tensor`` takes), so only two grey frames per band group are held."""

    def __init__(self, info: StackInfo, groups, scaler, store: FlowStore, clock):
        import threading

        self.info, self.groups, self.scaler, self.store, self.clock = info, groups, scaler, store, clock
        self.n_pairs = info.n_frames - 1
        self.ready = [threading.Event() for _ in range(self.n_pairs)]
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.reported = 0
        self.thread = threading.Thread(target=self._run, name="mstt-flow", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from .flow import to_gray

        color = list(self.info.color_bands)
        last = {}  # band group -> (frame index, grey frame)

        def grey(k, g):
            if g in last and last[g][0] == k:
                return last[g][1]
            with self.clock("read"):
                img = read_frame(self.info.paths[k], [color[i] for i in self.groups[g]], self.scaler, to_gray)
            last[g] = (k, img)
            return img

        try:
            for k in range(self.n_pairs):
                for g in range(len(self.groups)):
                    prev = grey(k, g)
                    cur = grey(k + 1, g)
                    arr = self.store.writable(g, k)
                    with self.clock("flow"):
                        scene_flows(prev, cur, arr, self.stop)
                    if self.stop.is_set():
                        return
                    self.store.seal(g, k, arr)
                self.ready[k].set()
        except BaseException as exc:  # handed to the waiting thread
            self.error = exc
        finally:
            for ev in self.ready:  # nobody waits forever, whatever happened
                ev.set()

    def wait(self, upto: int, tracker) -> None:
        """Block until pairs 0..upto are done; report each once as progress; check cancel."""
        for k in range(self.reported, upto + 1):
            label = f" ({len(self.groups)} band groups)" if len(self.groups) > 1 else ""
            tracker.step(f"optical flow {k + 1}/{self.n_pairs}{label}", FLOW_COST * len(self.groups))
            while not self.ready[k].wait(0.1):
                tracker.check()
            if self.error is not None:
                raise self.error
            self.reported = k + 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


FLOW_BLOCK, FLOW_OVERLAP = 1024, 64


def scene_flows(prev: np.ndarray, cur: np.ndarray, out: np.ndarray, stop=None) -> None:
    """Middle flows (4, H, W) of two grey frames into ``out`` (zeroed).

    Frames up to FLOW_BLOCK pixels a side are processed whole. Larger scenes go in blocks of
    FLOW_BLOCK overlapping by FLOW_OVERLAP, blended with the tiles' raised-cosine weights: the
    flow's memory (about 200 bytes per pixel in DIS) would otherwise grow with the scene (3.5 GB
    for 4096 x 4096), while satellite-video motion (a few pixels) is well inside a block. The
    result is still one field for the whole scene, computed once, so tiles agree on motion.
    ``stop`` (a threading.Event) ends the work between blocks."""
    from .flow import middle_flows
    from .tiling import axis_spans, axis_weights

    h, w = prev.shape[:2]
    if h <= FLOW_BLOCK and w <= FLOW_BLOCK:
        out[...] = middle_flows(np.stack([prev, cur]))[0]
        return
    rows, cols = axis_spans(h, FLOW_BLOCK, FLOW_OVERLAP), axis_spans(w, FLOW_BLOCK, FLOW_OVERLAP)
    wy, wx = axis_weights(rows, h, scale=1), axis_weights(cols, w, scale=1)
    for r, ys in enumerate(rows):
        for c, xs in enumerate(cols):
            if stop is not None and stop.is_set():
                return
            sy, sx = slice(ys.start, ys.stop), slice(xs.start, xs.stop)
            f = middle_flows(np.stack([prev[sy, sx], cur[sy, sx]]))[0]
            out[:, sy, sx] += f * (wy[r][:, None] * wx[c][None, :])


def tile_flows(store: FlowStore, g: int, pairs, tile, height: int, width: int) -> np.ndarray:
    out = []
    for a, b in pairs:
        arr, swapped = store.pair(g, a, b)
        f = reflect_flow(arr, tile, height, width)
        out.append(f[[2, 3, 0, 1]] if swapped else f)
    return np.stack(out)


# -- the run ---------------------------------------------------------------------------------
def run_stack(inputs, out_dir, *, weights=None, model=None, tile_size=None, overlap=None, device="auto",
              precision="auto", times=None, overwrite=False, cog=False, progress=None, is_canceled=None,
              log=None, prefix=None, margin=None, threads=None, timings=None, tiles_per_forward=None,
              compile=False) -> list:
    """Super-resolve a stack in space (x4) and time (2N-1 frames); return output paths in time
    order. ``tile_size``/``overlap``/``margin`` in LR pixels (None = defaults; tile sizes are
    rounded up to the network's 80-px unit). ``times``: N times (list or comma-separated) to
    use instead of the frames' metadata. ``progress(fraction, message)``, ``is_canceled()``,
    ``log(line)``: optional callbacks. ``timings``: a dict that receives seconds spent per
    stage ("read", "flow", "model", "blend", "write", "wait_flow", "wait_read", "wait_write"; see
    ``_Clock``). ``tiles_per_forward``: tiles stacked into one network call (None = 1 on CPU,
    as many as half the free GPU memory holds on CUDA). ``compile``: ``torch.compile`` the
    network's stages (falls back to eager if compilation fails). Raises InputError,
    WeightsError or Canceled, and then leaves no output file behind."""
    import rasterio

    from . import accel

    log = log or (lambda line: None)
    t_start = time.perf_counter()
    check_tiling(tile_size, overlap)
    if tiles_per_forward is not None and (not isinstance(tiles_per_forward, (int, np.integer)) or tiles_per_forward < 1):
        raise InputError(f"tiles per forward must be a positive number, got {tiles_per_forward!r}")
    info = read_stack_info(inputs, times=times)
    outs = OutputSet(out_dir, output_names(info, prefix), overwrite)
    outs.check_existing()
    dev = accel.resolve_device(device)
    dtype = accel.resolve_precision(precision, dev)
    if model is None:
        from .weights import load_model

        model = load_model(weights)

    if tile_size and overlap is not None and 2 * overlap >= accel.round_tile(tile_size):
        raise InputError(f"overlap {overlap} must be less than half the tile size ({accel.round_tile(tile_size)})")
    outs.prepare()  # creates the folder if needed and checks it can be written

    flows = flow_worker = None
    was_training = model.training
    compiled = []
    from . import fastpath

    try:
        if dev.type == "cpu":
            accel.set_threads(threads)
        fastpath.configure_backends(dev)
        net = accel.prepare_model(model, dev)
        if compile:
            compiled = fastpath.compile_stages(net, log=log)
        ov = accel.DEFAULT_OVERLAP if overlap is None else int(overlap)
        if tile_size:
            tile = accel.round_tile(tile_size)
        else:  # the cheapest tiling of this scene among the tiles that fit in memory
            largest = accel.default_tile_size(dev, dtype, net)
            tile = largest if dev.type != "cuda" else fastpath.choose_tile(
                info.height, info.width, largest, ov, margin, accel.model_width(net))
        per_forward = int(tiles_per_forward or fastpath.tiles_per_forward(dev, tile, dtype, accel.model_width(net)))
        for line in info.summary().splitlines():
            log(line)
        scaler = value_scaler(info)
        groups = band_groups(len(info.color_bands))
        log(f"values: {scaler.how}; device {dev}, {accel.precision_name(dtype)}; "
            f"{len(groups)} band group(s) of 3")
        plan = plan_windows(info.n_frames)

        tracker = _Progress(progress, is_canceled)
        clock = _Clock(timings, dev)
        grid = make_grid(info, tile, ov, margin)
        tracker.total = FLOW_COST * len(groups) * (info.n_frames - 1) + len(plan) * len(grid) * len(groups)
        flows = FlowStore(len(groups), info.n_frames - 1, info.height, info.width, outs)
        flow_worker = FlowWorker(info, groups, scaler, flows, clock)
        while True:
            grid = make_grid(info, tile, ov, margin)
            log(f"tiles: {len(grid.rows)}x{len(grid.cols)} of {tile} px, overlap >= {grid.overlap} px, "
                f"margin {grid.margin} px, {per_forward} per forward; {len(plan)} time window(s)")
            try:
                with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):  # masks inside the GeoTIFF, no .msk
                    _process(info, plan, grid, groups, flows, flow_worker, scaler, net, dev, dtype, outs, tracker,
                             clock, per_forward)
                break
            except Exception as exc:  # out of (GPU) memory: fewer tiles per forward, then smaller tiles
                if not accel.is_oom(exc):
                    raise
                accel.free_memory(dev)
                where = "GPU memory" if dev.type == "cuda" else "memory"
                if per_forward > 1:
                    per_forward //= 2
                    log(f"out of {where} with {2 * per_forward} tiles per forward; retrying with {per_forward}")
                else:
                    smaller = accel.smaller_tile(tile)
                    if smaller is None:
                        hint = "; use --device cpu" if dev.type == "cuda" else ""
                        raise MsttError(f"out of {where} even with {tile}-px tiles{hint}") from None
                    log(f"out of {where} with {tile}-px tiles; retrying with {smaller}")
                    tile = smaller
                tracker.restart(FLOW_COST * len(groups) * flow_worker.reported,
                                FLOW_COST * len(groups) * (info.n_frames - 1)
                                + len(plan) * len(make_grid(info, tile, ov, margin)) * len(groups))
        tracker.message("writing" + (" cloud-optimised GeoTIFFs" if cog else ""))
        with clock("write"):
            paths = outs.commit(cog=cog)
        tracker.done()
        log(f"wrote {len(paths)} frames to {outs.out_dir} in {time.perf_counter() - t_start:.1f} s")
        return paths
    except BaseException:
        outs.discard()
        raise
    finally:
        if flow_worker is not None:
            flow_worker.close()  # before its files go
        if flows is not None:
            flows.close()
        fastpath.uncompile_stages(model, compiled)  # the caller's model gets its own methods back
        model.train(was_training)  # a caller's model (e.g. during training) is left as it was


def make_grid(info: StackInfo, tile: int, overlap: int, margin=None) -> TileGrid:
    from .accel import MULTIPLE

    ov = min(int(overlap), tile // 2)
    m = ov // 2 if margin is None else int(margin)
    return TileGrid(info.height, info.width, tile, ov, m, SCALE, multiple=MULTIPLE)


class _Clock:
    """Seconds per stage into ``timings``; a no-op when ``timings`` is None.

    Exclusive within a thread (a write inside a blend pauses the blend), summed over threads:
    the flow thread ("read", "flow"), the reader ("read", "flow" crops) and the writer
    ("blend", "write") run beside the network ("model"), so stages may add up to more than
    the wall time. What the network thread spent waiting for them is "wait_flow",
    "wait_read" and "wait_write". On CUDA the device is
    synchronised around "model" so that its time is not billed to whatever waits next."""

    def __init__(self, timings, dev):
        import threading

        self.timings, self.dev = timings, dev
        self.local, self.lock = threading.local(), threading.Lock()

    def __call__(self, stage: str):
        import contextlib

        if self.timings is None:
            return contextlib.nullcontext()
        return self._timed(stage)

    def wrap(self, fn, stage: str):
        if self.timings is None:
            return fn

        def wrapped(*a, **k):
            with self._timed(stage):
                return fn(*a, **k)
        return wrapped

    def _add(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def _timed(self, stage):
        import contextlib

        sync = stage == "model" and self.dev.type == "cuda"

        @contextlib.contextmanager
        def cm():
            import torch

            stack = self.local.__dict__.setdefault("stack", [])
            if sync:
                torch.cuda.synchronize(self.dev)
            now = time.perf_counter()
            if stack:
                self._add(stack[-1][0], now - stack[-1][1])
            stack.append([stage, now])
            try:
                yield
            finally:
                if sync:
                    torch.cuda.synchronize(self.dev)
                end = time.perf_counter()
                st, t0 = stack.pop()
                self._add(st, end - t0)
                if stack:
                    stack[-1][1] = end
        return cm()


class _Progress:
    def __init__(self, progress, is_canceled):
        self.progress, self.is_canceled = progress, is_canceled
        self.total, self.done_units = 1.0, 0.0

    def check(self):
        if self.is_canceled is not None and self.is_canceled():
            raise Canceled("canceled by the user; no output was written")

    def step(self, message: str, units: float = 1.0) -> None:
        self.check()
        if self.progress is not None:
            self.progress(min(0.999, self.done_units / max(self.total, 1e-9)), message)
        self.done_units += units

    def restart(self, done_units: float, total: float) -> None:
        self.total, self.done_units = total, done_units

    def message(self, message: str) -> None:
        self.check()
        if self.progress is not None:
            self.progress(min(0.999, self.done_units / max(self.total, 1e-9)), message)

    def done(self) -> None:
        if self.progress is not None:
            self.progress(1.0, "done")


def _process(info, plan, grid, groups, flows, flow_worker, scaler, net, dev, dtype, outs, tracker, clock,
             per_forward) -> None:
    """All windows x tiles with one grid; writes every output under its temporary name.

    Three threads keep the network busy: a reader prepares the next tiles (frame reads, flow
    crops) while the network runs, the main thread runs ``per_forward`` tiles per forward, and
    a writer blends finished tiles and writes HR blocks. Each rasterio dataset is used by one
    thread only: the reader and the writer (nodata masks) open their own."""
    import torch

    from . import accel
    from .fastpath import AsyncWriter, HostStager, batches, prefetch, to_host

    profile = output_profile(info)
    sources = output_sources(info.n_frames)
    otimes = output_times(info.times) if info.time_source != "none" else [None] * info.n_outputs
    nc = len(info.color_bands)
    color = list(info.color_bands)
    stager = HostStager(dev, slots=2)
    reader_ds, mask_ds = [], []
    try:
        reader_ds += [_open(p) for p in info.paths]
        mask_ds += [_open(p) for p in info.paths]
        for wi, win in enumerate(plan):
            out_idx = [p for p, _ in win.outputs]
            positions = [pos for _, pos in win.outputs]
            frames = sorted(set(win.frames))
            with clock("wait_flow"):  # the flows this window needs (later ones are still computing)
                flow_worker.wait(max(min(a, b) for a, b in win.pairs), tracker)

            def load(tile, win=win, frames=frames):
                """Reader thread: the window's frames and flows for one tile, per band group."""
                with clock("read"):
                    lr = {f: read_tile(reader_ds[f], color, tile, info, scaler) for f in frames}
                with clock("flow"):
                    fl = [tile_flows(flows, g, win.pairs, tile, info.height, info.width) for g in range(len(groups))]
                x = [np.stack([lr[f][list(group)] for f in win.frames]) for group in groups]  # (4, 3, th, tw)
                return tile, x, fl

            writers = []
            try:
                with clock("write"):
                    for p in out_idx:
                        writers.append(_create(outs.temp[p], profile))
                write = clock.wrap(_block_writer(info, scaler, mask_ds, [sources[p] for p in out_idx], writers), "write")
                blender = StreamBlender(grid, (len(out_idx), nc), write)
                add = clock.wrap(blender.add, "blend")
                with AsyncWriter(max_pending=2 * per_forward) as writer:
                    ready = prefetch(load, iter(grid), depth=per_forward + 1)
                    try:
                        while True:
                            with clock("wait_read"):  # the network idles here if reading is slower
                                chunk = next(batches(ready, per_forward), None)
                            if chunk is None:
                                break
                            tiles = [c[0] for c in chunk]
                            hr_sum, counts = None, np.zeros(nc, np.float32)
                            for g, group in enumerate(groups):
                                first = tiles[0].row * len(grid.cols) + tiles[0].col + 1
                                span = f"tile {first}" + (f"-{first + len(tiles) - 1}" if len(tiles) > 1 else "")
                                tracker.step(f"window {wi + 1}/{len(plan)}, {span}/{len(grid)}", len(tiles))
                                x = np.stack([c[1][g] for c in chunk])  # (B, 4, 3, th, tw)
                                fl = np.stack([c[2][g] for c in chunk])  # (B, 3, 4, th, tw)
                                with clock("model"), torch.inference_mode(), accel.autocast(dev, dtype):
                                    y = net(stager.to_device(x), stager.to_device(fl), keep=positions)
                                    y = to_host(y)  # (B, F, 3, 4th, 4tw)
                                if hr_sum is None:
                                    hr_sum = np.zeros((*y.shape[:2], nc, *y.shape[-2:]), np.float32)
                                for ch, pos in enumerate(group):  # padded duplicates are averaged
                                    hr_sum[:, :, pos] += y[:, :, ch]
                                    counts[pos] += 1
                            hr_sum /= counts[None, None, :, None, None]
                            with clock("wait_write"):  # the writer is behind: its queue is full
                                for i, tile in enumerate(tiles):
                                    writer.submit(add, tile, hr_sum[i])
                    finally:
                        ready.close()
                    with clock("wait_write"):
                        writer.flush()
                if not blender.finished():
                    raise AssertionError("blender did not write every pixel")  # a bug
                with clock("write"):
                    for p, dst in zip(out_idx, writers):
                        src = sources[p][0]  # a new frame takes tags, GCPs, RPCs from the earlier one
                        write_frame_metadata(dst, info, source_extras(info.paths[src]),
                                             _frame_tags(info, p, sources[p], otimes[p]))
            finally:
                with clock("write"):
                    for dst in writers:
                        dst.close()
    finally:
        for ds in reader_ds + mask_ds:
            ds.close()


def _create(path, profile):
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(str(path), "w", **profile)


def _frame_tags(info: StackInfo, p: int, src: tuple, t) -> dict:
    tags = {
        "MSTT_OUTPUT_INDEX": str(p),
        "MSTT_FRAME": "input" if len(src) == 1 else "interpolated",
        "MSTT_SOURCES": ";".join(Path(info.paths[k]).name for k in src),
        "MSTT_SCALE": str(SCALE),
    }
    tags.update(time_tags(t))
    return tags


def read_tile(ds, color_bands, tile, info: StackInfo, scaler) -> np.ndarray:
    """The tile of one frame in [0, 1], (bands, th, tw), reflected beyond the scene, nodata filled."""

    def read(y0, y1, x0, x1):
        data, valid = read_block(ds, color_bands, y0, y1, x0, x1)
        return np.stack([scaler.to_unit(data), valid.astype(np.float32)])

    block = read_reflected(read, tile, info.height, info.width)
    return np.ascontiguousarray(fill_invalid(block[0], block[1] > 0.5))


def _block_writer(info: StackInfo, scaler, datasets, sources, writers):
    """A ``write(y0, y1, x0, x1, block)`` for the blender: unit values -> dtype, nodata (mask
    upsampled nearest; a new frame is valid where both neighbours are), alpha, then one
    windowed write per output file."""
    from rasterio.windows import Window

    color = list(info.color_bands)
    nodata = info.nodata
    dt = scaler.dtype
    needs_mask = _has_mask(datasets[0]) or dt.kind == "f" or bool(info.alpha_bands)

    def valid_for(src, y0, y1, x0, x1):
        ly0, ly1, lx0, lx1 = y0 // SCALE, -(-y1 // SCALE), x0 // SCALE, -(-x1 // SCALE)
        ok = None
        for k in src:
            _, v = read_block(datasets[k], color, ly0, ly1, lx0, lx1)
            ok = v if ok is None else ok & v
        ok = np.repeat(np.repeat(ok, SCALE, axis=1), SCALE, axis=2)
        return ok[:, y0 - ly0 * SCALE:y1 - ly0 * SCALE, x0 - lx0 * SCALE:x1 - lx0 * SCALE]

    def write(y0, y1, x0, x1, block):
        win = Window(x0, y0, x1 - x0, y1 - y0)
        for f, (src, dst) in enumerate(zip(sources, writers)):
            values = scaler.from_unit(block[f])
            out = np.empty((info.count, y1 - y0, x1 - x0), dt)
            if needs_mask:
                ok = valid_for(src, y0, y1, x0, x1)
                if nodata is not None:
                    _nudge(values, ok, nodata, scaler)
                    values[~ok] = nodata
                elif dt.kind == "f":
                    values[~ok] = np.nan
                elif not info.alpha_bands:
                    dst.write_mask(np.where(ok.all(axis=0), 255, 0).astype(np.uint8), window=win)
            for i, b in enumerate(color):
                out[b - 1] = values[i]
            for b in info.alpha_bands:
                out[b - 1] = np.where(ok.all(axis=0), scaler.vmax if dt.kind in "ui" else 1, 0)
            dst.write(out, window=win)

    return write


def _has_mask(ds) -> bool:
    from rasterio.enums import MaskFlags

    return any(MaskFlags.all_valid not in flags for flags in ds.mask_flag_enums)


def _nudge(values: np.ndarray, ok: np.ndarray, nodata, scaler) -> None:
    """A valid pixel must not read as nodata: move it one step towards the valid range."""
    if isinstance(nodata, float) and math.isnan(nodata):
        return
    hit = ok & (values == nodata)
    if not hit.any():
        return
    if values.dtype.kind in "ui":
        values[hit] = nodata + 1 if nodata <= scaler.vmin else nodata - 1
    else:
        values[hit] = np.nextafter(values.dtype.type(nodata), values.dtype.type(0 if nodata != 0 else 1))


# -- CLI -------------------------------------------------------------------------------------
DEVICES = ("auto", "cpu", "cuda")  # = accel.DEVICES / PRECISIONS, here so that --help needs no torch
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("inputs", nargs="+", metavar="FRAME", help="input frames in time order (any raster GDAL reads)")
    add("-o", "--output-dir", required=True, metavar="OUTDIR", help="folder for the 2N-1 output GeoTIFFs")
    add("--weights", metavar="W", help="weights file (.safetensors or upstream .pth); default: the shipped weights")
    add("--tile-size", type=int, metavar="N",
        help="tile size in input pixels, rounded up to a multiple of 80 (default: 160 on CPU, fitted to GPU memory)")
    add("--overlap", type=int, metavar="N", help="overlap between tiles in input pixels (default 16)")
    add("--device", default="auto", choices=DEVICES, help="where to run (default auto: CUDA if available)")
    add("--precision", default="auto", choices=PRECISIONS,
        help="arithmetic (default auto: bf16 or fp16 on CUDA; bf16 on CPUs with AMX / AVX-512 BF16, else fp32)")
    add("--tiles-per-forward", type=int, metavar="N",
        help="tiles stacked into one network call (default: 1 on CPU, fitted to free GPU memory)")
    add("--compile", action="store_true", help="torch.compile the network first (GPU; slow start, faster tiles)")
    add("--times", metavar="T1,T2,...", help="acquisition times of the inputs (ISO 8601), instead of their metadata")
    add("--prefix", help="output file name prefix (default: the inputs' common name + '_x4')")
    add("--overwrite", action="store_true", help="replace existing output files")
    add("--cog", action="store_true", help="write Cloud Optimized GeoTIFFs")
    add("--threads", type=int, metavar="N", help="CPU threads for the network (default: all available)")
    add("-q", "--quiet", action="store_true", help="no progress bar or messages")


def main(args) -> int:
    from tqdm import tqdm

    bar = None  # made at the first progress report: a validation error prints one line only

    def progress(frac, msg):
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            bar = tqdm(total=100, file=sys.stderr, unit="%", dynamic_ncols=True,
                       bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}] {postfix}")
        bar.n = round(100 * frac, 1)
        bar.set_postfix_str(msg, refresh=False)
        bar.refresh()

    def log(line):
        if args.quiet:
            return
        if bar is not None:
            bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    try:
        paths = run_stack(
            args.inputs, args.output_dir, weights=args.weights, tile_size=args.tile_size, overlap=args.overlap,
            device=args.device, precision=args.precision, times=args.times, overwrite=args.overwrite,
            cog=args.cog, progress=progress, log=log, prefix=args.prefix, threads=args.threads,
            tiles_per_forward=args.tiles_per_forward, compile=args.compile,
        )
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        for p in paths:
            print(p)
    return 0

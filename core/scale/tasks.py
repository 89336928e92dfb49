"""The tasks of one stack on a cluster, run on the workers: optical flow per frame pair, the
network per (time window, block of tiles), assembly per output frame.

Blocks and borders. HR space is cut into rectangular regions at the middle of the overlap
between every ``per_block``-th and the next row (and column) of tiles. A region's task runs
the network on every tile that touches the region, blends them with the single-process
weights (``TileGrid.weight``, normalised per axis, so no other tile adds anything there) in
the same raster order, and writes only its own region: the pixels are those of the
single-process run, whatever the split. Tiles near a region border are computed by both
neighbours; that is the price of independent tasks.

Tasks carry paths and windows, never frames or the model: workers read with windowed reads
from storage every worker sees, and load the network once per worker process (``NetworkPlugin``).
Every task writes under a private name and renames into place, then records the part finished
(``run.resume``: size and SHA-256, for this job's fingerprint), and skips work whose recorded
result is there and intact, so Dask may re-run any of them (a lost worker) without harm, and a
``--resume`` run reuses what an interrupted one finished.
"""
from __future__ import annotations

import functools
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from ..geo.read import read_frame
from ..errors import Canceled, MsttError
from ..geo.stack import IO_ERRORS, StackInfo, first_line, open_raster
from ..geo.times import output_sources, output_times
from ..geo.values import ValueScaler
from ..geo.write import block_writer, create_output, frame_tags, output_profile, source_extras, write_frame_metadata
from ..run.flow import to_gray
from ..run.preflight import flow_bytes
from ..run.resume import part_finished, record_part
from ..run.scene_flow import scene_flows


STOP = "stop"  # in the work folder: the run was canceled (``Spec.stop_path``)


@dataclass(frozen=True)
class Spec:
    """What every task of one run needs to know: small, sent with each task."""

    info: StackInfo
    scaler: ValueScaler
    groups: tuple
    plan: tuple
    tile: int
    overlap: int
    margin: int | None
    work: str  # the run's work folder, on storage every worker sees
    flow_kind: str
    plugin: str  # name of the run's NetworkPlugin on the workers
    per_forward: int = 1
    ensemble: bool = False
    digest: str = ""  # the job's fingerprint digest: parts finished for it are reused (run.resume)

    def grid(self):
        from ..run.pipeline import make_grid

        return make_grid(self.info.height, self.info.width, self.tile, self.overlap, self.margin)

    def flow_path(self, g: int, k: int) -> Path:
        return Path(self.work) / "flows" / f"g{g}_p{k}.npy"

    def stop_path(self) -> Path:
        """Made by the caller when it cancels the run: a network task still running stops at
        its next chunk of tiles instead of keeping its worker busy to the end (Dask's cancel
        cannot stop a running task)."""
        return Path(self.work) / STOP

    def part_path(self, wi: int, bi: int) -> Path:
        """Named by what it holds, so that a part in another representation (an earlier
        version's float32 blend) is never taken for this one: it is computed again."""
        kind = self.scaler.dtype.name if compact_parts(self.scaler) else "unit"
        return Path(self.work) / "parts" / f"w{wi}_b{bi}.{kind}.npy"


def compact_parts(scaler: ValueScaler) -> bool:
    """Whether parts hold the output values (rounded and clipped: what the frame will hold,
    exactly, since every region is written by its one task alone): output types no wider
    than the float32 blend, so uint8 parts take a quarter of its space. A float64 output
    keeps the float32 blend in unit values, smaller, converted to the same values at assembly."""
    return scaler.dtype.itemsize <= 4


def part_dtype(scaler: ValueScaler) -> np.dtype:
    return scaler.dtype if compact_parts(scaler) else np.dtype(np.float32)


def work_bytes(info: StackInfo, scaler: ValueScaler, n_groups: int) -> int:
    """The work files of a cluster run besides the frames: the flows of every pair and band
    group, float32 (4, H, W), and the parts, which hold every output pixel of every colour band
    once (blocks tile the scene, and each output frame belongs to one time window)."""
    parts = info.n_outputs * len(info.color_bands) * info.out_height * info.out_width * part_dtype(scaler).itemsize
    return flow_bytes(info, n_groups) + parts


class NetworkPlugin(WorkerPlugin):
    """The network on one worker: loaded at its first task, kept for the worker's life.
    Carries the weights path, with the file's bytes where some worker cannot read that path,
    or the caller's model (pickled once per worker)."""

    def __init__(self, weights=None, model=None, device: str = "auto", precision: str = "auto", threads=None,
                 blob: bytes | None = None, compile: bool = False):
        self.weights, self.model, self.blob = weights, model, blob
        self.idempotent = model is None  # a weights file's network, once registered, is kept (and reused)
        self.device, self.precision, self.threads, self.compile = device, precision, threads, compile
        self._loaded = None
        self.notes: list = []  # what compiling said on this worker (a fallback to eager), for the run's log

    def __getstate__(self):
        return {**self.__dict__, "_loaded": None, "notes": []}

    def network(self):
        """(network on its device, device, dtype). With ``compile``, its stages are compiled
        here, once per worker process like the weights (the plugin is a copy: a caller's model
        is never changed), with the single-process run's eager fallback."""
        if self._loaded is None:
            from ..net.weights import load_model
            from ..run import compile as compiling
            from ..run import device

            if self.threads:
                device.set_threads(self.threads)
            dev = device.resolve_device(self.device)
            dtype = device.resolve_precision(self.precision, dev)
            model = self.model if self.model is not None else load_model(self._readable())
            compiling.configure_backends(dev)
            net = device.prepare_model(model, dev)
            if self.compile:
                compiling.compile_stages(net, log=self.notes.append)
            self._loaded = (net, dev, dtype)
        return self._loaded

    def _readable(self) -> str:
        """The weights path, or a private copy of the sent bytes where this worker lacks it."""
        if os.path.exists(self.weights) or self.blob is None:
            return self.weights
        import tempfile

        fd, path = tempfile.mkstemp(suffix=Path(self.weights).suffix, prefix="mstt-weights-")
        with os.fdopen(fd, "wb") as f:
            f.write(self.blob)
        return path


def block_regions(grid, per_block: int) -> list:
    """HR regions (y0, y1, x0, x1) of blocks of ``per_block`` x ``per_block`` tiles, in raster
    order, cut at the middle of the overlap between blocks; together they tile the scene."""
    seam_rows, seam_cols = grid.seam_lines()

    def cuts(seams, n_tiles, length):
        inner = [seams[i - 1] for i in range(per_block, n_tiles, per_block)]
        return [0] + inner + [length]

    ys = cuts(seam_rows, len(grid.rows), grid.height * grid.scale)
    xs = cuts(seam_cols, len(grid.cols), grid.width * grid.scale)
    return [(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(len(ys) - 1) for j in range(len(xs) - 1)]


def touching(grid, region) -> list:
    """The tiles (raster order) whose HR extent overlaps ``region``: all that blend into it."""
    y0, y1, x0, x1 = region
    out = []
    for tile in grid:
        ty0, ty1, tx0, tx1 = tile.hr_extent(grid.height, grid.width, grid.scale)
        if ty0 < y1 and y0 < ty1 and tx0 < x1 and x0 < tx1:
            out.append(tile)
    return out


def add_to_region(acc: np.ndarray, grid, tile, hr: np.ndarray, region) -> None:
    """Blend one tile's full HR output into ``acc`` (..., region h, region w), as the
    single-process blender does (contribution = output x normalised weight)."""
    y0, y1, x0, x1 = region
    ty0, ty1, tx0, tx1 = tile.hr_extent(grid.height, grid.width, grid.scale)
    sy, sx = tile.hr_crop(grid.height, grid.width, grid.scale)
    contrib = hr[..., sy, sx].astype(np.float32, copy=False) * grid.weight(tile)
    a, b, c, d = max(y0, ty0), min(y1, ty1), max(x0, tx0), min(x1, tx1)
    acc[..., a - y0:b - y0, c - x0:d - x0] += contrib[..., a - ty0:b - ty0, c - tx0:d - tx0]


def save_atomic(path: Path, arr: np.ndarray) -> None:
    """``np.save`` under a private name, then renamed: a reader sees the whole file or none.
    The folder is made by the run before any task: a task that outlives its run (canceled
    while it computed) fails here instead of making the removed work folder again."""
    tmp = path.with_name(f"{path.stem}.{uuid.uuid4().hex[:8]}.tmp.npy")
    try:
        np.save(tmp, arr)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# -- the tasks -------------------------------------------------------------------------------
def sent_back(task):
    """A task whose errors reach the caller as they were raised: Dask pickles an error with its
    chain (``raise ... from None`` still keeps the GDAL error it replaced as its context), and
    when that chain does not unpickle it sends ``Exception("InputError('...')")`` instead. Our
    errors go without their chain; a read or write error as the OSError it is (the caller
    reports it as a storage error, as in one process)."""
    @functools.wraps(task)
    def run(*args):
        try:
            return task(*args)
        except MsttError as exc:
            err = exc
            err.__context__ = err.__cause__ = None
        except IO_ERRORS as exc:
            err = OSError(getattr(exc, "errno", None) or 0, first_line(exc))
        raise err  # outside the except clauses: no context to carry

    return run


@sent_back
def flow_task(spec: Spec, g: int, k: int) -> str:
    """Middle flows (4, H, W) of pair k -> k+1, band group g, as in the single-process run."""
    path = spec.flow_path(g, k)
    if part_finished(spec.work, f"flow-g{g}-p{k}", [path], spec.digest):  # a re-run, or a resumed run
        return str(path)
    color = list(spec.info.color_bands)
    bands = [color[i] for i in spec.groups[g]]
    prev = read_frame(spec.info.paths[k], bands, spec.scaler, to_gray)
    cur = read_frame(spec.info.paths[k + 1], bands, spec.scaler, to_gray)
    out = np.zeros((4, spec.info.height, spec.info.width), np.float32)
    scene_flows(prev, cur, out, kind=spec.flow_kind)
    save_atomic(path, out)
    record_part(spec.work, f"flow-g{g}-p{k}", [path], spec.digest)
    return str(path)


class DiskFlows:
    """The flows the flow tasks wrote, read lazily (memory-mapped): ``FlowStore.pair``'s contract."""

    def __init__(self, spec: Spec):
        self.spec, self.arrays = spec, {}

    def _get(self, g, k):
        if (g, k) not in self.arrays:
            self.arrays[(g, k)] = np.load(self.spec.flow_path(g, k), mmap_mode="r")
        return self.arrays[(g, k)]

    def pair(self, g: int, a: int, b: int):
        if b == a + 1:
            return self._get(g, a), False
        if a == b + 1:
            return self._get(g, b), True
        raise ValueError(f"frames {a} and {b} are not neighbours")


@sent_back
def region_task(spec: Spec, wi: int, bi: int, region, *after) -> tuple:
    """The network on every tile touching ``region`` for window ``wi``; the blended region
    (outputs, bands, h, w) saved as a part (``compact_parts``). Returns (part, device, dtype,
    whether the part was already finished: by an earlier try of this task, or the interrupted
    run, and the notes of the worker's network)."""
    from ..run.pipeline import StackReaders, forward_tiles, load_tile
    from ..run.threads import batches

    plugin = get_worker().plugins[spec.plugin]
    net, dev, dtype = plugin.network()
    part = spec.part_path(wi, bi)
    if part_finished(spec.work, f"net-w{wi}-b{bi}", [part], spec.digest):
        return str(part), str(dev), str(dtype), True, tuple(plugin.notes)
    job = worker_job(spec, net, dev, dtype)
    grid, win = job.grid(), spec.plan[wi]
    y0, y1, x0, x1 = region
    acc = np.zeros((len(win.outputs), len(spec.info.color_bands), y1 - y0, x1 - x0), np.float32)
    with StackReaders(spec.info) as readers:
        loaded = (load_tile(job, win, readers, tile) for tile in touching(grid, region))
        for chunk in batches(loaded, spec.per_forward):
            if spec.stop_path().exists():
                raise Canceled("the run was canceled")
            for (tile, _, _), hr in zip(chunk, forward_tiles(job, grid, wi, win, chunk)):
                add_to_region(acc, grid, tile, hr, region)
    save_atomic(part, spec.scaler.from_unit(acc) if compact_parts(spec.scaler) else acc)
    record_part(spec.work, f"net-w{wi}-b{bi}", [part], spec.digest)
    return str(part), str(dev), str(dtype), False, tuple(plugin.notes)


def worker_job(spec: Spec, net, dev, dtype):
    """A pipeline ``Job`` on a worker, so that tiles are read and run by the very same code."""
    from ..run.pipeline import Job
    from ..run.progress import Clock, Progress
    from ..run.threads import HostStager

    return Job(info=spec.info, outs=None, net=net, dev=dev, dtype=dtype, tile=spec.tile, overlap=spec.overlap,
               margin=spec.margin, per_forward=spec.per_forward, scaler=spec.scaler, groups=list(spec.groups),
               plan=list(spec.plan), tracker=Progress(None, None), clock=Clock(None, dev),
               stager=HostStager(dev, slots=2), flows=DiskFlows(spec), ensemble=spec.ensemble)


@sent_back
def assemble_task(spec: Spec, p: int, dest: str, parts: list, *after) -> str:
    """Output frame ``p`` as a GeoTIFF at ``dest`` (the run's temporary name) from the parts
    of its window: ``parts`` = [(region, part path)], values, masks and metadata as in the
    single-process run."""
    info = spec.info
    wi, f = next((wi, f) for wi, win in enumerate(spec.plan) for f, (q, _) in enumerate(win.outputs) if q == p)
    sources = output_sources(info.n_frames)[p]
    times = output_times(info.times) if info.time_source != "none" else [None] * info.n_outputs
    tmp = Path(f"{dest}.{uuid.uuid4().hex[:8]}.tmp")
    masks = [open_raster(path) for path in info.paths]
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            with create_output(tmp, output_profile(info)) as dst:
                write = block_writer(info, spec.scaler, masks, [sources], [dst], converted=compact_parts(spec.scaler))
                for (y0, y1, x0, x1), part in parts:
                    write(y0, y1, x0, x1, np.load(part, mmap_mode="r")[f:f + 1])
                write_frame_metadata(dst, info, source_extras(info.paths[sources[0]]),
                                     frame_tags(info, p, sources, times[p]))
        os.replace(tmp, dest)
    finally:
        for ds in masks:
            ds.close()
        tmp.unlink(missing_ok=True)
    return dest

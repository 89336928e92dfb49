"""One stack on a Dask cluster: the same validation, claim and commit as ``pipeline.run_stack``,
with the work split into tasks (``tasks``) and finished by the same ``finish`` step.

The task graph: flows per (band group, pair); per (window, block) a region task that waits for
the window's flows; per output frame an assembly task that waits for its window's regions.
Everything is written in the run's hidden work folder; the frames are committed by the caller's
process only when every task succeeded, and any failure or cancel leaves no output behind.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import torch

from ..errors import Canceled, MsttError
from ..geo.values import value_scaler
from ..run import lifecycle, preflight, resume
from ..run.finish import commit, run_record
from ..run.options import DEFAULT_WORKER_WAIT, RunOptions
from ..run.pipeline import Hooks, band_groups, cpu_run_tile
from ..run.windows import plan_windows
from . import tasks
from .cluster import network_resources

POLL_S = 0.5  # how often a waiting run checks for cancel and a lost scheduler
STOP_WAIT_S = 60  # how long a failed or canceled run waits for its running tasks to stop
BLOCK_TILES = 4  # tiles per block side: 16 tiles amortise a task's reads, many blocks balance


def run_stack_cluster(inputs, out_dir, options: RunOptions, client, *, model=None, hooks: Hooks | None = None,
                      block_tiles: int = BLOCK_TILES) -> list:
    """``run_stack`` on the cluster of ``client``; returns the output paths in time order."""
    hooks = hooks or Hooks()
    t_start = time.perf_counter()
    inputs, out_dir = absolute(inputs), os.path.abspath(out_dir)  # workers run in other folders
    info, outs, model, weights = preflight.open_run(inputs, out_dir, options, model)
    weights = str(weights) if weights else None
    tile, pixels = job_pixels(options, block_tiles, info)
    overlap = options.overlap_px
    preflight.check_overlap(options.overlap, tile, chosen=not options.tile_size)
    scaler, groups = value_scaler(info), tuple(band_groups(len(info.color_bands)))
    # before any work or file: the frames, the flows and the parts (all in the work folder at the end)
    space = preflight.check_space(info, outs.out_dir, options.cog, work=tasks.work_bytes(info, scaler, len(groups)))
    fingerprint = resume.fingerprint(info, weights, model, pixels)
    plugin_name = None
    try:
        with lifecycle.job(outs, fingerprint, options, hooks, info) as committed:
            if committed is not None:
                return committed
            for line in space:
                hooks.say(line)
            parts = resume.Parts(outs.work, fingerprint)
            parts.begin()
            plugin_name = plugin_key(weights, options) if weights else f"mstt-network-{outs.token}"
            plan = tuple(plan_windows(info.n_frames, options.windows))
            spec = tasks.Spec(info=info, scaler=scaler, groups=groups, plan=plan,
                              tile=tile, overlap=min(overlap, tile // 2), margin=options.margin, work=str(outs.work),
                              flow_kind=model.flow_kind, plugin=plugin_name, per_forward=options.tiles_per_forward or 1,
                              ensemble=options.ensemble, digest=parts.digest)
            start_network(client, plugin_name, weights, model, options, hooks)
            futures, regions = submit(client, spec, outs, block_tiles, hooks)
            dev, dtype = wait_all(client, futures, regions, hooks, worker_wait=options.worker_wait,
                                  stop_file=spec.stop_path())
            report_regions(regions, outs, hooks)
            if hooks.progress is not None:
                hooks.progress(0.999, "checking and writing")
            record = run_record(info, spec.plan, model, tile, spec.grid().overlap, dtype, dev, fingerprint)
            paths = commit(record, outs, options, weights, hooks)
        hooks.say(f"wrote {len(paths)} frames to {outs.out_dir} in {time.perf_counter() - t_start:.1f} s "
                  f"on {len(client.scheduler_info().get('workers', {}))} Dask worker(s)")
        return paths
    finally:
        if plugin_name is not None and not weights:  # a weights file's network stays loaded for later runs
            try:
                client.unregister_worker_plugin(plugin_name)
            except Exception:  # the cluster may be gone: its plugins went with it
                pass


def job_pixels(options: RunOptions, block_tiles: int, info) -> tuple:
    """(tile, the options that change pixels as ``resume.fingerprint`` records them) of a run
    on a cluster of the scene ``info``: the CPU tile for it unless given (chosen here, on the
    client, so every worker cuts the same blocks), parts that are (window, block) regions."""
    tile = cpu_run_tile(info.height, info.width, options)
    engine = f"Dask, blocks of {block_tiles} x {block_tiles} tiles"
    return tile, resume.pixel_options(options, tile, options.device, options.precision, engine=engine)


def absolute(paths) -> list:
    """Paths as every worker must see them (relative ones are the caller's folder's); GDAL
    connection strings and URLs (``/vsi...``, ``scheme://``) as they are."""
    return [p if "://" in str(p) or str(p).startswith("/vsi") else os.path.abspath(p) for p in map(str, paths)]


def start_network(client, name: str, weights, model, options: RunOptions, hooks: Hooks) -> None:
    """The network on every worker (``tasks.NetworkPlugin``), loaded at its first task."""
    blob = weights_for_workers(client, weights)
    client.register_plugin(tasks.NetworkPlugin(weights=weights, model=None if weights else model,
                                               device=options.device, precision=options.precision,
                                               threads=options.threads, blob=blob, compile=options.compile), name=name)
    if options.compile:
        hooks.say("compile: torch.compile of the network's stages on each Dask worker, once per worker process")


def report_regions(regions: list, outs, hooks: Hooks) -> None:
    """What the network tasks said: parts reused by a resume, and the workers' notes (a
    compile that fell back to eager), each once."""
    results = [task_result(r) for r in regions]
    if outs.resumed is not None:
        reused = sum(bool(r[3]) for r in results)
        hooks.say(f"resume: {reused} of {len(results)} network task(s) reused, {len(results) - reused} computed")
    for note in dict.fromkeys(n for r in results for n in r[4]):
        hooks.say(f"note: on a Dask worker: {note}")


def plugin_key(weights: str, options: RunOptions) -> str:
    """One network per worker for a weights file and device choice, shared by every run
    (and every stack of a batch) that uses them: loaded once per worker process."""
    ident = (f"{os.path.realpath(weights)}|{os.path.getmtime(weights)}|{options.device}|{options.precision}|"
             f"{options.threads}" + ("|compiled" if options.compile else ""))  # the keys of earlier runs stay
    return "mstt-network-" + hashlib.sha1(ident.encode()).hexdigest()[:12]


def weights_for_workers(client, weights) -> bytes | None:
    """The weights file's bytes when some worker cannot read its path (sent once per worker
    with the network plugin), else None: workers read it from shared storage."""
    if not weights or all(client.run(os.path.exists, weights).values()):
        return None
    with open(weights, "rb") as f:
        return f.read()


def submit(client, spec: tasks.Spec, outs, block_tiles: int, hooks: Hooks) -> tuple:
    """All tasks of the run, with their dependencies; returns (every future, the region
    futures). Keys name the run, so nothing is shared between runs."""
    grid = spec.grid()
    blocks = tasks.block_regions(grid, block_tiles)
    n_pairs = spec.info.n_frames - 1
    res = network_resources(client)
    key = f"mstt-{outs.token}"
    for folder in ("flows", "parts"):
        (Path(spec.work) / folder).mkdir(exist_ok=True)  # a resumed run's work folder has them
    spec.stop_path().unlink(missing_ok=True)  # left by the canceled run this one resumes
    hooks.say(f"tiles: {len(grid.rows)}x{len(grid.cols)} of {spec.tile} px in {len(blocks)} block(s); "
              f"{len(spec.plan)} time window(s); {len(spec.groups) * n_pairs} flow, "
              f"{len(blocks) * len(spec.plan)} network and {spec.info.n_outputs} assembly tasks"
              + (f"; network tasks ask for {res}" if res else ""))
    flows = {(g, k): client.submit(tasks.flow_task, spec, g, k, key=f"{key}-flow-g{g}-p{k}", pure=False)
             for g in range(len(spec.groups)) for k in range(n_pairs)}
    regions = {}
    for wi, win in enumerate(spec.plan):
        need = sorted({(g, min(a, b)) for a, b in win.pairs for g in range(len(spec.groups))})
        for bi, region in enumerate(blocks):
            regions[(wi, bi)] = client.submit(tasks.region_task, spec, wi, bi, region, *[flows[n] for n in need],
                                              key=f"{key}-net-w{wi}-b{bi}", resources=res or None, pure=False)
    assembled = []
    for wi, win in enumerate(spec.plan):
        parts = [(region, str(spec.part_path(wi, bi))) for bi, region in enumerate(blocks)]
        mine = [regions[(wi, bi)] for bi in range(len(blocks))]
        for p, _ in win.outputs:
            assembled.append(client.submit(tasks.assemble_task, spec, p, str(outs.temp[p]), parts, *mine,
                                           key=f"{key}-frame-{p}", pure=False))
    return list(flows.values()) + list(regions.values()) + assembled, list(regions.values())


def wait_all(client, futures: list, regions: list, hooks: Hooks, poll: float = POLL_S,
             worker_wait: float = DEFAULT_WORKER_WAIT, stop_file=None) -> tuple:
    """Wait for every task, reporting progress and checking cancel every ``poll`` seconds (a
    cancel cancels the futures); the first task error is raised as it is, a lost cluster, or
    one without any worker for ``worker_wait`` seconds, as a clear MsttError. Returns the
    network's (device, dtype)."""
    from distributed import wait
    from distributed.client import FuturesCancelledError

    pending = list(futures)
    alone = None  # since when no worker has been connected
    try:
        while pending:
            if hooks.is_canceled is not None and hooks.is_canceled():
                raise Canceled("canceled by the user; no output was written")
            if client.status in ("closing", "closed"):
                raise ClusterLost("the connection to the scheduler was lost")
            if client.scheduler_info().get("workers"):
                alone = None
            elif alone is None:
                alone = time.monotonic()
                hooks.say("note: the Dask cluster has no worker now; waiting for one "
                          f"(at most {worker_wait:g} s, --worker-wait)")
            elif time.monotonic() - alone > worker_wait:
                raise MsttError(f"no Dask worker was connected for {worker_wait:g} s (--worker-wait); no output "
                                "was written. Start workers with `dask worker SCHEDULER-ADDRESS`")
            try:
                wait(pending, timeout=poll, return_when="FIRST_COMPLETED")
            except TimeoutError:
                continue
            except (FuturesCancelledError, OSError) as exc:  # the scheduler, not a task
                raise ClusterLost(str(exc).splitlines()[0]) from None
            for fut in [f for f in pending if f.done()]:
                task_result(fut)
            pending = [f for f in pending if not f.done()]
            if hooks.progress is not None:
                done = len(futures) - len(pending)
                hooks.progress(min(0.99, done / len(futures)), f"{done}/{len(futures)} Dask tasks")
        dev, dtype = task_result(regions[0])[1:3]
    except ClusterLost as exc:
        cancel(client, futures, stop_file)
        raise MsttError(f"the Dask cluster went away before the run finished ({exc}); no output was written") from None
    except BaseException:
        cancel(client, futures, stop_file)
        raise
    return torch.device(dev), getattr(torch, dtype.rsplit(".", 1)[-1])

class ClusterLost(Exception):
    """The scheduler went away (as opposed to a task that failed)."""


def task_result(fut):
    """A finished task's result; its own error is raised as it was raised on the worker."""
    from distributed.client import FutureCancelledError

    try:
        return fut.result()
    except FutureCancelledError as exc:  # nobody here canceled it: the scheduler lost it
        raise ClusterLost(str(exc).splitlines()[0]) from None


def cancel(client, futures, stop_file=None, wait_s: float = STOP_WAIT_S) -> None:
    """Cancel the run's tasks on the cluster, if it is still there to hear it, and wait (up to
    ``wait_s``) until none of them still executes on a worker, so that none writes into the
    work folder after the run has removed it. ``stop_file`` (``Spec.stop_path``), made first,
    tells running network tasks to stop at their next chunk of tiles."""
    keys = {f.key for f in futures}
    if stop_file is not None:
        try:
            Path(stop_file).touch()
        except OSError:  # the storage is gone: so is the work the tasks would write
            pass
    try:
        client.cancel(futures)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            # every worker's running tasks, ours picked here: the scheduler forgets canceled keys at
            # once, and asked for one by name it logs a KeyError traceback on the user's terminal
            running = {k for stacks in client.call_stack().values() for k in stacks if k in keys}
            if not running:
                return
            time.sleep(POLL_S)
    except Exception:  # the scheduler is gone: so are its tasks
        pass


def run_with_cluster(address: str, inputs, out_dir, options: RunOptions, *, model=None,
                     hooks: Hooks | None = None) -> list:
    """Connect to ``address`` (``local:N`` or a scheduler address), run, disconnect."""
    from .cluster import connect

    hooks = hooks or Hooks()
    with connect(address) as client:
        hooks.say(f"Dask cluster {address}: {len(client.scheduler_info().get('workers', {}))} worker(s)")
        return run_stack_cluster(inputs, out_dir, options, client, model=model, hooks=hooks)

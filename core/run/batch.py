"""``mstt-stvsr batch``: many stacks, each to its own output folder, as one job.

Stacks are folders of frames (their rasters in name order; outputs to ``OUTDIR/<folder name>``)
or the rows of a manifest: CSV with columns ``inputs,output`` (and optionally ``name``), where
``inputs`` is a folder, a glob or ``;``-separated files, or JSON, a list of objects with the
same keys (``inputs`` may be a list). Without ``--cluster`` the stacks run one after the other
in this process; with it they run together on one Dask cluster (each split into tasks). A
stack that fails reports its error and the others go on; a summary ends the run, and the exit
status is 1 when any stack failed.

With ``--resume``, a batch run again after it was killed skips the stacks whose frames are all
there and resumes the ones it was in the middle of (each from its own work folder).
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, Interrupted
from . import command

RASTERS = (".tif", ".tiff", ".jp2", ".vrt", ".img", ".ntf")  # frame files taken from a stack folder
STACKS_AT_ONCE = 4  # stacks a cluster works on together: enough tasks to fill it, few claims open


@dataclass(frozen=True)
class Stack:
    name: str
    inputs: tuple
    output: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("stacks", nargs="*", metavar="FOLDER", help="folders, each holding one stack's frames (name order = time order)")
    add("--manifest", metavar="FILE", help="CSV (inputs,output[,name]) or JSON list of stacks with their output folders")
    add("-o", "--output-dir", metavar="OUTDIR", help="parent of the output folders of FOLDER stacks (one per folder)")
    command.add_options(parser)


def frames_in(where: str) -> tuple:
    """A folder's rasters, a glob's matches, or ``;``-separated files, in name order."""
    if Path(where).is_dir():
        return tuple(str(p) for p in sorted(Path(where).iterdir()) if p.suffix.lower() in RASTERS)
    if any(c in where for c in "*?["):
        return tuple(sorted(glob.glob(where)))
    return tuple(p.strip() for p in where.split(";") if p.strip())


def read_manifest(path) -> list:
    """Stacks of a CSV or JSON manifest; relative paths are relative to the manifest."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"manifest {path}: {exc.strerror or exc}") from None
    rows = json.loads(text) if path.suffix.lower() == ".json" else list(csv.DictReader(text.splitlines()))
    stacks = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not row.get("inputs") or not row.get("output"):
            raise InputError(f"manifest {path}, stack {i + 1}: needs 'inputs' and 'output'")
        where = row["inputs"]
        inputs = tuple(str(path.parent / p) for p in where) if isinstance(where, list) \
            else frames_in(str(path.parent / where))
        stacks.append(Stack(str(row.get("name") or Path(row["output"]).name), inputs, str(path.parent / row["output"])))
    return stacks


def stacks_from_args(args) -> list:
    stacks = read_manifest(args.manifest) if args.manifest else []
    if args.stacks and not args.output_dir:
        raise InputError("stack folders need -o OUTDIR, the parent of their output folders")
    stacks += [Stack(Path(f).name, frames_in(f), str(Path(args.output_dir) / Path(f).name)) for f in args.stacks]
    if not stacks:
        raise InputError("no stacks: give stack folders and -o OUTDIR, or --manifest FILE")
    return stacks


def run_one(stack: Stack, run, log) -> tuple:
    """(stack, output paths or None, error or None, seconds): errors are reported, not raised."""
    t0 = time.perf_counter()
    log(f"[{stack.name}] started: {len(stack.inputs)} frames -> {stack.output}")
    try:
        paths = run(stack)
    except Interrupted:
        raise
    except Exception as exc:  # one stack's failure must not stop the others
        log(f"[{stack.name}] FAILED: {exc}")
        return stack, None, str(exc) or type(exc).__name__, time.perf_counter() - t0
    log(f"[{stack.name}] done: {len(paths)} frames in {time.perf_counter() - t0:.1f} s")
    return stack, paths, None, time.perf_counter() - t0


def run_batch(stacks: list, run, log, parallel: int = 1) -> list:
    """``run(stack) -> paths`` for every stack (``parallel`` at a time); results in stack order."""
    if parallel <= 1:
        return [run_one(s, run, log) for s in stacks]
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="mstt-batch") as pool:
        return list(pool.map(lambda s: run_one(s, run, log), stacks))


def finished_earlier(stack: Stack, options) -> list | None:
    """The frames of a stack that an earlier run finished (every output there, tagged by
    mstt-stvsr as that very frame), for ``batch --resume`` to skip it; None otherwise."""
    from ..geo.stack import read_stack_info
    from ..geo.write import written_index
    from .preflight import output_set

    final = output_set(read_stack_info(stack.inputs, times=options.times), stack.output, options).final
    if all(p.is_file() and written_index(p) == i for i, p in enumerate(final)):
        return [str(p) for p in final]
    return None


def skipping_finished(run, options, log):
    """``run`` for stacks not finished yet: with ``--resume`` (and not ``--overwrite``) a batch
    run again after it was killed goes on with the stacks it had not finished; each of those
    resumes its own interrupted run."""
    if not options.resume or options.overwrite:
        return run

    def go(stack):
        done = finished_earlier(stack, options)
        if done is None:
            return run(stack)
        log(f"[{stack.name}] finished by an earlier run: its {len(done)} frames are there")
        return done

    return go


def summary(results: list) -> list:
    failed = [(s, err) for s, _, err, _ in results if err is not None]
    lines = [f"batch: {len(results)} stacks, {len(results) - len(failed)} done, {len(failed)} failed"]
    lines += [f"  failed: {s.name}: {err}" for s, err in failed]
    return lines


def main(args) -> int:
    from .pipeline import Hooks, run_stack
    from .signals import SignalGuard

    stacks = stacks_from_args(args)
    options = command.options_from_args(args)
    stop = threading.Event()
    lock = threading.Lock()

    def log(line):
        if not args.quiet:
            with lock:
                print(line, file=sys.stderr)

    with SignalGuard() as guard:
        def hooks(stack):
            return Hooks(log=lambda line: log(f"[{stack.name}] {line}"), is_canceled=stop.is_set,
                         critical=guard.critical)

        try:
            if args.cluster:
                from ..scale.cluster import connect
                from ..scale.run import run_stack_cluster

                with connect(args.cluster) as client:
                    run = skipping_finished(lambda s: run_stack_cluster(s.inputs, s.output, options, client,
                                                                        hooks=hooks(s)), options, log)
                    results = run_batch(stacks, run, log, parallel=min(STACKS_AT_ONCE, len(stacks)))
            else:
                run = skipping_finished(lambda s: run_stack(s.inputs, s.output, options, hooks=hooks(s)), options, log)
                results = run_batch(stacks, run, log)
        except BaseException:
            stop.set()  # stacks still running on other threads cancel and clean up
            raise
    for line in summary(results):
        print(line, file=sys.stderr)
    return 1 if any(err is not None for _, _, err, _ in results) else 0

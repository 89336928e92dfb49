"""``mstt-stvsr batch``: many stacks, each to its own output folder, as one job.

Stacks are folders of frames (every format ``run`` reads, hidden and system files skipped, in
natural number order: ``geo.frames``; outputs to ``OUTDIR/<folder name>``) or the rows of a
manifest: CSV with columns ``inputs,output`` (and optionally ``name``), where ``inputs`` is a
folder, a glob or ``;``-separated files, or JSON, a list of objects with the same keys
(``inputs`` may be a list); every path in a manifest is relative to the manifest. Before any
work, stacks that would write the same frames, or into their own input folder, are refused.
Without ``--cluster`` the stacks run one after the other in this process; with it they run
together on one Dask cluster (each split into tasks). A stack that fails reports its error and
the others go on; a summary ends the run, and the exit status is 1 when any stack failed. A
signal stops the stacks in progress at once and says which stacks were finished.

With ``--resume``, a batch run again after it was killed skips the stacks whose frames are all
there and were made by this very job (the fingerprint ``run --resume`` checks, recorded in every
frame), and resumes the ones it was in the middle of (each from its own work folder).
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import Canceled, InputError, Interrupted
from ..geo.frames import image_files, natural_order, order_note
from ..geo.outputs import common_prefix
from . import command

STACKS_AT_ONCE = 4  # stacks a cluster works on together: enough tasks to fill it, few claims open
MANIFEST_KEYS = ("inputs", "output", "name")
CSV_DELIMITERS = ",;\t"  # spreadsheets write ';' where ',' is the decimal separator, or tabs


@dataclass(frozen=True)
class Stack:
    name: str
    inputs: tuple
    output: str
    source: str = ""  # where it was given (a folder, a manifest row), for messages
    note: str | None = None  # how its frames were ordered, for the log


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("stacks", nargs="*", metavar="FOLDER",
        help="folders, each holding one stack's frames (natural number order = time order, unless every frame "
             "has an acquisition time; hidden and system files are skipped)")
    add("--manifest", metavar="FILE", help="CSV (inputs,output[,name]) or JSON list of stacks with their output folders")
    add("-o", "--output-dir", metavar="OUTDIR", help="parent of the output folders of FOLDER stacks (one per folder)")
    command.add_options(parser)


def frames_in(where: str, base: Path | None = None) -> tuple:
    """A folder's frames, a glob's matches, or ``;``-separated files, in natural order; each
    path relative to ``base`` (a manifest's folder) unless absolute."""
    def at(p: str) -> str:
        return str(base / p) if base is not None else p

    items = [p.strip() for p in where.split(";") if p.strip()]
    if len(items) == 1:
        one = at(items[0])
        if Path(one).is_dir():
            return tuple(image_files(one))
        if any(c in items[0] for c in "*?["):
            return tuple(natural_order(glob.glob(one)))
        if not Path(one).exists() and not Path(one).suffix:
            raise InputError(f"stack folder {one} not found")
        return (one,)
    return tuple(at(p) for p in items)


def read_manifest(path) -> list:
    """Stacks of a CSV or JSON manifest; every path in it is relative to the manifest's folder.
    Spreadsheet exports are read as they come: a UTF-8 byte order mark, ``;`` or tab between
    columns, spaces or capitals in the header; JSON may be a list of stacks, an object with a
    ``stacks`` list, or one stack."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"manifest {path}: {exc.strerror or exc}") from None
    # names that are not UTF-8 (old archives) stay the bytes they are on disk
    text = raw.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    rows = json_rows(path, text) if path.suffix.lower() == ".json" else csv_rows(path, text)
    stacks = []
    for i, row in enumerate(rows):
        where = f"manifest {path}, stack {i + 1}"
        if not isinstance(row, dict):
            raise InputError(f"{where}: a stack must be an object with 'inputs' and 'output', got {row!r:.60}")
        row = {str(k).strip().lower(): v.strip() if isinstance(v, str) else v for k, v in row.items()}
        if not row.get("inputs") or not row.get("output"):
            raise InputError(f"{where}: needs 'inputs' and 'output' (it has {', '.join(map(repr, row)) or 'nothing'})")
        inputs = row["inputs"]
        if isinstance(inputs, list):
            inputs = tuple(str(path.parent / str(p)) for p in inputs)
        elif isinstance(inputs, str):
            inputs = frames_in(inputs, path.parent)
        else:
            raise InputError(f"{where}: 'inputs' must be a folder, a glob, ';'-separated files or a list")
        output = str(path.parent / str(row["output"]))
        stacks.append(Stack(str(row.get("name") or Path(output).name), inputs, output, source=where,
                            note=order_note(inputs) if not isinstance(row["inputs"], list) else None))
    return stacks


def json_rows(path: Path, text: str) -> list:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(f"manifest {path}: not valid JSON ({exc})") from None
    if isinstance(value, dict):
        keys = {str(k).strip().lower(): v for k, v in value.items()}
        if isinstance(keys.get("stacks"), list):
            return keys["stacks"]
        if "inputs" in keys or "output" in keys:
            return [value]  # one stack
        raise InputError(f"manifest {path}: a JSON list of stacks, or an object with a 'stacks' list, is needed")
    if not isinstance(value, list):
        raise InputError(f"manifest {path}: a JSON list of stacks is needed, got {type(value).__name__}")
    return value


def csv_rows(path: Path, text: str) -> list:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise InputError(f"manifest {path}: empty; the first line names the columns (inputs,output[,name])")
    header = lines[0].lower()
    fits = [d for d in CSV_DELIMITERS if {"inputs", "output"} <= {h.strip().strip('"') for h in header.split(d)}]
    if not fits:
        raise InputError(f"manifest {path}: the first line must name the columns inputs and output "
                         f"(separated by , ; or a tab), got {lines[0][:80]!r}")
    return list(csv.DictReader(lines, delimiter=fits[0]))


def stacks_from_args(args) -> list:
    stacks = read_manifest(args.manifest) if args.manifest else []
    if args.stacks and not args.output_dir:
        raise InputError("stack folders need -o OUTDIR, the parent of their output folders")
    for f in args.stacks:
        frames = image_files(f)
        stacks.append(Stack(Path(f).name, tuple(frames), str(Path(args.output_dir) / Path(f).name), source=f,
                            note=order_note(frames)))
    if not stacks:
        raise InputError("no stacks: give stack folders and -o OUTDIR, or --manifest FILE")
    check_outputs(stacks, getattr(args, "prefix", None))
    return stacks


def label(stack: Stack) -> str:
    return f"{stack.name} ({stack.source})" if stack.source and stack.source != stack.name else stack.name


def check_outputs(stacks: list, prefix=None) -> None:
    """Before any work: no two stacks may write the same frames (the second would replace the
    first one's and remove its later frames), and no stack may write into its own input folder
    (its outputs would be taken as frames by the next batch)."""
    seen, read_from = {}, {}
    for s in stacks:
        for folder in (os.path.realpath(Path(p).parent) for p in s.inputs):
            read_from.setdefault(folder, s)
    for s in stacks:
        out = os.path.realpath(s.output)
        if out in read_from:
            other = read_from[out]
            whose = "its input folder" if other is s else f"the input folder of stack {label(other)}"
            raise InputError(f"stack {label(s)}: its output folder {s.output} is {whose}; the outputs "
                             "would be taken as frames by the next run. Give another output folder")
        if not s.inputs:
            continue  # fails on its own, with its own message
        key = (out, prefix or common_prefix([Path(p).stem for p in s.inputs]))
        if key in seen:
            other = seen[key]
            raise InputError(f"stacks {label(other)} and {label(s)} would write the same frames "
                             f"({Path(s.output) / key[1]}_t*.tif): give each stack its own output folder")
        seen[key] = s


def run_one(stack: Stack, run, log, stopping=lambda: False) -> tuple:
    """(stack, output paths or None, error or None, seconds): errors are reported, not raised."""
    t0 = time.perf_counter()
    log(f"[{stack.name}] started: {len(stack.inputs)} frames -> {stack.output}")
    if stack.note:
        log(f"[{stack.name}] {stack.note}")
    try:
        paths = run(stack)
    except Interrupted:
        raise
    except Canceled as exc:
        if stopping():  # the batch is stopping: not a failure of this stack
            log(f"[{stack.name}] stopped: {exc}")
            return stack, None, None, time.perf_counter() - t0
        raise
    except Exception as exc:  # one stack's failure must not stop the others
        log(f"[{stack.name}] FAILED: {exc}")
        return stack, None, str(exc) or type(exc).__name__, time.perf_counter() - t0
    log(f"[{stack.name}] done: {len(paths)} frames in {time.perf_counter() - t0:.1f} s")
    return stack, paths, None, time.perf_counter() - t0


def run_batch(stacks: list, run, log, parallel: int = 1, stop: threading.Event | None = None,
              between=lambda: None) -> list:
    """``run(stack) -> paths`` for every stack (``parallel`` at a time); results in stack order.
    A signal (``Interrupted`` in this thread) sets ``stop``, so that the stacks running on
    other threads cancel, waits for them, and is raised again saying what the batch wrote.
    ``between``: called before each stack in turn (a signal that waited for a commit)."""
    stop = stop or threading.Event()
    done = []
    try:
        if parallel <= 1:
            for s in stacks:
                between()
                done.append(run_one(s, run, log, stop.is_set))
            return done
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="mstt-batch") as pool:
            futures = [pool.submit(run_one, s, run, log, stop.is_set) for s in stacks]
            try:
                for f in futures:
                    done.append(f.result())
            except BaseException:
                stop.set()  # before the pool waits for its threads: they cancel their stacks
                for f in futures:
                    f.cancel()
                pool.shutdown(wait=True)
                done[:] = [f.result() for f in futures if f.done() and not f.cancelled() and f.exception() is None]
                raise
            return done
    except Interrupted as exc:
        stop.set()
        raise Interrupted(exc.signum, exc.name, written(done, len(stacks))) from None


def written(results: list, n: int) -> str:
    """What a batch stopped by a signal leaves: the stacks it finished (their frames stay)."""
    finished = [(s, paths) for s, paths, err, _ in results if paths]
    if not finished:
        return "no stack was finished; no output was written"
    frames = sum(len(p) for _, p in finished)
    where = ", ".join(s.output for s, _ in finished[:3]) + (", ..." if len(finished) > 3 else "")
    return (f"{len(finished)} of {n} stacks were finished ({frames} frames written, in {where}); "
            "the others left no frames (run the batch again with --resume to skip the finished ones)")


def finished_earlier(stack: Stack, options, job) -> list | None:
    """The frames of a stack that an earlier run finished (every output there, tagged by
    mstt-stvsr as that very frame) for this very job, for ``batch --resume`` to skip it; None
    when they are not all there. ``job(info)``: this run's fingerprint (``resume.fingerprint``);
    frames of another job (inputs rewritten, other weights or options) are refused, naming
    what differs, as ``run --resume`` refuses another job's parts."""
    from ..geo.stack import read_stack_info
    from ..geo.write import written_index
    from . import resume
    from .preflight import output_set

    info = read_stack_info(stack.inputs, times=options.times)
    final = output_set(info, stack.output, options).final
    if not all(p.is_file() and written_index(p) == i for i, p in enumerate(final)):
        return None
    now = job(info)
    for p in final:
        was = resume.written_job(p)
        diff = ["its job is not recorded in them (written by an earlier version)"] if was is None else \
            resume.differences({**was, "engine": None}, {**now, "engine": None})
        if diff:
            raise InputError(f"the frames in {stack.output} were made by another job: {'; '.join(diff)}. "
                             "Use --overwrite to replace them")
    return [str(p) for p in final]


def skipping_finished(run, options, log, job):
    """``run`` for stacks not finished yet: with ``--resume`` (and not ``--overwrite``) a batch
    run again after it was killed goes on with the stacks it had not finished; each of those
    resumes its own interrupted run."""
    if not options.resume or options.overwrite:
        return run

    def go(stack):
        done = finished_earlier(stack, options, job)
        if done is None:
            return run(stack)
        log(f"[{stack.name}] finished by an earlier run of this job: its {len(done)} frames are there")
        return done

    return go


def summary(results: list) -> list:
    failed = [(s, err) for s, _, err, _ in results if err is not None]
    lines = [f"batch: {len(results)} stacks, {len(results) - len(failed)} done, {len(failed)} failed"]
    lines += [f"  failed: {s.name}: {err}" for s, err in failed]
    return lines


def main(args) -> int:
    from ..net.weights import default_weights_path
    from . import resume
    from .pipeline import Hooks, job_pixels, run_stack
    from .signals import SignalGuard

    stacks = stacks_from_args(args)
    options = command.options_from_args(args)
    options.check()
    weights = str(options.weights or default_weights_path())
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
                from ..scale.run import BLOCK_TILES, run_stack_cluster
                from ..scale.run import job_pixels as cluster_pixels

                with connect(args.cluster) as client:
                    run = skipping_finished(lambda s: run_stack_cluster(s.inputs, s.output, options, client,
                                                                        hooks=hooks(s)), options, log,
                                            lambda info: resume.fingerprint(
                                                info, weights, None, cluster_pixels(options, BLOCK_TILES, info)[1]))
                    results = run_batch(stacks, run, log, parallel=min(STACKS_AT_ONCE, len(stacks)), stop=stop)
            else:
                pixels = job_pixels(options)[3]
                run = skipping_finished(lambda s: run_stack(s.inputs, s.output, options, hooks=hooks(s)), options, log,
                                        lambda info: resume.fingerprint(info, weights, None, pixels))
                results = run_batch(stacks, run, log, stop=stop, between=guard.raise_pending)
        except BaseException:
            stop.set()  # stacks still running on other threads cancel and clean up
            raise
    for line in summary(results):
        print(line, file=sys.stderr)
    return 1 if any(err is not None for _, _, err, _ in results) else 0

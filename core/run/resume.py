"""Resuming an interrupted run (``--resume``): what a killed run had finished is found in its
hidden work folder, checked, and reused; only the rest is computed.

Every run (with ``--resume`` or not) keeps two kinds of record in its work folder, so that a run
killed outright (``kill -9``, a power cut, a lost cluster) can be resumed by the next one:

- ``job.json``, the job's fingerprint: the software version, every input file (real path, size,
  modification time, and the inode and its change time, which no ``touch -r`` restores after a
  rewrite in place; in processing order, VRT sources too), the frame times, the weights
  (SHA-256 of the file, or of a caller's model's tensors), and every option that changes pixels
  (engine, tile, overlap, margin, device, precision, time windows, ensemble). Options that do
  not change pixels (threads, tiles per forward, compile, COG, overwrite) are left out.
- ``done/<part>.json``, written once a part is complete (a time window's frames in one process;
  a flow or a (window, block) region on a cluster): the part's files, fsynced, with their sizes
  and SHA-256, and the fingerprint's digest. Written under a private name and renamed: a record
  exists whole or not at all, and a part without a record, or whose files no longer match it
  (torn, truncated, changed), is computed again, never used.

``--resume`` takes over the work folder of an interrupted run of the same outputs (after taking
the claim, so never a live run's) when its fingerprint equals this run's, and refuses with one
line naming what differs otherwise (run without ``--resume`` to start over: that removes it).
With nothing to resume it starts from the beginning. A run with ``--resume`` that stops early
(an error, a signal, a cancel, a lost cluster) keeps its finished parts for the next one.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

from .. import plugin_version
from ..errors import InputError, MsttError
from ..geo.outputs import sync_folder
from ..geo.stack import IO_ERRORS
from ..geo.verify import storage_error
from ..checksum import file_sha256

JOB = "job.json"  # the fingerprint, in the work folder
DONE = "done"  # the records of finished parts, in the work folder
SINGLE = "one process"  # the engine of pipeline.run_stack: parts are whole time windows
# Shown in the message that refuses a resume, in this order.
LABELS = {"software": "software", "engine": "engine", "inputs": "inputs", "times": "frame times",
          "weights": "weights", "tile": "tile size", "overlap": "overlap", "margin": "margin",
          "device": "device", "precision": "precision", "windows": "time windows", "ensemble": "ensemble"}


# -- the fingerprint -------------------------------------------------------------------------
def fingerprint(info, weights, model, pixels: dict) -> dict:
    """The job as ``job.json`` records it; ``pixels``: the options that change pixels
    (``pixel_options``). A ``None`` value (a tile still to be fitted to GPU memory) matches
    any recorded one."""
    return {"software": plugin_version(), "inputs": input_files(info),
            "times": [None if t is None else str(t) for t in info.times],
            "weights": weights_id(weights, model), **pixels}


def pixel_options(options, tile, device: str, precision: str, engine: str = SINGLE) -> dict:
    return {"engine": engine, "tile": tile,
            "overlap": options.overlap_px,
            "margin": "half the overlap" if options.margin is None else int(options.margin),
            "device": device, "precision": precision, "windows": options.windows, "ensemble": bool(options.ensemble)}


def input_files(info) -> list:
    """[real path, size, modification time, inode, inode change time (ns)] of every file the
    frames are read from. The change time moves on every write and cannot be set back, so a
    file rewritten in place with its modification time restored is still seen as changed."""
    out = []
    for p in dict.fromkeys([*info.paths, *info.files]):
        st = os.stat(p)
        out.append([os.path.realpath(p), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns])
    return out


def weights_id(weights, model) -> str:
    """SHA-256 of the weights file; of the tensors (and variant) of a caller's model without one."""
    if weights:
        return f"sha256:{file_sha256(weights)}"
    h = hashlib.sha256(f"{getattr(model, 'variant', '')}|{getattr(model, 'flow_kind', '')}".encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update((t.float() if t.is_floating_point() else t).numpy().tobytes())  # bf16: no numpy dtype
    return f"model:{h.hexdigest()}"


def digest(job: dict) -> str:
    return hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]


def differences(old: dict, new: dict) -> list:
    """What differs between a recorded job and this one, for people (empty: the same job)."""
    out = []
    for key in dict.fromkeys([*LABELS, *old, *new]):
        was, now = old.get(key), new.get(key)
        if (now is None and key == "tile") or was == now:  # a tile still to be chosen takes the recorded one
            continue
        if key == "inputs":
            out.append(_input_difference(was or [], now or []))
        elif key == "weights":
            out.append(f"weights {str(was)[:19]}... (now {str(now)[:19]}...)")
        else:
            out.append(f"{LABELS.get(key, key)} {was} (now {now})")
    return out


def _input_difference(was: list, now: list) -> str:
    if len(was) != len(now):
        return f"{len(was)} input files (now {len(now)})"
    for (p0, *s0), (p1, *s1) in zip(was, now):
        if p0 != p1:
            return f"input {p0} (now {p1})"
        if s0 != s1:
            return f"input {p1} changed since (size, modification or change time, or inode)"
    return "inputs"


def written_job(path) -> dict | None:
    """The fingerprint a frame's tags say made it (``finish.JOB_TAG``); None if none."""
    import rasterio

    from .finish import JOB_TAG

    try:
        with rasterio.open(str(path)) as ds:
            job = json.loads(ds.tags().get(JOB_TAG) or "null")
    except (rasterio.errors.RasterioError, ValueError):
        return None
    return job if isinstance(job, dict) else None


# -- choosing the folder to resume -----------------------------------------------------------
def read_job(folder) -> dict | None:
    try:
        job = json.loads((Path(folder) / JOB).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return job if isinstance(job, dict) else None


def chooser(job: dict):
    """For ``OutputSet.prepare(resume=...)``: among the work folders that interrupted runs of
    these outputs left, the newest whose job equals ``job``; None if no folder has a job
    record; InputError naming the differences when none matches."""

    def choose(folders) -> Path | None:
        found = [(f, read_job(f)) for f in folders]
        found = sorted(((f, j) for f, j in found if j is not None), key=lambda fj: _age(fj[0]))
        for folder, old in found:
            if not differences(old, job):
                return folder
        if not found:
            return None
        folder, old = found[0]
        raise InputError(f"cannot resume from {folder}: the interrupted run differs in "
                         f"{'; '.join(differences(old, job))}. Run without --resume to start over "
                         "(that removes its finished parts)")

    return choose


def _age(folder: Path) -> float:
    try:
        return -(folder / JOB).stat().st_mtime
    except OSError:
        return 0.0


# -- finished parts --------------------------------------------------------------------------
class Parts:
    """The finished parts of one job in its work folder: ``begin()`` records the job (and
    forgets parts of any other), ``finished(key, files)`` tells whether a part may be reused,
    ``record(key, files)`` marks one finished. Workers use ``part_finished`` and
    ``record_part`` directly, with the digest."""

    def __init__(self, work, job: dict):
        self.work, self.job, self.digest = Path(work), job, digest(job)

    def begin(self) -> None:
        (self.work / DONE).mkdir(exist_ok=True)
        if read_job(self.work) != self.job:
            for entry in (self.work / DONE).iterdir():
                entry.unlink(missing_ok=True)
            write_json(self.work / JOB, self.job)

    def restart(self, job: dict) -> None:
        """Another job in the same folder (a smaller tile after running out of memory)."""
        self.job, self.digest = job, digest(job)
        self.begin()

    def finished(self, key: str, files) -> bool:
        return part_finished(self.work, key, files, self.digest)

    def recorded(self, key: str) -> bool:
        return (self.work / DONE / f"{key}.json").exists()

    def record(self, key: str, files) -> None:
        record_part(self.work, key, files, self.digest)


def count_parts(work) -> int:
    """Finished parts recorded in a work folder (of whatever job)."""
    try:
        return sum(1 for e in os.scandir(Path(work) / DONE) if e.name.endswith(".json"))
    except OSError:
        return 0


def part_finished(work, key: str, files, job_digest: str) -> bool:
    """Whether part ``key`` was recorded for this job and its files still match the record."""
    try:
        rec = json.loads((Path(work) / DONE / f"{key}.json").read_text(encoding="utf-8"))
        if rec["job"] != job_digest or sorted(rec["files"]) != sorted(_rel(work, f) for f in files):
            return False
        for f in files:
            size, sha = rec["files"][_rel(work, f)]
            if os.path.getsize(f) != size or file_sha256(f) != sha:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def record_part(work, key: str, files, job_digest: str) -> None:
    """Mark part ``key`` finished: its files on the disk (fsync), then their record."""
    entries = {}
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        entries[_rel(work, f)] = [os.path.getsize(f), file_sha256(f)]
    write_json(Path(work) / DONE / f"{key}.json", {"job": job_digest, "files": entries, "at": time.time()})


def _rel(work, path) -> str:
    return os.path.relpath(path, work)  # the folder is renamed when a resume takes it over


def write_json(path: Path, value) -> None:
    """All or nothing: written and fsynced under a private name, then renamed."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(value, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    sync_folder(path.parent)


def end_early(exc: BaseException, outs, keep: bool, say):
    """After a run failed or stopped with ``exc``: ``stop``, and return the StorageError to
    raise instead when it is the disk (or the network share), not a bug; else None."""
    err = None
    if isinstance(exc, IO_ERRORS) and not isinstance(exc, MsttError):
        err = storage_error(exc, outs.out_dir)  # while the disk is as full as it was
    stop(outs, keep, say)
    return err


def stop(outs, keep: bool, say) -> None:
    """The end of a run that failed or stopped: with ``keep`` (``--resume``) and finished parts
    to keep (its own or those of the run it resumed), the work folder stays for the next
    ``--resume`` (the claim is released); else everything this run made goes."""
    n = count_parts(outs.work) if keep else 0
    if not n:
        outs.discard()
        return
    outs.keep()
    say(f"note: {n} finished part(s) kept in {outs.work}: run again with --resume to reuse them "
        "(a run without it removes them)")


# -- time windows, the parts of a run in one process -----------------------------------------
def window_key(wi: int) -> str:
    return f"window-{wi}"


def window_files(outs, win) -> list:
    return [outs.temp[p] for p, _ in win.outputs]


def reusable_windows(parts: Parts, outs, plan, say) -> set:
    """The windows whose frames an interrupted run finished and that still match their record
    (each file's SHA-256 is checked); said in the log when resuming."""
    done = {wi for wi, win in enumerate(plan) if parts.finished(window_key(wi), window_files(outs, win))}
    damaged = [str(wi + 1) for wi in range(len(plan)) if wi not in done and parts.recorded(window_key(wi))]
    if outs.resumed is not None:
        say(f"resume: {len(done)} of {len(plan)} time window(s) reused, {len(plan) - len(done)} to compute")
    if damaged:
        say(f"note: resume: the frames of window(s) {', '.join(damaged)} no longer match their record "
            "(damaged since they were finished); computing them again")
    return done


def pairs_needed(plan, skip) -> set:
    """The frame pairs whose flows the windows not in ``skip`` need."""
    from .windows import stored_pair

    return {stored_pair(a, b)[0] for wi, win in enumerate(plan) if wi not in skip for a, b in win.pairs}

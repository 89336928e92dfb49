"""``--resume``: a run killed at a fixed point (SIGKILL, from inside, once some time windows are
finished) is carried on by the next run with ``--resume``, which computes only the rest and
writes the frames of an uninterrupted run; another job, or a damaged part, is never reused.

The tiny network has a non-zero residual: a window taken from the wrong job would show."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import rasterio

from mishaps import cli, cli_env, truncate
from mstt_stvsr.core.errors import Canceled, InputError
from mstt_stvsr.core.geo.outputs import OutputSet
from mstt_stvsr.core.run.options import RunOptions
from mstt_stvsr.core.run.pipeline import Hooks, run_stack
from nets import tiny_mstt
from stackgen import write_stack

# 5 frames, central plan: 4 time windows (outputs 0-2, 3-4, 5-6, 7-8); one 80-px tile
SETTINGS = dict(tile_size=80, overlap=16, device="cpu", windows="central")
DN = 1  # uint8: a window computed again (same machine, same code) rounds at most 1 DN apart

# Runs a stack in a child process that SIGKILLs itself when the progress first names ``at``
# (e.g. "window 3/4": windows 1 and 2 are finished and recorded, window 3 has begun).
KILLER = """
import json, os, signal, sys
from mstt_stvsr.core.run.options import RunOptions
from mstt_stvsr.core.run.pipeline import Hooks, run_stack
paths, out, settings, at = json.loads(sys.argv[1])
def progress(fraction, message):
    if message.startswith(at):
        os.kill(os.getpid(), signal.SIGKILL)
run_stack(paths, out, RunOptions(**settings), hooks=Hooks(progress=progress))
"""


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """(inputs, weights file, frames of an uninterrupted run)."""
    from mstt_stvsr.core.net.weights import save_weights

    root = tmp_path_factory.mktemp("resume")
    paths = write_stack(root / "in", n=5, h=40, w=56)
    weights = str(save_weights(tiny_mstt(), root / "tiny.safetensors"))
    return paths, weights, run_stack(paths, root / "ref", RunOptions(weights=weights, **SETTINGS))


def killed_run(paths, out, settings, at="window 3/4"):
    """A run SIGKILLed at ``at``; asserts it left a hidden work folder and no frame."""
    done = subprocess.run([sys.executable, "-c", KILLER, json.dumps([paths, str(out), settings, at])],
                          capture_output=True, text=True, env=cli_env(), timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert not list(out.glob("*.tif"))
    (work,) = out.glob(".mstt-*.partial")
    return work


def resumed(paths, out, settings, **kw):
    """A run with --resume; returns (frames, log lines, windows it ran the network on)."""
    lines, ran = [], set()

    def progress(fraction, message):
        if message.startswith("window "):
            ran.add(int(message.split()[1].split("/")[0]))

    frames = run_stack(paths, out, RunOptions(**settings, resume=True, **kw),
                       hooks=Hooks(log=lines.append, progress=progress))
    return frames, lines, ran


def worst(ours, ref) -> float:
    """Largest difference in DN; asserts the same names, georeferencing and frame tags."""
    assert [os.path.basename(p) for p in ours] == [os.path.basename(p) for p in ref]
    out = 0.0
    for a, b in zip(ours, ref):
        with rasterio.open(a) as da, rasterio.open(b) as db:
            assert (da.crs, da.transform, da.shape, da.dtypes) == (db.crs, db.transform, db.shape, db.dtypes)
            ta, tb = da.tags(), db.tags()
            assert {k: v for k, v in ta.items() if k != "MSTT_RUN"} == {k: v for k, v in tb.items() if k != "MSTT_RUN"}
            out = max(out, float(np.abs(da.read().astype(int) - db.read().astype(int)).max()))
    return out


def only_frames(out, frames) -> bool:
    return sorted(p.name for p in out.iterdir()) == sorted(os.path.basename(p) for p in frames)


def test_a_killed_run_is_resumed_computing_only_the_rest(job, tmp_path):
    paths, weights, ref = job
    settings = dict(weights=weights, **SETTINGS)
    killed_run(paths, tmp_path / "out", settings)
    frames, lines, ran = resumed(paths, tmp_path / "out", settings)
    assert "resume: 2 of 4 time window(s) reused, 2 to compute" in lines
    assert ran == {3, 4}  # the network ran on windows 3 and 4 only
    assert worst(frames, ref) <= DN
    assert only_frames(tmp_path / "out", frames)  # no work folder, no claim left


def test_resume_refuses_another_job_and_a_plain_run_starts_over(job, tmp_path):
    """A changed option: one line naming it, exit status 2, the finished parts kept; then a
    run without --resume removes them and computes everything."""
    paths, weights, ref = job
    settings = dict(weights=weights, **SETTINGS)
    work = killed_run(paths, tmp_path / "out", settings)
    args = ["run", *paths, "-o", str(tmp_path / "out"), "--weights", weights, "--tile-size", "80", "--device", "cpu",
            "--windows", "central", "--resume"]
    res = subprocess.run(cli(*args, "--overlap", "8", "-q"), capture_output=True, text=True, env=cli_env(), timeout=300)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "cannot resume from" in res.stderr and "overlap 16 (now 8)" in res.stderr
    assert work.exists() and len(list((work / "done").glob("*.json"))) == 2
    with pytest.raises(InputError, match="weights sha256:"):
        resumed(paths, tmp_path / "out", dict(settings, weights=None))  # the shipped weights
    live = OutputSet(tmp_path / "out", [os.path.basename(p) for p in ref], prefix="frame_x4").claim
    live.acquire()  # a live run (this process) holds the claim: a resume waits for it, touching nothing
    try:
        with pytest.raises(InputError, match="being written by another run"):
            resumed(paths, tmp_path / "out", settings)
    finally:
        live.release()
    assert work.exists() and len(list((work / "done").glob("*.json"))) == 2

    lines = []
    frames = run_stack(paths, tmp_path / "out", RunOptions(**settings), hooks=Hooks(log=lines.append))
    assert any("left by an interrupted run" in line and work.name in line for line in lines)
    assert "note: the interrupted run had 2 finished part(s), removed now; run with --resume to reuse such " \
           "parts next time" in lines
    assert not any(line.startswith("resume:") for line in lines)
    assert worst(frames, ref) <= DN and only_frames(tmp_path / "out", frames)


def test_a_damaged_part_is_computed_again(job, tmp_path):
    paths, weights, ref = job
    settings = dict(weights=weights, **SETTINGS)
    work = killed_run(paths, tmp_path / "out", settings)
    truncate(next(work.glob("*_t000.tif.part")), keep=0.9)  # window 1's first frame
    frames, lines, ran = resumed(paths, tmp_path / "out", settings)
    assert "resume: 1 of 4 time window(s) reused, 3 to compute" in lines
    assert any("window(s) 1 no longer match" in line for line in lines)
    assert ran == {1, 3, 4}
    assert worst(frames, ref) <= DN


@pytest.mark.parametrize("how", ["mtime", "rewritten"])
def test_changed_input_is_not_resumed(job, tmp_path, how):
    """The same bytes with another modification time (not provably the same), or other pixels
    written into a frame in place (same size) with its modification time set back as
    ``touch -r`` does: the windows computed from the old pixels are not reused."""
    paths, weights, _ = job
    settings = dict(weights=weights, **SETTINGS)
    copies = [str(tmp_path / os.path.basename(p)) for p in paths]
    for src, dst in zip(paths, copies):
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read())
    killed_run(copies, tmp_path / "out", settings)
    before = os.stat(copies[2])
    if how == "mtime":
        os.utime(copies[2], ns=(0, 0))
    else:
        with rasterio.open(copies[2], "r+") as ds:
            ds.write(255 - ds.read())
        os.utime(copies[2], ns=(before.st_atime_ns, before.st_mtime_ns))
        after = os.stat(copies[2])
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    with pytest.raises(InputError, match=r"input .*frame_02\.tif changed since"):
        resumed(copies, tmp_path / "out", settings)


def test_resume_with_nothing_to_resume_starts_and_keeps_its_parts_when_stopped(job, tmp_path):
    """--resume from the start: a cancel (as an interrupt) keeps the finished windows for the
    next --resume, which reuses them; without --resume a cancel leaves nothing."""
    paths, weights, ref = job
    settings = dict(weights=weights, **SETTINGS)
    lines = []
    with pytest.raises(Canceled):
        run_stack(paths, tmp_path / "plain", RunOptions(**settings), hooks=Hooks(
            progress=lambda f, m: lines.append(m), is_canceled=lambda: "window 2/4, tile 1/1" in lines))
    assert not (tmp_path / "plain").exists()

    lines = []
    with pytest.raises(Canceled):
        run_stack(paths, tmp_path / "out", RunOptions(**settings, resume=True), hooks=Hooks(
            progress=lambda f, m: lines.append(m), is_canceled=lambda: "window 2/4, tile 1/1" in lines,
            log=lines.append))
    assert not any(line.startswith("resume:") for line in lines)  # nothing to resume: from the start
    assert any("2 finished part(s) kept in" in line for line in lines)  # the cancel is seen at window 3
    assert not list((tmp_path / "out").glob("*.tif")) and not list((tmp_path / "out").glob(".*.claim"))
    frames, lines, ran = resumed(paths, tmp_path / "out", settings)
    assert "resume: 2 of 4 time window(s) reused, 2 to compute" in lines and ran == {3, 4}
    assert worst(frames, ref) <= DN and only_frames(tmp_path / "out", frames)


def test_batch_resume_skips_finished_stacks_and_resumes_the_interrupted_one(job, tmp_path, capsys):
    """A batch killed while on its second stack: run again with --resume, the first stack
    (finished) is skipped and the second goes on from its finished windows."""
    from pathlib import Path

    from mstt_stvsr.core import cli

    paths, weights, ref = job
    settings = dict(weights=weights, **SETTINGS)
    first = write_stack(tmp_path / "a", n=2, h=20, w=24, seed=1)
    done_before = run_stack(first, tmp_path / "out" / "a", RunOptions(**settings))
    stamp = os.stat(done_before[0]).st_mtime_ns
    second = Path(paths[0]).parent  # the job's stack folder
    killed_run(paths, tmp_path / "out" / second.name, settings)
    code = cli.main(["batch", str(tmp_path / "a"), str(second), "-o", str(tmp_path / "out"), "--weights", weights,
                     "--tile-size", "80", "--overlap", "16", "--device", "cpu", "--windows", "central", "--resume"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "[a] finished by an earlier run of this job: its 3 frames are there" in err
    assert f"[{second.name}] resume: 2 of 4 time window(s) reused, 2 to compute" in err
    assert "batch: 2 stacks, 2 done, 0 failed" in err
    assert os.stat(done_before[0]).st_mtime_ns == stamp  # not written again
    frames = sorted(str(p) for p in (tmp_path / "out" / second.name).glob("*.tif"))
    assert worst(frames, ref) <= DN and only_frames(tmp_path / "out" / second.name, frames)


def test_resume_check_catches_windows_from_another_job(job, tmp_path, monkeypatch):
    """Negative control: with the fingerprint check switched off, windows finished with other
    weights are reused, and the comparison with the uninterrupted run fails."""
    from mstt_stvsr.core.net.weights import save_weights
    from mstt_stvsr.core.run import resume

    paths, weights, ref = job
    monkeypatch.setattr(resume, "differences", lambda old, new: [])
    monkeypatch.setattr(resume, "digest", lambda job: "any job")
    other = str(save_weights(tiny_mstt(seed=1), tmp_path / "other.safetensors"))
    seen = []
    with pytest.raises(Canceled):
        run_stack(paths, tmp_path / "out", RunOptions(weights=other, **SETTINGS, resume=True), hooks=Hooks(
            progress=lambda f, m: seen.append(m), is_canceled=lambda: "window 2/4, tile 1/1" in seen))
    monkeypatch.setattr(resume.Parts, "begin", lambda self: None)  # keeps the other job's records
    frames, lines, ran = resumed(paths, tmp_path / "out", dict(weights=weights, **SETTINGS))
    assert ran == {3, 4}
    assert worst(frames, ref) > DN


# Runs a stack in a child process that SIGKILLs itself once ``after`` frames were moved into
# place by the commit (a power cut halfway through the renames).
KILL_IN_COMMIT = """
import json, os, signal, sys
from mstt_stvsr.core.run.options import RunOptions
from mstt_stvsr.core.run.pipeline import run_stack
paths, out, settings, after = json.loads(sys.argv[1])
replace, moved = os.replace, []
def replacing(src, dst):
    replace(src, dst)
    if str(src).endswith(".tif.part"):
        moved.append(dst)
        if len(moved) == after:
            os.kill(os.getpid(), signal.SIGKILL)
os.replace = replacing
run_stack(paths, out, RunOptions(**settings))
"""


def test_a_commit_cut_short_is_explained_and_finished_by_resume(job, tmp_path):
    """Killed after 3 of its 9 frames were moved into place: a plain run says so (not just
    'already exists'), and --resume moves the other 6 (checked) without computing anything."""
    paths, weights, ref = job
    settings = dict(weights=weights, **SETTINGS)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", KILL_IN_COMMIT, json.dumps([paths, str(out), settings, 3])],
                          capture_output=True, text=True, env=cli_env(), timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert len(list(out.glob("*.tif"))) == 3 and len(list(out.glob(".mstt-*.partial"))) == 1
    args = ["run", *paths, "-o", str(out), "--weights", weights, "--tile-size", "80", "--device", "cpu",
            "--windows", "central", "-q"]
    res = subprocess.run(cli(*args), capture_output=True, text=True, env=cli_env(), timeout=300)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "a run was killed while it moved its frames into place (3 of 9 moved" in res.stderr
    assert "--resume to finish moving them" in res.stderr
    frames, lines, ran = resumed(paths, out, settings)
    assert ran == set() and any("finished the interrupted run's commit: 6 frame(s) moved" in ln for ln in lines)
    assert worst(frames, ref) <= DN and only_frames(out, frames)

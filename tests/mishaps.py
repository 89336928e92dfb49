"""Ways to make a run go wrong on purpose, for the data-safety tests: a small tmpfs (a full
disk), a command-line run paused while it is writing, damaged frames and weights."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXE = Path(sys.executable).with_name("mstt-stvsr")


def cli(*args) -> list:
    """The installed console script (or the module where there is none)."""
    return [str(EXE), *args] if EXE.exists() else [sys.executable, "-m", "mstt_stvsr.core", *args]


def cli_env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    """A tmpfs of ``size`` mounted on ``folder`` (a disk that fills up), unmounted afterwards."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a full disk) needs root")
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def fill(folder: Path, leave: int) -> None:
    """Fill the file system of ``folder`` until about ``leave`` bytes are free."""
    import shutil

    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def writing(out: Path) -> bool:
    """Whether a run is writing frames into ``out`` (its temporary files are there)."""
    if not out.exists():
        return False
    return any(p.is_file() and (".tmp." in p.name or p.name.endswith(".part")) for p in out.rglob("*"))


def start_paused(argv, out: Path, timeout: float = 240):
    """Start a CLI run and stop it (SIGSTOP) as soon as it is writing its frames into ``out``;
    the caller continues it (SIGCONT) or ends it. Returns the Popen."""
    proc = subprocess.Popen(cli(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    end = time.monotonic() + timeout
    while not writing(out):
        if proc.poll() is not None:
            out_, err = proc.communicate()
            pytest.fail(f"the run ended (status {proc.returncode}) before it was writing: {err[-2000:]}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail("the run did not start writing in time")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGSTOP)
    return proc


def resume(proc, sig=None, timeout: float = 240):
    """Send ``sig`` (pending while stopped), continue the run and wait for it; (status, stderr)."""
    if sig is not None:
        os.kill(proc.pid, sig)
    os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def truncate(path, keep: float = 0.6) -> None:
    """Cut a file short, as an interrupted copy leaves it."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))


def poison_weights(src, dst, value=float("nan")) -> Path:
    """A copy of a safetensors weights file with one tensor's first value set to ``value``."""
    from safetensors.torch import load_file, save_file

    from mstt_stvsr.core.net.weights import read_metadata

    state = load_file(str(src))
    key = "conv_last.weight"
    state[key] = state[key].clone()
    state[key].view(-1)[0] = value
    save_file(state, str(dst), metadata=read_metadata(src))
    return Path(dst)


def tags(path, ns=None, band=None) -> dict:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.tags(band, ns=ns) if band else ds.tags(ns=ns)

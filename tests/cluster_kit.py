"""A real Dask cluster for tests: ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1,
and a worker plugin that SIGKILLs its worker at a fixed point (after its first network task)."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin

DASK = Path(sys.executable).with_name("dask")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dask_cluster(n_workers: int, log_dir: Path, cwd=None):
    """(scheduler address, scheduler process, worker processes): one scheduler, ``n_workers`` single-thread workers
    without a nanny (a killed worker stays dead), all stopped on exit; started in ``cwd`` (as on
    another machine, where the caller's relative paths mean nothing)."""
    address = f"tcp://127.0.0.1:{free_port()}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))  # workers unpickle test helpers too
    procs = []

    def start(args, name):
        log = open(log_dir / f"{name}.log", "w")
        procs.append(subprocess.Popen([str(DASK), *args], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd))
        log.close()

    try:
        start(["scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--no-dashboard"], "scheduler")
        for i in range(n_workers):
            start(["worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
                   "--name", f"w{i}"], f"worker{i}")
        yield address, procs[0], procs[1:]
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()



class KillAfterFirstNetworkTask(WorkerPlugin):
    """On the worker named ``victim``: SIGKILL itself as soon as its first network task has
    finished (its result held only there), so the scheduler must recover it elsewhere."""

    def __init__(self, victim: str):
        self.victim = victim
        self.worker = None

    def setup(self, worker):
        self.worker = worker

    def transition(self, key, start, finish, **kwargs):
        name = key if isinstance(key, str) else str(key)
        if finish == "memory" and "-net-" in name and self.worker.name == self.victim:
            os.kill(os.getpid(), signal.SIGKILL)


class KillClusterAfterFirstNetworkTask(WorkerPlugin):
    """The whole cluster gone at a fixed point: as soon as the (single) worker's first network
    task has finished and recorded its part, SIGKILL the scheduler, then the worker itself."""

    def __init__(self, scheduler_pid: int):
        self.scheduler_pid = scheduler_pid

    def transition(self, key, start, finish, **kwargs):
        name = key if isinstance(key, str) else str(key)
        if finish == "memory" and "-net-" in name:
            os.kill(self.scheduler_pid, signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)


class RemoveAtFirstTask(WorkerPlugin):
    """A frame gone from the shared storage mid-run: removed as the worker starts its first task."""

    def __init__(self, path: str):
        self.path = path

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and os.path.exists(self.path):
            os.remove(self.path)

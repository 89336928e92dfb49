"""Connecting to a Dask cluster: ``local:N`` (a LocalCluster of N worker processes, one thread
each) or a scheduler address (``tcp://host:8786``), with a check that every worker runs this
version of the package."""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from .. import plugin_version
from ..errors import InputError, MsttError

LOCAL = "local:"
NETWORK_RESOURCE = "GPU"  # workers started with --resources GPU=1 run the network tasks
GREETING_S = 10  # a Dask scheduler greets a new connection at once; silence this long: not one
GREETING_MAX = 1 << 20  # bytes: a scheduler's greeting is a few hundred; more is another protocol
DEFAULT_PORT = 8786  # the scheduler's, as ``dask scheduler`` starts it


def parse_address(address: str):
    """("local", N) or ("remote", address); InputError for anything else."""
    text = str(address).strip()
    if text.startswith(LOCAL):
        n = text[len(LOCAL):]
        if not n.isdigit() or int(n) < 1:
            raise InputError(f"cluster {address!r}: local:N needs a positive number of workers")
        return "local", int(n)
    if "://" in text or ":" in text:
        scheme = text.split("://", 1)[0].lower() if "://" in text else "tcp"
        if scheme in ("http", "https") or urlsplit(text if "://" in text else f"tcp://{text}").path not in ("", "/"):
            raise InputError(f"cluster {address!r} is a web address (the scheduler's dashboard?); give the "
                             f"scheduler's own address, such as tcp://host:{DEFAULT_PORT}")
        return "remote", text
    raise InputError(f"cluster {address!r}: give local:N or a scheduler address such as tcp://host:8786")


def check_scheduler(address: str, wait: float = GREETING_S) -> None:
    """Before the Dask client connects (its handshake waits without a limit, and reads whatever
    another server sends as a message length): a TCP address must be a Dask scheduler, which
    sends its greeting, a framed message of a few hundred bytes, as soon as it accepts. A
    refused connection, silence (a web server waits for a request) or anything else is a clear
    MsttError within ``wait`` seconds. Other transports (tls://, ucx://) are left to Dask."""
    text = address if "://" in address else f"tcp://{address}"
    parts = urlsplit(text)
    if parts.scheme != "tcp":
        return
    try:
        host, port = parts.hostname, parts.port or DEFAULT_PORT
    except ValueError:
        raise InputError(f"cluster {address!r}: the port is not a number") from None
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=wait) as sock:
            sock.settimeout(wait)
            head = _read_exactly(sock, 16)
    except socket.gaierror as exc:
        raise MsttError(f"no Dask scheduler at {address}: host {host} not found ({exc.strerror or exc})") from None
    except ConnectionRefusedError:
        raise MsttError(f"no Dask scheduler at {address}: connection refused (nothing listens on {where}; "
                        "is the scheduler running, on this port?)") from None
    except TimeoutError:
        raise MsttError(f"{address} is not a Dask scheduler: it sent no greeting within {wait:g} s (a web "
                        f"server, the dashboard?); give the scheduler's address, such as tcp://host:{DEFAULT_PORT}") from None
    except OSError as exc:
        raise MsttError(f"no Dask scheduler at {address}: {exc.strerror or exc}") from None
    total, frames = struct.unpack("<QQ", head) if head is not None else (0, 0)
    if head is None or not 8 <= total <= GREETING_MAX or not 1 <= frames <= 64:
        raise MsttError(f"{address} is not a Dask scheduler: it answers in another protocol; give the "
                        f"scheduler's address, such as tcp://host:{DEFAULT_PORT}")


def _read_exactly(sock, n: int) -> bytes | None:
    """``n`` bytes, or None when the other side closes first."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def worker_version() -> str:
    """Runs on each worker: the package version it imports."""
    return plugin_version()


def worker_python(executable: str = sys.executable) -> str:
    """The Python interpreter that starts local worker processes: this one, or, inside an
    application that embeds Python (in QGIS ``sys.executable`` is the QGIS binary), an
    installed interpreter of exactly this Python build (the workers get this process's
    ``sys.path``, so its standard library and packages must match), checked by running it.
    Even a ``sys.executable`` named python is checked: an embedded Python sets it to the first
    ``python3`` on PATH, which may be another build."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    seen = [Path(executable)] if executable else []
    for root in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        seen += [Path(root) / "bin" / f"python{version}", Path(root) / "bin" / "python3", Path(root) / "python.exe"]
    seen.append(Path(shutil.which(f"python{version}") or "/nonexistent"))
    for cand in dict.fromkeys(seen):
        if cand.is_file() and os.access(cand, os.X_OK) and same_python(str(cand)):
            return str(cand)
    raise MsttError(f"no Python {sys.version.split()[0]} interpreter like this one found to start local Dask "
                    "workers; start a Dask scheduler and workers yourself and give its address (tcp://host:8786)")


def same_python(candidate: str) -> bool:
    """Whether ``candidate`` is this very Python build and imports Dask and this package."""
    code = "import sys, distributed, mstt_stvsr.core; print(sys.version)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    try:
        out = subprocess.run([candidate, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and out.stdout.strip() == sys.version.strip()


@contextlib.contextmanager
def interrupts_ignored():
    """SIGINT ignored while local workers are started, so that they inherit that (an ignored
    signal stays ignored across exec, and Python then installs no KeyboardInterrupt handler):
    Ctrl-C in a terminal reaches every process of the group, and the workers would each print a
    KeyboardInterrupt traceback; this process stops them itself. A Ctrl-C while they start is
    lost (press it again)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def connect(address: str, timeout: float = 30):
    """A ``distributed.Client`` for ``address``, closed (and a local cluster stopped) on exit."""
    kind, where = parse_address(address)
    from distributed import Client, LocalCluster

    cluster = None
    try:
        if kind == "local":
            python = worker_python()
            if python != sys.executable:
                multiprocessing.set_executable(python)  # the spawn context starts the workers
            # silence_logs: Dask's own log lines (tasks it canceled, a task of a canceled run that found
            # its work folder gone) are not the user's business: the run reports every error itself
            with interrupts_ignored():
                cluster = LocalCluster(n_workers=where, threads_per_worker=1, processes=True,
                                       dashboard_address=None, host="127.0.0.1", silence_logs=logging.CRITICAL)
            client = Client(cluster, timeout=timeout)
        else:
            check_scheduler(where)
            try:
                client = Client(where, timeout=timeout)
            except OSError as exc:
                raise MsttError(f"no Dask scheduler at {where}: {exc}") from None
        try:
            check_versions(client)
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def check_versions(client) -> None:
    """Every worker must import this package at this version (a clear error otherwise)."""
    ours = plugin_version()
    try:
        theirs = client.run(worker_version)
    except Exception as exc:  # a worker that cannot even import us fails to unpickle the call
        raise MsttError(f"the Dask workers cannot run mstt-stvsr ({type(exc).__name__}: {exc}); "
                        "install this package on every worker") from None
    if not theirs:
        raise MsttError("the Dask cluster has no workers")
    wrong = {w: v for w, v in theirs.items() if v != ours}
    if wrong:
        listing = ", ".join(f"{w} has {v or '(unknown)'}" for w, v in sorted(wrong.items()))
        raise MsttError(f"Dask workers run another version of mstt-stvsr than this one ({ours}): {listing}")


def network_resources(client) -> dict:
    """The resources network tasks ask for: a GPU where the cluster's workers declare them."""
    workers = client.scheduler_info().get("workers", {})
    if any(NETWORK_RESOURCE in (w.get("resources") or {}) for w in workers.values()):
        return {NETWORK_RESOURCE: 1}
    return {}

"""Connecting to a Dask cluster: ``local:N`` (a LocalCluster of N worker processes, one thread
each) or a scheduler address (``tcp://host:8786``), with a check that every worker runs this
version of the package."""
from __future__ import annotations

import contextlib

from .. import plugin_version
from ..errors import InputError, MsttError

LOCAL = "local:"
NETWORK_RESOURCE = "GPU"  # workers started with --resources GPU=1 run the network tasks


def parse_address(address: str):
    """("local", N) or ("remote", address); InputError for anything else."""
    text = str(address).strip()
    if text.startswith(LOCAL):
        n = text[len(LOCAL):]
        if not n.isdigit() or int(n) < 1:
            raise InputError(f"cluster {address!r}: local:N needs a positive number of workers")
        return "local", int(n)
    if "://" in text or ":" in text:
        return "remote", text
    raise InputError(f"cluster {address!r}: give local:N or a scheduler address such as tcp://host:8786")


def worker_version() -> str:
    """Runs on each worker: the package version it imports."""
    return plugin_version()


@contextlib.contextmanager
def connect(address: str, timeout: float = 30):
    """A ``distributed.Client`` for ``address``, closed (and a local cluster stopped) on exit."""
    kind, where = parse_address(address)
    from distributed import Client, LocalCluster

    cluster = None
    try:
        if kind == "local":
            cluster = LocalCluster(n_workers=where, threads_per_worker=1, processes=True,
                                   dashboard_address=None, host="127.0.0.1")
            client = Client(cluster, timeout=timeout)
        else:
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

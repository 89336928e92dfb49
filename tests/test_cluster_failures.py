"""``--cluster`` when things go wrong, from the command line, with real processes: a cluster
whose only worker died, an address that is not a Dask scheduler (a web server, another
protocol, the dashboard's URL, nothing listening), workers started in another folder than the
caller's relative paths, a batch stopped by a signal. Each ends with one line and exit status
2 (or the signal's), never a hang or a traceback."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from cluster_kit import KillAfterFirstNetworkTask, dask_cluster, free_port
from mishaps import cli, cli_env
from nets import tiny_mstt
from stackgen import write_stack

FAST = ["--tile-size", "80", "--overlap", "16", "--device", "cpu"]
LIMIT = 240  # seconds: a run that would hang fails the test instead


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from mstt_stvsr.core.net.weights import save_weights

    return str(save_weights(tiny_mstt(), tmp_path_factory.mktemp("w") / "tiny.safetensors"))


def one_error(res, command="run") -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"mstt-stvsr {command}: error: "), \
        (res.returncode, res.stderr[-3000:])
    return lines[0]


def wait_listening(port: int, proc) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            pytest.fail(f"the server ended: {proc.stdout.read() if proc.stdout else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail("the server did not start")


# A server of another protocol, which speaks first (as SSH, SMTP or FTP servers do).
BANNER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
held = []
while True:
    c, _ = s.accept(); c.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\\r\\n"); held.append(c)
"""


@pytest.mark.parametrize("server", ["web", "banner"])
def test_an_address_that_is_not_a_scheduler_is_one_line(tmp_path, weights, server):
    """A web server (silent until it gets a request: the old handshake waited for ever) and a
    server that greets in another protocol (the old client read its banner as a 2.8 EiB
    message length)."""
    paths = write_stack(tmp_path / "in", n=2, h=16, w=16)
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"] if server == "web" \
        else [sys.executable, "-c", BANNER, str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        wait_listening(port, proc)
        res = subprocess.run(cli("run", *paths, "-o", str(tmp_path / "out"), "--weights", weights, *FAST,
                                 "--cluster", f"tcp://127.0.0.1:{port}"),
                             capture_output=True, text=True, env=cli_env(), timeout=LIMIT)
    finally:
        proc.kill()
        proc.wait()
    line = one_error(res)
    assert f"tcp://127.0.0.1:{port} is not a Dask scheduler" in line
    assert ("no greeting" if server == "web" else "another protocol") in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("address, says", [
    ("http://127.0.0.1:8787/status", "is a web address (the scheduler's dashboard?)"),
    ("127.0.0.1:8787/status", "is a web address"),
    ("tcp://127.0.0.1:1", "connection refused"),
])
def test_a_dashboard_url_or_a_refused_port_is_one_line(tmp_path, weights, address, says):
    paths = write_stack(tmp_path / "in", n=2, h=16, w=16)
    res = subprocess.run(cli("run", *paths, "-o", str(tmp_path / "out"), "--weights", weights, *FAST,
                             "--cluster", address), capture_output=True, text=True, env=cli_env(), timeout=LIMIT)
    assert says in one_error(res)
    assert not (tmp_path / "out").exists()


def test_a_cluster_whose_only_worker_died_fails_after_the_worker_wait(tmp_path, weights):
    """The only worker is SIGKILLed after its first network task and none comes back: the
    run says so once --worker-wait has passed, instead of waiting at 'n/21 Dask tasks'."""
    from distributed import Client

    paths = write_stack(tmp_path / "in", n=3, h=64, w=200)
    with dask_cluster(1, tmp_path) as (address, _, workers):
        with Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=120)
            client.register_plugin(KillAfterFirstNetworkTask("w0"), name="kill-w0")
        res = subprocess.run(cli("run", *paths, "-o", str(tmp_path / "out"), "--weights", weights, *FAST,
                                 "--cluster", address, "--worker-wait", "3", "-q"),
                             capture_output=True, text=True, env=cli_env(), timeout=LIMIT)
        assert workers[0].wait(30) == -9
    line = one_error(res)
    assert "no Dask worker was connected for 3 s (--worker-wait); no output was written" in line
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_relative_paths_reach_workers_started_in_another_folder(tmp_path, weights):
    """README's example, run from the stack's folder with relative frames and -o, on workers
    whose working directory is elsewhere: the paths are made absolute before tasks are sent."""
    job = tmp_path / "job"
    write_stack(job / "u6", n=3, h=24, w=24)
    (tmp_path / "elsewhere").mkdir()
    with dask_cluster(1, tmp_path, cwd=tmp_path / "elsewhere") as (address, _, _):
        res = subprocess.run(cli("run", "u6/frame_00.tif", "u6/frame_01.tif", "u6/frame_02.tif", "-o", "out",
                                 "--weights", weights, *FAST, "--cluster", address, "-q"),
                             capture_output=True, text=True, env=cli_env(), timeout=LIMIT, cwd=job)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in (job / "out").iterdir()) == [f"frame_x4_t00{i}.tif" for i in range(5)]
    assert not list((tmp_path / "elsewhere").iterdir())


def frames_on_disk(out) -> int:
    return len(list(out.glob("*/*.tif")))


def stopped_batch(argv, out, started, sig=signal.SIGTERM):
    """A CLI batch sent ``sig`` as soon as ``started(out)``; (status, stderr). SIGINT goes to
    the whole process group, local Dask workers included, as Ctrl-C in a terminal does."""
    proc = subprocess.Popen(cli("batch", *argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(), start_new_session=True)
    end = time.monotonic() + LIMIT
    while not started(out):
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            pytest.fail(f"the batch ended (status {proc.returncode}) before it was stopped: "
                        f"{proc.communicate()[1][-3000:]}")
        time.sleep(0.02)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the batch did not stop")
    return proc.returncode, err


def working(out, stack) -> bool:
    return any((out / stack).glob(".mstt-*.partial"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_batch_on_a_cluster_stops_on_a_signal_and_says_what_it_wrote(tmp_path, weights, sig):
    """Ctrl-C or SIGTERM while both stacks run on local:2: they are canceled (the old batch
    ran both to the end, then said that nothing was written), and the last line says what the
    batch wrote, which is what is on the disk."""
    for name, seed in (("a", 0), ("b", 1)):
        write_stack(tmp_path / name, n=5, h=64, w=200, seed=seed)
    out = tmp_path / "out"
    code, err = stopped_batch([tmp_path / "a", tmp_path / "b", "-o", out, "--weights", weights, *FAST,
                               "--cluster", "local:2"], out, lambda o: working(o, "a") and working(o, "b"), sig)
    last = err.strip().splitlines()[-1]
    assert code == 128 + sig and last.startswith(f"mstt-stvsr batch: interrupted by {signal.Signals(sig).name}; "), err
    assert "Traceback" not in err, err
    n = frames_on_disk(out)
    assert n < 2 * 9, "both stacks ran to the end"
    assert (f"({n} frames written" in last) if n else ("no output was written" in last), (n, last)
    assert not list(out.glob("*/.mstt-*")), "work folders or claims left"


def test_a_sequential_batch_stopped_in_its_second_stack_says_the_first_is_written(tmp_path, weights):
    write_stack(tmp_path / "a", n=2, h=16, w=16)
    write_stack(tmp_path / "b", n=5, h=64, w=200, seed=1)
    out = tmp_path / "out"
    code, err = stopped_batch([tmp_path / "a", tmp_path / "b", "-o", out, "--weights", weights, *FAST], out,
                              lambda o: working(o, "b"))
    last = err.strip().splitlines()[-1]
    assert code == 128 + signal.SIGTERM, err
    assert last == (f"mstt-stvsr batch: interrupted by SIGTERM; 1 of 2 stacks were finished (3 frames written, "
                    f"in {out / 'a'}); the others left no frames (run the batch again with --resume to skip the "
                    "finished ones)"), last
    assert frames_on_disk(out) == 3 and not (out / "b").exists()


def test_an_error_in_a_task_is_its_own_one_line(tmp_path, weights):
    """A frame removed from the shared storage once the tasks run: the worker's InputError
    reaches the caller as itself (not ``Exception("InputError('...')")`` with a traceback)."""
    from distributed import Client

    from cluster_kit import RemoveAtFirstTask

    paths = write_stack(tmp_path / "in", n=3, h=24, w=24)
    with dask_cluster(1, tmp_path) as (address, _, _):
        with Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=120)
            client.register_plugin(RemoveAtFirstTask(paths[0]), name="remove-frame")
        res = subprocess.run(cli("run", *paths, "-o", str(tmp_path / "out"), "--weights", weights, *FAST,
                                 "--cluster", address, "-q"),
                             capture_output=True, text=True, env=cli_env(), timeout=LIMIT)
    assert one_error(res) == f"mstt-stvsr run: error: {paths[0]}: file not found"
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())

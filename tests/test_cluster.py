"""A stack on a Dask cluster (core.scale): the frames equal the single-process run's, with the
tiny network (non-zero residual: a wrong tile or a wrong blend across a task border shows)."""
import os

import numpy as np
import pytest
import rasterio

from mstt_stvsr.core.run.options import RunOptions
from mstt_stvsr.core.run.pipeline import run_stack
from mstt_stvsr.core.scale import tasks
from mstt_stvsr.core.scale.cluster import connect
from mstt_stvsr.core.scale.run import run_stack_cluster
from nets import tiny_mstt
from stackgen import write_stack

# 64 x 200 LR px in 80-px tiles: one row of 4 tiles, each its own block (4 blocks, 3 task borders)
OPTIONS = RunOptions(tile_size=80, overlap=16)
BLOCK = 1
DN = 1  # uint8: the same arithmetic in other processes and another order rounds at most 1 DN apart


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """(input paths, single-process outputs) of a 5-frame stack."""
    root = tmp_path_factory.mktemp("cluster")
    paths = write_stack(root / "in", n=5, h=64, w=200)
    return paths, run_stack(paths, root / "single", OPTIONS, model=tiny_mstt())


def compare(ours, theirs) -> float:
    """Largest difference in DN; asserts the same georeferencing, size, dtype and tags."""
    worst = 0.0
    assert [p.rsplit("/", 1)[1] for p in ours] == [p.rsplit("/", 1)[1] for p in theirs]
    for a, b in zip(ours, theirs):
        with rasterio.open(a) as da, rasterio.open(b) as db:
            assert (da.crs, da.transform, da.shape, da.dtypes) == (db.crs, db.transform, db.shape, db.dtypes)
            ta, tb = da.tags(), db.tags()
            for tag in ("MSTT_OUTPUT_INDEX", "MSTT_FRAME", "MSTT_WINDOW", "TIFFTAG_DATETIME"):
                assert ta.get(tag) == tb.get(tag), tag
            worst = max(worst, float(np.abs(da.read().astype(int) - db.read().astype(int)).max()))
    return worst


def test_local_cluster_equals_single_process(scene, tmp_path):
    paths, single = scene


    with connect("local:2") as client:
        ours = run_stack_cluster(paths, tmp_path / "out", OPTIONS, client, model=tiny_mstt(), block_tiles=BLOCK)
    assert compare(ours, single) <= DN
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.rsplit("/", 1)[1] for p in ours)



def test_parts_hold_the_output_values(scene, tmp_path):
    """The parts are what the frames hold (uint8 here, a quarter of a float32 blend), each
    output pixel once, and the work folder holds no more than the space check counted."""
    from distributed import Client

    from mstt_stvsr.core.geo.stack import read_stack_info
    from mstt_stvsr.core.geo.values import value_scaler
    from mstt_stvsr.core.run.pipeline import Hooks

    paths, single = scene
    seen = {}

    def progress(fraction, message):  # the frames are assembled, not yet committed
        if message.startswith("checking"):
            work = next((tmp_path / "out").glob(".mstt-*.partial"))
            seen["parts"] = [np.load(p, mmap_mode="r") for p in sorted((work / "parts").glob("*.npy"))]
            seen["bytes"] = sum(p.stat().st_size for p in work.rglob("*") if p.suffix in (".npy", ".part"))

    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        ours = run_stack_cluster(paths, tmp_path / "out", OPTIONS, client, model=tiny_mstt(), block_tiles=BLOCK,
                                 hooks=Hooks(progress=progress))
    info = read_stack_info(paths)
    assert len(seen["parts"]) == 8 and {a.dtype for a in seen["parts"]} == {np.dtype(np.uint8)}
    assert sum(a.size for a in seen["parts"]) == info.n_outputs * 3 * info.out_height * info.out_width
    frames = sum(os.path.getsize(p) for p in ours)
    assert seen["bytes"] <= tasks.work_bytes(info, value_scaler(info), 1) + frames + 8 * 128  # .npy headers
    assert compare(ours, single) <= DN


def test_compile_is_done_once_per_worker(scene, tmp_path, monkeypatch):
    """--compile on a cluster compiles the network's stages on each worker, once (not per
    task); a compiler that fails there is said in the run's log and the frames are the same."""
    import dataclasses

    import torch
    from distributed import Client

    from mstt_stvsr.core.run.pipeline import Hooks

    calls = []

    def failing_compile(fn, **kw):
        calls.append(fn)

        def compiled(*a, **k):
            raise RuntimeError("no C++ compiler found")
        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)  # the in-process worker shares this torch
    paths, single = scene
    lines = []
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        ours = run_stack_cluster(paths, tmp_path / "out", dataclasses.replace(OPTIONS, compile=True), client,
                                 model=tiny_mstt(), block_tiles=BLOCK, hooks=Hooks(log=lines.append))
    assert len(calls) == 4  # the 4 stages, once for the 8 network tasks
    assert any(line.startswith("compile: torch.compile of the network's stages on each Dask worker") for line in lines)
    assert "note: on a Dask worker: torch.compile of extract failed (RuntimeError: no C++ compiler found); " \
           "running eager" in lines, lines
    assert compare(ours, single) <= DN


def test_cluster_check_catches_a_block_without_its_border_tiles(scene, tmp_path, monkeypatch):
    """Negative control: blocks that run only the tiles whose centre they hold (not every
    tile that blends into them) must fail the comparison above."""
    from distributed import Client

    def own_tiles(grid, region):
        y0, y1, x0, x1 = region
        s = grid.scale
        return [t for t in grid if y0 <= (t.y.start + t.y.stop) * s / 2 < y1 and x0 <= (t.x.start + t.x.stop) * s / 2 < x1]

    monkeypatch.setattr(tasks, "touching", own_tiles)
    paths, single = scene
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        ours = run_stack_cluster(paths, tmp_path / "out", OPTIONS, client, model=tiny_mstt(), block_tiles=BLOCK)
    assert compare(ours, single) > DN


def test_a_worker_killed_mid_run_loses_nothing(scene, tmp_path):
    """A real scheduler and two workers; one is SIGKILLed right after its first network task:
    the scheduler re-runs what it held, and the frames are complete and equal."""
    from distributed import Client

    from cluster_kit import KillAfterFirstNetworkTask, dask_cluster

    paths, single = scene
    with dask_cluster(2, tmp_path) as (address, _, workers):
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            client.register_plugin(KillAfterFirstNetworkTask("w0"), name="kill-w0")
            ours = run_stack_cluster(paths, tmp_path / "out", OPTIONS, client, model=tiny_mstt(), block_tiles=BLOCK)
        assert workers[0].wait(30) == -9  # it really was killed, mid-run
        assert workers[1].poll() is None
    assert compare(ours, single) <= DN
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.rsplit("/", 1)[1] for p in ours)


def test_cluster_errors_are_clear_and_leave_nothing(tmp_path):
    """Fast failures before any cluster starts, from the command line."""
    import subprocess

    from mishaps import cli, cli_env

    paths = write_stack(tmp_path / "in", n=2, h=16, w=16)
    res = subprocess.run(cli("run", *paths, "-o", str(tmp_path / "out"), "--cluster", "nowhere"),
                         capture_output=True, text=True, env=cli_env(), timeout=120)
    assert res.returncode == 2 and "local:N or a scheduler address" in res.stderr
    assert not (tmp_path / "out").exists()


def test_the_single_process_path_never_imports_dask():
    import subprocess
    import sys

    code = ("import sys; from mstt_stvsr.core.run import command, pipeline; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("cluster", [None, "local:2"])
def test_batch_of_three_stacks_with_one_bad(tmp_path, cluster, capsys):
    """Two good stacks (a folder and a CSV manifest row) and a bad one (a single frame): the
    good ones are written, the bad one reports its error and writes nothing, exit status 1."""
    from mstt_stvsr.core import cli
    from mstt_stvsr.core.net.weights import save_weights

    weights = str(save_weights(tiny_mstt(), tmp_path / "tiny.safetensors"))
    write_stack(tmp_path / "a", n=3, h=24, w=24)
    write_stack(tmp_path / "b", n=2, h=20, w=28, seed=1)
    write_stack(tmp_path / "bad", n=1, h=20, w=20)
    (tmp_path / "list.csv").write_text("inputs,output\nb/*.tif,out/b\n")
    argv = ["batch", str(tmp_path / "a"), str(tmp_path / "bad"), "--manifest", str(tmp_path / "list.csv"),
            "-o", str(tmp_path / "out"), "--weights", weights, "--tile-size", "80", "--device", "cpu"]
    code = cli.main(argv + (["--cluster", cluster] if cluster else []))
    err = capsys.readouterr().err
    assert code == 1
    assert "batch: 3 stacks, 2 done, 1 failed" in err and "failed: bad: " in err and "at least 2 frames" in err
    for name, n in (("a", 3), ("b", 2)):
        frames = sorted((tmp_path / "out" / name).iterdir())
        assert len(frames) == 2 * n - 1 and all(p.suffix == ".tif" for p in frames)
        with rasterio.open(frames[-1]) as ds:
            assert ds.tags()["MSTT_OUTPUT_INDEX"] == str(2 * n - 2)
    assert not (tmp_path / "out" / "bad").exists()


def test_worker_python_inside_an_application_that_embeds_python():
    import sys

    from mstt_stvsr.core.scale.cluster import worker_python

    assert worker_python() == sys.executable
    found = worker_python("/usr/bin/qgis_process.bin")
    assert found != "/usr/bin/qgis_process.bin" and "python" in found.rsplit("/", 1)[1]


@pytest.mark.qgis
def test_qgis_cluster_parameter_through_qgis_process(scene, tmp_path):
    """CLUSTER=local:2 from qgis_process (sys.executable there is the QGIS binary): the
    workers start with a real interpreter and the frames equal the single-process run's."""
    from qgis_fixtures import ALG, QGIS_PROCESS, headless_env, run_qgis_process

    if not QGIS_PROCESS.exists():
        pytest.skip("no .venv/bin/qgis_process: run `make setup`")
    from mstt_stvsr.core.net.weights import save_weights

    weights = save_weights(tiny_mstt(), tmp_path / "tiny.safetensors")
    paths, single = scene
    res = run_qgis_process(["run", ALG, "--", *[f"INPUT={p}" for p in paths], f"WEIGHTS={weights}",
                            "TILE_SIZE=80", "OVERLAP=16", "DEVICE=cpu", "CLUSTER=local:2",
                            f"OUTPUT={tmp_path / 'out'}"], env=headless_env(tmp_path / "profile"), timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Dask cluster local:2: 2 worker(s)" in res.stdout
    ours = sorted(str(p) for p in (tmp_path / "out").glob("*.tif"))
    assert compare(ours, single) <= DN


def test_cluster_gone_mid_run_fails_clearly_and_leaves_nothing(scene, tmp_path):
    """The scheduler is SIGKILLed once the first tasks are done: a clear error, no output."""
    from distributed import Client

    from cluster_kit import dask_cluster
    from mstt_stvsr.core.errors import MsttError
    from mstt_stvsr.core.run.pipeline import Hooks

    paths, _ = scene
    with dask_cluster(1, tmp_path) as (address, scheduler, _):
        def progress(fraction, message):
            if scheduler.poll() is None:
                scheduler.kill()

        with Client(address, timeout=10) as client:
            client.wait_for_workers(1, timeout=120)
            with pytest.raises(MsttError, match="Dask"):
                run_stack_cluster(paths, tmp_path / "out", OPTIONS, client, model=tiny_mstt(), block_tiles=BLOCK,
                                  hooks=Hooks(progress=progress))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_run_resumes_after_the_whole_cluster_is_gone(scene, tmp_path):
    """--resume: the scheduler and the only worker are SIGKILLed once the first network task
    has finished; the run fails, keeping its finished parts; a resume on a new cluster reuses
    that one part (and the flows) and computes the 7 others; another engine is refused."""
    import dataclasses

    from distributed import Client

    from cluster_kit import KillClusterAfterFirstNetworkTask, dask_cluster
    from mstt_stvsr.core.errors import InputError, MsttError
    from mstt_stvsr.core.run.pipeline import Hooks

    paths, single = scene
    options, out, lines = dataclasses.replace(OPTIONS, resume=True), tmp_path / "out", []
    with dask_cluster(1, tmp_path) as (address, scheduler, workers):
        with Client(address, timeout=10) as client:
            client.wait_for_workers(1, timeout=120)
            client.register_plugin(KillClusterAfterFirstNetworkTask(scheduler.pid), name="kill-all")
            with pytest.raises(MsttError, match="Dask cluster went away"):
                run_stack_cluster(paths, out, options, client, model=tiny_mstt(), block_tiles=BLOCK,
                                  hooks=Hooks(log=lines.append))
        assert workers[0].wait(30) == -9 and scheduler.wait(30) == -9
    assert any("finished part(s) kept in" in line for line in lines) and not list(out.glob("*.tif"))
    with pytest.raises(InputError, match=r"engine Dask, blocks of 1 x 1 tiles \(now one process\)"):
        run_stack(paths, out, options, model=tiny_mstt())
    lines = []
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        ours = run_stack_cluster(paths, out, options, client, model=tiny_mstt(), block_tiles=BLOCK,
                                 hooks=Hooks(log=lines.append))
    assert "resume: 1 of 8 network task(s) reused, 7 computed" in lines
    assert compare(ours, single) <= DN
    assert sorted(p.name for p in out.iterdir()) == sorted(p.rsplit("/", 1)[1] for p in ours)


def test_cancel_cancels_the_tasks_and_leaves_nothing(scene, tmp_path):
    from distributed import Client

    from mstt_stvsr.core.errors import Canceled
    from mstt_stvsr.core.run.pipeline import Hooks

    paths, _ = scene
    seen = []
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        with pytest.raises(Canceled):
            run_stack_cluster(paths, tmp_path / "out", OPTIONS, client, model=tiny_mstt(), block_tiles=BLOCK,
                              hooks=Hooks(progress=lambda f, m: seen.append(f), is_canceled=lambda: bool(seen)))
        assert not [k for k in client.who_has() if str(k).startswith("mstt-")]  # nothing left on the cluster
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_canceled_run_stops_its_running_network_task(scene, tmp_path, monkeypatch):
    """Dask cannot stop a task that runs: the canceled run's network task stops at its next
    chunk of tiles (the stop marker) instead of keeping its worker busy to the end. The first
    tile's forward waits until the run has been canceled, so the task is running then."""
    import glob
    import time

    from distributed import Client

    from mstt_stvsr.core.errors import Canceled
    from mstt_stvsr.core.run import pipeline
    from mstt_stvsr.core.run.pipeline import Hooks

    paths, _ = scene
    forward, calls = pipeline.forward_tiles, []

    def counted(*args):
        calls.append(1)
        if len(calls) == 1:  # the run is canceled now; wait (at most 20 s) until it says so
            end = time.monotonic() + 20
            while not glob.glob(str(tmp_path / "out" / ".mstt-*" / tasks.STOP)) and time.monotonic() < end:
                time.sleep(0.05)
        return forward(*args)

    monkeypatch.setattr(pipeline, "forward_tiles", counted)  # the in-process worker shares this module
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        with pytest.raises(Canceled):
            run_stack_cluster(paths, tmp_path / "out", OPTIONS, client, model=tiny_mstt(), block_tiles=4,
                              hooks=Hooks(is_canceled=lambda: bool(calls)))
    assert len(calls) == 1  # of the 4 tiles of its block
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_without_dask_the_cluster_option_names_what_to_install():
    import subprocess
    import sys

    code = ("import sys; sys.modules['distributed'] = None\n"
            "from mstt_stvsr.core.errors import MsttError\n"
            "try:\n    import mstt_stvsr.core.scale.run\nexcept MsttError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "needs the Python packages dask and distributed (pip install dask distributed)" in out.stdout, out.stderr

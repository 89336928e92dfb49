"""``mstt-stvsr run``: arguments reach the pipeline, outputs are listed, errors are one line
with exit status 2 and leave no file; the installed console script works end to end."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
import torch

from mstt_stvsr.core import cli
from mstt_stvsr.core.net.weights import save_weights
from nets import tiny_mstt
from stackgen import write_stack


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(save_weights(tiny_mstt(), tmp_path_factory.mktemp("w") / "tiny.safetensors"))


def test_run_writes_outputs_and_lists_them(tmp_path, weights, capsys):
    paths = write_stack(tmp_path / "in", n=2, h=16, w=16, times=None)
    code = cli.main(["run", *paths, "-o", str(tmp_path / "out"), "--weights", weights, "--tile-size", "100",
                     "--overlap", "8", "--device", "cpu", "--precision", "fp32", "--prefix", "demo",
                     "--times", "2021-01-01T00:00:00,2021-01-01T00:00:02"])
    assert code == 0
    cap = capsys.readouterr()
    listed = cap.out.split()
    assert [Path(p).name for p in listed] == ["demo_t000.tif", "demo_t001.tif", "demo_t002.tif"]
    assert sorted(os.listdir(tmp_path / "out")) == ["demo_t000.tif", "demo_t001.tif", "demo_t002.tif"]
    assert "tiles: 1x1 of 160 px" in cap.err  # 100 rounded up to the network's 80-px unit
    assert "100%" in cap.err  # the progress bar
    with rasterio.open(listed[1]) as ds:
        assert ds.tags()["TIFFTAG_DATETIME"] == "2021:01:01 00:00:01"



def test_a_run_without_a_tile_size_takes_the_cpu_tile_for_its_scene(tmp_path, weights, capsys):
    """No --tile-size on a CPU: the run tiles a 100 x 100 scene as cost.cpu_tile chooses (2 x 2
    tiles of 80 computes less than one of 160 at a higher cost per pixel), and says so."""
    from mstt_stvsr.core.run import cost

    paths = write_stack(tmp_path / "in", n=2, h=100, w=100, times=None)
    assert cost.cpu_tile(100, 100, 16, None, "fp32") == 80
    code = cli.main(["run", *paths, "-o", str(tmp_path / "out"), "--weights", weights, "--device", "cpu",
                     "--precision", "fp32", "--times", "2021-01-01T00:00:00,2021-01-01T00:00:02"])
    assert code == 0
    assert "tiles: 2x2 of 80 px" in capsys.readouterr().err

ERRORS = [
    (lambda p, d, w: [p[0]], "at least 2 frames"),
    (lambda p, d, w: [*p, "--weights", str(d / "missing.safetensors")], "weights file not found"),
    (lambda p, d, w: [p[0], str(d / "nope.tif")], "nope.tif: file not found"),
    (lambda p, d, w: [*p, "--times", "2021-01-01"], "--times gives 1 times for 2 input frames"),
    (lambda p, d, w: [*p, "--device", "cuda"] if not torch.cuda.is_available() else [p[0]], "CUDA is not available|at least 2"),
    (lambda p, d, w: [*p, "--precision", "fp16", "--device", "cpu"], "fp16 needs a CUDA device"),
    (lambda p, d, w: [*p, "--overlap", "-3"], "overlap must be 0 or more"),
]


@pytest.mark.parametrize("i", range(len(ERRORS)))
def test_errors_are_one_line_exit_2_and_write_nothing(tmp_path, weights, capsys, i):
    paths = write_stack(tmp_path / "in", n=2, h=16, w=16)
    make, pattern = ERRORS[i]
    argv = make(paths, tmp_path, weights)
    if "--weights" not in argv:
        argv += ["--weights", weights]
    code = cli.main(["run", *argv, "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("mstt-stvsr run: error: ") and len(err.splitlines()) == 1
    import re

    assert re.search(pattern, err), err
    assert not (tmp_path / "out").exists()


def test_console_script_end_to_end(tmp_path, weights):
    """The installed entry point, as a user runs it: --quiet prints nothing; the same command
    again fails (outputs exist) with one line on stderr and exit status 2."""
    paths = write_stack(tmp_path / "in", n=2, h=16, w=16)
    exe = Path(sys.executable).with_name("mstt-stvsr")
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "mstt_stvsr.core"]),
           "run", *paths, "-o", str(tmp_path / "out"), "--weights", weights]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run(cmd + ["--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == "" and len(os.listdir(tmp_path / "out")) == 3
    r2 = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r2.returncode == 2
    assert r2.stderr.startswith("mstt-stvsr run: error: output ") and len(r2.stderr.strip().splitlines()) == 1
    assert "already exists" in r2.stderr and len(os.listdir(tmp_path / "out")) == 3

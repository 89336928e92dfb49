"""Real qgis_process runs: the .venv wrapper (list, help, run, --json, a bad input, a model
chaining GDAL algorithms around ours), and the `make package` ZIP installed into an empty
profile, first without torch (the install message), then with a dependency folder."""
from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis_fixtures import (
    ALG, QGIS_PROCESS, QGIS_PROCESS_BIN, REPO, VENV, headless_env, json_result, require_qgis_process, run_qgis_process,
)

pytestmark = pytest.mark.qgis

require_qgis_process()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The wrapper with its own empty profile (it enables the plugin there on first use)."""
    return headless_env(tmp_path_factory.mktemp("wrapper-profile"))


def test_list_and_help(env):
    listing = run_qgis_process(["list"], env=env)
    assert listing.returncode == 0, listing.stderr
    assert f"\t{ALG}\tSpace-time super-resolution (x4, 2x frame rate)" in listing.stdout
    above = listing.stdout.split(f"\t{ALG}")[0].splitlines()  # the provider's heading, above its algorithms
    assert "Space-time super-resolution" in next(line for line in reversed(above) if not line.startswith("\t"))
    assert "\tmstt:finetune\tFine-tune the network on your own video" in listing.stdout
    assert "\tgdal:cliprasterbyextent\t" in listing.stdout  # the stock algorithms the model uses are there too

    helped = run_qgis_process(["help", ALG], env=env)
    assert helped.returncode == 0, helped.stderr
    text = helped.stdout
    lines = text.splitlines()
    for name, kind in [("INPUT", "multilayer"), ("WEIGHTS", "file"), ("TILE_SIZE", "enum"), ("OVERLAP", "number"),
                       ("DEVICE", "enum"), ("PRECISION", "enum"), ("TIMES", "string"), ("OVERWRITE", "boolean"),
                       ("COG", "boolean"), ("OUTPUT", "folderDestination")]:
        i = next(i for i, line in enumerate(lines) if line.startswith(f"{name}: "))
        kinds = [ln.strip() for ln in lines[i + 1:i + 3] if ln.strip().startswith("Argument type:")]  # after its help, if any
        assert kinds == [f"Argument type:\t{kind}"], (name, lines[i + 1:i + 3])
    assert "OUTPUT_LAYERS: <outputMultilayer>" in text and "OUTPUT: <outputFolder>" in text
    assert "2N-1" in text and "Cost:" in text


def _frames_equal(a, b):
    """Same grid, and the same values up to a rounding flip: two runs of one path in float32 may
    sum a matmul in another order (MKL chooses its threading per call on a busy machine), moving
    a float by ulps and, at a .5 boundary, a written 8-bit value by 1 DN on a few pixels. Wrong
    inputs or options move most pixels (the ensemble check below relies on that)."""
    with rasterio.open(a) as x, rasterio.open(b) as y:
        if x.transform != y.transform or x.crs != y.crs or x.shape != y.shape:
            return False
        d = np.abs(x.read().astype(np.int64) - y.read().astype(np.int64))
    return d.max() <= 1 and np.count_nonzero(d) <= 0.001 * d.size


def test_run_text_and_json(env, tmp_path, small_stack, tiny_weights):
    args = ["run", ALG, "--", *[f"INPUT={p}" for p in small_stack], f"WEIGHTS={tiny_weights}",
            "TILE_SIZE=80", "DEVICE=cpu"]
    text = run_qgis_process([*args, f"OUTPUT={tmp_path / 'a'}"], env=env)
    assert text.returncode == 0, text.stdout + text.stderr
    outs = sorted(str(p) for p in (tmp_path / "a").glob("*.tif"))
    assert [Path(p).name for p in outs] == [f"frame_x4_t{k:03d}.tif" for k in range(5)]
    assert f"OUTPUT_LAYERS:\t{', '.join(outs)}" in text.stdout
    from mstt_stvsr.core.run.device import cpu_fast_bf16

    auto = "bf16" if cpu_fast_bf16() else "fp32"  # PRECISION auto on this CPU
    assert f"device cpu, {auto}" in text.stdout and "tiles: 1x1 of 80 px" in text.stdout and "elapsed:" in text.stdout
    assert "Traceback" not in text.stdout + text.stderr

    js = run_qgis_process(["--json", *args, f"OUTPUT={tmp_path / 'b'}"], env=env)
    assert js.returncode == 0, js.stdout + js.stderr
    doc = json_result(js.stdout)
    assert doc["algorithm_details"]["id"] == ALG
    assert doc["inputs"]["INPUT"] == small_stack
    assert doc["results"]["OUTPUT"] == str(tmp_path / "b")
    assert doc["results"]["OUTPUT_LAYERS"] == [o.replace(str(tmp_path / "a"), str(tmp_path / "b")) for o in outs]
    assert any(line.startswith("elapsed:") for line in doc["log"]["info"])
    # the same job gives the same frames, georeferenced 4x finer on the input's grid
    assert all(_frames_equal(a, b) for a, b in zip(outs, doc["results"]["OUTPUT_LAYERS"]))
    with rasterio.open(small_stack[0]) as src, rasterio.open(outs[1]) as new:
        assert new.transform.a == src.transform.a / 4 and (new.transform.c, new.transform.f) == (src.transform.c, src.transform.f)
        assert new.tags().get("MSTT_FRAME") == "interpolated"


def test_bad_input_is_one_clean_error(env, tmp_path, small_stack, tiny_weights):
    bad = run_qgis_process(["run", ALG, "--", f"INPUT={small_stack[0]}", f"INPUT={tmp_path / 'gone.tif'}",
                            f"WEIGHTS={tiny_weights}", f"OUTPUT={tmp_path / 'out'}"], env=env)
    assert bad.returncode != 0
    assert f"{tmp_path / 'gone.tif'}: file not found" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr and not (tmp_path / "out").exists()

    other = rasterio.open(small_stack[0]).profile  # a frame of another size: the engine's check
    other.update(width=30, height=20)
    with rasterio.open(tmp_path / "small.tif", "w", **other) as dst:
        dst.write(np.zeros((3, 20, 30), np.uint8))
    bad = run_qgis_process(["run", ALG, "--", f"INPUT={small_stack[0]}", f"INPUT={tmp_path / 'small.tif'}",
                            f"WEIGHTS={tiny_weights}", f"OUTPUT={tmp_path / 'out'}"], env=env)
    assert bad.returncode != 0
    assert f"{tmp_path / 'small.tif'}: size 30x20 differs from {small_stack[0]} (56x40)" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr and not (tmp_path / "out").exists()


def test_model_clips_superresolves_and_stacks_as_vrt(env, tmp_path, small_stack, tiny_weights):
    """tests/data/clip_sr_vrt.model3: gdal:cliprasterbyextent on each of 3 frames, then ours,
    then gdal:buildvirtualraster (one band per output frame)."""
    model = REPO / "tests" / "data" / "clip_sr_vrt.model3"
    # stackgen's grid: x 500000..500112, y 4499920..4500000 (2 m pixels); clip 40 x 30 pixels
    res = run_qgis_process(
        ["--json", "run", str(model), "--", *[f"frame_{i + 1}={p}" for i, p in enumerate(small_stack)],
         "extent=500010,500090,4499930,4499990 [EPSG:32633]", f"weights={tiny_weights}",
         f"superres:frames={tmp_path / 'frames'}", f"vrt:stack={tmp_path / 'stack.vrt'}"], env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json_result(res.stdout)
    assert doc["results"]["vrt:stack"] == str(tmp_path / "stack.vrt")
    frames = sorted((tmp_path / "frames").glob("*.tif"))
    assert len(frames) == 5
    with rasterio.open(frames[0]) as f0:
        assert (f0.width, f0.height) == (160, 120) and f0.transform.a == 0.5
        assert (f0.transform.c, f0.transform.f) == (500010.0, 4499990.0)
        first = f0.read(1)
    with rasterio.open(tmp_path / "stack.vrt") as vrt:
        assert vrt.count == 5 and (vrt.width, vrt.height) == (160, 120)
        assert np.array_equal(vrt.read(1), first)  # band k = output frame k


def test_package_zip_installs_into_an_empty_profile(tmp_path, small_stack, tiny_weights):
    built = subprocess.run(["make", "-s", "package"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    version = next(ln.split("=", 1)[1].strip() for ln in (REPO / "metadata.txt").read_text().splitlines()
                   if ln.startswith("version="))
    zpath = REPO / "dist" / f"mstt_stvsr-{version}.zip"
    assert str(zpath) in built.stdout
    with zipfile.ZipFile(zpath) as zf:
        names = zf.namelist()
        assert all(n.startswith("mstt_stvsr/") for n in names)
        assert {"mstt_stvsr/__init__.py", "mstt_stvsr/metadata.txt", "mstt_stvsr/resources/icon.svg",
                "mstt_stvsr/mstt_qgis/algorithm.py", "mstt_stvsr/core/run/pipeline.py",
                "mstt_stvsr/core/net/model.py", "mstt_stvsr/core/net/spec.py", "mstt_stvsr/core/bench/__init__.py"} <= set(names)
        assert not [n for n in names if any(s in n for s in (".venv", "__pycache__", "/tests/", "/build/",
                                                              "/dist/", ".pyc", ".git"))]
        profile = tmp_path / "profile"
        plugins = profile / "profiles" / "default" / "python" / "plugins"
        plugins.mkdir(parents=True)
        zf.extractall(plugins)  # what "Install from ZIP" does

    # Debian's qgis_process alone: no wrapper, no checkout on QGIS_PLUGINPATH, no venv (no torch)
    env = headless_env(profile)
    for key in ("PYTHONPATH", "QGIS_PLUGINPATH"):
        env.pop(key, None)
    enabled = run_qgis_process(["plugins", "enable", "mstt_stvsr"], env=env, binary=QGIS_PROCESS_BIN)
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    listing = run_qgis_process(["list"], env=env, binary=QGIS_PROCESS_BIN)
    assert f"\t{ALG}\t" in listing.stdout, listing.stdout + listing.stderr

    args = ["run", ALG, "--", *[f"INPUT={p}" for p in small_stack], f"WEIGHTS={tiny_weights}", "TILE_SIZE=80",
            f"OUTPUT={tmp_path / 'out'}"]
    deps = profile / "profiles" / "default" / "python" / "mstt_stvsr_deps"
    no_torch = run_qgis_process(args, env=env, binary=QGIS_PROCESS_BIN)
    assert no_torch.returncode != 0
    said = no_torch.stdout + no_torch.stderr
    assert f'-m pip install --target "{deps}"' in said and "torch==2.13.0+cpu" in said, said
    assert "Traceback" not in said and not (tmp_path / "out").exists()

    # what that pip command makes: a folder of packages; here the venv's, holding torch
    site = subprocess.run([str(VENV / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    os.symlink(site, deps)
    ran = run_qgis_process(args, env=env, binary=QGIS_PROCESS_BIN)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert len(list((tmp_path / "out").glob("*.tif"))) == 5


def test_windows_and_ensemble_options(env, tmp_path, small_stack, tiny_weights):
    """WINDOWS and ENSEMBLE reach the engine: the central plan runs 2 windows for 3 frames,
    fast runs 1, and the ensemble run differs from the plain one."""
    base = ["run", ALG, "--", *[f"INPUT={p}" for p in small_stack], f"WEIGHTS={tiny_weights}", "DEVICE=cpu"]
    central = run_qgis_process([*base, "WINDOWS=1", f"OUTPUT={tmp_path / 'c'}"], env=env)  # an option's number
    assert central.returncode == 0, central.stdout + central.stderr
    assert "2 time window(s), central plan" in central.stdout + central.stderr
    fast = run_qgis_process([*base, "WINDOWS=fast", f"OUTPUT={tmp_path / 'f'}"], env=env)
    assert fast.returncode == 0, fast.stdout + fast.stderr
    assert "1 time window(s), fast plan" in fast.stdout + fast.stderr
    ens = run_qgis_process([*base, "ENSEMBLE=true", f"OUTPUT={tmp_path / 'e'}"], env=env)
    assert ens.returncode == 0, ens.stdout + ens.stderr
    plain = sorted((tmp_path / "f").glob("*.tif"))
    ensembled = sorted((tmp_path / "e").glob("*.tif"))
    assert len(plain) == len(ensembled) == 2 * len(small_stack) - 1
    assert not all(_frames_equal(a, b) for a, b in zip(plain, ensembled))


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_qgis_process_cleanly(env, tmp_path, tiny_weights, sig):
    """SIGTERM (a batch system, ``kill``) used to end qgis_process at once, leaving the claim
    and the hidden work folder behind: now the run stops as on the command line, says so, and
    leaves nothing."""
    import signal
    import time

    from mishaps import writing
    from stackgen import write_stack

    paths = write_stack(tmp_path / "in", n=8, h=96, w=320)
    out = tmp_path / "out"
    proc = subprocess.Popen([str(QGIS_PROCESS), "run", ALG, "--", *[f"INPUT={p}" for p in paths],
                             f"WEIGHTS={tiny_weights}", "TILE_SIZE=80", "DEVICE=cpu", f"OUTPUT={out}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(REPO))
    end = time.monotonic() + 240
    while not writing(out):
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            pytest.fail(f"the run ended (status {proc.returncode}) before it was writing: {proc.communicate()[0][-3000:]}")
        time.sleep(0.02)
    proc.send_signal(getattr(signal, sig))
    said, _ = proc.communicate(timeout=240)
    assert proc.returncode == 1, (proc.returncode, said[-3000:])
    assert f"interrupted by {sig}; no output was written" in said
    assert not out.exists() or not list(out.iterdir()), list(out.iterdir())

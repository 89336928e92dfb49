"""Never lose or corrupt data, through qgis_process: the most important cases of
test_data_safety.py (concurrent runs, outputs that would replace inputs, a full disk, bad
weights, frames out of time order, a damaged frame). Each is a clean Processing error (no
traceback, no OUTPUT_LAYERS) that leaves nothing behind, or a run that says what it did."""
from __future__ import annotations

import os

import pytest
import rasterio
from mishaps import poison_weights, resume, start_paused, tags, tmpfs, truncate
from qgis_fixtures import ALG, headless_env, require_qgis_process, run_qgis_process
from stackgen import write_stack

pytestmark = pytest.mark.qgis

require_qgis_process()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return headless_env(tmp_path_factory.mktemp("safety-profile"))


def qgis_run(env, inputs, out, weights, *extra):
    device = [] if any(e.startswith("DEVICE=") for e in extra) else ["DEVICE=cpu"]
    done = run_qgis_process(["run", ALG, "--", *[f"INPUT={p}" for p in inputs], f"WEIGHTS={weights}",
                             *device, f"OUTPUT={out}", *extra], env=env)
    return done.returncode, done.stdout + done.stderr


def refused(code, said, *words) -> None:
    assert code != 0, said
    assert "Traceback" not in said and "OUTPUT_LAYERS" not in said, said
    for w in words:
        assert w in said, (w, said)


def test_a_run_for_outputs_another_run_is_writing_is_refused(env, tmp_path, tiny_weights):
    paths = write_stack(tmp_path / "in", n=3, h=120, w=120)
    out = tmp_path / "out"
    first = start_paused(["run", *paths, "-o", str(out), "--weights", str(tiny_weights), "--tile-size", "80",
                          "--quiet"], out)
    try:
        code, said = qgis_run(env, paths, out, tiny_weights, "OVERWRITE=true")
    finally:
        status, err = resume(first)
    assert status == 0, err
    refused(code, said, f"being written by another run (process {first.pid} on ")
    assert len({tags(p)["MSTT_RUN"] for p in out.glob("*.tif")}) == 1


def test_an_output_never_replaces_an_input(env, tmp_path, tiny_weights):
    """The default names are the inputs' common prefix + "_x4": with nothing in common,
    "mstt_x4_t000.tif", which here is an input."""
    folder = tmp_path / "frames"
    paths = write_stack(folder, n=2, h=16, w=16)
    named = [folder / "mstt_x4_t000.tif", folder / "other.tif"]
    for p, q in zip(paths, named):
        os.rename(p, q)
    before = {p: p.read_bytes() for p in named}
    code, said = qgis_run(env, named, folder, tiny_weights, "OVERWRITE=true")
    refused(code, said, f"output {named[0]} would replace the input {named[0]}")
    assert {p: p.read_bytes() for p in named} == before  # (QGIS itself may add .aux.xml statistics)
    assert sorted(p.name for p in folder.glob("*.tif")) == sorted(p.name for p in named)


def test_a_full_disk_is_an_error_and_lists_no_frames(env, tmp_path, tiny_weights):
    paths = write_stack(tmp_path / "in", n=3, h=48, w=48)
    with tmpfs(tmp_path / "disk", "200k") as disk:
        code, said = qgis_run(env, paths, disk / "out", tiny_weights)
        refused(code, said, "the disk is full")
        assert os.listdir(disk) == []


def test_weights_with_nan_are_refused(env, tmp_path, tiny_weights):
    paths = write_stack(tmp_path / "in", n=2, h=16, w=16)
    bad = poison_weights(tiny_weights, tmp_path / "bad.safetensors")
    code, said = qgis_run(env, paths, tmp_path / "out", bad)
    refused(code, said, f"{bad}: 1 tensor(s) hold NaN or infinite values")
    assert not (tmp_path / "out").exists()


def test_frames_out_of_time_order_are_processed_in_time_order(env, tmp_path, tiny_weights):
    paths = write_stack(tmp_path / "in", n=3, h=16, w=16, times="iso")
    code, said = qgis_run(env, paths[::-1], tmp_path / "out", tiny_weights)
    assert code == 0, said
    assert "processed in the order of their acquisition times (ACQUISITIONDATETIME): frame_00.tif, " \
           "frame_01.tif, frame_02.tif" in said
    outs = sorted(tmp_path.joinpath("out").glob("*.tif"))
    assert [tags(p)["MSTT_SOURCES"] for p in outs[::2]] == ["frame_00.tif", "frame_01.tif", "frame_02.tif"]
    with rasterio.open(paths[0]) as first:
        assert tags(outs[0])["ACQUISITIONDATETIME"].startswith(first.tags()["ACQUISITIONDATETIME"][:19])


def test_a_truncated_frame_is_refused_before_any_work(env, tmp_path, tiny_weights):
    paths = write_stack(tmp_path / "in", n=3, h=48, w=48)
    truncate(paths[1])
    code, said = qgis_run(env, paths, tmp_path / "out", tiny_weights)
    refused(code, said, f"{paths[1]}: cannot be read (", "damaged or incomplete")
    assert not (tmp_path / "out").exists()


def test_enum_options_by_number_as_help_suggests(env, tmp_path, small_stack, tiny_weights):
    """qgis_process help lists DEVICE and PRECISION options by number ("e.g. '1'"): those work."""
    helped = run_qgis_process(["help", ALG], env=env).stdout
    assert "- 1: cpu" in helped and "Number of selected option" in helped
    code, said = qgis_run(env, small_stack, tmp_path / "out", tiny_weights, "DEVICE=1", "PRECISION=1")
    assert code == 0, said
    assert "device cpu, fp32" in said

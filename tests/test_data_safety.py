"""Never lose or corrupt data, through the command line: concurrent runs, outputs that would
replace inputs, a full disk, bad weights, frames out of time order, --overwrite with fewer
frames, damaged frames, prefixes with folders in them, signals, and the smaller points (NBITS,
overlap, raw warnings, weights errors naming the file). README: "What happens when things go
wrong". The same cases through qgis_process: test_data_safety_qgis.py."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import warnings

import pytest
import rasterio

from mishaps import fill, poison_weights, resume, start_paused, tags, tmpfs, truncate
from mstt_stvsr.core import cli
from mstt_stvsr.core.net.weights import save_weights
from nets import tiny_mstt
from stackgen import write_stack


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(save_weights(tiny_mstt(), tmp_path_factory.mktemp("w") / "tiny.safetensors"))


def run(capsys, *args):
    """``mstt-stvsr run ARGS --device cpu``: (status, stdout, stderr)."""
    code = cli.main(["run", *map(str, args), "--device", "cpu"])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_error(err: str, *words) -> None:
    """One line on stderr: the CLI's error, holding ``words``, no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mstt-stvsr run: error: "), err
    for w in words:
        assert w in lines[0], (w, err)


def frames(folder) -> list:
    return sorted(str(p) for p in folder.glob("*.tif"))


def names(n: int, prefix="frame_x4") -> list:
    return [f"{prefix}_t{i:03d}.tif" for i in range(n)]


# 1 -------------------------------------------------------------------------------------------
def test_a_second_run_for_the_same_outputs_is_refused_while_the_first_writes(tmp_path, weights, capsys):
    """Two runs into one folder at once: the second is refused, naming the first, which
    finishes with every frame its own (before, both succeeded and one replaced the other's)."""
    paths = write_stack(tmp_path / "in", n=3, h=120, w=120)
    out = tmp_path / "out"
    first = start_paused(["run", *paths, "-o", str(out), "--weights", weights, "--tile-size", "80", "--quiet"], out)
    try:
        code, stdout, err = run(capsys, *paths, "-o", out, "--weights", weights, "--overwrite")
    finally:
        status, first_err = resume(first)
    assert status == 0, first_err
    one_error(err, f"being written by another run (process {first.pid} on ")
    assert code == 2 and stdout == ""
    assert sorted(os.listdir(out)) == names(5)
    assert len({tags(f)["MSTT_RUN"] for f in frames(out)}) == 1


# 2 -------------------------------------------------------------------------------------------
def test_an_output_never_replaces_an_input(tmp_path, weights, capsys):
    """--overwrite with the inputs' folder and a prefix that names outputs like the inputs;
    and VRT inputs whose sources are named like the outputs: refused, inputs untouched."""
    folder = tmp_path / "frames"
    named = [folder / "s_t000.tif", folder / "s_t002.tif"]  # what outputs 0 and 2 would be called
    for p, q in zip(write_stack(folder, n=2, h=16, w=16), named):
        os.rename(p, q)
    before = {p: p.read_bytes() for p in named}
    code, _, err = run(capsys, *named, "-o", folder, "--prefix", "s", "--overwrite", "--weights", weights)
    assert code == 2
    one_error(err, f"output {named[0]} would replace the input {named[0]}")
    vrts = [tmp_path / "v0.vrt", tmp_path / "v1.vrt"]
    for src, vrt in zip(named, vrts):
        subprocess.run(["gdalbuildvrt", "-q", str(vrt), str(src)], check=True)
    code, _, err = run(capsys, *vrts, "-o", folder, "--prefix", "s", "--overwrite", "--weights", weights)
    assert code == 2
    one_error(err, "would replace the input", "s_t000.tif")
    assert {p: p.read_bytes() for p in named} == before and sorted(os.listdir(folder)) == ["s_t000.tif", "s_t002.tif"]


# 3 -------------------------------------------------------------------------------------------
def test_outputs_that_cannot_fit_are_refused_before_any_work(tmp_path, weights, capsys):
    paths = write_stack(tmp_path / "in", n=3, h=48, w=48)  # 5 outputs of 192 x 192 x 3: 540 KB raw
    with tmpfs(tmp_path / "disk", "400k") as disk:
        fill(disk, 40_000)
        code, stdout, err = run(capsys, *paths, "-o", disk / "out", "--weights", weights)
        assert code == 2 and stdout == ""
        one_error(err, "not enough free space in", "KB free")
        assert os.listdir(disk) == ["filler"]


def test_a_cluster_run_that_cannot_fit_is_refused_before_any_work(tmp_path, weights, capsys):
    """--cluster counts its work files too: the flows (74 KB) and the parts (553 KB: uint8,
    every output pixel once) with the outputs (at least 138 KB). 400 KB free would let a run
    in one process start (it needs at least 138 KB); a cluster run is refused before any task
    and any file."""
    paths = write_stack(tmp_path / "in", n=3, h=48, w=48)  # 5 outputs of 192 x 192 x 3: 540 KB raw
    with tmpfs(tmp_path / "disk", "1m") as disk:
        fill(disk, 400_000)
        code, stdout, err = run(capsys, *paths, "-o", disk / "out", "--weights", weights, "--cluster", "local:1")
        last = err.strip().splitlines()[-1]
        assert code == 2 and stdout == "" and "Traceback" not in err, err
        assert last.startswith("mstt-stvsr run: error: not enough free space in") and "KB free" in last, err
        assert "612 KB of work files" in last and last.endswith("; no output was written"), err
        assert "tiles:" not in err  # no task was submitted
        assert os.listdir(disk) == ["filler"]


@pytest.mark.parametrize("cog", [False, True], ids=["gtiff", "cog"])
def test_a_disk_that_fills_while_writing_is_an_error_and_leaves_nothing(tmp_path, weights, capsys, cog):
    """The estimate lets the run start (the outputs might compress enough), the disk fills
    while frames are written (GeoTIFF) or copied (COG): a one-line error saying the disk is
    full, no frame listed, nothing left. Before: "wrote 5 frames" over truncated files."""
    paths = write_stack(tmp_path / "in", n=3, h=48, w=48)  # outputs take about 360 KB as GeoTIFFs
    with tmpfs(tmp_path / "disk", "400k" if cog else "200k") as disk:
        code, stdout, err = run(capsys, *paths, "-o", disk / "out", "--weights", weights, *(["--cog"] if cog else []))
        last = err.strip().splitlines()[-1]
        assert code == 2 and stdout == "" and "Traceback" not in err, err
        assert last.startswith("mstt-stvsr run: error: ") and "the disk is full" in last, err
        assert os.listdir(disk) == []


# 4 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_weights_with_non_finite_values_are_refused(tmp_path, weights, capsys, value):
    paths = write_stack(tmp_path / "in", n=2, h=16, w=16)
    bad = poison_weights(weights, tmp_path / "bad.safetensors", value)
    code, _, err = run(capsys, *paths, "-o", tmp_path / "out", "--weights", bad)
    assert code == 2
    one_error(err, f"{bad}: 1 tensor(s) hold NaN or infinite values: conv_last.weight")
    assert not (tmp_path / "out").exists()


# 5 -------------------------------------------------------------------------------------------
def test_frames_are_processed_in_their_acquisition_time_order(tmp_path, weights, capsys):
    paths = write_stack(tmp_path / "in", n=3, h=16, w=16, times="iso")
    code, stdout, err = run(capsys, paths[2], paths[0], paths[1], "-o", tmp_path / "out", "--weights", weights)
    assert code == 0, err
    assert ("note: frames given out of time order; processed in the order of their acquisition times "
            "(ACQUISITIONDATETIME): frame_00.tif, frame_01.tif, frame_02.tif") in err
    outs = stdout.split()
    assert [tags(f)["MSTT_SOURCES"] for f in outs] == [
        "frame_00.tif", "frame_00.tif;frame_01.tif", "frame_01.tif", "frame_01.tif;frame_02.tif", "frame_02.tif"]
    times = [tags(f)["ACQUISITIONDATETIME"] for f in outs]
    assert times == sorted(times) and len(set(times)) == 5


def _set_acquisition_times(paths, times):
    for p, t in zip(paths, times):
        with rasterio.open(p, "r+") as ds:
            ds.update_tags(ACQUISITIONDATETIME=t)


def test_duplicate_times_and_repeated_frames_are_refused(tmp_path, weights, capsys):
    paths = write_stack(tmp_path / "in", n=3, h=16, w=16, times=None)
    _set_acquisition_times(paths, ["2021-05-03T10:00:00Z", "2021-05-03T10:00:02Z", "2021-05-03T10:00:02Z"])
    code, _, err = run(capsys, *paths, "-o", tmp_path / "out", "--weights", weights)
    assert code == 2
    one_error(err, f"{paths[1]} and {paths[2]} have the same acquisition time (ACQUISITIONDATETIME=")
    code, _, err = run(capsys, paths[0], paths[1], paths[0], "-o", tmp_path / "out", "--weights", weights,
                       "--times", "2021-05-03T10:00:00,2021-05-03T10:00:01,2021-05-03T10:00:02")
    assert code == 2
    one_error(err, f"{paths[0]}: the same file as frame 1")
    assert not (tmp_path / "out").exists()


# 6 -------------------------------------------------------------------------------------------
def test_overwrite_with_fewer_frames_leaves_one_sequence(tmp_path, weights, capsys):
    """The earlier run's later frames go (their tags say mstt-stvsr wrote them as this
    sequence's frames); a file that only looks like one of them stays, and the log says so."""
    paths = write_stack(tmp_path / "in", n=3, h=16, w=16)
    out = tmp_path / "out"
    assert run(capsys, *paths, "-o", out, "--weights", weights, "--prefix", "seq")[0] == 0
    shutil.copy(paths[0], out / "seq_t009.tif")  # someone's own file, named alike
    code, _, err = run(capsys, *paths[:2], "-o", out, "--weights", weights, "--prefix", "seq", "--overwrite")
    assert code == 0, err
    assert sorted(os.listdir(out)) == names(3, "seq") + ["seq_t009.tif"]
    assert len({tags(out / n)["MSTT_RUN"] for n in names(3, "seq")}) == 1
    assert "removed 2 frame(s) of an earlier run of this sequence: seq_t003.tif, seq_t004.tif" in err
    assert "kept seq_t009.tif" in err


# 7 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "vrt-source-missing"])
def test_a_damaged_frame_is_refused_before_any_work(tmp_path, weights, capsys, damage):
    paths = write_stack(tmp_path / "in", n=3, h=48, w=48)
    if damage == "truncated":
        truncate(paths[1])
        bad = paths[1]
    else:
        bad = str(tmp_path / "in" / "frame_01.vrt")
        subprocess.run(["gdalbuildvrt", "-q", bad, paths[1]], check=True)
        os.remove(paths[1])
    code, stdout, err = run(capsys, paths[0], bad, paths[2], "-o", tmp_path / "out", "--weights", weights)
    assert code == 2 and stdout == ""
    one_error(err, f"{bad}: cannot be read (", "the file is damaged or incomplete")
    assert not (tmp_path / "out").exists()


# 8 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["../escaped", "sub/frames"])
def test_a_prefix_cannot_name_another_folder(tmp_path, weights, capsys, prefix):
    paths = write_stack(tmp_path / "in", n=2, h=16, w=16)
    before = sorted(tmp_path.rglob("*"))
    code, _, err = run(capsys, *paths, "-o", tmp_path / "out", "--weights", weights, "--prefix", prefix)
    assert code == 2
    one_error(err, f"prefix {prefix!r} must be a plain file name start")
    assert sorted(tmp_path.rglob("*")) == before


# 9 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_stops_the_run_and_removes_its_files(tmp_path, weights, sig):
    paths = write_stack(tmp_path / "in", n=3, h=120, w=120)
    out = tmp_path / "out"
    proc = start_paused(["run", *paths, "-o", str(out), "--weights", weights, "--tile-size", "80", "--quiet"], out)
    status, err = resume(proc, sig)
    assert status == 128 + sig, err
    assert err.strip() == f"mstt-stvsr run: interrupted by {sig.name}; no output was written"
    assert not out.exists()  # the run made it, and removed it again


def test_what_a_killed_run_left_is_removed_by_the_next_run(tmp_path, weights, capsys):
    """kill -9 cannot be caught: its claim and hidden work folder stay (nothing that looks like
    a frame), and the next run for the same outputs removes them and says so."""
    paths = write_stack(tmp_path / "in", n=3, h=120, w=120)
    out = tmp_path / "out"
    proc = start_paused(["run", *paths, "-o", str(out), "--weights", weights, "--tile-size", "80", "--quiet"], out)
    proc.kill()
    proc.communicate()
    assert os.listdir(out) and not list(out.glob("*.tif"))  # leftovers, none of them a *.tif
    code, _, err = run(capsys, *paths, "-o", out, "--weights", weights)
    assert code == 0, err
    assert f"left by an interrupted run (process {proc.pid} on " in err
    assert sorted(os.listdir(out)) == names(5)


# 10 ------------------------------------------------------------------------------------------
def test_nbits_is_kept_in_geotiff_and_cog(tmp_path, weights, capsys):
    paths = write_stack(tmp_path / "in", n=2, h=16, w=16, dtype="uint16", nbits=12)
    for cog in ([], ["--cog"]):
        out = tmp_path / f"out{len(cog)}"
        code, stdout, err = run(capsys, *paths, "-o", out, "--weights", weights, *cog)
        assert code == 0, err
        for f in stdout.split():
            assert tags(f, ns="IMAGE_STRUCTURE", band=1).get("NBITS") == "12", (cog, f)
            with rasterio.open(f) as ds:
                assert ds.read().max() <= 4095


def test_an_overlap_of_half_the_chosen_tile_is_refused_too(tmp_path, weights, capsys):
    paths = write_stack(tmp_path / "in", n=2, h=16, w=16)
    code, _, err = run(capsys, *paths, "-o", tmp_path / "out", "--weights", weights, "--overlap", "100")
    assert code == 2
    one_error(err, "overlap 100 must be less than half the tile size (160, chosen for this device")
    assert not (tmp_path / "out").exists()


def test_warnings_are_lines_of_the_log_not_raw_python_warnings(tmp_path, weights, capsys, monkeypatch):
    """A stack without georeferencing, as COGs, with a library warning on the way (injected):
    the log says each once, in its own words, with no Python source lines."""
    from mstt_stvsr.core.run import pipeline

    real = pipeline.value_scaler

    def talkative(*a, **k):
        warnings.warn("a library has something to say", UserWarning)
        return real(*a, **k)
    monkeypatch.setattr(pipeline, "value_scaler", talkative)
    paths = write_stack(tmp_path / "in", n=2, h=16, w=16, crs=None, times=None)
    code, _, err = run(capsys, *paths, "-o", tmp_path / "out", "--weights", weights, "--cog")
    assert code == 0, err
    assert "note: a library has something to say" in err.splitlines()
    assert "Warning" not in err and "warnings.warn" not in err, err
    assert "is not georeferenced; outputs will not be either" in err


def test_a_weights_error_names_the_file(tmp_path, capsys):
    from safetensors.torch import save_file
    import torch

    bad = tmp_path / "other_model.safetensors"
    save_file({"encoder.weight": torch.zeros(3, 3)}, str(bad))
    paths = write_stack(tmp_path / "in", n=2, h=16, w=16)
    code, _, err = run(capsys, *paths, "-o", tmp_path / "out", "--weights", bad)
    assert code == 2
    one_error(err, f"{bad}: not an MSTT state_dict")

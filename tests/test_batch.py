"""``mstt-stvsr batch`` as a user with an archive runs it: stacks that would share outputs,
manifests written by spreadsheets, frames numbered without zero padding, folders of PNG frames
with hidden files, ``--resume`` after the inputs were regenerated. Real GeoTIFFs, the tiny
network, the command line's own entry point."""
import json
import os
import shutil
from pathlib import Path

import pytest
import rasterio

from mstt_stvsr.core import cli
from nets import tiny_mstt
from stackgen import write_stack

FAST = ["--tile-size", "80", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from mstt_stvsr.core.net.weights import save_weights

    return str(save_weights(tiny_mstt(), tmp_path_factory.mktemp("w") / "tiny.safetensors"))


def batch(capsys, *argv) -> tuple:
    """(exit status, stderr) of ``mstt-stvsr batch ARGV``."""
    code = cli.main(["batch", *map(str, argv)])
    return code, capsys.readouterr().err


def one_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mstt-stvsr batch: error: "), err
    return lines[0]


def sources(folder: Path) -> list:
    """MSTT_SOURCES of the frames in ``folder``, in output order."""
    out = []
    for p in sorted(folder.glob("*.tif")):
        with rasterio.open(p) as ds:
            out.append(ds.tags()["MSTT_SOURCES"])
    return out


def test_two_folders_of_the_same_name_are_refused_before_any_work(tmp_path, weights, capsys):
    write_stack(tmp_path / "site1" / "a", n=2, h=16, w=16)
    write_stack(tmp_path / "site2" / "a", n=2, h=16, w=16, seed=1)
    code, err = batch(capsys, tmp_path / "site1" / "a", tmp_path / "site2" / "a", "-o", tmp_path / "out",
                      "--overwrite", "--weights", weights, *FAST)
    line = one_error(err)
    assert code == 2 and "would write the same frames" in line
    assert str(tmp_path / "site1" / "a") in line and str(tmp_path / "site2" / "a") in line
    assert not (tmp_path / "out").exists()


def test_manifest_rows_with_the_same_output_are_refused(tmp_path, weights, capsys):
    write_stack(tmp_path / "x", n=2, h=16, w=16)
    write_stack(tmp_path / "y", n=2, h=16, w=16, seed=1)
    (tmp_path / "list.csv").write_text("inputs,output\nx,out\ny,out\n")
    code, err = batch(capsys, "--manifest", tmp_path / "list.csv", "--weights", weights, *FAST)
    line = one_error(err)
    assert code == 2 and "stack 1" in line and "stack 2" in line and "same frames" in line
    assert not (tmp_path / "out").exists()


def test_every_path_of_a_manifest_row_is_relative_to_the_manifest(tmp_path, weights, capsys, monkeypatch):
    """``x/f0;x/f1;x/f2`` from another working directory, which holds a stack named alike."""
    frames = write_stack(tmp_path / "m" / "x", n=3, h=16, w=16)
    write_stack(tmp_path / "cwd" / "x", n=3, h=24, w=24, seed=5)  # alike names, another size: not to be mixed in
    names = ";".join(f"x/{Path(p).name}" for p in frames)
    (tmp_path / "m" / "list.csv").write_text(f"inputs,output\n{names},out\n")
    monkeypatch.chdir(tmp_path / "cwd")
    code, err = batch(capsys, "--manifest", tmp_path / "m" / "list.csv", "--weights", weights, *FAST[:-1])
    assert code == 0, err
    assert "batch: 1 stacks, 1 done, 0 failed" in err
    assert sources(tmp_path / "m" / "out")[::2] == ["frame_00.tif", "frame_01.tif", "frame_02.tif"]
    with rasterio.open(sorted((tmp_path / "m" / "out").glob("*.tif"))[0]) as ds:
        assert (ds.width, ds.height) == (64, 64)  # from the 16 x 16 frames next to the manifest


def test_frames_numbered_without_padding_are_taken_in_number_order(tmp_path, weights, capsys):
    """f1, f2, f10 (no times in the frames): not f1, f10, f2; the log says so."""
    made = write_stack(tmp_path / "made", n=3, h=16, w=16, times=None)
    (tmp_path / "s").mkdir()
    for src, name in zip(made, ("f1.tif", "f2.tif", "f10.tif")):
        shutil.copy(src, tmp_path / "s" / name)
    code, err = batch(capsys, tmp_path / "s", "-o", tmp_path / "out", "--weights", weights, *FAST[:-1])
    assert code == 0, err
    assert "[s] note: frames taken in natural number order (f1.tif, f2.tif, f10.tif), not in name order" in err
    assert sources(tmp_path / "out" / "s") == ["f1.tif", "f1.tif;f2.tif", "f2.tif", "f2.tif;f10.tif", "f10.tif"]


def test_batch_resume_does_not_skip_frames_of_regenerated_inputs(tmp_path, weights, capsys):
    """The frames are there, but the inputs were made again since: the stack is not skipped as
    finished; it fails naming the input that changed, and its frames are left as they are."""
    write_stack(tmp_path / "a", n=2, h=16, w=16)
    args = [tmp_path / "a", "-o", tmp_path / "out", "--weights", weights, *FAST]
    assert batch(capsys, *args, "--resume")[0] == 0
    frames = sorted((tmp_path / "out" / "a").glob("*.tif"))
    stamps = [p.stat().st_mtime_ns for p in frames]
    assert "finished by an earlier run of this job" in batch(capsys, *args[:-1], "--resume")[1]
    write_stack(tmp_path / "a", n=2, h=16, w=16, seed=3)  # regenerated: other pixels, same names
    code, err = batch(capsys, *args[:-1], "--resume")
    assert code == 1, err
    assert "finished by an earlier run" not in err
    assert "made by another job: input" in err and "frame_00.tif changed since" in err and "--overwrite" in err
    assert [p.stat().st_mtime_ns for p in frames] == stamps


@pytest.mark.parametrize("kind", ["bom", "spaces", "semicolons", "tabs", "json-object", "json-stacks"])
def test_manifests_as_spreadsheets_write_them(tmp_path, weights, capsys, kind):
    write_stack(tmp_path / "x", n=2, h=16, w=16)
    text = {
        "bom": "\ufeffinputs,output\nx,out\n",
        "spaces": "inputs, output\r\n x , out\r\n",
        "semicolons": "Inputs;Output;Name\nx;out;first\n",
        "tabs": "inputs\toutput\nx\tout\n",
        "json-object": json.dumps({"inputs": "x", "output": "out"}),
        "json-stacks": json.dumps({"stacks": [{"inputs": ["x/frame_00.tif", "x/frame_01.tif"], "output": "out"}]}),
    }[kind]
    manifest = tmp_path / ("list.json" if kind.startswith("json") else "list.csv")
    manifest.write_bytes(text.encode("utf-8"))
    code, err = batch(capsys, "--manifest", manifest, "--weights", weights, *FAST)
    assert code == 0, err
    assert len(list((tmp_path / "out").glob("*.tif"))) == 3


def test_a_json_manifest_with_a_trailing_comma_is_one_line(tmp_path, weights, capsys):
    (tmp_path / "list.json").write_text('[{"inputs": "x", "output": "out"},\n]\n')
    code, err = batch(capsys, "--manifest", tmp_path / "list.json", "--weights", weights, *FAST)
    line = one_error(err)
    assert code == 2 and "list.json: not valid JSON (" in line and "line 2" in line


def test_folders_of_png_frames_with_hidden_and_system_files(tmp_path, weights, capsys):
    """PNG frames (which ``run`` reads) beside macOS ``._*`` forks and Thumbs.db: the PNGs are
    the stack, the rest is skipped."""
    import numpy as np

    from stackgen import clip

    (tmp_path / "p").mkdir()
    for i, frame in enumerate(clip(2, 16, 16)):
        with rasterio.open(tmp_path / "p" / f"img{i}.png", "w", driver="PNG", width=16, height=16, count=3,
                           dtype="uint8") as ds:
            ds.write((frame.transpose(2, 0, 1) * 255).astype(np.uint8))
        (tmp_path / "p" / f"._img{i}.png").write_bytes(b"\0\5\26\7 resource fork")
    (tmp_path / "p" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    code, err = batch(capsys, tmp_path / "p", "-o", tmp_path / "out", "--weights", weights, *FAST)
    assert code == 0, err
    assert sources(tmp_path / "out" / "p") == ["img0.png", "img0.png;img1.png", "img1.png"]


def test_a_missing_folder_and_an_output_in_the_input_folder_are_one_line(tmp_path, weights, capsys):
    code, err = batch(capsys, tmp_path / "nowhere", "-o", tmp_path / "out", "--weights", weights, *FAST)
    assert code == 2 and "stack folder" in one_error(err) and "nowhere not found" in err
    write_stack(tmp_path / "in" / "a", n=2, h=16, w=16)
    (tmp_path / "list.csv").write_text("inputs,output\nin/a,in/a\n")
    code, err = batch(capsys, "--manifest", tmp_path / "list.csv", "--weights", weights, *FAST)
    assert code == 2 and "is its input folder" in one_error(err)
    write_stack(tmp_path / "in" / "b", n=2, h=16, w=16, seed=1)
    (tmp_path / "list.csv").write_text("inputs,output\nin/a,out/a\nin/b,in/a\n")
    code, err = batch(capsys, "--manifest", tmp_path / "list.csv", "--weights", weights, *FAST)
    assert code == 2 and "stack 2" in one_error(err) and "is the input folder of stack a" in err
    assert sorted(p.name for p in (tmp_path / "in" / "a").iterdir()) == ["frame_00.tif", "frame_01.tif"]
    assert not (tmp_path / "out").exists()


def test_frame_names_that_are_not_utf8_are_one_line(tmp_path, weights, capsys):
    """Latin-1 names from an old archive (GDAL takes UTF-8 names only): refused naming the
    file, in ``run`` and in ``batch``, instead of a UnicodeEncodeError."""
    made = write_stack(tmp_path / "made", n=2, h=16, w=16)
    (tmp_path / "old").mkdir()
    for i, src in enumerate(made):
        shutil.copy(src, os.fsdecode(bytes(tmp_path / "old") + b"/vid\xe9o_%02d.tif" % i))
    frames = sorted(str(p) for p in (tmp_path / "old").iterdir())
    code = cli.main(["run", *frames, "-o", str(tmp_path / "out"), "--weights", weights, *FAST])
    line = capsys.readouterr().err.strip()
    assert code == 2 and line.startswith("mstt-stvsr run: error: ") and len(line.splitlines()) == 1
    assert "vid\\xe9o_00.tif: the name is not valid UTF-8" in line
    code, err = batch(capsys, tmp_path / "old", "-o", tmp_path / "out", "--weights", weights, *FAST)
    assert code == 1 and "failed: old: " in err and "vid\\xe9o_00.tif: the name is not valid UTF-8" in err
    assert not (tmp_path / "out").exists()

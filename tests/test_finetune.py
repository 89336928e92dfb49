"""``mstt-stvsr finetune``: a tiny network fine-tuned on a tiny video (seconds): validation on
held-out frames before and after, the better kept, the record in the weights' metadata and in
``info --weights``, resume, and clean refusals that write nothing."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mstt_stvsr.core.cli import main
from mstt_stvsr.core.errors import InputError
from mstt_stvsr.core.net.weights import default_weights_path, load_model, read_metadata, save_weights
from mstt_stvsr.core.training import finetune as ft
from mstt_stvsr.core.training import native_video as nv
from mstt_stvsr.core.training.clips import make_clip
from mstt_stvsr.core.training.config import ROOT_CONFIGS
from nets import tiny_mstt

TINY = ["--config", str(ROOT_CONFIGS / "tiny.toml"), "--crop", "20", "--threads", "1", "--minutes", "1"]


def write_video(folder: Path, frames: int = 21, size: int = 96, seed: int = 3, ext: str = "png") -> Path:
    """A stabilised synthetic clip saved as native frames f1 .. fN."""
    clip, _ = make_clip(seed, size, frames, motion="stabilised")
    folder.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(clip):
        Image.fromarray(f).save(folder / f"f{t + 1}.{ext}")
    return folder


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_weights(tiny_mstt(), tmp_path_factory.mktemp("base") / "tiny.safetensors", half=True)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from mstt_stvsr.core.training.synth import write_septuplets

    return write_septuplets(tmp_path_factory.mktemp("synth"), 2, 96, imagery=None, progress=False)


def tree(root: Path) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_finetune_validates_before_and_after_and_records_it(tmp_path, base, synth, capsys):
    """Fine-tuned on a PNG video and a JPEG video given by a list file, with a share of a synthetic
    set: both scores printed and recorded with the sources, steps, minutes and base; the output
    is the better of the two; info --weights shows the record."""
    png = write_video(tmp_path / "png")
    jpg = write_video(tmp_path / "jpg", frames=15, seed=4, ext="jpg")
    listing = tmp_path / "jpg_frames.txt"
    listing.write_text("# frames of the second video\n" + "\n".join(f"jpg/f{t + 1}.jpg" for t in range(15)) + "\n")
    out = tmp_path / "mine.safetensors"
    rc = main(["finetune", str(png), str(listing), "-o", str(out), "--weights", str(base), "--steps", "3",
               "--synth-data", str(synth), "--synth-share", "0.3", *TINY])
    assert rc == 0
    printed = capsys.readouterr()
    assert "held-out frames of your video: base weights" in printed.out and str(out) in printed.out
    assert "fine-tuning: step 1" in printed.err and "left (ends ~" in printed.err  # progress with an ETA
    rec = json.loads(read_metadata(out)[ft.META_KEY])
    assert [s["frames"] for s in rec["sources"]] == [21, 15]
    assert [(s["train_frames"], s["validation_frames"]) for s in rec["sources"]] == [(14, 7), (8, 7)]
    assert rec["sources"][1]["video"] == str(listing) and len(rec["sources"][0]["frames_sha256"]) == 64
    assert rec["steps"] == 3 and rec["ended"] == "steps" and rec["minutes"] > 0 and rec["wall_minutes"] >= rec["minutes"]
    assert rec["base_weights"] == {"path": str(base), "sha256": ft.file_sha256(base)}
    assert rec["synthetic"] == {"data": str(synth), "share": 0.3} and not rec["throwaway"]
    assert rec["validation"]["clips"] == 2 and set(rec["before"]["per_clip"]) == {"png/val1", "jpg_frames.txt/val1"}
    b, a = rec["before"]["psnr"], rec["after"]["psnr"]
    assert rec["kept"] == (ft.KEPT_FINETUNED if a > b else ft.KEPT_BASE)
    assert f"{b:.2f} dB" in printed.out and f"{a:.2f} dB" in printed.out
    kept = load_model(out)
    ref = load_model(base)
    same = all(torch.equal(kept.state_dict()[k], ref.state_dict()[k]) for k in ref.state_dict())
    assert same == (rec["kept"] == ft.KEPT_BASE)
    # the run folder beside the output: plan, checkpoint, log; the user's folders untouched
    work = tmp_path / "mine.finetune"
    assert {"finetune.json", "last.pt", "log.csv", "config.json"} <= {p.name for p in work.iterdir()}
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == sorted(f"f{t + 1}.png" for t in range(21))

    assert main(["info", "--weights", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "fine-tuned: held-out frames of your video" in shown and "video: " + str(png) in shown
    assert "synthetic share: 30%" in shown and "steps: 3 in" in shown
    assert main(["info", "--weights", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["finetune"]["run_id"] == rec["run_id"]


def test_keeps_the_base_when_fine_tuning_does_not_help(tmp_path, base, monkeypatch, capsys):
    """When the held-out score after is not above the one before, the output is the base
    weights (as stored), and the command says so."""
    video = write_video(tmp_path / "v", frames=14)
    real = ft.validate
    calls = []

    def worse_after(model, clips, crop, device, log):
        s = real(model, clips, crop, device, log)
        calls.append(s)
        return dict(s, psnr=s["psnr"] - 5.0) if len(calls) == 2 else s

    monkeypatch.setattr(ft, "validate", worse_after)
    out = tmp_path / "w.safetensors"
    assert main(["finetune", str(video), "-o", str(out), "--weights", str(base), "--steps", "1",
                 "--synth-share", "0", "--quiet", *TINY]) == 0
    assert "no better than the base, so the output is the base weights" in capsys.readouterr().out
    rec = json.loads(read_metadata(out)[ft.META_KEY])
    assert rec["kept"] == ft.KEPT_BASE and rec["after"]["psnr"] < rec["before"]["psnr"]
    from safetensors.torch import load_file

    got, want = load_file(str(out)), load_file(str(base))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_resume_continues_the_run_and_replaces_its_own_output(tmp_path, base, capsys):
    video = write_video(tmp_path / "v", frames=14)
    out = tmp_path / "w.safetensors"
    args = ["finetune", str(video), "-o", str(out), "--weights", str(base), "--synth-share", "0", "--quiet", *TINY]
    assert main([*args, "--steps", "2"]) == 0
    first = json.loads(read_metadata(out)[ft.META_KEY])
    capsys.readouterr()
    assert main([*args, "--steps", "2"]) == 2  # a second run would mix two runs in one folder
    assert "holds an earlier fine-tune; --resume continues it" in capsys.readouterr().err
    assert main([*args, "--steps", "4", "--resume"]) == 0
    second = json.loads(read_metadata(out)[ft.META_KEY])
    assert second["run_id"] == first["run_id"] and second["steps"] == 4
    assert second["before"] == first["before"]  # scored once, kept in the plan


def test_validation_only_video_needs_the_flag_and_is_marked_throwaway(tmp_path, base, capsys):
    video = write_video(tmp_path / "realvideo" / "viso", frames=14)
    out = tmp_path / "throwaway.safetensors"
    args = ["finetune", str(video), "-o", str(out), "--weights", str(base), "--synth-share", "0", "--steps", "1",
            "--quiet", *TINY]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mstt-stvsr finetune: error: ") and "--allow-validation-data" in err
    assert not out.exists() and not (tmp_path / "throwaway.finetune").exists()
    listing = tmp_path / "elsewhere.txt"  # a list file outside, naming the frames inside: refused too
    listing.write_text("\n".join(str(p) for p in sorted(video.iterdir())) + "\n")
    assert main([*args[:1], str(listing), *args[2:]]) == 2
    assert "--allow-validation-data" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--allow-validation-data"]) == 0
    assert json.loads(read_metadata(out)[ft.META_KEY])["throwaway"] is True
    capsys.readouterr()
    assert main(["info", "--weights", str(out)]) == 0
    assert "never ship these" in capsys.readouterr().out


def _truncated(d: Path):
    write_video(d / "v", frames=14)
    data = (d / "v" / "f5.png").read_bytes()
    (d / "v" / "f5.png").write_bytes(data[: len(data) // 2])
    return [str(d / "v")]


def _mixed(d: Path):
    write_video(d / "v", frames=14)
    Image.new("RGB", (64, 96)).save(d / "v" / "f14.png")
    return [str(d / "v")]


def _sixteen_bit(d: Path):
    write_video(d / "v", frames=14)
    Image.fromarray(np.zeros((96, 96), np.uint16)).save(d / "v" / "f3.png")
    return [str(d / "v")]


def _existing(d: Path):
    (d / "out.safetensors").write_bytes(b"mine")
    return [str(write_video(d / "v", frames=14))]


# name -> (make the videos in a folder -> VIDEO args, extra args, expected message part)
BAD = {
    "too few frames": (lambda d: [str(write_video(d / "v", frames=5))], [], "5 frame(s); a video needs at least 7"),
    "one short video": (lambda d: [str(write_video(d / "v", frames=9))], [], "one video needs at least 14"),
    "mixed sizes": (_mixed, [], "frames of different sizes: f14.png is 64x96"),
    "unreadable frame": (_truncated, [], "f5.png: cannot read frame"),
    "16-bit frame": (_sixteen_bit, [], "f3.png: not an 8-bit frame"),
    "no such folder": (lambda d: [str(d / "gone")], [], "gone: no such folder or list file"),
    "list names a missing frame": (lambda d: ((d / "l.txt").write_text("nope.png\n"), [str(d / "l.txt")])[1], [],
                                   "1 listed frame(s) not found"),
    "default weights": (lambda d: [str(write_video(d / "v", frames=14))], ["-o", str(default_weights_path()), "--overwrite"],
                        "where the shipped default weights live"),
    "into the weights folder": (lambda d: [str(write_video(d / "v", frames=14))],
                                ["-o", str(default_weights_path().parent / "mine.safetensors")], "plugin's weights folder"),
    "output exists": (_existing, [], "out.safetensors already exists; use --overwrite"),
    "not safetensors": (lambda d: [str(write_video(d / "v", frames=14))], ["-o", "{d}/out.pth"], "a .safetensors file"),
    "crop larger than frames": (lambda d: [str(write_video(d / "v", frames=14))], ["--crop", "80"],
                                "smaller than the training crop (80 LR px = 320 px); give --crop 24 or less"),
    "synthetic set missing": (lambda d: [str(write_video(d / "v", frames=14))], ["--synth-data", "{d}/none"],
                              "--synth-data"),
    "resume without a run": (lambda d: [str(write_video(d / "v", frames=14))], ["--resume"], "no fine-tune to resume"),
    "no minutes": (lambda d: [str(write_video(d / "v", frames=14))], ["--minutes", "0"], "--minutes 0.0: must be > 0"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, base, capsys, name):
    make, extra, expected = BAD[name]
    videos = make(tmp_path)
    extra = [a.replace("{d}", str(tmp_path)) for a in extra]
    out = [] if "-o" in extra else ["-o", str(tmp_path / "out.safetensors")]
    shipped = default_weights_path().read_bytes()
    before = tree(tmp_path)
    rc = main(["finetune", *videos, *out, "--weights", str(base), "--quiet", *TINY[:-2], *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("mstt-stvsr finetune: error: ") and expected in err and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert tree(tmp_path) == before  # nothing written
    assert default_weights_path().read_bytes() == shipped
    assert not list(default_weights_path().parent.glob("mine*"))


def test_split_holds_out_the_last_clips_or_the_last_videos():
    def video(n, name="v"):
        return nv.Video(Path(f"/x/{name}"), [Path(f"/x/{name}/f{i}.png") for i in range(n)], (96, 96), "0" * 64)

    long, longer = video(100), video(300, "w")
    nv.split_videos([long, longer])
    assert (len(long.train), len(long.val)) == (93, 7)  # 10 % is 10 frames: one whole 7-frame clip
    assert (len(longer.train), len(longer.val)) == (272, 28)  # 30 frames: 4 clips
    assert long.val == long.frames[-7:] and not set(long.val) & set(long.train)
    assert [name for name, _ in nv.validation_clips([long])] == ["v/val1"]
    shorts = [video(9, f"s{i}") for i in range(4)]
    nv.split_videos(shorts)
    assert [len(v.val) for v in shorts] == [0, 0, 0, 9] and [len(v.train) for v in shorts] == [9, 9, 9, 0]
    assert nv.validation_clips(shorts) == [("s3/all", shorts[3].frames)]
    with pytest.raises(InputError, match="at least 14"):
        nv.split_videos([video(13)])
    # many short clips: each would give one; --val-clips caps them, the shortest giving theirs back
    many = [video(20 + i, f"c{i}") for i in range(6)] + [video(300, "long")]
    nv.split_videos(many, max_clips=3)
    assert [len(v.val) // 7 for v in many] == [0, 0, 0, 0, 0, 0, 3] and len(many[-1].train) == 279
    nv.split_videos(many)
    assert [len(v.val) // 7 for v in many] == [1, 1, 1, 1, 1, 1, 4]
    nv.split_videos(many[:6], max_clips=2)
    assert [len(v.val) // 7 for v in many[:6]] == [0, 0, 0, 0, 1, 1]
    nv.split_videos(shorts, max_clips=1)
    assert [len(v.val) for v in shorts] == [0, 0, 0, 9]


def test_geotiff_frames_are_read(tmp_path):
    """Native frames as 8-bit GeoTIFFs (as an archive exports them) open and hash like PNGs."""
    import rasterio

    clip, _ = make_clip(5, 96, 7, motion="stabilised")
    d = tmp_path / "tif"
    d.mkdir()
    for t, f in enumerate(clip):
        with rasterio.open(d / f"frame_{t:03d}.tif", "w", driver="GTiff", width=96, height=96, count=3, dtype="uint8",
                           crs="EPSG:32633", transform=rasterio.Affine(1, 0, 500000, 0, -1, 4000000)) as dst:
            dst.write(f.transpose(2, 0, 1))
    v = nv.open_video(d)
    assert len(v.frames) == 7 and v.size == (96, 96)
    assert np.array_equal(nv.read_rgb(v.frames[2]), clip[2])


def test_mixed_sampler_draws_by_share():
    from mstt_stvsr.core.training.crops import MixedSampler, Sampler

    class Const(Sampler):
        def __init__(self, k):
            self.k, self.crop = k, 4

        def sample(self, rng):
            return torch.full((1,), float(self.k)), torch.zeros(1), torch.zeros(1)

        def precompute(self, progress=True, pool=None):
            pass

    mix = MixedSampler([(Const(0), 0.75), (Const(1), 0.25), (Const(2), 0.0)])
    got = mix.batch(np.random.default_rng(0), 4000)[0].numpy().ravel()
    assert set(got) == {0.0, 1.0} and abs((got == 1).mean() - 0.25) < 0.03
    assert torch.equal(mix.batch(np.random.default_rng(1), 8)[0], mix.batch(np.random.default_rng(1), 8)[0])
    with pytest.raises(InputError, match="one crop size"):
        other = Const(3)
        other.crop = 8
        MixedSampler([(Const(0), 1), (other, 1)])


def test_plugin_zip_carries_the_training_config():
    """A plugin installed from its ZIP fine-tunes with the default training config."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("package_tool", root / "tools" / "package.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    files = tool.plugin_files(root)
    assert ft.DEFAULT_CONFIG.relative_to(ft.PLUGIN_DIR) in files
    assert Path("core/training/finetune.py") in files and Path("mstt_qgis/finetune_algorithm.py") in files


def test_gpu_finetune_script_dry_run(tmp_path, base):
    """tools/gpu_finetune.sh as a lent session would run it, on the CPU with a tiny network: the
    synthetic share's clips synthesised in parallel parts, the fine-tune run, the weights, their
    record and the log brought back."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    video = write_video(tmp_path / "video", frames=14)
    env = dict(os.environ, DRY_RUN="1", OUT=str(tmp_path / "out"), WORK=str(tmp_path / "work"), PYTHON=sys.executable,
               WEIGHTS=str(base))
    r = subprocess.run(["bash", str(root / "tools" / "gpu_finetune.sh"), "1", str(video)], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "== synthesising 2 clips in 2 parts" in r.stdout and "== fine-tuning 1 min on cpu" in r.stdout
    out = tmp_path / "out"
    rec = json.loads(read_metadata(out / "finetuned.safetensors")[ft.META_KEY])
    assert rec["steps"] == 2 and rec["synthetic"]["share"] == 0.25 and rec["batch"] == 2
    assert "fine-tuned: held-out frames of your video" in (out / "finetuned_info.txt").read_text()
    assert (out / "train_log.csv").read_text().startswith("step,") and (out / "finetune_plan.json").is_file()
    assert "held-out frames of your video" in (out / "finetune_log.txt").read_text()


def test_finetune_imports_without_gis_libraries():
    """A lent GPU machine has no rasterio, GDAL, QGIS or tqdm: the fine-tune must import (and its
    validation run, which imports the evaluation) without them."""
    import subprocess
    import sys

    code = ("import sys\n"
            "for m in ('rasterio', 'osgeo', 'qgis', 'tqdm', 'affine'): sys.modules[m] = None\n"
            "import mstt_stvsr.core.training.finetune, mstt_stvsr.core.training.evaluate\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_sigterm_stops_training_and_still_writes_the_best_weights(tmp_path, base):
    """A batch system's SIGTERM ends training at the next step with a checkpoint; the weights
    trained so far are validated and the better of them and the base is written."""
    import os
    import signal
    import subprocess
    import sys
    import time

    video = write_video(tmp_path / "v", frames=14)
    out = tmp_path / "w.safetensors"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "mstt_stvsr.core", "finetune", str(video), "-o", str(out),
                             "--weights", str(base), "--synth-share", "0", *TINY[:-1], "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    lines = []
    for line in proc.stderr:  # progress lines: the first step reports at once
        lines.append(line)
        if line.startswith("fine-tuning: step") or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    rest_out, rest_err = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(lines) + rest_err
    rec = json.loads(read_metadata(out)[ft.META_KEY])
    assert rec["ended"] == "SIGTERM" and rec["steps"] >= 1 and rec["after"] is not None
    assert "held-out frames of your video" in rest_out and rec["wall_minutes"] < 5


def test_info_on_weights_without_a_record_and_on_a_bad_file(tmp_path, base, capsys):
    assert main(["info", "--weights", str(base)]) == 0
    shown = capsys.readouterr().out
    assert "variant: mstt_stvsr (with base)" in shown and "fine-tuned" not in shown
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\0" * 32)
    assert main(["info", "--weights", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mstt-stvsr info: error: ") and "not a readable safetensors file" in err

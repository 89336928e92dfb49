"""mstt-stvsr eval on a tiny generated test set with a tiny model."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from mstt_stvsr.core.training import evaluate as E
from mstt_stvsr.core.cli import main as cli_main
from mstt_stvsr.core.net.model import MSTT
from mstt_stvsr.core.training.synth import write_septuplets
from mstt_stvsr.core.net.weights import save_weights


@pytest.fixture(scope="module")
def testset(tmp_path_factory):
    return write_septuplets(tmp_path_factory.mktemp("test"), clips=2, size=96, split="test", seed=7,
                            imagery=None, progress=False)


def test_baseline_is_bicubic_and_blend():
    rng = np.random.default_rng(0)
    lr = rng.integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
    out = E.baseline(lr)
    assert out.shape == (7, 24, 20, 3) and out.dtype == np.uint8
    up1 = np.asarray(Image.fromarray(lr[1]).resize((20, 24), Image.BICUBIC))
    up2 = np.asarray(Image.fromarray(lr[2]).resize((20, 24), Image.BICUBIC))
    assert np.array_equal(out[2], up1)
    assert np.abs(out[3].astype(int) - (up1.astype(int) + up2) / 2).max() <= 0.5


def test_eval_tiny_model_writes_report(testset, tmp_path):
    torch.manual_seed(0)
    model = MSTT(nf=8, groups=2, front_RBs=1, back_RBs=1)
    res = E.evaluate(testset, model=model, out=tmp_path, progress=False, log=lambda m: None)
    assert res["clips"] == 2 and res["methods"] == ["baseline", "base", "mstt"]
    # zero-initialised last conv: the untrained skip model is exactly its parameter-free base
    for part in ("all", "inputs", "new"):
        assert res["mean"]["mstt"][part] == pytest.approx(res["mean"]["base"][part], abs=1e-9)
    # the baseline scores agree with a direct computation on the first clip
    from mstt_stvsr.core.training.datasets import open_dataset

    c = open_dataset(testset).clip(0)
    b = E.baseline(c.lr).astype(float)
    want = np.mean([10 * math.log10(255 ** 2 / np.mean((b[t] - c.hr[t]) ** 2)) for t in range(7)])
    assert res["per_clip"][0]["baseline"]["all"]["psnr_rgb"] == pytest.approx(want, abs=1e-9)
    assert 10 < want < 50
    md = (tmp_path / "eval.md").read_text()
    assert "| all | MSTT |" in md and "bicubic + linear blend" in md
    assert json.loads((tmp_path / "eval.json").read_text())["clips"] == 2
    fig = Image.open(tmp_path / "eval_crops.png")
    assert fig.size[0] > 3 * 96 and fig.size[1] > 2 * 96


def test_eval_cli_with_weights_file(testset, tmp_path, capsys):
    torch.manual_seed(1)
    model = MSTT(nf=8, groups=2, front_RBs=1, back_RBs=1)
    torch.nn.init.normal_(model.conv_last.weight, std=1e-3)  # a non-trivial residual
    w = save_weights(model, tmp_path / "tiny.safetensors")
    rc = cli_main(["eval", "--data", str(testset), "--weights", str(w), "--out", str(tmp_path / "o"),
                   "--limit", "1", "--quiet", "--threads", "2"])
    assert rc == 0
    res = json.loads((tmp_path / "o" / "eval.json").read_text())
    assert res["clips"] == 1 and res["weights"] == str(w)
    assert res["mean"]["mstt"]["all"]["psnr_rgb"] != res["mean"]["base"]["all"]["psnr_rgb"]
    assert "MSTT - baseline" in capsys.readouterr().out


def test_eval_missing_weights_is_a_clear_error(testset, tmp_path, capsys):
    rc = cli_main(["eval", "--data", str(testset), "--weights", str(tmp_path / "nope.safetensors"), "--quiet"])
    assert rc == 2
    assert "nope.safetensors" in capsys.readouterr().err


def test_multiframe_controls_carry_no_new_information(testset):
    """The controls keep frame k and replace its neighbours: by copies, or by frame k moved to
    each neighbour's time (which then lines up with that neighbour far better than frame k)."""
    from mstt_stvsr.core.training.datasets import open_dataset
    from mstt_stvsr.core.training.multiframe import control_clip, to_tensor

    clip = open_dataset(testset).clip(0)
    real = to_tensor(clip.lr)
    copies = control_clip(clip.lr, 1, "copies")
    assert all(torch.equal(copies[0, j], real[0, 1]) for j in range(4))
    warped = control_clip(clip.lr, 1, "warped")
    assert torch.equal(warped[0, 1], real[0, 1])
    for j in (0, 2, 3):
        err_warped = (warped[0, j] - real[0, j]).abs().mean()
        err_frame = (real[0, 1] - real[0, j]).abs().mean()
        assert err_warped < err_frame


def test_multiframe_gain_in_the_report(testset, tmp_path):
    """A network that ignores its neighbours (the parameter-free base) gains nothing from them;
    the tiny network with a residual is measured the same way and reported."""
    from mstt_stvsr.core.training.multiframe import multiframe_gain
    from mstt_stvsr.core.training.datasets import open_dataset
    from nets import tiny_mstt

    ds = open_dataset(testset)
    clips = [(ds.clip(i).lr, ds.clip(i).hr) for i in range(len(ds))]
    base_only = multiframe_gain(tiny_mstt(residual=0.0), clips)  # input times: bicubic of frame k only
    assert base_only["gain"] == {"copies": pytest.approx(0, abs=1e-9), "warped": pytest.approx(0, abs=1e-9)}
    res = E.evaluate(testset, model=tiny_mstt(), out=tmp_path, progress=False, log=lambda m: None, multiframe=True)
    mf = res["multiframe"]
    assert mf["clips"] == 2 and set(mf["gain"]) == {"copies", "warped"}
    assert mf["gain"]["copies"] == pytest.approx(mf["psnr"]["real"] - mf["psnr"]["copies"])
    assert [r["clip"] for r in mf["per_clip"]] == [c["clip"] for c in res["per_clip"]]
    for c in ("copies", "warped"):
        assert mf["gain"][c] == pytest.approx(np.mean([r["gain"][c] for r in mf["per_clip"]]))
        assert mf["worst"][c]["gain"] == min(r["gain"][c] for r in mf["per_clip"])
    text = (tmp_path / "eval.md").read_text()
    assert "Multi-frame gain" in text and f"Worst clip: {mf['worst']['copies']['clip']}" in text


def test_multiframe_real_outputs_in_one_forward(testset):
    """The real-neighbour outputs of all 4 input times come from one forward keeping the 4 of
    them; each kept frame is reconstructed on its own, so they are the frames a forward keeping
    only that one makes (the same float operations; 1 DN allows a rounding flip should a
    library reorder a sum for the other call shape), and frames of other times would differ."""
    from mstt_stvsr.core.training.datasets import open_dataset
    from mstt_stvsr.core.training.multiframe import outputs_at, to_tensor
    from nets import tiny_mstt

    model = tiny_mstt().eval()
    lr = to_tensor(open_dataset(testset).clip(0).lr[:4])
    together = outputs_at(model, lr, range(4))
    for k in range(4):
        alone = outputs_at(model, lr, [k])[0]
        assert np.abs(together[k].astype(int) - alone.astype(int)).max() <= 1
    assert np.abs(together[0].astype(int) - together[3].astype(int)).max() > 1


@pytest.fixture(scope="module")
def longset(tmp_path_factory):
    """Two long clips: 11 HR frames, 6 LR inputs, so window plans and tiles are exercised."""
    return write_septuplets(tmp_path_factory.mktemp("long"), clips=2, size=192, split="test", seed=3,
                            imagery=None, frames=11, progress=False, urban=1.0)


def test_long_clips_are_read_whole_and_scored_by_position(longset):
    from mstt_stvsr.core.training.datasets import open_dataset

    c = open_dataset(longset).clip(0)
    assert c.hr.shape == (11, 192, 192, 3) and c.lr.shape == (6, 48, 48, 3)
    meta = json.loads((longset / "clips.json").read_text())
    assert meta["frames"] == 11 and all(k["kind"] == "urban" for k in meta["clips"])
    s = E.score(E.baseline(c.lr), c.hr)
    assert s["all"]["psnr_rgb"] == pytest.approx(E.clip_scores(E.baseline(c.lr), c.hr)["psnr_rgb"])
    # bicubic input times beat blended new frames: the parts are the odd and even frames
    assert s["inputs"]["psnr_rgb"] > s["new"]["psnr_rgb"]


def test_even_frame_counts_are_refused(tmp_path):
    from mstt_stvsr.core.errors import InputError

    with pytest.raises(InputError, match="odd number"):
        write_septuplets(tmp_path, clips=1, size=96, frames=8, progress=False)


def test_eval_through_the_pipeline_matches_whole_frames(longset):
    """--tile runs each clip through run_stack (GeoTIFFs, tiles, blending). One tile covering
    the clip computes what the in-memory path does up to the pipeline's reflect margin and the
    uint8 round trip (measured: < 0.05 dB); misplaced tiles or frames would cost dBs."""
    from nets import tiny_mstt

    model = tiny_mstt()
    whole = E.evaluate(longset, model=model, progress=False, log=lambda m: None)
    one_tile = E.evaluate(longset, model=model, progress=False, log=lambda m: None, tile=80, overlap=16)
    tiled = E.evaluate(longset, model=model, progress=False, log=lambda m: None, tile=24, overlap=8)
    assert one_tile["tile"] == 80 and one_tile["precision"] == "fp32"
    for res in (one_tile, tiled):
        for part in ("all", "inputs", "new"):
            assert res["mean"]["mstt"][part]["psnr_rgb"] == pytest.approx(
                whole["mean"]["mstt"][part]["psnr_rgb"], abs=0.3)
    assert abs(one_tile["mean"]["mstt"]["all"]["psnr_rgb"] - whole["mean"]["mstt"]["all"]["psnr_rgb"]) < 0.05


def test_eval_real_video_folders(tmp_path, capsys):
    """`mstt-stvsr eval --data` on folders of native JPEG frames (one clip each): the LR is
    their Jilin-189 degradation, every clip is scored, with the multi-frame gain."""
    from mstt_stvsr.core.training.clips import make_clip

    folders = []
    for i in range(2):
        hr, _ = make_clip(40 + i, 96, 7, motion="stabilised")
        d = tmp_path / "video" / f"clip_{i}"
        d.mkdir(parents=True)
        for t, f in enumerate(hr):
            Image.fromarray(f).save(d / f"{t + 1:06d}.jpg", quality=90)
        folders.append(d)
    torch.manual_seed(2)
    save_weights(MSTT(nf=8, groups=2, front_RBs=1, back_RBs=1), tmp_path / "w.safetensors")
    rc = cli_main(["eval", "--data", str(tmp_path / "video"), "--weights", str(tmp_path / "w.safetensors"),
                   "--out", str(tmp_path / "out"), "--multiframe", "--quiet", "--crop", "64"])
    assert rc == 0
    res = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert res["clips"] == 2 and res["crop"] == 64 and [r["clip"] for r in res["per_clip"]] == ["clip_0", "clip_1"]
    assert "multiframe" in res and set(res["multiframe"]["gain"]) == {"copies", "warped"}
    # the baseline is bicubic of the frames' own degradation, scored on the centre crop
    from mstt_stvsr.core.training.datasets import read_rgb

    hr = np.stack([read_rgb(p) for p in sorted(folders[0].iterdir())])[:, 16:80, 16:80]
    from mstt_stvsr.core.training.degrade import downsample

    b = E.baseline(downsample(hr[0::2])).astype(float)
    want = np.mean([10 * math.log10(255 ** 2 / np.mean((b[t] - hr[t]) ** 2)) for t in range(7)])
    assert res["per_clip"][0]["baseline"]["all"]["psnr_rgb"] == pytest.approx(want, abs=1e-9)
    # several clip folders given one by one are the same clips
    rc = cli_main(["eval", "--data", *map(str, folders), "--weights", str(tmp_path / "w.safetensors"),
                   "--out", str(tmp_path / "out2"), "--quiet", "--crop", "64"])
    res2 = json.loads((tmp_path / "out2" / "eval.json").read_text())
    assert res2["per_clip"][0]["baseline"] == res["per_clip"][0]["baseline"]
    capsys.readouterr()

"""Training plumbing: augmentations keep frames and flows consistent, loss falls, resume is exact."""
from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from mstt_stvsr.core.errors import InputError
from mstt_stvsr.core.net.warp import flow_warp
from mstt_stvsr.core.training.clips import make_clip
from mstt_stvsr.core.training.config import ROOT_CONFIGS, load_config
from mstt_stvsr.core.training.crops import build_sampler, dihedral_flows, dihedral_frames, reverse_time
from mstt_stvsr.core.training.train import run_training
from mstt_stvsr.core.training.trainer import Trainer, amp_dtype, charbonnier, export_checkpoint


def warp_np(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """img (H, W) sampled at p + flow(p) with integer flows, clamped: an exact reference."""
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    ys = np.clip(yy + flow[1].astype(int), 0, h - 1)
    xs = np.clip(xx + flow[0].astype(int), 0, w - 1)
    return img[ys, xs]


@pytest.mark.parametrize("t,hf,vf", list(itertools.product([False, True], repeat=3)))
def test_flow_follows_dihedral_augmentation(t, hf, vf):
    """aug(warp(img, flow)) == warp(aug(img), aug(flow)) for all 8 flips/rotations."""
    rng = np.random.default_rng(1)
    h, w = 9, 13
    img = rng.random((h, w)).astype(np.float32)
    flows = rng.integers(-3, 4, (1, 4, h, w)).astype(np.float32)
    for part in (slice(0, 2), slice(2, 4)):
        warped = warp_np(img, flows[0, part])
        aug_then = dihedral_frames(warped[None, ..., None], t, hf, vf)[0, ..., 0]
        a_img = dihedral_frames(img[None, ..., None], t, hf, vf)[0, ..., 0]
        a_flow = dihedral_flows(flows, t, hf, vf)[0, part]
        assert np.array_equal(warp_np(a_img, a_flow), aug_then)


def test_flow_augmentation_matches_flow_warp_bilinear():
    """The same identity with the model's own bilinear warp and sub-pixel flows (interior)."""
    rng = np.random.default_rng(2)
    img = rng.random((1, 3, 16, 16)).astype(np.float32)
    flows = rng.uniform(-1.5, 1.5, (1, 4, 16, 16)).astype(np.float32)
    ref = flow_warp(torch.from_numpy(img), torch.from_numpy(flows[:, :2])).numpy()
    for t, hf, vf in itertools.product([False, True], repeat=3):
        to_hwc = lambda a: a.transpose(0, 2, 3, 1)  # noqa: E731
        a_img = dihedral_frames(to_hwc(img), t, hf, vf).transpose(0, 3, 1, 2)
        a_fl = dihedral_flows(flows, t, hf, vf)
        got = flow_warp(torch.from_numpy(np.ascontiguousarray(a_img)),
                        torch.from_numpy(np.ascontiguousarray(a_fl[:, :2]))).numpy()
        want = dihedral_frames(to_hwc(ref), t, hf, vf).transpose(0, 3, 1, 2)
        np.testing.assert_allclose(got[..., 2:-2, 2:-2], want[..., 2:-2, 2:-2], atol=1e-5)


def test_reverse_time_swaps_pairs_and_directions():
    lr = np.arange(4)[:, None, None, None] * np.ones((4, 2, 2, 3))
    hr = np.arange(7)[:, None, None, None] * np.ones((7, 8, 8, 3))
    fl = np.arange(12, dtype=np.float32).reshape(3, 4, 1, 1) * np.ones((3, 4, 2, 2), np.float32)
    rl, rh, rf = reverse_time(lr, hr, fl)
    assert rl[:, 0, 0, 0].tolist() == [3, 2, 1, 0] and rh[:, 0, 0, 0].tolist() == list(range(6, -1, -1))
    # new pair 0 is old pair 2; its mid->prev is old mid->next
    assert rf[0, :, 0, 0].tolist() == [10, 11, 8, 9]
    assert rf[2, :, 0, 0].tolist() == [2, 3, 0, 1]


def write_septuplets(root, n=3, size=96):
    """A tiny Vimeo-layout set written by hand (not via synth's writer)."""
    seq = root / "sequences"
    names = []
    for i in range(n):
        frames, _ = make_clip(100 + i, size, 7)
        d = seq / f"{i:05d}" / "0001"
        d.mkdir(parents=True)
        for t, f in enumerate(frames):
            Image.fromarray(f).save(d / f"im{t + 1}.png")
        names.append(f"{i:05d}/0001")
    (root / "sep_trainlist.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_septuplets(tmp_path_factory.mktemp("sept"))


def tiny_cfg(data, out, **kw):
    over = {"data.root": str(data), "train.out": str(out), "data.crop": 20, "train.batch": 1,
            "train.threads": 2, "train.log_every": 1}
    over.update(kw)
    return load_config(ROOT_CONFIGS / "tiny.toml", over)


def test_crop_sampler_shapes_and_flow_cache(data, tmp_path):
    cfg = tiny_cfg(data, tmp_path)
    s = build_sampler(cfg)
    s.precompute(progress=False)
    lr, hr, fl = s.batch(np.random.default_rng(0), 2)
    assert lr.shape == (2, 4, 3, 20, 20) and hr.shape == (2, 7, 3, 80, 80) and fl.shape == (2, 3, 4, 20, 20)
    assert 0 <= float(lr.min()) and float(lr.max()) <= 1
    assert len(list((data / "flow_cache").glob("*.npy"))) == 3
    # the crop's HR is the crop's LR at 4x: downsampling the HR input frames gives the LR back
    from mstt_stvsr.core.training.degrade import downsample_tensor

    # (interior only: at the crop edge the kernel of the whole-frame LR saw pixels outside the crop)
    got = downsample_tensor(hr[:, ::2]).numpy()[..., 2:-2, 2:-2]
    assert np.abs(got - lr.numpy()[..., 2:-2, 2:-2]).mean() < 0.5 / 255


def test_threaded_sampling_draws_the_same_batches(data, tmp_path):
    """The GPU's background sampling (a thread pool, one batch ahead) feeds exactly the batches
    that sampling in turn feeds; different generator states give different batches."""
    from concurrent.futures import ThreadPoolExecutor

    from mstt_stvsr.core.training.train import batches, loader_threads

    s = build_sampler(tiny_cfg(data, tmp_path))
    s.precompute(progress=False)
    inline = s.batch(np.random.default_rng(3), 4)
    with ThreadPoolExecutor(3) as pool:
        pooled = s.batch(np.random.default_rng(3), 4, pool)
    assert all(torch.equal(a, b) for a, b in zip(inline, pooled))
    assert not torch.equal(inline[1], s.batch(np.random.default_rng(4), 4)[1])
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    feed = batches(s, rng_a, 2, threads=2)
    ahead = [next(feed) for _ in range(3)]
    feed.close()
    for got in ahead:
        assert all(torch.equal(a, b) for a, b in zip(got, s.batch(rng_b, 2)))
    assert loader_threads("auto", torch.device("cpu")) == 0
    assert loader_threads("auto", torch.device("cuda")) >= 1 and loader_threads("3", torch.device("cpu")) == 3
    with pytest.raises(InputError, match="loader_threads"):
        loader_threads("many", torch.device("cpu"))


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_loss_falls(data, tmp_path, amp):
    """A few steps lower the loss, in fp32 and in CPU bf16 autocast (weights stay fp32)."""
    torch.manual_seed(0)
    # without the skip base the tiny net starts far from the target, so 2 steps must show
    cfg = tiny_cfg(data, tmp_path / "run", **{"train.steps": 100, "train.lr": 1e-3, "train.amp": amp})
    cfg["model"]["skip"] = False
    trainer = Trainer(cfg, torch.device("cpu"))
    assert trainer.amp == (torch.bfloat16 if amp == "bf16" else None)
    batch = build_sampler(cfg).batch(np.random.default_rng(5), 1)
    with torch.no_grad():
        before = charbonnier(trainer.model(batch[0], batch[2]), batch[1]).item()
    for _ in range(2):
        trainer.train_step(*batch)
    with torch.no_grad():
        after = charbonnier(trainer.model(batch[0], batch[2]), batch[1]).item()
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert after < 0.9 * before


def test_resume_is_exact(data, tmp_path):
    # run 1 step, stop, resume to 2: identical to 2 steps straight
    straight = run_training(tiny_cfg(data, tmp_path / "a", **{"train.steps": 2}), progress=False, log=lambda m: None)
    part = tiny_cfg(data, tmp_path / "b", **{"train.steps": 1})
    run_training(part, progress=False, log=lambda m: None)
    resumed_cfg = tiny_cfg(data, tmp_path / "b", **{"train.steps": 2})
    resumed = run_training(resumed_cfg, resume="auto", progress=False, log=lambda m: None)
    assert straight["step"] == resumed["step"] == 2
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert a["step"] == b["step"] == 2
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=1e-6)
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert int(sa[k]["step"]) == int(sb[k]["step"]) == 2
        torch.testing.assert_close(sa[k]["exp_avg"], sb[k]["exp_avg"], rtol=0, atol=1e-6)
    rows = list(csv.DictReader(open(tmp_path / "b" / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2]


def test_export_checkpoint_roundtrip(data, tmp_path):
    from mstt_stvsr.core.net.weights import load_model, read_metadata

    cfg = tiny_cfg(data, tmp_path / "run", **{"train.steps": 1})
    run_training(cfg, progress=False, log=lambda m: None)
    out = export_checkpoint(tmp_path / "run" / "last.pt", tmp_path / "w.safetensors")
    model = load_model(out)
    assert {k: model.config[k] for k in cfg["model"]} == cfg["model"] and not model.upstream_exact
    assert read_metadata(out)["trained_steps"] == "1"


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nstepz = 3\n")
    with pytest.raises(InputError, match="stepz"):
        load_config(bad)
    with pytest.raises(InputError, match="multiple of 4"):
        load_config(None, {"data.crop": 30})
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_cpu_mixed_precision_choice():
    """amp auto on CPU: bf16 where it was measured faster than fp32 on this kind of processor
    (inference's choice, core.run.device.cpu_fast_bf16), else fp32; fp16 needs CUDA; off is off."""
    from mstt_stvsr.core.run.device import cpu_fast_bf16

    cpu = torch.device("cpu")
    assert amp_dtype("auto", cpu) == (torch.bfloat16 if cpu_fast_bf16() else None)
    assert amp_dtype("bf16", cpu) == torch.bfloat16
    assert amp_dtype("off", cpu) is None
    with pytest.raises(InputError, match="fp16.*CUDA"):
        amp_dtype("fp16", cpu)


def test_training_imports_without_gis_libraries():
    """A lent GPU machine has torch, OpenCV, safetensors and Pillow, but no rasterio, GDAL,
    QGIS or tqdm: synthesis and training must import without them."""
    import subprocess
    import sys

    code = ("import sys\n"
            "for m in ('rasterio', 'osgeo', 'qgis', 'tqdm', 'affine'): sys.modules[m] = None\n"
            "import mstt_stvsr.core.training.synth, mstt_stvsr.core.training.train\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_gpu_training_script_dry_run(tmp_path):
    """tools/gpu_train.sh as a lent session would run it, on the CPU with a few clips: clips
    synthesised in parallel parts and merged, trained, weights and log brought back."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from mstt_stvsr.core.net.weights import load_model

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, DRY_RUN="1", OUT=str(tmp_path / "out"), WORK=str(tmp_path / "work"), PYTHON=sys.executable)
    r = subprocess.run(["bash", str(root / "tools" / "gpu_train.sh"), "0.3"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "== 4 clips; training" in r.stdout
    assert load_model(tmp_path / "out" / "weights.safetensors").config["nf"] == 8
    assert (tmp_path / "out" / "train_log.csv").read_text().startswith("step,")


def test_ship_weights_makes_steps_and_log_cumulative(data, tmp_path):
    """tools/ship_weights.py: the shipped file gets the candidate's tensors with trained_steps
    shipped + run, and the run's log continues the cumulative log (steps and seconds offset)."""
    import subprocess
    import sys
    from pathlib import Path

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    cfg = tiny_cfg(data, tmp_path / "run", **{"train.steps": 3})
    run_training(cfg, export=tmp_path / "cand.safetensors", progress=False, log=lambda m: None)
    shipped = tmp_path / "shipped.safetensors"
    with safe_open(str(tmp_path / "cand.safetensors"), "pt") as f:
        meta = dict(f.metadata(), trained_steps="100")
        save_file({k: torch.zeros_like(f.get_tensor(k)) for k in f.keys()}, str(shipped), metadata=meta)
    log = tmp_path / "train_log.csv"
    log.write_text("step,loss,lr,seconds,step_seconds\n100,0.05,1e-6,500.0,4.0\n")

    tool = Path(__file__).resolve().parents[1] / "tools" / "ship_weights.py"
    r = subprocess.run([sys.executable, str(tool), "--candidate", str(tmp_path / "cand.safetensors"),
                        "--log", str(tmp_path / "run" / "log.csv"), "--note", "test run",
                        "--dest", str(shipped), "--train-log", str(log)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with safe_open(str(shipped), "pt") as f:
        assert f.metadata()["trained_steps"] == "103" and f.metadata()["last_run"] == "test run"
    cand, got = load_file(str(tmp_path / "cand.safetensors")), load_file(str(shipped))
    assert all(torch.equal(cand[k], got[k]) for k in cand)
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / "run" / "log.csv", newline="") as f:
        run_rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows[1:]] == [100 + int(r["step"]) for r in run_rows]
    assert float(rows[-1]["seconds"]) == pytest.approx(500.0 + float(run_rows[-1]["seconds"]), abs=0.05)


def test_training_never_reads_validation_video(data, tmp_path):
    """Real video kept for validation (a folder under one named realvideo, as
    ../shared/realvideo) is refused by training, however it is reached (here by a link)."""
    import shutil

    held = tmp_path / "realvideo" / "viso"
    shutil.copytree(data, held)
    (tmp_path / "link").symlink_to(held)
    for root in (held, tmp_path / "link"):
        with pytest.raises(InputError, match="validation only"):
            build_sampler(tiny_cfg(root, tmp_path / "out"))
    build_sampler(tiny_cfg(data, tmp_path / "out"))  # the same clips elsewhere are read

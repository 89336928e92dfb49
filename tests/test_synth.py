"""Synthetic satellite video: deterministic, moving platform and objects; the shipped sample stack."""
from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from mstt_stvsr.core.errors import InputError
from mstt_stvsr.core.training.clips import FIT_PSF_RANGE, Camera, make_clip, render
from mstt_stvsr.core.training.imagery import CATALOGUE, IMAGERY_DIR
from mstt_stvsr.core.training.sample import make_sample_stack
from mstt_stvsr.core.training.scenes import Scene, urban_scene
from mstt_stvsr.core.training.synth import write_septuplets

SAMPLE = Path(__file__).resolve().parent.parent / "resources" / "sample"


def test_clip_is_deterministic_from_seed():
    a, ia = make_clip(11, 96, 7)
    b, ib = make_clip(11, 96, 7)
    c, _ = make_clip(12, 96, 7)
    assert a.shape == (7, 96, 96, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and ia == ib
    assert not np.array_equal(a, c)


def test_platform_drift_moves_the_whole_frame():
    """Global shift between frames 2 and 6 equals 4 x the camera's drift (content moves against it)."""
    rng = np.random.default_rng(0)
    scene = urban_scene(rng, 200, 200, 0.8, None, "train")
    scene.movers = []  # only the platform moves
    cam = Camera(drift=(0.75, -0.5), noise=0.5)  # sub-pixel per frame, whole pixels over 4 frames
    f = render(scene, cam, 7, 128, 128, rng).astype(float)

    def err(sx, sy):  # frame 6 against frame 2 moved by (sx, sy)
        return np.abs(f[5][10:110, 10:110] - f[1][10 + sy:110 + sy, 10 + sx:110 + sx]).mean()

    best = err(3, -2)  # frame t shows the ground at p + t * drift: 4 frames = (3, -2) px
    assert best < 1.5
    others = [err(sx, sy) for sx in range(-5, 6) for sy in range(-5, 6) if (sx, sy) != (3, -2)]
    assert best < min(others)


def test_movers_move_on_their_own():
    rng = np.random.default_rng(1)
    scene = urban_scene(rng, 160, 160, 0.5, None, "train")
    static = Scene(scene.static, [], scene.gsd, scene.sun, "urban", "x")
    cam = Camera(dt=0.2)
    moving = [m for m in scene.movers if abs(m.speed) > 0]
    assert moving, "a city scene has traffic"
    with_cars = render(scene, cam, 3, 128, 128, np.random.default_rng(2))
    without = render(static, cam, 3, 128, 128, np.random.default_rng(2))
    # vehicles are where the frames differ, and that place changes with time
    d0 = np.abs(with_cars[0].astype(int) - without[0]).sum(-1) > 30
    d2 = np.abs(with_cars[2].astype(int) - without[2]).sum(-1) > 30
    assert d0.any() and d2.any() and (d0 != d2).any()


def test_clip_size_must_divide_by_4():
    with pytest.raises(InputError, match="multiple of 4"):
        make_clip(0, 30)


def test_write_septuplets_layout(tmp_path):
    write_septuplets(tmp_path, clips=2, size=48, split="test", seed=3, progress=False)
    assert (tmp_path / "sep_testlist.txt").read_text().split() == ["00001/0001", "00002/0001"]
    assert len(list((tmp_path / "sequences" / "00002" / "0001").glob("im*.png"))) == 7


def test_real_scene_uses_held_out_imagery_only(tmp_path):
    imagery = IMAGERY_DIR
    if not (imagery / CATALOGUE["yell541"].path).is_file():
        pytest.skip("real imagery not fetched (tools/fetch_imagery.py); procedural ground covers CI")
    names = {make_clip(s, 64, 3, "test", imagery, kind="real")[1]["source"] for s in range(6)}
    assert names <= {n for n, src in CATALOGUE.items() if src.split == "test"}


def test_shipped_sample_stack():
    import rasterio

    paths = sorted(SAMPLE.glob("frame_*.tif"))
    assert len(paths) == 5
    assert sum(p.stat().st_size for p in paths) < 400_000
    times = []
    for p in paths:
        with rasterio.open(p) as ds:
            assert ds.crs.to_epsg() == 32612
            assert (ds.width, ds.height, ds.count, ds.dtypes[0]) == (152, 120, 3, "uint8")
            assert ds.transform.a == pytest.approx(0.8) and ds.transform.e == pytest.approx(-0.8)
            assert ds.profile["compress"].lower() == "deflate"
            times.append(datetime.fromisoformat(ds.tags()["ACQUISITIONDATETIME"].rstrip("Z")))
            assert ds.tags()["TIFFTAG_DATETIME"].startswith("2019:07:15 18:05:30")
    steps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    assert steps == pytest.approx([0.1] * 4)


def test_sample_stack_regenerates_identically(tmp_path):
    imagery = IMAGERY_DIR
    if not (imagery / CATALOGUE["yell541"].path).is_file():
        pytest.skip("real imagery not fetched (tools/fetch_imagery.py)")
    import rasterio

    paths = make_sample_stack(tmp_path, imagery, gt_dir=tmp_path / "gt")
    for p in paths:
        with rasterio.open(p) as a, rasterio.open(SAMPLE / p.name) as b:
            assert np.array_equal(a.read(), b.read())
    assert len(list((tmp_path / "gt").glob("gt_*.tif"))) == 9


def test_write_frames_scales_types_and_dates(tmp_path):
    """The shared stack writer: [0, 1] floats to an integer type's (or nbits') range, times as
    TIFF and ISO tags, band descriptions, and a tall tiled frame written in several strips."""
    from datetime import timedelta

    import rasterio
    from rasterio.enums import ColorInterp

    from mstt_stvsr.core.geo.synthetic import write_frames

    rng = np.random.default_rng(0)
    frames = rng.random((2, 1100, 40, 2)).astype(np.float32)
    t0 = datetime(2020, 1, 2, 3, 4, 5)
    paths = write_frames(tmp_path, frames, names=["a.tif", "b.tif"], dtype="uint16", nbits=12, block=256,
                         times=[t0, t0 + timedelta(milliseconds=250)], timespec="milliseconds",
                         time_keys=("TIFFTAG_DATETIME", "ACQUISITIONDATETIME"), descriptions=("nir", "red"),
                         colorinterp=[ColorInterp.gray, ColorInterp.undefined], compress=True)
    assert [p.name for p in paths] == ["a.tif", "b.tif"]
    with rasterio.open(paths[1]) as ds:
        assert (ds.count, ds.dtypes[0], ds.crs.to_epsg(), ds.block_shapes[0]) == (2, "uint16", 32633, (256, 256))
        assert np.array_equal(ds.read().transpose(1, 2, 0), np.rint(frames[1] * 4095).astype(np.uint16))
        assert ds.tags()["ACQUISITIONDATETIME"] == "2020-01-02T03:04:05.250Z"
        assert ds.tags()["TIFFTAG_DATETIME"] == "2020:01:02 03:04:05"
        assert ds.descriptions == ("nir", "red")
        assert ds.profile["compress"].lower() == "deflate"


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_write_frames_keeps_typed_data_and_can_skip_georeferencing(tmp_path):
    import rasterio

    from mstt_stvsr.core.geo.synthetic import write_frames

    data = np.arange(2 * 6 * 5, dtype=np.int16).reshape(2, 6, 5) - 30  # (n, h, w): one band
    paths = write_frames(tmp_path, data, dtype="int16", nodata=-9999, crs=None, times=["bad", None])
    with rasterio.open(paths[0]) as ds:
        assert ds.crs is None and ds.nodata == -9999 and ds.tags()["TIFFTAG_DATETIME"] == "bad"
        assert np.array_equal(ds.read(1), data[0])
    with rasterio.open(paths[1]) as ds:
        assert "TIFFTAG_DATETIME" not in ds.tags()


def test_tall_buildings_lean_and_their_roofs_drift_against_the_ground():
    """Parallax: with the platform still, a 40 m tower's roof moves by height x lean_rate x time
    / gsd while the ground stays; a tower-free scene does not change at all."""
    from mstt_stvsr.core.training.scenes import Tower
    from mstt_stvsr.core.training.shapes import rect

    ground = np.full((200, 200, 3), 0.3, np.float32)
    tower = Tower(rect(100, 100, 30, 30, 0.0), np.array([0.9, 0.9, 0.9], np.float32), 40.0, False)
    cam = Camera(dt=0.5, lean=(0.0, 0.0), lean_rate=(0.02, 0.0))  # roof: 40 m x 0.02/s x 0.5 s = 0.4 m/frame
    gsd = 0.5  # so 0.8 px per frame, 4.8 px from first to last of 7 frames
    f = render(Scene(ground, [], gsd, np.array([1.0, 0.0]), "urban", "x", [tower]), cam, 7, 200, 200,
               np.random.default_rng(0)).astype(float)
    # roof coverage per pixel, sub-pixel at its anti-aliased edges: 0 at wall level, 1 on the roof
    roof = np.clip((f[..., 0] - 0.55 * 0.9 * 255) / (0.45 * 0.9 * 255), 0, 1)

    def centre_x(t):
        return (roof[t] * np.arange(200)).sum() / roof[t].sum()

    assert centre_x(6) - centre_x(0) == pytest.approx(6 * 0.8, abs=0.3)
    assert np.abs(f[0, 10:60, 10:60] - f[6, 10:60, 10:60]).max() <= 1  # the ground does not move
    walls = (f[..., 0] > 100) & (f[..., 0] < 200)
    assert walls[0].any() and walls[6].any()  # the lean shows the walls at both ends
    bare = render(Scene(ground, [], gsd, np.array([1.0, 0.0]), "urban", "x"), cam, 7, 200, 200,
                  np.random.default_rng(0)).astype(float)
    assert np.abs(bare[0] - bare[6]).max() <= 1  # only sensor-noise rounding: no tower, no parallax


def test_calibrated_camera_measures_like_real_video():
    """Stabilised clips measure as real Jilin-1 video does (videostats, the README's synthesis
    table): almost no platform motion, ~4 DN of per-frame noise after JPEG, 8 x 8 blocks; the
    drifting minority moves 0.1-2 px per frame."""
    from mstt_stvsr.core.training.clips import make_clip
    from mstt_stvsr.core.training.videostats import video_stats

    clips = [make_clip(s, 256, 7, motion="stabilised", kind="urban") for s in range(10)]
    assert all(max(map(abs, info["drift_px_per_frame"])) < 0.06 for _, info in clips)  # the camera
    # what phase correlation sees: cars and towers move on their own, and a taxiing aircraft
    # fills enough of a 256-px frame to be what it follows, so those clips are left out here
    stable = [video_stats(c) for c, info in clips if not info["aircraft"]]
    assert len(stable) >= 7
    assert np.median([s["drift_px"] for s in stable]) < 0.05 and max(s["drift_px"] for s in stable) < 0.1
    assert all(2.0 < s["noise_dn"] < 7.0 for s in stable)
    assert np.median([s["blockiness"] for s in stable]) > 1.1  # a clean render measures ~1.01
    drift = [make_clip(s, 160, 7, motion="drift")[1]["drift_px_per_frame"] for s in range(3)]
    assert all(0.1 <= math.hypot(*d) <= 2.0 for d in drift)
    with pytest.raises(InputError, match="camera motion"):
        make_clip(0, 160, 7, motion="shaky")


def test_a_stopped_synth_keeps_its_finished_clips(tmp_path):
    """write_septuplets started again with the same arguments keeps each clip it finished (its
    info.json written after its frames) and makes the rest: the same files as one run."""
    one = write_septuplets(tmp_path / "one", clips=3, size=64, seed=4, imagery=None, progress=False)
    two = tmp_path / "two"
    write_septuplets(two, clips=3, size=64, seed=4, imagery=None, progress=False)
    seq = two / "sequences"
    (seq / "00002/0001/info.json").unlink()  # stopped before clip 2's record: made again
    (seq / "00003/0001/im5.png").unlink()  # a frame missing: made again
    (seq / "00001/0001/im1.png").write_bytes(b"kept as is")  # finished: not made again
    write_septuplets(two, clips=3, size=64, seed=4, imagery=None, progress=False)
    assert (seq / "00001/0001/im1.png").read_bytes() == b"kept as is"
    for rel in ("00002/0001", "00003/0001"):
        for t in range(1, 8):
            assert (seq / rel / f"im{t}.png").read_bytes() == (one / "sequences" / rel / f"im{t}.png").read_bytes()
    assert json.loads((two / "clips.json").read_text()) == json.loads((one / "clips.json").read_text())
    # other arguments make the clip anew
    write_septuplets(two, clips=1, size=64, seed=5, imagery=None, progress=False)
    assert (seq / "00001/0001/im1.png").read_bytes() != b"kept as is"


def test_cities_with_a_taxiway_have_aircraft_that_taxi(monkeypatch):
    """With a taxiway: one or two aircraft of 25-70 m at the scene's ground sampling, at most
    12 m/s; a moving one is drawn where it is at each frame's time."""
    from mstt_stvsr.core.training import scenes

    monkeypatch.setattr(scenes, "TAXIWAY_SHARE", 1.0)
    gsd = 1.0
    for seed in range(4):
        scene = urban_scene(np.random.default_rng(seed), 320, 320, gsd, None, "train")
        planes = [m for m in scene.movers if m.kind == "aircraft"]
        assert 1 <= len(planes) <= 2
        assert all(25 <= m.length * gsd <= 70 and abs(m.speed) * gsd <= 12 for m in planes)
        moving = [m for m in planes if m.speed]
        if not moving:
            continue
        only = Scene(scene.static, moving[:1], gsd, scene.sun, "urban", "x")
        empty = Scene(scene.static, [], gsd, scene.sun, "urban", "x")
        cam = Camera(dt=1.0)
        a = render(only, cam, 3, 320, 320, np.random.default_rng(0)).astype(int)
        b = render(empty, cam, 3, 320, 320, np.random.default_rng(0)).astype(int)
        where = [np.argwhere(np.abs(a[t] - b[t]).sum(-1) > 30).mean(0) for t in (0, 2)]
        shift = float(np.hypot(*(where[1] - where[0])))
        assert 0.5 * 2 * abs(moving[0].speed) < shift < 1.5 * 2 * abs(moving[0].speed) + 2, shift
        return
    pytest.fail("no moving aircraft in 4 seeds")


def test_optics_blur_is_fitted_to_a_fine_detail_target():
    """With a detail target (videostats.detail: the finest band of the clip's mean frame, noise
    averaged out) each clip's blur is fitted so that the clip measures it, whatever its scene;
    a softer target gets a wider blur; without one the blur is drawn from the psf range."""
    from mstt_stvsr.core.training.videostats import video_stats

    def clip(seed, target):
        return make_clip(seed, 192, 7, motion="stabilised", kind="urban", detail=target)

    for seed in range(2):
        psf = []
        for target in ((-2.25, -2.25), (-2.38, -2.38)):
            frames, info = clip(seed, target)
            assert info["detail_target"] == target[0]
            assert abs(video_stats(frames)["detail_log10"] - target[0]) < 0.03, (seed, target, info["psf_px"])
            psf.append(info["psf_px"])
        assert psf[0] < psf[1]
    # out of reach (the noise left in the mean frame bounds it): the closest sigma, not a bound
    assert FIT_PSF_RANGE[0] < clip(1, (-3.0, -3.0))[1]["psf_px"] < FIT_PSF_RANGE[1]
    plain = [make_clip(s, 192, 7, motion="stabilised", kind="urban", psf_range=(0.3, 2.0))[1] for s in range(2)]
    assert all("detail_target" not in info for info in plain)


def test_detail_option_takes_real_video_or_a_range():
    from mstt_stvsr.core.training.clips import DETAIL_TARGET
    from mstt_stvsr.core.training.synth import parse_detail

    assert parse_detail(None) is None and parse_detail("real") == DETAIL_TARGET
    assert parse_detail("-2.5,-2.3") == (-2.5, -2.3)
    for bad in ("-2.3,-2.5", "sharp", "-2.5"):
        with pytest.raises(InputError, match="--detail"):
            parse_detail(bad)

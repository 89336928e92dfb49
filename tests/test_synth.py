"""Synthetic satellite video: deterministic, moving platform and objects; the shipped sample stack."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from mstt_stvsr.core.training import synth as S
from mstt_stvsr.core.errors import InputError

SAMPLE = Path(__file__).resolve().parent.parent / "resources" / "sample"


def test_clip_is_deterministic_from_seed():
    a, ia = S.make_clip(11, 96, 7)
    b, ib = S.make_clip(11, 96, 7)
    c, _ = S.make_clip(12, 96, 7)
    assert a.shape == (7, 96, 96, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and ia == ib
    assert not np.array_equal(a, c)


def test_platform_drift_moves_the_whole_frame():
    """Global shift between frames 2 and 6 equals 4 x the camera's drift (content moves against it)."""
    rng = np.random.default_rng(0)
    scene = S.urban_scene(rng, 200, 200, 0.8, None, "train")
    scene.movers = []  # only the platform moves
    cam = S.Camera(drift=(0.75, -0.5), noise=0.5)  # sub-pixel per frame, whole pixels over 4 frames
    f = S.render(scene, cam, 7, 128, 128, rng).astype(float)

    def err(sx, sy):  # frame 6 against frame 2 moved by (sx, sy)
        return np.abs(f[5][10:110, 10:110] - f[1][10 + sy:110 + sy, 10 + sx:110 + sx]).mean()

    best = err(3, -2)  # frame t shows the ground at p + t * drift: 4 frames = (3, -2) px
    assert best < 1.5
    others = [err(sx, sy) for sx in range(-5, 6) for sy in range(-5, 6) if (sx, sy) != (3, -2)]
    assert best < min(others)


def test_movers_move_on_their_own():
    rng = np.random.default_rng(1)
    scene = S.urban_scene(rng, 160, 160, 0.5, None, "train")
    static = S.Scene(scene.static, [], scene.gsd, scene.sun, "urban", "x")
    cam = S.Camera(dt=0.2)
    moving = [m for m in scene.movers if abs(m.speed) > 0]
    assert moving, "a city scene has traffic"
    with_cars = S.render(scene, cam, 3, 128, 128, np.random.default_rng(2))
    without = S.render(static, cam, 3, 128, 128, np.random.default_rng(2))
    # vehicles are where the frames differ, and that place changes with time
    d0 = np.abs(with_cars[0].astype(int) - without[0]).sum(-1) > 30
    d2 = np.abs(with_cars[2].astype(int) - without[2]).sum(-1) > 30
    assert d0.any() and d2.any() and (d0 != d2).any()


def test_clip_size_must_divide_by_4():
    with pytest.raises(InputError, match="multiple of 4"):
        S.make_clip(0, 30)


def test_write_septuplets_layout(tmp_path):
    S.write_septuplets(tmp_path, clips=2, size=48, split="test", seed=3, progress=False)
    assert (tmp_path / "sep_testlist.txt").read_text().split() == ["00001/0001", "00002/0001"]
    assert len(list((tmp_path / "sequences" / "00002" / "0001").glob("im*.png"))) == 7


def test_real_scene_uses_held_out_imagery_only(tmp_path):
    imagery = S.default_imagery_dir()
    if not (imagery / S.CATALOGUE["yell541"].path).is_file():
        pytest.skip("real imagery not fetched (tools/fetch_imagery.py); procedural ground covers CI")
    names = {S.make_clip(s, 64, 3, "test", imagery, kind="real")[1]["source"] for s in range(6)}
    assert names <= {n for n, src in S.CATALOGUE.items() if src.split == "test"}


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
    imagery = S.default_imagery_dir()
    if not (imagery / S.CATALOGUE["yell541"].path).is_file():
        pytest.skip("real imagery not fetched (tools/fetch_imagery.py)")
    import rasterio

    paths = S.make_sample_stack(tmp_path, imagery, gt_dir=tmp_path / "gt")
    for p in paths:
        with rasterio.open(p) as a, rasterio.open(SAMPLE / p.name) as b:
            assert np.array_equal(a.read(), b.read())
    assert len(list((tmp_path / "gt").glob("gt_*.tif"))) == 9

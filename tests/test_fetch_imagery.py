"""The SpaceNet city crops of tools/fetch_imagery.py (16-bit panchromatic satellite GeoTIFFs to
8-bit RGB stills) and how the synthesis scales city stills (core/training/imagery.py)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from mstt_stvsr.core.training import imagery

spec = importlib.util.spec_from_file_location("fetch_imagery", Path(__file__).parents[1] / "tools" / "fetch_imagery.py")
fetch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fetch)


def test_valid_window_cuts_a_no_data_band_and_empty_corners():
    valid = np.ones((100, 120), bool)
    valid[:30] = False  # a band of no-data on top (pan2, pan3)
    for i in range(8):  # empty corners, as a warp leaves them
        valid[30 + i, : 8 - i] = valid[-1 - i, 120 - 8 + i:] = False
    rows, cols = fetch.valid_window(valid)
    assert valid[rows, cols].all()
    assert (rows.stop - rows.start) * (cols.stop - cols.start) >= 0.8 * valid.sum()
    with pytest.raises(SystemExit, match="no window free of no-data"):
        fetch.valid_window(np.zeros((5, 5), bool))


def test_stretch_puts_the_median_at_real_videos():
    rng = np.random.default_rng(0)
    pan = rng.gamma(2.0, 120.0, (64, 64)).astype(np.float32)  # linear DN, dark: median far below 0.48
    valid = np.ones_like(pan, bool)
    valid[:4] = False
    pan[:4] = 0
    x = fetch.video_stretch(pan, valid)
    assert x.min() >= 0 and x.max() <= 1
    assert np.median(x[valid]) == pytest.approx(fetch.VIDEO_MEDIAN, abs=0.01)
    assert np.all(np.diff(x[valid][np.argsort(pan[valid])]) >= -1e-9)  # order kept


def test_pansharpen_keeps_the_pan_and_tones_colour_down_to_real_videos():
    rng = np.random.default_rng(1)
    grey = rng.uniform(0.2, 0.8, (40, 40))
    ms = np.stack([np.full((20, 20), v) for v in (100.0, 300.0, 900.0)])  # blue, green, red: very red
    out = fetch.pansharpen(grey, ms, np.ones(3))
    assert out.shape == (40, 40, 3)
    assert np.allclose(out.mean(-1), grey, atol=0.02)  # the chroma averages 1: the pan's brightness
    assert np.mean(out.max(-1) - out.min(-1)) == pytest.approx(fetch.VIDEO_SATURATION, rel=0.05)
    assert (out[..., 0] > out[..., 1]).all() and (out[..., 1] > out[..., 2]).all()  # red stays red
    balanced = fetch.pansharpen(grey, ms, 1.0 / np.array([100.0, 300.0, 900.0]))
    assert np.allclose(balanced, grey[..., None], atol=1e-5)  # gains that make the scene grey do


def test_a_crop_in_degrees_is_warped_to_square_metres(tmp_path):
    """0.3 x 0.24 m pixels in EPSG:4326 (the Las Vegas crop): warped to UTM at WARP_GSD; dark
    ground inside the footprint is not no-data (a cubic warp undershoots next to it), 0 DN
    (SpaceNet's no-data) and the empty corners of the warp are."""
    path = tmp_path / "deg.tif"
    band = np.full((200, 200), 1500, np.uint16)
    band[90:110, 90:110] = 3  # a black roof inside the footprint
    band[:20] = 0  # no-data
    with rasterio.open(path, "w", driver="GTiff", width=200, height=200, count=1, dtype="uint16", crs="EPSG:4326",
                       transform=from_origin(-115.2, 36.1, 2.7e-6, 2.7e-6)) as ds:
        ds.write(band, 1)
    pan, valid = fetch.read_metric(path)
    lat_m, lon_m = 200 * 2.7e-6 * 110_900, 200 * 2.7e-6 * 111_320 * np.cos(np.radians(36.1))
    assert pan.shape[0] * fetch.WARP_GSD == pytest.approx(lat_m, rel=0.05)
    assert pan.shape[1] * fetch.WARP_GSD == pytest.approx(lon_m, rel=0.08)
    assert pan.shape[0] > pan.shape[1]  # E-W pixels were shorter
    centre = (pan.shape[0] // 2, pan.shape[1] // 2)
    assert valid[centre] and pan[centre] < 50
    assert not valid[: int(0.08 * pan.shape[0])].any() and valid[int(0.15 * pan.shape[0]):].mean() > 0.9
    rows, cols = fetch.valid_window(valid)
    assert valid[rows, cols].all() and (rows.stop - rows.start) > 0.8 * pan.shape[0]


def test_city_stills_are_scaled_to_cover_the_canvas_but_not_finer_than_the_floor():
    rng = np.random.default_rng(0)
    city = [imagery.source_gsd(rng, "vegas", extent_m=0.7) for _ in range(200)]
    assert max(city) <= 0.7 + 1e-9 and min(city) >= imagery.NADIR_GSD_M[0] - 1e-9
    small = [imagery.source_gsd(rng, "rotterdam2", extent_m=0.4) for _ in range(50)]
    assert set(np.round(small, 3)) == {imagery.NADIR_GSD_M[0]}
    ground = [imagery.source_gsd(rng, "yell528", extent_m=0.4) for _ in range(200)]
    assert max(ground) > 0.9  # the orthophotos keep their 0.55-1 m range, as before
    assert all(imagery.CATALOGUE[n].split == "train" for n in imagery.CATALOGUE if imagery.CATALOGUE[n].view == "city")


def test_fetched_city_stills_look_like_real_video():
    """When `make imagery` has run: each SpaceNet still is RGB with real video's median
    brightness and no more colour than real video has, free of no-data."""
    from PIL import Image

    names = [n for n, s in imagery.CATALOGUE.items() if s.view == "city"]
    paths = [imagery.IMAGERY_DIR / imagery.CATALOGUE[n].path for n in names]
    if not all(p.is_file() for p in paths):
        pytest.skip("SpaceNet stills not fetched (make imagery)")
    for p in paths:
        im = np.asarray(Image.open(p).convert("RGB"), np.float32) / 255
        assert min(im.shape[:2]) >= 360, p
        assert np.median(im.mean(-1)) == pytest.approx(fetch.VIDEO_MEDIAN, abs=0.02), p
        assert np.mean(im.max(-1) - im.min(-1)) <= 0.12, p  # toned down (clipping can leave a little more)
        assert (im.mean(-1) == 0).mean() < 0.02, p  # the stretch's 1 % black, no no-data bands

"""Stack validation (every mismatch names the file), value scaling, nodata fill, output naming,
georeferencing of outputs, and the temporary-name/commit/discard cycle."""
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from mstt_stvsr.core.errors import InputError
from mstt_stvsr.core.geo.outputs import OutputSet, output_names
from mstt_stvsr.core.geo.read import fill_invalid
from mstt_stvsr.core.geo.stack import hr_transform, read_stack_info
from mstt_stvsr.core.geo.values import ValueScaler, value_scaler
from mstt_stvsr.core.geo.write import scaled_rpcs
from stackgen import write_stack


def rewrite(path, **changes):
    """Rewrite one frame with some profile items changed (a mismatching frame)."""
    with rasterio.open(path) as src:
        prof, data, tags = src.profile, src.read(), src.tags()
    data = changes.pop("data", data)
    prof.update(changes)
    if "count" in changes:
        data = np.concatenate([data] * 2)[: changes["count"]]
        prof.pop("photometric", None)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data.astype(prof["dtype"]))
        dst.update_tags(**tags)


def test_stack_info_reads_everything(tmp_path):
    paths = write_stack(tmp_path, n=3, h=20, w=30, nodata=0, times="iso", descriptions=["red", "green", "blue"])
    info = read_stack_info(paths)
    assert (info.n_frames, info.n_outputs, info.width, info.height, info.count) == (3, 5, 30, 20, 3)
    assert (info.out_width, info.out_height) == (120, 80)
    assert info.crs.to_epsg() == 32633 and info.nodata == 0 and info.dtype == "uint8"
    assert info.descriptions == ("red", "green", "blue")
    assert info.time_source == "metadata" and info.times[1] - info.times[0] == (info.times[2] - info.times[1])
    assert info.out_transform == Affine(0.5, 0, 500000.0, 0, -0.5, 4500000.0)
    assert "3 frames 30x20" in info.summary()
    assert info.as_dict()["out_transform"] == (0.5, 0, 500000.0, 0, -0.5, 4500000.0)


@pytest.mark.parametrize("change,pattern", [
    (dict(crs="EPSG:4326"), r"frame_02\.tif: CRS EPSG:4326 differs from .*frame_00\.tif \(EPSG:32633\)"),
    (dict(width=31), r"frame_02\.tif: size 31x20 differs from .*frame_00\.tif \(30x20\)"),
    (dict(transform=Affine(2.0, 0, 500002.0, 0, -2.0, 4500000.0)), r"frame_02\.tif: geotransform .* differs"),
    (dict(count=4), r"frame_02\.tif: band count 4 differs from .*\(3\)"),
    (dict(dtype="uint16"), r"frame_02\.tif: data type uint16 differs from .*\(uint8\)"),
    (dict(nodata=255), r"frame_02\.tif: nodata value 255.0 differs from .*\(0.0\)"),
])
def test_mismatch_names_file_and_difference(tmp_path, change, pattern):
    paths = write_stack(tmp_path, n=3, h=20, w=30, nodata=0)
    if "width" in change:
        with rasterio.open(paths[2]) as src:
            change["data"] = np.concatenate([src.read(), src.read()[:, :, :1]], axis=2)
    rewrite(paths[2], **change)
    with pytest.raises(InputError, match=pattern):
        read_stack_info(paths)


def test_unreadable_missing_and_too_few(tmp_path):
    paths = write_stack(tmp_path, n=2, h=10, w=10)
    with pytest.raises(InputError, match="at least 2 frames"):
        read_stack_info(paths[:1])
    with pytest.raises(InputError, match=r"nothere\.tif: file not found"):
        read_stack_info([paths[0], str(tmp_path / "nothere.tif")])
    junk = tmp_path / "junk.tif"
    junk.write_text("not a raster")
    with pytest.raises(InputError, match=r"junk\.tif: not a raster GDAL can read"):
        read_stack_info([paths[0], str(junk)])


def test_palette_rasters_are_refused(tmp_path):
    paths = write_stack(tmp_path, n=2, h=10, w=10, count=1)
    for p in paths:
        with rasterio.open(p, "r+") as ds:
            ds.write_colormap(1, {0: (0, 0, 0, 255), 255: (255, 255, 255, 255)})
    with pytest.raises(InputError, match="colour table"):
        read_stack_info(paths)


def test_metadata_times_that_do_not_increase_are_ignored_with_a_note(tmp_path):
    paths = write_stack(tmp_path, n=3, h=10, w=10, times=["2020:01:01 00:00:00"] * 3)
    info = read_stack_info(paths)
    assert info.time_source == "none" and "do not increase in the order given" in info.summary()
    info = read_stack_info(paths, times="2021-01-01T00:00:00,2021-01-01T00:00:01,2021-01-01T00:00:03")
    assert info.time_source == "--times" and info.times[2].second == 3


def test_value_scalers(tmp_path):
    assert value_scaler(read_stack_info(write_stack(tmp_path / "a", n=2, h=10, w=10))).hi == 255
    info = read_stack_info(write_stack(tmp_path / "b", n=2, h=10, w=10, dtype="uint16", nbits=12))
    assert info.nbits == 12 and value_scaler(info).hi == 4095
    info = read_stack_info(write_stack(tmp_path / "c", n=2, h=30, w=30, dtype="uint16", nodata=0))
    s = value_scaler(info)
    assert 0 < s.lo < s.hi < 65535 and "robust" in s.how
    info = read_stack_info(write_stack(tmp_path / "d", n=2, h=30, w=30, dtype="float32", nodata=float("nan")))
    s = value_scaler(info)
    assert -50 <= s.lo < s.hi <= 950


def test_scaler_round_trip_and_clipping():
    s = ValueScaler("uint16", 100, 4195, "test")
    v = np.array([100, 2000, 4195], np.uint16)
    np.testing.assert_array_equal(s.from_unit(s.to_unit(v)), v)
    np.testing.assert_array_equal(s.from_unit(np.array([-5.0, 50.0])), [0, 65535])


def test_fill_invalid_uses_nearest_valid_pixel():
    x = np.array([[[1, 2, 3], [4, 5, 6]]], np.float32)
    valid = np.array([[[True, False, False], [False, False, True]]])
    out = fill_invalid(x, valid)
    np.testing.assert_array_equal(out, [[[1, 1, 6], [1, 6, 6]]])
    assert fill_invalid(x, np.zeros_like(valid)).max() == 0


def test_hr_transform_keeps_origin_and_rotation():
    t = Affine(2.0, 0.5, 100.0, 0.3, -2.0, 200.0)
    h = hr_transform(t)
    assert h == Affine(0.5, 0.125, 100.0, 0.075, -0.5, 200.0)
    # the HR pixel grid spans exactly the LR footprint: corners coincide
    assert h * (40, 40) == pytest.approx(t * (10, 10))


def test_rpc_offsets_refer_to_hr_pixel_centres():
    from rasterio.rpc import RPC

    coeffs = [0.0] * 20
    r = RPC(height_off=0, height_scale=1, lat_off=0, lat_scale=1, long_off=0, long_scale=1,
            line_off=50, line_scale=50, samp_off=60, samp_scale=60, line_num_coeff=coeffs,
            line_den_coeff=coeffs, samp_num_coeff=coeffs, samp_den_coeff=coeffs)
    s = scaled_rpcs(r)
    # LR pixel centre 50 covers HR pixels 200..203, whose centre is 201.5
    assert s.line_off == 201.5 and s.line_scale == 200 and s.samp_off == 241.5


def test_output_names_sort_in_time_order(tmp_path):
    info = read_stack_info(write_stack(tmp_path, n=9, h=8, w=8, name="jl1_scene"))
    names = output_names(info)
    assert names[0] == "jl1_scene_x4_t000.tif" and len(names) == 17
    assert sorted(names) == names
    assert output_names(info, "custom")[16] == "custom_t016.tif"


def test_output_set_commit_and_discard(tmp_path):
    out = tmp_path / "new" / "deeper"
    outs = OutputSet(out, ["a.tif", "b.tif"])
    outs.check_existing()
    assert not out.exists()  # checking writes nothing
    outs.prepare()
    for t in outs.temp:
        t.write_bytes(b"x")
    # temporaries sit in a hidden folder and never end in .tif: nothing takes them for frames
    assert all(t.parent.name.startswith(".") and not t.name.endswith(".tif") for t in outs.temp)
    assert outs.commit() == [str(out / "a.tif"), str(out / "b.tif")]
    outs.close()
    assert sorted(os.listdir(out)) == ["a.tif", "b.tif"]

    outs2 = OutputSet(out, ["a.tif", "b.tif"])
    with pytest.raises(InputError, match=r"a\.tif already exists \(and 1 more\); use --overwrite"):
        outs2.check_existing()

    outs3 = OutputSet(tmp_path / "fresh" / "x", ["c.tif"])
    outs3.prepare()
    outs3.temp[0].write_bytes(b"x")
    outs3.discard()  # removes temporaries and the folders it created
    assert not (tmp_path / "fresh").exists()


def test_output_folder_that_cannot_be_made(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        OutputSet(f, ["a.tif"]).prepare()
    with pytest.raises(InputError, match="cannot create output folder"):
        OutputSet(f / "sub", ["a.tif"]).prepare()
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["file.txt"]


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_gcps_are_scaled_to_output_pixels(tmp_path):
    """Raw satellite frames often carry GCPs instead of a geotransform: they must land on the
    same ground points in the finer grid (pixel/line x 4)."""
    from rasterio.control import GroundControlPoint

    from mstt_stvsr.core.geo.write import output_profile, source_extras, write_frame_metadata

    paths = write_stack(tmp_path, n=2, h=10, w=12, crs=None)
    gcps = [GroundControlPoint(row=0, col=0, x=13.0, y=52.0), GroundControlPoint(row=10, col=12, x=13.1, y=51.9),
            GroundControlPoint(row=0, col=12, x=13.1, y=52.0)]
    for p in paths:
        with rasterio.open(p, "r+") as ds:
            ds.gcps = (gcps, rasterio.crs.CRS.from_epsg(4326))
    info = read_stack_info(paths)
    assert not info.georeferenced and "GCPs" in info.summary()
    out = tmp_path / "o.tif"
    with rasterio.open(out, "w", **output_profile(info)) as dst:
        write_frame_metadata(dst, info, source_extras(paths[0]), {"MSTT_OUTPUT_INDEX": "0"})
    with rasterio.open(out) as ds:
        got, crs = ds.gcps
        assert crs.to_epsg() == 4326
        assert [(g.row, g.col, g.x, g.y) for g in got] == [(4 * g.row, 4 * g.col, g.x, g.y) for g in gcps]


def test_sample_stack_validates():
    """The shipped sample: 5 frames, 0.1 s apart in ACQUISITIONDATETIME (TIFFTAG_DATETIME only
    holds whole seconds there and repeats, so it must not be the one used)."""
    from datetime import timedelta

    from mstt_stvsr.core.run.pipeline import validate_stack

    frames = sorted((Path(__file__).resolve().parents[1] / "resources" / "sample").glob("frame_*.tif"))
    if len(frames) < 2:
        pytest.skip("resources/sample/ has no frames")
    info = validate_stack(frames)
    assert info.n_outputs == 2 * len(frames) - 1 and info.time_source == "metadata"
    steps = {info.times[i + 1] - info.times[i] for i in range(len(frames) - 1)}
    assert steps == {timedelta(milliseconds=100)}
    assert info.crs is not None and info.dtype == "uint8" and info.count == 3

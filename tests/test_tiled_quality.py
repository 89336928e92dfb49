"""Tiles must not show, with the shipped weights: on a real-looking clip with ground truth, the
default tiling agrees with an untiled run (PSNR within 0.1 dB, mean |difference| <= 1 DN, tile
borders no worse than tile interiors); and the sample stack runs end to end on the CPU.

Both need the trained network (an untrained one is the bicubic/flow base, which is local and
would pass trivially), so they skip until resources/weights/mstt_default.safetensors exists."""
from pathlib import Path

import numpy as np
import pytest
import rasterio

from mstt_stvsr.core.run import device as accel
from mstt_stvsr.core.geo.stack import hr_transform, read_stack_info
from mstt_stvsr.core.run.options import DEFAULT_OVERLAP, RunOptions
from mstt_stvsr.core.run.pipeline import make_grid, run_stack
from mstt_stvsr.core.run.tiling import seam_stats
from mstt_stvsr.core.net.weights import default_weights_path, load_model

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shipped():
    path = default_weights_path()
    if not path.exists():
        pytest.skip(f"needs the shipped weights {path.relative_to(ROOT)} (made by training); "
                    "an untrained network would make this test meaningless")
    return load_model(path)


def read_all(paths):
    out = []
    for p in paths:
        with rasterio.open(p) as ds:
            out.append(ds.read())
    return np.stack(out)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def scene(tmp_path_factory, shipped):
    """A clip of exactly 2 x 2 default tiles (overlaps = the default overlap), its ground truth
    and the untiled run of it, shared by the test and its negative control."""
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    from tile_study import make_stack

    from mstt_stvsr.core.run import cost

    tmp = tmp_path_factory.mktemp("tiled_quality")
    tile, ov = min(cost.CPU_TILES), DEFAULT_OVERLAP
    size = 2 * (tile - ov)  # with the default margin of ov/2: exactly 2 x 2 tiles, overlaps = ov
    precision = accel.precision_name(accel.resolve_precision("auto", accel.resolve_device("cpu")))
    assert cost.cpu_tile(size, size, ov, None, precision) == tile  # what a run of this scene picks
    paths, hr, _ = make_stack(tmp / "in", size, frames=2, seed=11)
    grid = make_grid(*read_stack_info(paths).shape, tile, ov)
    assert (len(grid.rows), len(grid.cols)) == (2, 2)
    whole = read_all(run_stack(paths, tmp / "whole", RunOptions(tile_size=accel.round_tile(size), overlap=0),
                               model=shipped))
    return dict(paths=paths, gt=hr.transpose(0, 3, 1, 2), grid=grid, whole=whole, tile=tile, overlap=ov)


def seam_problems(tiled, scene) -> list:
    """What shows of the tiles (empty if nothing): PSNR against the untiled run beyond 0.1 dB,
    mean |difference| over 1 DN, tile borders worse than interiors, jumps across seam lines."""
    gt, whole = scene["gt"], scene["whole"]
    p_tiled = np.mean([psnr(tiled[i], gt[i]) for i in range(len(gt))])
    p_whole = np.mean([psnr(whole[i], gt[i]) for i in range(len(gt))])
    st = seam_stats(tiled, whole, *scene["grid"].seam_lines())
    print(f"PSNR tiled {p_tiled:.3f} dB, untiled {p_whole:.3f} dB; {st}")
    problems = []
    if abs(p_tiled - p_whole) > 0.1:
        problems.append(f"PSNR differs by {p_tiled - p_whole:+.3f} dB")
    if st["mad"] > 1.0:
        problems.append(f"mean |tiled - untiled| {st['mad']:.2f} DN")
    # tile borders no worse than tile interiors; below a quarter of an 8-bit step the ratio is
    # noise (the shipped weights measured near 0.031 DN, far 0.023 DN, mad 0.024 DN)
    if st["near"] > max(1.2 * st["far"], 0.25):
        problems.append(f"near seams {st['near']:.3f} DN vs {st['far']:.3f} elsewhere")
    if st["step"] > 1.1:  # no jump across seam lines beyond the image's own
        problems.append(f"step across seams {st['step']:.2f}x the untiled image's")
    return problems


def run_tiled(scene, shipped, out):
    return read_all(run_stack(scene["paths"], out, RunOptions(tile_size=scene["tile"], overlap=scene["overlap"]),
                              model=shipped))


def test_default_tiling_is_seamless_and_as_good_as_untiled(tmp_path, shipped, scene):
    assert seam_problems(run_tiled(scene, shipped, tmp_path / "tiled"), scene) == []


def test_seam_check_catches_a_broken_blend(tmp_path, shipped, scene, monkeypatch):
    """Negative control: blend weights that sum to more than one inside the overlaps (square
    roots of the raised-cosine ramps, up to 1.41) must fail the same check."""
    from mstt_stvsr.core.run import tiling

    orig = tiling.axis_weights
    monkeypatch.setattr(tiling, "axis_weights", lambda spans, length, scale=4: [
        np.sqrt(w) for w in orig(spans, length, scale)])
    assert seam_problems(run_tiled(scene, shipped, tmp_path / "broken"), scene)


def test_sample_stack_on_cpu(tmp_path, shipped):
    frames = sorted(str(p) for p in (ROOT / "resources" / "sample").glob("frame_*.tif"))
    if len(frames) < 2:
        pytest.skip("resources/sample/ has no frames")
    out = run_stack(frames, tmp_path / "out", RunOptions(device="cpu"), model=shipped)
    assert len(out) == 2 * len(frames) - 1
    from mstt_stvsr.core.training.degrade import downsample

    for i, p in enumerate(out):
        with rasterio.open(p) as ds, rasterio.open(frames[i // 2]) as src:
            assert ds.crs == src.crs and ds.transform.almost_equals(hr_transform(src.transform))
            assert ds.tags()["ACQUISITIONDATETIME"]
            if i % 2 == 0:  # reduced again, an output frame reproduces its input closely
                back = downsample(ds.read().transpose(1, 2, 0))
                assert psnr(back.transpose(2, 0, 1), src.read()) > 32

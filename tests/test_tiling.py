"""Tile grid, raised-cosine blend weights, reflect padding (incl. flow signs), streaming blend."""
import numpy as np
import pytest

from mstt_stvsr.core.run.tiling import (
    StreamBlender, Tile, TileGrid, axis_spans, axis_weights, ramp, read_reflected, reflect_flow, reflect_index,
)


@pytest.mark.parametrize("length,tile,overlap,margin", [(300, 80, 16, 8), (81, 80, 16, 0), (1000, 160, 32, 16), (161, 80, 0, 0)])
def test_spans_cover_with_equal_tiles_and_enough_overlap(length, tile, overlap, margin):
    spans = axis_spans(length, tile, overlap, margin)
    assert spans[0].start == -margin and spans[-1].stop == length + margin
    assert all(s.size == tile for s in spans)
    for a, b in zip(spans, spans[1:]):
        assert a.stop - b.start >= overlap  # every overlap at least as asked
        assert b.start > a.start
    # no more tiles than needed
    assert len(spans) == max(1, -(-(length + 2 * margin - overlap) // (tile - overlap)))


def test_scene_smaller_than_a_tile_gets_one_centred_tile():
    (s,) = axis_spans(30, 160, 16, 8, multiple=80)
    assert s.size == 80 and s.start < -8 and s.stop > 38  # grown to the network's unit, both sides
    assert (-s.start) - (s.stop - 30) in (0, 1, -1)
    (s,) = axis_spans(5, 160, 16, 0)
    assert (s.start, s.stop) == (0, 5)


def test_ramp_is_complementary_and_positive():
    r = ramp(17)
    assert np.all(r > 0) and np.all(r < 1)
    np.testing.assert_allclose(r + r[::-1], 1.0)


def test_axis_weights_sum_to_one_and_fall_towards_tile_edges():
    spans = axis_spans(300, 80, 16, 8)
    ws = axis_weights(spans, 300)
    total = np.zeros(1200)
    for s, w in zip(spans, ws):
        a, b = max(s.start * 4, 0), min(s.stop * 4, 1200)
        assert w.shape == (b - a,)
        total[a:b] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    inner = ws[1]
    assert inner[0] < 0.01 and inner[-1] < 0.01 and inner[len(inner) // 2] == pytest.approx(1.0)
    assert ws[0][0] == pytest.approx(1.0)  # scene border: no ramp, it is not a seam


def test_reflect_index_and_signs():
    idx, sign = reflect_index(-3, 7, 5)
    assert idx.tolist() == [3, 2, 1, 0, 1, 2, 3, 4, 3, 2]
    assert sign.tolist() == [-1, -1, -1, 1, 1, 1, 1, 1, -1, -1]
    idx, _ = reflect_index(-4, 6, 2)  # repeated reflection of a tiny scene
    assert idx.tolist() == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]


def test_read_reflected_matches_numpy_reflect_pad():
    rng = np.random.default_rng(0)
    img = rng.random((2, 9, 11)).astype(np.float32)
    tile = Tile(0, 0, *axis_spans(9, 20, 2, 3)[:1], *axis_spans(11, 20, 2, 3)[:1])
    calls = []

    def read(y0, y1, x0, x1):
        calls.append((y0, y1, x0, x1))
        return img[:, y0:y1, x0:x1]

    got = read_reflected(read, tile, 9, 11)
    np.testing.assert_array_equal(got, np.pad(img, ((0, 0), (3, 3), (3, 3)), mode="reflect"))
    assert calls == [(0, 9, 0, 11)]  # one windowed read of the scene part only


def test_reflected_flow_changes_sign_across_the_mirror():
    """Mirroring a scene mirrors its motion: a car driving right drives left in the mirror image."""
    h, w = 6, 7
    flow = np.zeros((4, h, w), np.float32)
    flow[0], flow[1], flow[2], flow[3] = 1.5, -0.5, -1.5, 0.5  # dx, dy (mid->prev), dx, dy (mid->next)
    tile = Tile(0, 0, axis_spans(h, 20, 2, 2)[0], axis_spans(w, 20, 2, 2)[0])
    out = reflect_flow(flow, tile, h, w)
    assert out.shape == (4, h + 4, w + 4)
    np.testing.assert_array_equal(out[:, 2:-2, 2:-2], flow)
    assert out[0, 5, 0] == -1.5 and out[1, 5, 0] == -0.5  # left margin: dx flips, dy not
    assert out[0, 0, 5] == 1.5 and out[1, 0, 5] == 0.5  # top margin: dy flips, dx not
    assert out[0, 0, 0] == -1.5 and out[1, 0, 0] == 0.5  # corner: both


@pytest.mark.parametrize("h,w,tile,overlap,margin", [(37, 53, 16, 4, 2), (10, 7, 16, 4, 3), (100, 100, 40, 8, 0), (41, 17, 40, 8, 4)])
def test_stream_blender_reassembles_exactly_and_writes_each_pixel_once(h, w, tile, overlap, margin):
    grid = TileGrid(h, w, tile, overlap, margin)
    rng = np.random.default_rng(1)
    hr = rng.random((2, 3, 4 * h, 4 * w)).astype(np.float32)
    out = np.full_like(hr, np.nan)
    writes = []

    def write(y0, y1, x0, x1, block):
        assert np.isnan(out[..., y0:y1, x0:x1]).all(), "pixel written twice"
        out[..., y0:y1, x0:x1] = block
        writes.append((y0, y1, x0, x1))

    blender = StreamBlender(grid, (2, 3), write)
    for t in grid:  # each tile "predicts" the true image, reflected beyond the scene
        iy, _ = reflect_index(t.y.start * 4, t.y.stop * 4, 4 * h)
        ix, _ = reflect_index(t.x.start * 4, t.x.stop * 4, 4 * w)
        blender.add(t, hr[..., iy[:, None], ix[None, :]])
    assert blender.finished()
    np.testing.assert_allclose(out, hr, atol=1e-6)
    assert len(writes) <= len(grid) + len(grid.rows) + len(grid.cols)


def test_stream_blender_memory_is_a_strip_not_the_scene():
    grid = TileGrid(400, 2000, 80, 16, 8)
    blender = StreamBlender(grid, (1, 1), lambda *a: None)
    tile_hr = np.zeros((1, 1, 320, 320), np.float32)
    for t in grid:
        blender.add(t, tile_hr)
    scene_px = 1600 * 8000
    # pending cells: at most one overlap strip across the scene plus about one tile
    assert blender.peak_pending_px <= 4 * 2 * 16 * 8000 + 2 * 320 * 320
    assert blender.peak_pending_px < scene_px / 10


def test_blend_of_disagreeing_tiles_has_no_step():
    """Two tiles that disagree by a constant blend smoothly: the largest jump between
    neighbouring pixels is a small fraction of the disagreement (a hard seam would be all)."""
    grid = TileGrid(20, 150, 80, 16, 0)
    out = np.zeros((1, 80, 600), np.float32)

    def write(y0, y1, x0, x1, block):
        out[:, y0:y1, x0:x1] = block[0]

    blender = StreamBlender(grid, (1, 1), write)
    for t in grid:
        blender.add(t, np.full((1, 1, 4 * t.y.size, 4 * t.x.size), float(t.col), np.float32))
    steps = np.abs(np.diff(out[0], axis=1))
    assert steps.max() < 0.05
    assert out[0, 0, 0] == 0 and out[0, 0, -1] == len(grid.cols) - 1 > 0

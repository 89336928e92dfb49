"""Space: a grid of overlapping tiles in LR pixels, blend weights in HR pixels, reflect padding,
and a streaming blender that writes finished HR pixels as soon as no later tile touches them.

Grid. Along each axis the scene ``[0, length)`` is widened by a reflect-padded ``margin`` so
that pixels at the scene border are not at a tile's edge (where the network sees zero padding),
then covered by ``n`` equal tiles of ``tile`` pixels spread evenly, so that every overlap is at
least ``overlap`` and all tiles have the same size (the same attention context). A scene no
longer than a tile gets a single tile with whatever margin fits (no seam at all), grown to the
network's 80-px unit so that the network does not pad it one-sidedly itself.

Weights. Each tile's HR extent gets a raised-cosine ramp over its whole overlap with each
neighbour (never exactly zero, so coverage is always positive) and 1 elsewhere; the 2-D weight
is the product of the two 1-D weights. Because the grid is a product of two 1-D tilings, the
sum of all tiles' weights at a pixel is the product of the 1-D sums, so the weights are
normalised per axis in advance and contributions simply add up to the blend: no weight image
is accumulated.

Streaming (``StreamBlender``). Tiles are processed in raster order. HR space is cut into cells
at every tile start and stop; a cell is finished once the last tile (in raster order) that
covers it has been added, and is then written and dropped. Pending cells are the strip below
the current tile row (overlap x scene width) plus the cells of the current tile: memory grows
with tile size and overlap, the strip only with the scene's width, never with its area or the
number of frames (the pipeline blends the 1-3 outputs of one time window at a time).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..net.spec import SCALE


# -- 1-D grid --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Span:
    """A tile's extent along one axis, in LR pixels of the scene (may reach into the margin)."""

    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def axis_spans(length: int, tile: int, overlap: int, margin: int = 0, multiple: int = 1) -> list[Span]:
    """Equal tiles covering ``[-margin, length + margin)`` with overlaps of at least ``overlap``.

    A scene no longer than a tile gets one tile: the scene plus its margins grown to a
    ``multiple`` (the network's padding unit) but not beyond ``tile`` (the margins shrink
    instead), centred, so that reflect padding is on both sides instead of the network's
    one-sided padding."""
    if length < 1:
        raise ValueError(f"scene length must be positive, got {length}")
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    lo, total = -margin, length + 2 * margin
    if length <= tile:  # one tile; no seam is worth more than a full margin
        size = min(tile, max(length, -(-total // multiple) * multiple))
        lo = -((size - length) // 2)
        return [Span(lo, lo + size)]
    n = math.ceil((total - overlap) / (tile - overlap))
    starts = [lo + round(i * (total - tile) / (n - 1)) for i in range(n)]
    return [Span(s, s + tile) for s in starts]


def ramp(n: int) -> np.ndarray:
    """Raised-cosine rise over n pixels, sampled at pixel centres: 0 < r < 1, r[i] + r[n-1-i] = 1."""
    i = np.arange(n, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(np.pi * (i + 0.5) / n)


def axis_weights(spans: list[Span], length: int, scale: int = SCALE) -> list[np.ndarray]:
    """Normalised 1-D HR weights per span, over the span's HR extent clipped to the scene."""
    hr_len = length * scale
    raw = []
    for i, s in enumerate(spans):
        a, b = s.start * scale, s.stop * scale
        w = np.ones(b - a)
        if i > 0:  # rise over the overlap with the previous tile
            n = min(spans[i - 1].stop * scale - a, b - a)
            if n > 0:
                w[:n] = np.minimum(w[:n], ramp(n))
        if i + 1 < len(spans):  # fall over the overlap with the next tile
            n = min(b - spans[i + 1].start * scale, b - a)
            if n > 0:
                w[b - a - n:] = np.minimum(w[b - a - n:], ramp(n)[::-1])
        raw.append((max(a, 0), min(b, hr_len), w[max(a, 0) - a: min(b, hr_len) - a]))
    total = np.zeros(hr_len)
    for a, b, w in raw:
        total[a:b] += w
    if not np.all(total > 0):
        raise AssertionError("tiles do not cover the scene")  # a bug, not a user error
    return [(w / total[a:b]).astype(np.float32) for a, b, w in raw]


# -- 2-D grid --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tile:
    row: int
    col: int
    y: Span  # LR, scene coordinates, may extend into the reflect margin
    x: Span

    def hr_extent(self, height: int, width: int, scale: int = SCALE) -> tuple:
        """HR (y0, y1, x0, x1) of this tile clipped to the scene."""
        return (max(self.y.start * scale, 0), min(self.y.stop * scale, height * scale),
                max(self.x.start * scale, 0), min(self.x.stop * scale, width * scale))

    def hr_crop(self, height: int, width: int, scale: int = SCALE) -> tuple:
        """Slices that cut the scene part out of the tile's full HR output."""
        y0, y1, x0, x1 = self.hr_extent(height, width, scale)
        oy, ox = self.y.start * scale, self.x.start * scale
        return slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox)


class TileGrid:
    """Tiles of ``tile`` LR pixels overlapping by >= ``overlap``, over a ``height`` x ``width``
    scene with a reflect ``margin``; 1-D blend weights per row and column of tiles."""

    def __init__(self, height: int, width: int, tile: int, overlap: int, margin: int = 0, scale: int = SCALE,
                 multiple: int = 1):
        self.height, self.width, self.scale = height, width, scale
        self.tile, self.overlap, self.margin = tile, overlap, margin
        self.rows = axis_spans(height, tile, overlap, margin, multiple)
        self.cols = axis_spans(width, tile, overlap, margin, multiple)
        self.wy = axis_weights(self.rows, height, scale)
        self.wx = axis_weights(self.cols, width, scale)

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def __iter__(self):
        for r, ys in enumerate(self.rows):
            for c, xs in enumerate(self.cols):
                yield Tile(r, c, ys, xs)

    def weight(self, tile: Tile) -> np.ndarray:
        """2-D normalised HR weight of a tile over its clipped extent."""
        return self.wy[tile.row][:, None] * self.wx[tile.col][None, :]

    def seam_lines(self) -> tuple:
        """HR rows and columns in the middle of each overlap, where a hard seam would be."""
        def mids(spans):
            return [int(round((spans[i].stop + spans[i + 1].start) * self.scale / 2)) for i in range(len(spans) - 1)]
        return mids(self.rows), mids(self.cols)


# -- reflect padding -------------------------------------------------------------------------
def reflect_index(start: int, stop: int, length: int) -> tuple:
    """Source indices and flip signs for positions ``start..stop-1`` of a reflected axis.

    Reflection without repeating the edge pixel (numpy's "reflect"), repeated as often as
    needed, so any padding works even for a scene smaller than the padding. ``sign`` is -1
    where the position is a mirror image: a motion component along this axis changes sign there.
    """
    i = np.arange(start, stop)
    if length == 1:
        return np.zeros_like(i), np.ones(i.shape, np.float32)
    period = 2 * (length - 1)
    m = np.mod(i, period)
    flipped = m > length - 1
    return np.where(flipped, period - m, m), np.where(flipped, -1.0, 1.0).astype(np.float32)


def read_reflected(read, tile: Tile, height: int, width: int):
    """Read a tile that may reach beyond the scene. ``read(y0, y1, x0, x1)`` returns an array
    (..., y1-y0, x1-x0) of the scene; the result is (..., tile h, tile w), reflected outside."""
    iy, _ = reflect_index(tile.y.start, tile.y.stop, height)
    ix, _ = reflect_index(tile.x.start, tile.x.stop, width)
    y0, y1, x0, x1 = int(iy.min()), int(iy.max()) + 1, int(ix.min()), int(ix.max()) + 1
    block = read(y0, y1, x0, x1)
    if (y0, y1, x0, x1) == (tile.y.start, tile.y.stop, tile.x.start, tile.x.stop):
        return block
    return block[..., (iy - y0)[:, None], (ix - x0)[None, :]]


def reflect_flow(flow: np.ndarray, tile: Tile, height: int, width: int) -> np.ndarray:
    """Crop (..., 4, H, W) middle flows [dx, dy, dx, dy] for a tile, reflecting outside the
    scene: in a mirrored region the motion component across the mirror axis changes sign."""
    iy, sy = reflect_index(tile.y.start, tile.y.stop, height)
    ix, sx = reflect_index(tile.x.start, tile.x.stop, width)
    inside = (tile.y.start >= 0 and tile.x.start >= 0 and tile.y.stop <= height and tile.x.stop <= width)
    if inside:
        return np.array(flow[..., tile.y.start:tile.y.stop, tile.x.start:tile.x.stop], dtype=np.float32)
    y0, y1, x0, x1 = int(iy.min()), int(iy.max()) + 1, int(ix.min()), int(ix.max()) + 1
    block = np.asarray(flow[..., y0:y1, x0:x1], dtype=np.float32)
    out = block[..., (iy - y0)[:, None], (ix - x0)[None, :]].copy()
    out[..., 0::2, :, :] *= sx[None, :]   # dx flips in columns mirrored left-right
    out[..., 1::2, :, :] *= sy[:, None]   # dy flips in rows mirrored top-bottom
    return out


# -- streaming blend -------------------------------------------------------------------------
class StreamBlender:
    """Add tiles in raster order; ``write(y0, y1, x0, x1, block)`` receives finished HR blocks
    (block shape (..., y1-y0, x1-x0), float32, already normalised), each HR pixel exactly once.

    Cells between consecutive cut lines are the unit of bookkeeping; after each tile the cells
    it finished form one rectangle, written in a single call. See the module docstring."""

    def __init__(self, grid: TileGrid, lead_shape: tuple, write):
        self.grid, self.lead, self.write = grid, tuple(lead_shape), write
        h, w, s = grid.height * grid.scale, grid.width * grid.scale, grid.scale
        self.ycut = _cuts(grid.rows, h, s)
        self.xcut = _cuts(grid.cols, w, s)
        self.ylast = _last_cover(grid.rows, self.ycut, s)
        self.xlast = _last_cover(grid.cols, self.xcut, s)
        self.pending: dict = {}
        self.done = 0
        self.peak_pending_px = 0

    def add(self, tile: Tile, hr: np.ndarray) -> None:
        """``hr``: the tile's full HR output (..., tile h*scale, tile w*scale)."""
        g = self.grid
        y0, y1, x0, x1 = tile.hr_extent(g.height, g.width, g.scale)
        sy, sx = tile.hr_crop(g.height, g.width, g.scale)
        contrib = hr[..., sy, sx].astype(np.float32, copy=False) * g.weight(tile)
        ci = [i for i in range(len(self.ycut) - 1) if y0 <= self.ycut[i] and self.ycut[i + 1] <= y1]
        cj = [j for j in range(len(self.xcut) - 1) if x0 <= self.xcut[j] and self.xcut[j + 1] <= x1]
        for i in ci:
            for j in cj:
                part = contrib[..., self.ycut[i] - y0:self.ycut[i + 1] - y0, self.xcut[j] - x0:self.xcut[j + 1] - x0]
                if (i, j) in self.pending:
                    self.pending[(i, j)] += part
                else:
                    self.pending[(i, j)] = part.copy()
        self.peak_pending_px = max(self.peak_pending_px, sum(a.shape[-1] * a.shape[-2] for a in self.pending.values()))
        fi = [i for i in ci if self.ylast[i] == tile.row]
        fj = [j for j in cj if self.xlast[j] == tile.col]
        if fi and fj:
            block = np.concatenate([np.concatenate([self.pending.pop((i, j)) for j in fj], axis=-1) for i in fi], axis=-2)
            self.write(self.ycut[fi[0]], self.ycut[fi[-1] + 1], self.xcut[fj[0]], self.xcut[fj[-1] + 1], block)
            self.done += block.shape[-1] * block.shape[-2]

    def finished(self) -> bool:
        return not self.pending and self.done == self.grid.height * self.grid.width * self.grid.scale ** 2


def _cuts(spans: list[Span], hr_len: int, scale: int) -> list[int]:
    pts = {0, hr_len}
    for s in spans:
        pts.update(min(max(v * scale, 0), hr_len) for v in (s.start, s.stop))
    return sorted(pts)


def _last_cover(spans: list[Span], cuts: list[int], scale: int) -> list[int]:
    """For each cell between cuts: the index of the last span covering it."""
    out = []
    for i in range(len(cuts) - 1):
        a, b = cuts[i], cuts[i + 1]
        out.append(max(k for k, s in enumerate(spans) if s.start * scale <= a and b <= s.stop * scale))
    return out


# -- seam measurement ------------------------------------------------------------------------
def seam_stats(tiled: np.ndarray, whole: np.ndarray, rows, cols, half: int = 4) -> dict:
    """How a tiled result differs from an untiled one, and whether tile borders show.

    ``tiled``/``whole``: (..., H, W) HR arrays; ``rows``/``cols``: seam lines (``seam_lines``).
    mad: mean |tiled - whole|. near/far: that mean within ``half`` px of a seam line and
    farther than ``4 * half`` px from all (a seam would make near > far). step: the mean jump
    between the two pixels straddling each seam line in ``tiled`` over the same in ``whole``
    (1 = the border is as smooth as the untiled image there)."""
    a = np.asarray(tiled, np.float64)
    b = np.asarray(whole, np.float64)
    d = np.abs(a - b)
    d = d.reshape(-1, *d.shape[-2:]).mean(axis=0)
    h, w = d.shape
    dist = np.full((h, w), np.inf)
    yy, xx = np.arange(h)[:, None], np.arange(w)[None, :]
    for r in rows:
        dist = np.minimum(dist, np.abs(yy + 0.5 - r) * np.ones((1, w)))
    for c in cols:
        dist = np.minimum(dist, np.abs(xx + 0.5 - c) * np.ones((h, 1)))
    near, far = dist <= half, dist > 4 * half
    jump_a, jump_b = [], []
    for r in rows:
        jump_a.append(np.abs(a[..., r, :] - a[..., r - 1, :]).mean())
        jump_b.append(np.abs(b[..., r, :] - b[..., r - 1, :]).mean())
    for c in cols:
        jump_a.append(np.abs(a[..., :, c] - a[..., :, c - 1]).mean())
        jump_b.append(np.abs(b[..., :, c] - b[..., :, c - 1]).mean())
    return dict(
        mad=float(d.mean()),
        near=float(d[near].mean()) if near.any() else float("nan"),
        far=float(d[far].mean()) if far.any() else float("nan"),
        step=float(np.mean(jump_a) / max(np.mean(jump_b), 1e-9)) if jump_a else float("nan"),
    )

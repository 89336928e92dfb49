"""What a tile costs: FLOPs of one network window (convolutions grow with area, attention with
its square), the cheapest tile size for a scene, and how many tiles fit one forward on a GPU."""
from __future__ import annotations

import torch

from ..net.spec import MULTIPLE, N_OUT, PATCH_SIZES
from .device import BYTES_PER_LR_PX_FP32
from .tiling import axis_spans

# FLOPs per padded LR pixel of a 4-frame window that grow linearly with area (all convolutions
# and the deformable conv's contraction), counted with FlopCounterMode on the full model
# (nf=64) for a 160x160 window: 1396.4 GFLOP convolutions + 11.3 GFLOP DCN matmul.
LINEAR_FLOP_PER_LR_PX = (1396.428e9 + 11.325e9) / (160 * 160)


def padded(n: int, multiple: int = MULTIPLE) -> int:
    """``n`` rounded up to the network's padding unit."""
    return -(-int(n) // multiple) * multiple


def window_flops(th: int, tw: int, nf: int = 64, frames_out: int = N_OUT, batch: int = 1) -> float:
    """Estimated FLOPs of one forward on a ``th`` x ``tw`` LR window.

    Convolutions grow with area, but the transformer's attention is global over the window:
    each head makes 7 * (h/2p) * (w/2p) tokens of dimension (d/4) * p^2 and costs
    4 * tokens^2 * dim, quadratic in area. That term is why big tiles cost more per pixel."""
    hp, wp = padded(th), padded(tw)
    linear = LINEAR_FLOP_PER_LR_PX * (nf / 64) ** 2 * hp * wp
    dh = 4 * nf // len(PATCH_SIZES)  # d_model = 4 nf, one head per patch size
    attn = 0.0
    for p in PATCH_SIZES:
        tokens = frames_out * (hp // 2 // p) * (wp // 2 // p)
        attn += 4.0 * tokens * tokens * dh * p * p
    return batch * (linear + attn)


def grid_spans(height: int, width: int, tile: int, overlap: int, margin: int | None = None) -> tuple:
    """(row spans, column spans) of a scene's tiles: equal tiles per axis, spread evenly as
    ``tiling.axis_spans`` does, the overlap capped at half a tile, the margin half the overlap."""
    ov = min(int(overlap), tile // 2)
    m = ov // 2 if margin is None else int(margin)
    return axis_spans(height, tile, ov, m, MULTIPLE), axis_spans(width, tile, ov, m, MULTIPLE)


def cheapest(costs: dict) -> int:
    """The tile of ``costs`` (tile -> cost) to use: within 3 % of the best, the larger wins
    (fewer calls and seams, more context)."""
    best = min(costs.values())
    return max(t for t, c in costs.items() if c <= 1.03 * best)


def grid_flops(height: int, width: int, tile: int, overlap: int, margin: int | None = None, nf: int = 64) -> float:
    """Estimated FLOPs of all tiles of one time window over a scene (``grid_spans``)."""
    rows, cols = grid_spans(height, width, tile, overlap, margin)
    return sum(window_flops(r.size, c.size, nf) for r in rows for c in cols)


def choose_tile(height: int, width: int, max_tile: int, overlap: int = 16, margin: int | None = None,
                nf: int = 64, min_tile: int = MULTIPLE) -> int:
    """The tile size (multiple of 80, <= ``max_tile``) that computes a scene with the fewest
    estimated FLOPs. Equal tiles spread over a scene can overshoot it by almost a tile per axis
    (3 tiles of 960 for a 2048 scene compute 2x its area), and attention makes very big tiles
    dearer per pixel, so the largest tile that fits in memory is rarely the cheapest. Within 3 %
    of the best, the larger tile wins (fewer calls, more context)."""
    max_tile = max(min_tile, (int(max_tile) // MULTIPLE) * MULTIPLE)
    return cheapest({t: grid_flops(height, width, t, overlap, margin, nf)
                     for t in range(min_tile, max_tile + 1, MULTIPLE)})


# Seconds per LR tile pixel of a 160-px forward over an 80-px one, full network, 2 cores,
# measured per CPU kind and precision (median s / forward, README "Performance"): AMD EPYC with
# AVX-512 BF16 2.394 / (4 x 0.506) = 1.18 and, on a slower EPYC, 5.222 / (4 x 1.262) = 1.03 in
# bf16 (1.10 between them), 4.882 / (4 x 0.959) in fp32; Intel Xeon with AMX (issue 26, two
# idle runs) 2.332 / (4 x 0.4015) in bf16, 7.07 / (4 x 1.4695) in fp32; Intel Xeon with AVX-512
# BF16 but no usable AMX (two runs, 2026-12-08) 6.578 / (4 x 1.387) and 6.353 / (4 x 1.394) in
# fp32, its auto precision, 10.747 / (4 x 2.481) and 10.247 / (4 x 2.428) in bf16. The bigger
# tile falls out of cache; unmeasured kinds get the AMD bf16 figure.
CPU_TILE_COST = {("amx", "bf16"): 1.45, ("amx", "fp32"): 1.20,
                 ("avx512_bf16", "bf16"): 1.10, ("avx512_bf16", "fp32"): 1.27,
                 ("avx512_bf16_intel", "bf16"): 1.07, ("avx512_bf16_intel", "fp32"): 1.16}
CPU_TILE_COST_OTHER = 1.10
CPU_TILES = (80, 160)


def cpu_grid_cost(height: int, width: int, tile: int, overlap: int, margin: int | None, ratio: float) -> float:
    """Relative CPU time of the tiles of one time window over a scene: each tile's padded area
    times its cost per pixel, 1 at 80 px and ``ratio`` from 160 px (linear between; a scene
    smaller than the tile gets one smaller tile, which costs as its own size does)."""
    lo, hi = min(CPU_TILES), max(CPU_TILES)
    rows, cols = grid_spans(height, width, tile, overlap, margin)
    total = 0.0
    for r in rows:
        for c in cols:
            side = max(padded(r.size), padded(c.size))
            per_px = 1.0 + (ratio - 1.0) * min(1.0, max(0.0, (side - lo) / (hi - lo)))
            total += padded(r.size) * padded(c.size) * per_px
    return total


def cpu_tile(height: int, width: int, overlap: int = 16, margin: int | None = None, precision: str = "fp32",
             kind: str | None = None) -> int:
    """The CPU tile (80 or 160) that computes a scene fastest on this CPU kind (``cpu_grid_cost``
    with the measured ``CPU_TILE_COST``). Equal tiles spread over a scene can overshoot it by
    almost a tile per axis, so the faster one depends on the scene: for 1024 x 1024 LR both
    tilings compute 1.56x the scene and 80 wins; for 1000 x 1000, tile 160 computes 1.25x, tile
    80 1.64x. Within 3 % the larger wins (fewer seams, more context); tiles no larger than twice
    the overlap are left out."""
    from .device import cpu_kind

    ratio = CPU_TILE_COST.get((kind or cpu_kind(), precision), CPU_TILE_COST_OTHER)
    fits = [t for t in CPU_TILES if 2 * int(overlap) < t] or [max(CPU_TILES)]
    return cheapest({t: cpu_grid_cost(height, width, t, overlap, margin, ratio) for t in fits})


def tiles_per_forward(device: torch.device, tile: int, dtype: torch.dtype = torch.float32, nf: int = 64,
                      max_batch: int = 8, free_bytes: int | None = None) -> int:
    """How many tiles to stack into one forward: a GPU runs small tiles far below its peak, so
    several go together while their activations fit in half of the free memory. CPU: 1 (cores
    are already busy with one tile; batching only adds memory)."""
    if device.type != "cuda":
        return 1
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    per_tile = BYTES_PER_LR_PX_FP32 * (nf / 64) * (0.5 if dtype != torch.float32 else 1.0) * padded(tile) ** 2
    return int(max(1, min(max_batch, (0.5 * free_bytes) // per_tile)))



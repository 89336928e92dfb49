#!/usr/bin/env python3
"""Time the pure deformable convolution at inference against its row-chunk size.

The network aligns all 3 frame pairs both ways in one batch: 6 feature maps of 64 channels with
8 deformable groups, offsets and mask from a channels_last convolution, as ``core/net/dcn.py``
gets them in a forward. For each LR tile side, every chunk size runs once untimed, then the
repeats are interleaved (repeat 1 of every size, then repeat 2, ...) so a disturbance hits all
sizes alike; min and median are printed, and each size's output is checked against the one-pass
result (float32: the chunks' matmuls may sum in another order, so within 1e-4 on values ~10).

  .venv/bin/python tools/dcn_chunks.py --tiles 80,160 --chunks 24,22,21,20
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT.parent) not in sys.path:
    sys.path.insert(0, str(ROOT.parent))

import torch  # noqa: E402

from mstt_stvsr.core.net.dcn import CHUNK_ELEMENTS, modulated_deform_conv2d_pure  # noqa: E402

PAIRS, NF, GROUPS, K = 6, 64, 8, 9


def inputs(tile: int, seed: int = 0):
    """x, offset, mask, weight, bias as the network's batched alignment hands them over."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(PAIRS, NF, tile, tile, generator=g).to(memory_format=torch.channels_last)
    om = (torch.randn(PAIRS, 3 * GROUPS * K, tile, tile, generator=g) * 2).to(memory_format=torch.channels_last)
    n = 2 * GROUPS * K
    return x, om[:, :n], torch.sigmoid(om[:, n:]), torch.randn(NF, NF, 3, 3, generator=g), torch.randn(NF, generator=g)


def measure(tile: int, chunks: list, reps: int) -> dict:
    """{chunk elements: {"min_s", "median_s"}} for one tile side."""
    args = inputs(tile)
    with torch.no_grad():
        ref = modulated_deform_conv2d_pure(*args, chunk_elements=1 << 40)  # one pass
        for ce in chunks:
            out = modulated_deform_conv2d_pure(*args, chunk_elements=ce)
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-5)
        times = {ce: [] for ce in chunks}
        for _ in range(reps):
            for ce in chunks:
                t0 = time.perf_counter()
                modulated_deform_conv2d_pure(*args, chunk_elements=ce)
                times[ce].append(time.perf_counter() - t0)
    return {ce: {"min_s": min(v), "median_s": sorted(v)[len(v) // 2]} for ce, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", default="80,160", help="LR tile sides (default 80,160)")
    ap.add_argument("--chunks", default="24,22,21,20", help="chunk sizes as powers of two (default 24,22,21,20)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    chunks = [1 << int(p) for p in a.chunks.split(",")]
    print(f"{torch.get_num_threads()} threads; default chunk 2^{CHUNK_ELEMENTS.bit_length() - 1} elements")
    results = {}
    for tile in (int(t) for t in a.tiles.split(",")):
        res = measure(tile, chunks, a.reps)
        results[tile] = {f"2^{ce.bit_length() - 1}": r for ce, r in res.items()}
        for ce, r in res.items():
            per80 = r["min_s"] * 1e3 / (tile / 80) ** 2
            print(f"tile {tile:4d}  chunk 2^{ce.bit_length() - 1}  min {r['min_s'] * 1e3:8.1f} ms  "
                  f"median {r['median_s'] * 1e3:8.1f} ms  per 80x80 {per80:6.1f} ms", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

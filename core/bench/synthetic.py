"""The end-to-end run's input: a synthetic georeferenced stack written to disk, so that the
benchmark reads, warps and writes real GeoTIFFs as a user's run does."""
from __future__ import annotations

import numpy as np

from ..net.spec import N_IN


def write_synthetic_stack(folder, size: int, frames: int = N_IN, seed: int = 0) -> list:
    """``frames`` uint8 RGB GeoTIFFs of ``size`` x ``size`` (UTM, 1 m, one second apart):
    procedural ground drifting by a fraction of a pixel per frame, so flow has real work."""
    from datetime import datetime, timedelta

    import cv2
    from affine import Affine

    from ..geo.synthetic import write_frames
    from ..training.imagery import procedural_ground

    pad = 8
    ground = procedural_ground(np.random.default_rng(seed), size + 2 * pad, size + 2 * pad)

    def drifting():
        for t in range(frames):
            m = np.float32([[1, 0, pad + 0.6 * t], [0, 1, pad - 0.35 * t]])
            yield cv2.warpAffine(ground, m, (size, size), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REFLECT)

    t0 = datetime(2021, 5, 3, 10, 15, 0)
    paths = write_frames(folder, drifting(), names="bench_{i}.tif", crs="EPSG:32650",
                         transform=Affine(1.0, 0, 500000.0, 0, -1.0, 4400000.0),
                         times=[t0 + timedelta(seconds=t) for t in range(frames)],
                         block=256 if size >= 256 else None)
    return [str(p) for p in paths]

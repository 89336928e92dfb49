"""The end-to-end run's input: a synthetic georeferenced stack written to disk, so that the
benchmark reads, warps and writes real GeoTIFFs as a user's run does."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..net.spec import N_IN


def write_synthetic_stack(folder, size: int, frames: int = N_IN, seed: int = 0) -> list:
    """``frames`` uint8 RGB GeoTIFFs of ``size`` x ``size`` (UTM, 1 m, one second apart):
    procedural ground drifting by a fraction of a pixel per frame, so flow has real work."""
    import cv2
    import rasterio
    from affine import Affine

    from ..training.synth import procedural_ground

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pad = 8
    ground = procedural_ground(np.random.default_rng(seed), size + 2 * pad, size + 2 * pad)
    paths = []
    for t in range(frames):
        m = np.float32([[1, 0, pad + 0.6 * t], [0, 1, pad - 0.35 * t]])
        img = cv2.warpAffine(ground, m, (size, size), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)
        data = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8).transpose(2, 0, 1)
        path = folder / f"bench_{t}.tif"
        profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32650",
                       transform=Affine(1.0, 0, 500000.0, 0, -1.0, 4400000.0), photometric="RGB")
        if size >= 256:
            profile.update(tiled=True, blockxsize=256, blockysize=256)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            dst.update_tags(TIFFTAG_DATETIME=f"2021:05:03 10:15:{t:02d}")
        paths.append(str(path))
    return paths


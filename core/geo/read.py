"""Windowed reads: values with validity, nodata filled from the nearest valid pixel, whole frames
in reduced form, and tiles that reach beyond the scene (reflected)."""
from __future__ import annotations

import numpy as np
from rasterio.windows import Window

from .stack import StackInfo, open_raster
from .values import ValueScaler

def read_block(ds, bands, y0: int, y1: int, x0: int, x1: int):
    """Values (len(bands), h, w) in the raster's dtype and validity (same shape, bool)."""
    win = Window(x0, y0, x1 - x0, y1 - y0)
    data = ds.read(list(bands), window=win)
    valid = ds.read_masks(list(bands), window=win) > 0
    if data.dtype.kind == "f":
        valid &= np.isfinite(data)
    return data, valid


def fill_invalid(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace invalid pixels of each plane (..., h, w) by the nearest valid pixel's value, so
    the network sees no artificial edges at nodata borders. All-invalid planes become 0."""
    import cv2

    if valid.all():
        return x
    out = x.copy()
    flat_x = out.reshape(-1, *x.shape[-2:])
    flat_v = valid.reshape(-1, *x.shape[-2:])
    for plane, ok in zip(flat_x, flat_v):
        if ok.all():
            continue
        if not ok.any():
            plane[...] = 0
            continue
        _, lab = cv2.distanceTransformWithLabels((~ok).astype(np.uint8), cv2.DIST_L2, 5,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
        vals = plane[ok]  # labels number valid pixels in raster order, from 1
        plane[...] = vals[lab - 1]
    return out


def read_frame(path, bands, scaler: ValueScaler, convert, strip: int = 1024) -> np.ndarray:
    """A whole LR frame in reduced form: ``convert`` maps each strip of rows, (h, w, bands)
    float in [0, 1] with invalid pixels filled, to (h, w) (e.g. the grey image optical flow
    works on). Only the reduced frame is held whole; for frames of up to ``strip`` rows
    this equals converting the whole frame at once."""
    with open_raster(path) as ds:
        out = None
        for y in range(0, ds.height, strip):
            y1 = min(ds.height, y + strip)
            data, valid = read_block(ds, bands, y, y1, 0, ds.width)
            part = convert(fill_invalid(scaler.to_unit(data), valid).transpose(1, 2, 0))
            if out is None:
                out = np.empty((ds.height, ds.width), part.dtype)
            out[y:y1] = part
    return out


class StackReaders:
    """Two sets of open input datasets: one for the reader thread (tiles), one for the writer
    thread (nodata masks). A rasterio dataset is used by one thread at a time."""

    def __init__(self, info: StackInfo):
        self.paths = info.paths
        self.tiles, self.masks = [], []

    def __enter__(self):
        try:
            for p in self.paths:
                self.tiles.append(open_raster(p))
                self.masks.append(open_raster(p))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for ds in self.tiles + self.masks:
            ds.close()
        return False

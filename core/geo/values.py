"""Raster values <-> the network's [0, 1]: one scaling per stack, chosen from its dtype."""
from __future__ import annotations

import math

import numpy as np
import rasterio

from ..errors import InputError
from .stack import StackInfo, open_raster

class ValueScaler:
    """Maps raster values to the network's [0, 1] and back to the raster's dtype.

    uint8 / 255; uint16 by its bit depth (NBITS); other types by one robust stack-wide range
    (0.1 and 99.9 percentiles over all frames and colour bands, nodata excluded). One range
    for all bands keeps colour balance. Inputs are not clipped (the network tolerates a few
    values beyond 1); outputs are rounded and clipped to the dtype (to NBITS where given)."""

    def __init__(self, dtype: str, lo: float, hi: float, how: str, top: int | None = None):
        self.dtype = np.dtype(dtype)
        self.lo, self.hi = float(lo), float(hi)
        self.how = how
        if self.dtype.kind in "ui":
            info = np.iinfo(self.dtype)
            self.vmin, self.vmax = info.min, info.max if top is None else top
        else:
            self.vmin, self.vmax = -np.finfo(self.dtype).max, np.finfo(self.dtype).max

    def to_unit(self, values: np.ndarray) -> np.ndarray:
        return ((values.astype(np.float32) - self.lo) / (self.hi - self.lo)).astype(np.float32)

    def from_unit(self, x: np.ndarray) -> np.ndarray:
        v = x.astype(np.float64) * (self.hi - self.lo) + self.lo
        if self.dtype.kind in "ui":
            v = np.rint(v)
        return np.clip(v, self.vmin, self.vmax).astype(self.dtype)

    def __repr__(self) -> str:
        return f"ValueScaler({self.dtype}, {self.lo:g}..{self.hi:g}, {self.how})"


def value_scaler(info: StackInfo, sample: int = 512) -> ValueScaler:
    dt = np.dtype(info.dtype)
    if dt == np.uint8:
        return ValueScaler(info.dtype, 0, 255, "uint8 / 255")
    if dt == np.uint16 and info.nbits:
        top = 2 ** info.nbits - 1  # outputs keep NBITS, so they stay within it
        return ValueScaler(info.dtype, 0, top, f"NBITS={info.nbits}", top=top)
    # a decimated read of each frame (GDAL uses overviews when present)
    values = []
    for p in info.paths:
        with open_raster(p) as ds:
            f = max(1, math.ceil(max(ds.width, ds.height) / sample))
            shape = (len(info.color_bands), max(1, ds.height // f), max(1, ds.width // f))
            a = ds.read(list(info.color_bands), out_shape=shape, masked=True, resampling=rasterio.enums.Resampling.nearest)
            v = a.compressed().astype(np.float64)
            values.append(v[np.isfinite(v)])
    v = np.concatenate(values) if values else np.zeros(0)
    if v.size == 0:
        raise InputError(f"{info.paths[0]}: every pixel of the stack is nodata")
    lo, hi = np.percentile(v, [0.1, 99.9])
    if not hi > lo:
        lo, hi = float(v.min()), float(v.max())
    if not hi > lo:
        hi = lo + 1.0
    return ValueScaler(info.dtype, lo, hi, "robust stack-wide range (0.1-99.9 %)")



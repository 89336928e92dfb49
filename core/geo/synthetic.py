"""Synthetic frame stacks written as georeferenced GeoTIFFs: the one writer behind the sample
stack, the benchmark's scene, the studies in tools/ and the tests' stacks, which each make
their own pixels.

Frames are an (n, h, w, bands) array, or any iterable of (h, w, bands) frames so that a large
stack need not be in memory at once; an (h, w) frame is one band. Data already of the file's
dtype is written as it is; floats in [0, 1] going into an integer file are scaled to its full
range (``nbits`` of it when given) and rounded. Each frame is written in row strips that are
whole blocks, so a compressed block is never written twice.
"""
from __future__ import annotations

import warnings
from datetime import timezone
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from .times import tiff_datetime
from .write import compression_options

UTM_1M = Affine(1.0, 0, 500000.0, 0, -1.0, 4500000.0)  # 1 m pixels in the middle of a UTM zone
STRIP_ROWS = 512  # rows per write (rounded to whole blocks): bounds the copy each write makes


def to_dtype(frame: np.ndarray, dtype, nbits: int | None = None) -> np.ndarray:
    """``frame`` as ``dtype``: unchanged if it already is; floats in [0, 1] scaled to an integer
    type's top value (2**nbits - 1 with ``nbits``) and rounded; anything else cast."""
    dt = np.dtype(dtype)
    frame = np.asarray(frame)
    if frame.dtype == dt:
        return frame
    if frame.dtype.kind == "f" and dt.kind in "ui":
        top = 2 ** nbits - 1 if nbits else np.iinfo(dt).max
        return np.clip(np.rint(frame * top), 0, top).astype(dt)
    return frame.astype(dt)


def time_tags(when, keys=("TIFFTAG_DATETIME",), timespec: str = "auto") -> dict:
    """Tags that date one frame: TIFFTAG_DATETIME in its TIFF form (whole seconds), any other key
    in ISO 8601 UTC with a Z (``timespec`` as ``datetime.isoformat``). A string is written
    verbatim under every key (tests use malformed times); None gives no tags."""
    if when is None:
        return {}
    if isinstance(when, str):
        return {k: when for k in keys}
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return {k: tiff_datetime(when) if k == "TIFFTAG_DATETIME" else when.isoformat(timespec=timespec) + "Z"
            for k in keys}


def frame_profile(h: int, w: int, count: int, dtype, *, nodata=None, crs=None, transform=None, nbits=None,
                  compress: bool = False, block: int | None = None, photometric: str | None = "auto") -> dict:
    """GTiff creation profile. ``photometric="auto"``: RGB for 3-band uint8, else GDAL's choice;
    ``compress``: DEFLATE with the predictor for the type; ``block``: square tiles, else strips."""
    profile = dict(driver="GTiff", width=w, height=h, count=count, dtype=np.dtype(dtype).name, nodata=nodata)
    if crs is not None:
        profile.update(crs=CRS.from_user_input(crs), transform=UTM_1M if transform is None else transform)
    if nbits:
        profile["NBITS"] = nbits
    if compress:
        profile.update(compression_options(dtype))
        if nbits:  # GDAL's predictors need whole bytes per sample
            del profile["predictor"]
    if block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    if photometric == "auto":
        photometric = "RGB" if count == 3 and np.dtype(dtype) == np.uint8 else None
    if photometric:
        profile["photometric"] = photometric
    return profile


def write_frames(folder, frames, *, names="frame_{i:02d}.tif", dtype="uint8", nbits: int | None = None,
                 nodata=None, crs="EPSG:32633", transform=None, times=None, time_keys=("TIFFTAG_DATETIME",),
                 timespec: str = "auto", tags: dict | None = None, descriptions=None, colorinterp=None,
                 compress: bool = False, block: int | None = None, photometric: str | None = "auto") -> list[Path]:
    """Write one GeoTIFF per frame into ``folder``; returns their paths in frame order.

    ``names``: a pattern formatted with the frame index ``i``, or one name per frame.
    ``crs=None`` writes no georeferencing; ``transform`` defaults to 1 m UTM pixels.
    ``times``: one datetime (or verbatim string, or None) per frame, written under ``time_keys``
    (see :func:`time_tags`); ``tags``: more tags for every frame. ``descriptions`` and
    ``colorinterp``: per band."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.ndim == 2:
            frame = frame[..., None]
        h, w, count = frame.shape
        path = folder / (names.format(i=i) if isinstance(names, str) else names[i])
        profile = frame_profile(h, w, count, dtype, nodata=nodata, crs=crs, transform=transform, nbits=nbits,
                                compress=compress, block=block, photometric=photometric)
        when = None if times is None else times[i]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path, "w", **profile) as dst:
                block_rows = dst.block_shapes[0][0]
                step = max(block_rows, STRIP_ROWS // block_rows * block_rows)
                for y in range(0, h, step):
                    rows = frame[y:y + step]
                    dst.write(to_dtype(rows, dtype, nbits).transpose(2, 0, 1), window=Window(0, y, w, len(rows)))
                dst.update_tags(**time_tags(when, time_keys, timespec), **(tags or {}))
                for b, text in enumerate(descriptions or (), start=1):
                    dst.set_band_description(b, text)
                if colorinterp is not None:
                    dst.colorinterp = colorinterp
        paths.append(path)
    return paths


"""Synthetic georeferenced frame stacks for tests: textured ground with platform drift and a
moving vehicle, written (core.geo.synthetic) as GeoTIFFs with a chosen CRS, geotransform,
dtype, nodata and times."""
from __future__ import annotations

from datetime import datetime, timedelta

import cv2
import numpy as np
import rasterio
from affine import Affine

from mstt_stvsr.core.geo.synthetic import write_frames

T0 = datetime(2021, 5, 3, 10, 15, 0)


def ground(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) float32 in [0, 1]: fields of smooth noise, building blocks, a road grid."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for scale, amp in ((32, 0.35), (8, 0.2), (2, 0.08)):
        small = rng.random((max(2, h // scale + 2), max(2, w // scale + 2), 3)).astype(np.float32)
        img += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(max(1, h * w // 300)):
        y, x = rng.integers(0, h), rng.integers(0, w)
        bh, bw = rng.integers(3, 12, size=2)
        img[y:y + bh, x:x + bw] = rng.uniform(0.3, 0.9, 3)
        img[y + bh:y + bh + 2, x:x + bw] *= 0.5  # shadow
    for y in range(rng.integers(5, 20), h, 37):
        img[y:y + 3] = 0.45
    for x in range(rng.integers(5, 20), w, 41):
        img[:, x:x + 3] = 0.45
    return np.clip(img, 0, 1)


def clip(n: int, h: int, w: int, seed: int = 0, drift=(0.6, -0.35), car_speed=2.5) -> np.ndarray:
    """(n, h, w, 3) frames: sub-pixel platform drift of the ground plus a car moving right."""
    pad = 16
    base = ground(h + 2 * pad, w + 2 * pad, seed)
    frames = []
    for t in range(n):
        m = np.float32([[1, 0, -pad + drift[0] * t], [0, 1, -pad + drift[1] * t]])
        f = cv2.warpAffine(base, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        cy, cx = h // 2, int(4 + car_speed * t) % max(1, w - 6)
        f[cy:cy + 3, cx:cx + 5] = (0.9, 0.1, 0.1)
        frames.append(np.clip(f, 0, 1))
    return np.stack(frames).astype(np.float32)


def write_stack(folder, n: int = 4, h: int = 40, w: int = 56, *, dtype="uint8", count: int = 3,
                crs="EPSG:32633", transform=None, nodata=None, nodata_box=None, times="tag",
                nbits=None, seed: int = 0, name="frame", descriptions=None, colorinterp=None,
                dt=timedelta(seconds=2)) -> list:
    """Write n GeoTIFFs (2 m UTM pixels by default); returns their paths in time order.

    ``times``: "tag" (TIFFTAG_DATETIME), "iso" (ACQUISITIONDATETIME), None, or a list of
    strings (written verbatim as TIFFTAG_DATETIME). ``nodata_box``: (y0, y1, x0, x1) LR pixels
    set to nodata in frame 1 (and a corner strip in every frame)."""
    data = np.stack([typed_bands(f, count, dtype, nbits) for f in clip(n, h, w, seed)])
    if nodata is not None:
        mark_nodata(data, nodata, nodata_box)
    keys = ("ACQUISITIONDATETIME",) if times == "iso" else ("TIFFTAG_DATETIME",)
    when = None if times is None else times if isinstance(times, (list, tuple)) else [T0 + i * dt for i in range(n)]
    paths = write_frames(folder, data, names=f"{name}_{{i:02d}}.tif", dtype=dtype, nbits=nbits, nodata=nodata,
                         crs=crs, transform=Affine(2.0, 0, 500000.0, 0, -2.0, 4500000.0) if transform is None else transform,
                         times=when, time_keys=keys, descriptions=descriptions, colorinterp=colorinterp)
    return [str(p) for p in paths]


def typed_bands(rgb: np.ndarray, count: int, dtype, nbits=None) -> np.ndarray:
    """(h, w, 3) frame in [0, 1] -> (h, w, count) of ``dtype``: extra bands are dimmed copies of
    the first ones, fewer than 3 are grey; integers span the type's (or nbits') range, floats
    are reflectance-like values around 0-1000."""
    rgb = rgb.transpose(2, 0, 1)
    bands = np.concatenate([rgb, rgb[: max(0, count - 3)] * 0.8])[:count] if count >= 3 else rgb.mean(0, keepdims=True).repeat(count, 0)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (bands * 1000.0 - 50.0).astype(dt).transpose(1, 2, 0)
    top = (2 ** nbits - 1) if nbits else (255 if dt == np.uint8 else 65535 if dt == np.uint16 else 1.0)
    return np.clip(np.rint(bands * top), 0, top).astype(dt).transpose(1, 2, 0)


def mark_nodata(data: np.ndarray, nodata, box=None) -> None:
    """(n, h, w, bands): valid pixels moved off the nodata value, then a corner strip of every
    frame and ``box`` (y0, y1, x0, x1) of frame 1 set to it."""
    if data.dtype.kind != "f" or not np.isnan(nodata):
        data[data == nodata] = nodata + 1 if nodata == 0 else nodata - 1
    data[:, :3, :5] = nodata
    if box is not None and len(data) > 1:
        y0, y1, x0, x1 = box
        data[1, y0:y1, x0:x1] = nodata


def rewrite_crs(path, crs="EPSG:4326") -> None:
    """Rewrite one frame in another CRS (same pixels): a stack that no longer lines up."""
    with rasterio.open(path) as src:
        prof, data = src.profile, src.read()
    prof["crs"] = crs
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)

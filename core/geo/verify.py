"""Is a GeoTIFF just written whole? Checked before it is committed, because GDAL reports some
write failures only as messages (a full disk while its cache is flushed at close leaves a file
cut short, or empty, and no exception), and network file systems report some only at fsync.

A file passes when it opens with the expected size, bands and type, every block of every level
lies inside the file, every block of every band (and mask) decodes, and fsync succeeds. Reading
back costs a fraction of what computing the frame did (DEFLATE decodes at hundreds of MB/s).
"""
from __future__ import annotations

import os
import shutil
import warnings

import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from ..errors import StorageError
from .stack import IO_ERRORS, first_line

FULL_BELOW = 1 << 20  # free bytes under which a failed write is put down to a full disk


def free_bytes(folder) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def storage_error(what: str, folder) -> StorageError:
    """``what`` failed while writing into ``folder``: one line, saying so when the disk is full."""
    free = free_bytes(folder)
    full = f"; the disk is full ({free} bytes free in {folder})" if free is not None and free < FULL_BELOW else ""
    return StorageError(f"{first_line(what)}{full}; no output was written")


def verify_output(path, name: str, expect: dict) -> None:
    """Raise StorageError naming output ``name`` unless ``path`` is whole. ``expect``: width,
    height, count and dtype it must have."""
    size = os.stat(path).st_size
    if size == 0:
        raise StorageError(f"{name}: nothing could be written")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(str(path)) as ds:
                got = dict(width=ds.width, height=ds.height, count=ds.count, dtype=ds.dtypes[0])
                wrong = {k: v for k, v in got.items() if k in expect and v != expect[k]}
                if wrong:
                    raise StorageError(f"{name}: written as {wrong}, expected "
                                       f"{ {k: expect[k] for k in wrong} }")
                _check_blocks(ds, name, size)
                _read_every_block(ds)
    except StorageError:
        raise
    except IO_ERRORS as exc:
        raise StorageError(f"{name}: written incompletely ({first_line(exc)})") from None
    _fsync(path, name)


def _check_blocks(ds, name: str, size: int) -> None:
    """Every block of band 1 (all bands share blocks when pixel-interleaved) at full
    resolution and in each overview has data, inside the file."""
    bh, bw = ds.block_shapes[0]
    bands = [1] if (ds.interleaving is None or ds.interleaving.name == "PIXEL") else range(1, ds.count + 1)
    levels = [(None, ds.width, ds.height)]
    levels += [(k, -(-ds.width // f), -(-ds.height // f)) for k, f in enumerate(ds.overviews(1))]
    for ovr, w, h in levels:
        for b in bands:
            for i in range(-(-h // bh)):
                for j in range(-(-w // bw)):
                    kw = dict(bidx=b) if ovr is None else dict(bidx=b, ovr=ovr)
                    off = ds.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", **kw)
                    nbytes = ds.get_tag_item(f"BLOCK_SIZE_{j}_{i}", "TIFF", **kw)
                    if off is None or nbytes is None:
                        return  # not a format that lists its blocks
                    if int(off) == 0 or int(off) + int(nbytes) > size:
                        level = "" if ovr is None else f" of overview {ovr + 1}"
                        raise StorageError(f"{name}: block {i},{j}{level} is missing or past the end of "
                                           f"the file ({size} bytes): written incompletely")


def _read_every_block(ds) -> None:
    bh = ds.block_shapes[0][0]
    masked = any("all_valid" not in [f.name for f in flags] for flags in ds.mask_flag_enums)
    for y in range(0, ds.height, bh):
        win = Window(0, y, ds.width, min(bh, ds.height - y))
        ds.read(window=win)
        if masked:
            ds.read_masks(window=win)


def _fsync(path, name: str) -> None:
    """Data on the disk before the commit; network file systems report late errors here."""
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        raise StorageError(f"{name}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)

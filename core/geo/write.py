"""Output GeoTIFFs: the profile (pixel size / 4, same origin, tiled, compressed), the metadata
carried over from the inputs (tags, band descriptions, GCPs and RPCs scaled to HR pixels) and
the time tags of each output frame."""
from __future__ import annotations

import math
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from ..net.spec import SCALE
from .read import read_block
from .stack import StackInfo, open_raster
from .values import ValueScaler
from .times import iso_time, tiff_datetime

TIME_TAG_OUT = "ACQUISITIONDATETIME"
# Tags the inputs carry that an output must not inherit: ours, and times (outputs get their own).
OWN_TAGS = ("MSTT_", "TIFFTAG_", "ACQUISITIONDATETIME", "ACQUISITION_DATETIME", "ACQUISITION_TIME", "DATETIME")


def compression_options(dtype: str) -> dict:
    """DEFLATE (read by every GIS) with the predictor that suits the type."""
    return dict(compress="DEFLATE", predictor=3 if np.dtype(dtype).kind == "f" else 2, zlevel=6)


def output_profile(info: StackInfo, block: int = 256) -> dict:
    prof = dict(
        driver="GTiff", width=info.out_width, height=info.out_height, count=info.count, dtype=info.dtype,
        nodata=info.nodata, tiled=True, blockxsize=block, blockysize=block, BIGTIFF="IF_SAFER",
        interleave="pixel", **compression_options(info.dtype),
    )
    bits = kept_nbits(info)
    if bits:
        prof["NBITS"] = bits
        del prof["predictor"]  # libtiff's predictors need whole bytes per sample
    if info.georeferenced:
        prof.update(crs=info.crs, transform=info.out_transform)
    ci = info.colorinterp
    if info.dtype == "uint8" and len(ci) >= 3 and ci[:3] == (ColorInterp.red, ColorInterp.green, ColorInterp.blue):
        prof["photometric"] = "RGB"
        if len(ci) == 4 and ci[3] == ColorInterp.alpha:
            prof["alpha"] = "UNASSOCIATED"
    return prof


def kept_nbits(info: StackInfo) -> int | None:
    """The inputs' NBITS, kept in the outputs where values are scaled by it (uint16)."""
    return info.nbits if info.nbits and np.dtype(info.dtype) == np.uint16 else None


def to_cog(src, dst, nbits: int | None = None) -> None:
    """A Cloud Optimized GeoTIFF copy (the COG driver picks the predictor for the type and
    builds the overviews itself)."""
    from rasterio.shutil import copy as rio_copy

    opts = dict(BIGTIFF="IF_SAFER", COMPRESS="DEFLATE", LEVEL=6)
    if nbits:
        opts["NBITS"] = nbits  # no predictor: it needs whole bytes per sample
    else:
        opts["PREDICTOR"] = "YES"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        rio_copy(str(src), str(dst), driver="COG", **opts)


def add_tags(path, tags: dict) -> None:
    """Dataset tags added to a GeoTIFF already written (before any COG copy: it must not
    change afterwards)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(str(path), "r+", driver="GTiff") as ds:
            ds.update_tags(**tags)


def written_index(path) -> int | None:
    """The output index a file's tags say mstt-stvsr wrote it as; None for any other file."""
    value = written_tag(path, "MSTT_OUTPUT_INDEX")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def written_tag(path, key: str) -> str | None:
    """Tag ``key`` of a file mstt-stvsr may have written (e.g. ``MSTT_RUN``, the run's token);
    None when it is not there or the file is no raster."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(str(path)) as ds:
                return ds.tags().get(key)
    except (rasterio.errors.RasterioError, ValueError, UnicodeEncodeError):
        return None


def source_extras(path) -> dict:
    """Per-frame items copied to outputs: tags, GCPs/RPCs (scaled), band units/scales/offsets."""
    with open_raster(path) as ds:
        tags = {k: v for k, v in ds.tags().items() if not k.upper().startswith(OWN_TAGS)}
        gcps, gcp_crs = ds.gcps
        rpcs = ds.rpcs
        return dict(tags=tags, gcps=gcps, gcp_crs=gcp_crs, rpcs=rpcs, units=ds.units, scales=ds.scales,
                    offsets=ds.offsets, band_tags=[{k: v for k, v in ds.tags(i).items()} for i in range(1, ds.count + 1)])


def scaled_gcps(gcps, scale: int = SCALE):
    from rasterio.control import GroundControlPoint

    return [GroundControlPoint(row=g.row * scale, col=g.col * scale, x=g.x, y=g.y, z=g.z, id=g.id, info=g.info)
            for g in gcps]


def scaled_rpcs(rpcs, scale: int = SCALE):
    """RPC line/sample are pixel-centre based: centre of HR pixel = scale*LR + (scale-1)/2."""
    from rasterio.rpc import RPC

    d = rpcs.to_dict()
    shift = (scale - 1) / 2
    d["line_off"] = d["line_off"] * scale + shift
    d["samp_off"] = d["samp_off"] * scale + shift
    d["line_scale"] *= scale
    d["samp_scale"] *= scale
    return RPC(**d)


def write_frame_metadata(dst, info: StackInfo, extras: dict, tags: dict) -> None:
    """Band descriptions, colour interpretation, units/scales/offsets, tags, GCPs/RPCs."""
    for i, d in enumerate(info.descriptions, start=1):
        if d:
            dst.set_band_description(i, d)
    try:
        dst.colorinterp = info.colorinterp
    except Exception:  # some combinations cannot be stored in a GeoTIFF; keep GDAL's choice
        pass
    if any(u for u in extras["units"]):
        dst.units = extras["units"]
    if any(s != 1.0 for s in extras["scales"]) or any(o != 0.0 for o in extras["offsets"]):
        dst.scales, dst.offsets = extras["scales"], extras["offsets"]
    for i, bt in enumerate(extras["band_tags"], start=1):
        bt = {k: v for k, v in bt.items() if not k.upper().startswith(("STATISTICS_", "MSTT_"))}
        if bt:
            dst.update_tags(i, **bt)
    dst.update_tags(**{**extras["tags"], **tags})
    if not info.georeferenced and extras["gcps"]:
        dst.gcps = (scaled_gcps(extras["gcps"]), extras["gcp_crs"])
    if extras["rpcs"] is not None:
        dst.rpcs = scaled_rpcs(extras["rpcs"])


def time_tags(t: datetime | None) -> dict:
    if t is None:
        return {}
    return {"TIFFTAG_DATETIME": tiff_datetime(t), TIME_TAG_OUT: iso_time(t)}


def create_output(path, profile):
    """Open an output GeoTIFF for writing (georeferencing warnings silenced: we set it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(str(path), "w", **profile)


def frame_tags(info: StackInfo, p: int, src: tuple, t) -> dict:
    """Tags of output ``p``: its index, whether it is an input or a new frame, its sources, time."""
    tags = {
        "MSTT_OUTPUT_INDEX": str(p),
        "MSTT_FRAME": "input" if len(src) == 1 else "interpolated",
        "MSTT_SOURCES": ";".join(Path(info.paths[k]).name for k in src),
        "MSTT_SCALE": str(SCALE),
    }
    tags.update(time_tags(t))
    return tags


def block_writer(info: StackInfo, scaler: ValueScaler, datasets, sources, writers, converted: bool = False):
    """A ``write(y0, y1, x0, x1, block)`` for the blender: unit values -> dtype, nodata (mask
    upsampled nearest; a new frame is valid where both neighbours are), alpha, then one
    windowed write per output file. ``converted``: the blocks hold output values already
    (``scaler.from_unit`` applied where they were computed: a cluster's compact parts)."""
    color = list(info.color_bands)
    nodata = info.nodata
    dt = scaler.dtype
    needs_mask = _has_mask(datasets[0]) or dt.kind == "f" or bool(info.alpha_bands)

    def valid_for(src, y0, y1, x0, x1):
        ly0, ly1, lx0, lx1 = y0 // SCALE, -(-y1 // SCALE), x0 // SCALE, -(-x1 // SCALE)
        ok = None
        for k in src:
            _, v = read_block(datasets[k], color, ly0, ly1, lx0, lx1)
            ok = v if ok is None else ok & v
        ok = np.repeat(np.repeat(ok, SCALE, axis=1), SCALE, axis=2)
        return ok[:, y0 - ly0 * SCALE:y1 - ly0 * SCALE, x0 - lx0 * SCALE:x1 - lx0 * SCALE]

    def write(y0, y1, x0, x1, block):
        win = Window(x0, y0, x1 - x0, y1 - y0)
        for f, (src, dst) in enumerate(zip(sources, writers)):
            # a copy of converted values (a read-only part, memory-mapped): nodata is set in place
            values = np.array(block[f], dt) if converted else scaler.from_unit(block[f])
            out = np.empty((info.count, y1 - y0, x1 - x0), dt)
            if needs_mask:
                ok = valid_for(src, y0, y1, x0, x1)
                if nodata is not None:
                    _nudge(values, ok, nodata, scaler)
                    values[~ok] = nodata
                elif dt.kind == "f":
                    values[~ok] = np.nan
                elif not info.alpha_bands:
                    dst.write_mask(np.where(ok.all(axis=0), 255, 0).astype(np.uint8), window=win)
            for i, b in enumerate(color):
                out[b - 1] = values[i]
            for b in info.alpha_bands:
                out[b - 1] = np.where(ok.all(axis=0), scaler.vmax if dt.kind in "ui" else 1, 0)
            dst.write(out, window=win)

    return write


def _has_mask(ds) -> bool:
    return any(MaskFlags.all_valid not in flags for flags in ds.mask_flag_enums)


def _nudge(values: np.ndarray, ok: np.ndarray, nodata, scaler: ValueScaler) -> None:
    """A valid pixel must not read as nodata: move it one step towards the valid range."""
    if isinstance(nodata, float) and math.isnan(nodata):
        return
    hit = ok & (values == nodata)
    if not hit.any():
        return
    if values.dtype.kind in "ui":
        values[hit] = nodata + 1 if nodata <= scaler.vmin else nodata - 1
    else:
        values[hit] = np.nextafter(values.dtype.type(nodata), values.dtype.type(0 if nodata != 0 else 1))

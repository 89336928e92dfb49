"""Georeferenced IO with rasterio: stack validation, windowed reads, value scaling, the output
profile and georeferencing, and outputs written under temporary names then renamed together.

Everything here reads or writes windows; no function holds a whole HR frame. The only
whole-LR-frame read is ``read_frame`` (optical flow needs whole frames), which keeps the frame
only in reduced form (one grey band).
"""
from __future__ import annotations

import math
import os
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from .errors import InputError
from .timeline import is_increasing, parse_time

SCALE = 4
# Where acquisition times are looked for, in order: (metadata domain, key). TIFFTAG_DATETIME
# comes last because many tools write the file's creation time there.
TIME_KEYS = (
    ("IMAGERY", "ACQUISITIONDATETIME"),
    ("", "ACQUISITIONDATETIME"),
    ("", "ACQUISITION_DATETIME"),
    ("", "ACQUISITION_TIME"),
    ("", "DATETIME"),
    ("", "TIFFTAG_DATETIME"),
)
TIME_TAG_OUT = "ACQUISITIONDATETIME"
OWN_TAGS = ("MSTT_", "TIFFTAG_", "ACQUISITIONDATETIME", "ACQUISITION_DATETIME", "ACQUISITION_TIME", "DATETIME")


def _open(path):
    """rasterio.open with errors a user can read; georeferencing warnings silenced (we check)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            return rasterio.open(str(path))
        except RasterioIOError as exc:
            if not Path(path).exists():
                raise InputError(f"{path}: file not found") from None
            raise InputError(f"{path}: not a raster GDAL can read ({exc})") from None


# -- stack description -----------------------------------------------------------------------
@dataclass
class StackInfo:
    """What the pipeline (and the QGIS algorithm's pre-check) needs to know about a stack."""

    paths: list
    width: int
    height: int
    count: int
    dtype: str
    crs: object  # rasterio CRS or None
    transform: Affine
    georeferenced: bool
    nodata: object
    colorinterp: tuple
    descriptions: tuple
    color_bands: tuple  # 1-based band indexes super-resolved (alpha bands are masks, not colour)
    alpha_bands: tuple
    nbits: int | None
    times: list  # datetime per frame, or None where unknown
    time_source: str  # "metadata", "--times" or "none"
    notes: list = field(default_factory=list)
    outputs: list = field(default_factory=list)  # output paths, when validated with an out_dir

    @property
    def n_frames(self) -> int:
        return len(self.paths)

    @property
    def n_outputs(self) -> int:
        return 2 * len(self.paths) - 1

    @property
    def out_width(self) -> int:
        return self.width * SCALE

    @property
    def out_height(self) -> int:
        return self.height * SCALE

    @property
    def out_transform(self) -> Affine:
        return hr_transform(self.transform)

    def summary(self) -> str:
        crs = self.crs.to_string() if self.crs else "no CRS"
        px = abs(self.transform.a) if self.georeferenced else None
        lines = [
            f"{self.n_frames} frames {self.width}x{self.height}, {self.count} band(s) {self.dtype}, {crs}"
            + (f", pixel {px:g} -> {px / SCALE:g}" if px else ""),
            f"-> {self.n_outputs} frames {self.out_width}x{self.out_height}",
            f"nodata: {self.nodata}" if self.nodata is not None else "nodata: none",
            "times: " + (", ".join(t.isoformat() for t in self.times) if self.time_source != "none" else "unknown"),
        ]
        return "\n".join(lines + self.notes)

    def as_dict(self) -> dict:
        return dict(
            paths=[str(p) for p in self.paths], n_frames=self.n_frames, n_outputs=self.n_outputs,
            width=self.width, height=self.height, count=self.count, dtype=self.dtype,
            crs=self.crs.to_string() if self.crs else None, transform=tuple(self.transform)[:6],
            out_width=self.out_width, out_height=self.out_height, out_transform=tuple(self.out_transform)[:6],
            nodata=self.nodata, times=[t.isoformat() if t else None for t in self.times],
            time_source=self.time_source, notes=list(self.notes), outputs=list(self.outputs),
        )


def read_time_tag(ds) -> tuple:
    """(text, key) of the first acquisition-time item found, or (None, None)."""
    for ns, key in TIME_KEYS:
        try:
            tags = ds.tags(ns=ns) if ns else ds.tags()
        except Exception:
            continue
        for k, v in tags.items():
            if k.upper() == key and str(v).strip():
                return str(v).strip(), (f"{ns}:{k}" if ns else k)
    return None, None


def _same_transform(a: Affine, b: Affine) -> bool:
    """Equal up to 1e-6 of a pixel: rounding in text formats, not a real shift."""
    px = max(abs(a.a), abs(a.b), abs(a.d), abs(a.e), 1e-12)
    return all(abs(x - y) <= 1e-6 * px for x, y in zip(tuple(a)[:6], tuple(b)[:6]))


def _nodata_equal(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return (math.isnan(a) and math.isnan(b)) or a == b


def read_stack_info(paths, times=None) -> StackInfo:
    """Open every frame and check they form one stack; raise InputError naming the first
    file that differs from the first frame, and how."""
    paths = [str(p) for p in paths]
    if len(paths) < 2:
        raise InputError(f"at least 2 frames are needed, got {len(paths)}"
                         + (f" ({paths[0]})" if paths else ""))
    metas = []
    for p in paths:
        with _open(p) as ds:
            metas.append(_frame_meta(ds, p))
    first = metas[0]
    for p, m in zip(paths[1:], metas[1:]):
        for key, label in (("size", "size"), ("count", "band count"), ("dtype", "data type")):
            if m[key] != first[key]:
                raise InputError(f"{p}: {label} {_fmt(m[key])} differs from {paths[0]} ({_fmt(first[key])})")
        if (m["crs"] is None) != (first["crs"] is None) or (m["crs"] is not None and m["crs"] != first["crs"]):
            raise InputError(f"{p}: CRS {_crs_name(m['crs'])} differs from {paths[0]} ({_crs_name(first['crs'])})")
        if not _same_transform(m["transform"], first["transform"]):
            raise InputError(f"{p}: geotransform {tuple(round(v, 9) for v in tuple(m['transform'])[:6])} differs from "
                             f"{paths[0]} ({tuple(round(v, 9) for v in tuple(first['transform'])[:6])})")
        if not _nodata_equal(m["nodata"], first["nodata"]):
            raise InputError(f"{p}: nodata value {m['nodata']} differs from {paths[0]} ({first['nodata']})")
    if first["colormap"]:
        raise InputError(f"{paths[0]}: band 1 has a colour table (palette); its values are class "
                         "codes, not intensities. Expand it to RGB first (gdal_translate -expand rgb)")
    if np.dtype(first["dtype"]).kind not in "uif":
        raise InputError(f"{paths[0]}: data type {first['dtype']} is not supported (integer or float bands only)")
    alpha = tuple(i + 1 for i, c in enumerate(first["colorinterp"]) if c == ColorInterp.alpha)
    color = tuple(i for i in range(1, first["count"] + 1) if i not in alpha)
    if not color:
        raise InputError(f"{paths[0]}: only alpha bands, nothing to super-resolve")

    notes = []
    if times is not None:
        from .timeline import parse_times_arg

        frame_times, source = parse_times_arg(times, len(paths)), "--times"
    else:
        frame_times, source = [None] * len(paths), "none"
        found = []
        for p, m in zip(paths, metas):
            if m["time_text"] is None:
                found = None
                break
            try:
                found.append(parse_time(m["time_text"]))
            except ValueError:
                notes.append(f"note: {p}: unreadable time {m['time_key']}={m['time_text']!r}; times ignored")
                found = None
                break
        if found and is_increasing(found):
            frame_times, source = found, "metadata"
        elif found:
            notes.append(f"note: the times in the frames' metadata ({metas[0]['time_key']}) are not increasing "
                         "(often a file-creation time); ignored. Pass --times to set acquisition times.")
        elif found is None and any(m["time_text"] for m in metas) and not notes:
            missing = next(p for p, m in zip(paths, metas) if m["time_text"] is None)
            notes.append(f"note: {missing} has no acquisition time in its metadata; times ignored")
    if not first["georeferenced"]:
        notes.append(f"note: {paths[0]} is georeferenced by {first['control']}; they are scaled to the output pixels"
                     if first["control"] else f"note: {paths[0]} is not georeferenced; outputs will not be either")
    return StackInfo(
        paths=paths, width=first["size"][0], height=first["size"][1], count=first["count"],
        dtype=first["dtype"], crs=first["crs"], transform=first["transform"],
        georeferenced=first["georeferenced"], nodata=first["nodata"], colorinterp=first["colorinterp"],
        descriptions=first["descriptions"], color_bands=color, alpha_bands=alpha, nbits=first["nbits"],
        times=frame_times, time_source=source, notes=notes,
    )


def _frame_meta(ds, path) -> dict:
    dtypes = set(ds.dtypes)
    if len(dtypes) != 1:
        raise InputError(f"{path}: bands have different data types ({', '.join(sorted(dtypes))})")
    if ds.count < 1:
        raise InputError(f"{path}: has no raster bands")
    nodatas = {(None if v is None else ("nan" if math.isnan(v) else v)) for v in ds.nodatavals}
    if len(nodatas) > 1:
        raise InputError(f"{path}: bands have different nodata values ({ds.nodatavals})")
    nbits = ds.tags(1, ns="IMAGE_STRUCTURE").get("NBITS")
    text, key = read_time_tag(ds)
    try:
        colormap = bool(ds.colormap(1))
    except ValueError:
        colormap = False
    georef = not ds.transform.is_identity or ds.crs is not None
    control = "GCPs" if ds.gcps[0] else "RPCs" if ds.rpcs is not None else None
    return dict(control=control, 
        size=(ds.width, ds.height), count=ds.count, dtype=ds.dtypes[0], crs=ds.crs, transform=ds.transform,
        georeferenced=georef, nodata=ds.nodata, colorinterp=tuple(ds.colorinterp),
        descriptions=tuple(ds.descriptions), nbits=int(nbits) if nbits else None, time_text=text, time_key=key,
        colormap=colormap,
    )


def _fmt(v):
    return f"{v[0]}x{v[1]}" if isinstance(v, tuple) else str(v)


def _crs_name(crs):
    if crs is None:
        return "none"
    return crs.to_string() if crs.to_epsg() else (crs.to_wkt()[:80] + "...")


# -- values ----------------------------------------------------------------------------------
class ValueScaler:
    """Maps raster values to the network's [0, 1] and back to the raster's dtype.

    uint8 / 255; uint16 by its bit depth (NBITS); other types by one robust stack-wide range
    (0.1 and 99.9 percentiles over all frames and colour bands, nodata excluded). One range
    for all bands keeps colour balance. Inputs are not clipped (the network tolerates a few
    values beyond 1); outputs are rounded and clipped to the dtype."""

    def __init__(self, dtype: str, lo: float, hi: float, how: str):
        self.dtype = np.dtype(dtype)
        self.lo, self.hi = float(lo), float(hi)
        self.how = how
        if self.dtype.kind in "ui":
            info = np.iinfo(self.dtype)
            self.vmin, self.vmax = info.min, info.max
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
        return ValueScaler(info.dtype, 0, 2 ** info.nbits - 1, f"NBITS={info.nbits}")
    # a decimated read of each frame (GDAL uses overviews when present)
    values = []
    for p in info.paths:
        with _open(p) as ds:
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


# -- reading ---------------------------------------------------------------------------------
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
    with _open(path) as ds:
        out = None
        for y in range(0, ds.height, strip):
            y1 = min(ds.height, y + strip)
            data, valid = read_block(ds, bands, y, y1, 0, ds.width)
            part = convert(fill_invalid(scaler.to_unit(data), valid).transpose(1, 2, 0))
            if out is None:
                out = np.empty((ds.height, ds.width), part.dtype)
            out[y:y1] = part
    return out


# -- writing ---------------------------------------------------------------------------------
def hr_transform(t: Affine, scale: int = SCALE) -> Affine:
    """Pixel size (and rotation terms) divided by ``scale``; same origin (top-left corner)."""
    return Affine(t.a / scale, t.b / scale, t.c, t.d / scale, t.e / scale, t.f)


def compression_options(dtype: str) -> dict:
    """DEFLATE (read by every GIS) with the predictor that suits the type."""
    return dict(compress="DEFLATE", predictor=3 if np.dtype(dtype).kind == "f" else 2, zlevel=6)


def output_profile(info: StackInfo, block: int = 256) -> dict:
    prof = dict(
        driver="GTiff", width=info.out_width, height=info.out_height, count=info.count, dtype=info.dtype,
        nodata=info.nodata, tiled=True, blockxsize=block, blockysize=block, BIGTIFF="IF_SAFER",
        interleave="pixel", **compression_options(info.dtype),
    )
    if info.georeferenced:
        prof.update(crs=info.crs, transform=info.out_transform)
    ci = info.colorinterp
    if info.dtype == "uint8" and len(ci) >= 3 and ci[:3] == (ColorInterp.red, ColorInterp.green, ColorInterp.blue):
        prof["photometric"] = "RGB"
        if len(ci) == 4 and ci[3] == ColorInterp.alpha:
            prof["alpha"] = "UNASSOCIATED"
    return prof


def source_extras(path) -> dict:
    """Per-frame items copied to outputs: tags, GCPs/RPCs (scaled), band units/scales/offsets."""
    with _open(path) as ds:
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


class OutputSet:
    """Output files of one run: final names, temporary names beside them, and the commit.

    Files are written as ``<name>.<token>.tmp.tif`` in the output folder (same filesystem, so
    the final rename is atomic per file) and renamed only by ``commit`` after every frame
    succeeded; ``discard`` removes every temporary (and a folder this run created, if empty)."""

    def __init__(self, out_dir, names, overwrite: bool = False):
        self.out_dir = Path(out_dir)
        self.names = list(names)
        self.overwrite = overwrite
        self.token = uuid.uuid4().hex[:8]
        self.final = [self.out_dir / n for n in self.names]
        self.temp = [self.out_dir / f"{Path(n).stem}.{self.token}.tmp.tif" for n in self.names]
        self.created_dir = None
        self.extra_temps: list = []

    def check_existing(self) -> None:
        """Before any work, without touching the disk: refuse to overwrite."""
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise InputError(f"output folder {self.out_dir} is a file")
        if not self.overwrite:
            existing = [p for p in self.final if p.exists()]
            if existing:
                more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
                raise InputError(f"output {existing[0]} already exists{more}; use --overwrite to replace")
        else:
            for p in self.final:
                if p.exists() and p.is_dir():
                    raise InputError(f"output {p} is a folder")

    def prepare(self) -> None:
        """Create the folder if needed and make sure it can be written (last check before work)."""
        self.check_existing()
        if not self.out_dir.exists():
            missing = self.out_dir
            while not missing.parent.exists():
                missing = missing.parent
            try:
                self.out_dir.mkdir(parents=True)
            except OSError as exc:
                raise InputError(f"cannot create output folder {self.out_dir}: {exc.strerror or exc}") from None
            self.created_dir = missing
        probe = self.out_dir / f".mstt-write-test.{self.token}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            self.discard()
            raise InputError(f"output folder {self.out_dir} is not writable: {exc.strerror or exc}") from None

    def temp_path(self, suffix: str) -> Path:
        p = self.out_dir / f".mstt-{self.token}-{suffix}"
        self.extra_temps.append(p)
        return p

    def commit(self, cog: bool = False) -> list:
        """Convert to COG if asked (still under temporary names), then rename all."""
        if cog:
            from rasterio.shutil import copy as rio_copy

            for i, tmp in enumerate(self.temp):
                cog_tmp = tmp.with_name(tmp.name.replace(".tmp.tif", ".cog.tmp.tif"))
                self.extra_temps.append(cog_tmp)
                # the COG driver picks the predictor for the type and builds overviews itself
                rio_copy(str(tmp), str(cog_tmp), driver="COG", BIGTIFF="IF_SAFER", COMPRESS="DEFLATE",
                         PREDICTOR="YES", LEVEL=6)
                os.replace(cog_tmp, tmp)
        for tmp, final in zip(self.temp, self.final):
            os.replace(tmp, final)
        return [str(p) for p in self.final]

    def discard(self) -> None:
        for p in self.temp + self.extra_temps:
            for q in (p, Path(str(p) + ".aux.xml"), Path(str(p) + ".msk")):
                try:
                    if q.is_dir():
                        import shutil

                        shutil.rmtree(q, ignore_errors=True)
                    else:
                        q.unlink()
                except FileNotFoundError:
                    pass
                except OSError:
                    pass
        if self.created_dir is not None:
            # remove the folders this run created, innermost first, only while empty
            d = self.out_dir
            while True:
                try:
                    d.rmdir()
                except OSError:
                    break
                if d == self.created_dir:
                    break
                d = d.parent


def output_names(info: StackInfo, prefix: str | None = None) -> list:
    """``<prefix>_t000.tif`` ... zero-padded so that names sort in time order."""
    if not prefix:
        prefix = common_prefix([Path(p).stem for p in info.paths])
    digits = max(3, len(str(info.n_outputs - 1)))
    return [f"{prefix}_t{i:0{digits}d}.tif" for i in range(info.n_outputs)]


def common_prefix(stems) -> str:
    """Shared start of the input names without trailing separators/digits; 'mstt' if none."""
    pre = os.path.commonprefix(list(stems))
    pre = pre.rstrip("0123456789").rstrip("_-. ")
    return (pre or "mstt") + "_x4"


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
    from .timeline import iso_time, tiff_datetime

    if t is None:
        return {}
    return {"TIFFTAG_DATETIME": tiff_datetime(t), TIME_TAG_OUT: iso_time(t)}

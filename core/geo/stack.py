"""A stack of frames: open each, check that they line up (size, bands, dtype, CRS, geotransform,
nodata), read their acquisition times, and describe it all in one ``StackInfo``."""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.windows import Window

from ..errors import InputError
from ..net.spec import SCALE
from .times import is_increasing, parse_time, parse_times_arg, time_order

try:  # GDAL's own errors as rasterio raises them (its private module, stable since 1.0)
    from rasterio._err import CPLE_BaseError
except ImportError:  # pragma: no cover
    CPLE_BaseError = RasterioError

IO_ERRORS = (RasterioError, CPLE_BaseError, OSError)  # what reading or writing a raster raises


def first_line(error) -> str:
    """The first non-blank line of an error's message (GDAL's can run over several)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return lines[0] if lines else type(error).__name__


READ_CHECK_ROWS = 256  # rows per read when every block of a frame is read back in validation

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
# Keys that hold an acquisition time for sure; DATETIME and TIFFTAG_DATETIME are often the
# file's creation time, which may order nothing.
ACQUISITION_KEYS = ("ACQUISITIONDATETIME", "ACQUISITION_DATETIME", "ACQUISITION_TIME")


def check_utf8(path, what: str = "") -> None:
    """GDAL (through rasterio) takes file names as UTF-8: a name in another encoding (Latin-1
    bytes from an old archive, which Python keeps as surrogates) cannot be opened or written;
    refused naming it, with the way out."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise InputError(f"{what}{shown}: the name is not valid UTF-8 (an old archive's encoding, such as Latin-1), "
                         "which GDAL cannot use; give it a UTF-8 name (convmv -f latin1 -t utf-8 --notest renames files)") \
            from None


def open_raster(path):
    """rasterio.open with errors a user can read; georeferencing warnings silenced (we check)."""
    check_utf8(path)
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
    files: list = field(default_factory=list)  # every file the frames are read from (VRT sources too)

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
    def shape(self) -> tuple:
        """(height, width) of each LR frame, in numpy's order."""
        return self.height, self.width

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
    for p in paths:
        check_utf8(p)
    if len(paths) < 2:
        raise InputError(f"at least 2 frames are needed, got {len(paths)}"
                         + (f" ({paths[0]})" if paths else ""))
    _check_distinct(paths)
    metas = []
    for p in paths:
        with open_raster(p) as ds:
            metas.append(_frame_meta(ds, p))
    first = metas[0]
    for p, m in zip(paths[1:], metas[1:]):
        _check_same_grid(p, m, paths[0], first)
    if first["colormap"]:
        raise InputError(f"{paths[0]}: band 1 has a colour table (palette); its values are class "
                         "codes, not intensities. Expand it to RGB first (gdal_translate -expand rgb)")
    if np.dtype(first["dtype"]).kind not in "uif":
        raise InputError(f"{paths[0]}: data type {first['dtype']} is not supported (integer or float bands only)")
    alpha = tuple(i + 1 for i, c in enumerate(first["colorinterp"]) if c == ColorInterp.alpha)
    color = tuple(i for i in range(1, first["count"] + 1) if i not in alpha)
    if not color:
        raise InputError(f"{paths[0]}: only alpha bands, nothing to super-resolve")
    order, frame_times, source, notes = _stack_times(paths, metas, times)
    for p in paths:  # after the cheap checks: this reads every pixel once
        with open_raster(p) as ds:
            _read_check(ds, p)
    paths, metas = [paths[i] for i in order], [metas[i] for i in order]
    first = metas[0]
    if not first["georeferenced"]:
        notes.append(f"note: {paths[0]} is georeferenced by {first['control']}; they are scaled to the output pixels"
                     if first["control"] else f"note: {paths[0]} is not georeferenced; outputs will not be either")
    return StackInfo(
        paths=paths, width=first["size"][0], height=first["size"][1], count=first["count"],
        dtype=first["dtype"], crs=first["crs"], transform=first["transform"],
        georeferenced=first["georeferenced"], nodata=first["nodata"], colorinterp=first["colorinterp"],
        descriptions=first["descriptions"], color_bands=color, alpha_bands=alpha, nbits=first["nbits"],
        times=frame_times, time_source=source, notes=notes, files=[f for m in metas for f in m["files"]],
    )


def _check_distinct(paths) -> None:
    """Each frame once: the same file twice (by name, link or another spelling) would make
    new frames between a frame and itself."""
    seen = {}
    for i, p in enumerate(paths):
        try:
            st = os.stat(p)
            key = (st.st_dev, st.st_ino)
        except OSError:
            key = p  # not a plain file (a GDAL connection string): by its name
        if key in seen:
            j = seen[key]
            raise InputError(f"{p}: the same file as frame {j + 1} ({paths[j]}); give each frame once")
        seen[key] = i


def _read_check(ds, path) -> None:
    """Every block of every band and mask decodes: a damaged or truncated frame (or a VRT whose
    source is missing) is refused now, by name, not from a worker thread halfway through."""
    bh = ds.block_shapes[0][0]
    step = max(bh, READ_CHECK_ROWS // bh * bh)
    masked = any(MaskFlags.all_valid not in flags for flags in ds.mask_flag_enums)
    try:
        for y in range(0, ds.height, step):
            win = Window(0, y, ds.width, min(step, ds.height - y))
            ds.read(window=win)
            if masked:
                ds.read_masks(window=win)
    except IO_ERRORS as exc:
        raise InputError(f"{path}: cannot be read ({first_line(exc)}); the file is damaged or incomplete") from None


def _check_same_grid(path, meta: dict, first_path, first: dict) -> None:
    """Raise InputError naming ``path`` if it does not line up with the first frame."""
    for key, label in (("size", "size"), ("count", "band count"), ("dtype", "data type")):
        if meta[key] != first[key]:
            raise InputError(f"{path}: {label} {_fmt(meta[key])} differs from {first_path} ({_fmt(first[key])})")
    if (meta["crs"] is None) != (first["crs"] is None) or (meta["crs"] is not None and meta["crs"] != first["crs"]):
        raise InputError(f"{path}: CRS {_crs_name(meta['crs'])} differs from {first_path} ({_crs_name(first['crs'])})")
    if not _same_transform(meta["transform"], first["transform"]):
        raise InputError(f"{path}: geotransform {tuple(round(v, 9) for v in tuple(meta['transform'])[:6])} differs "
                         f"from {first_path} ({tuple(round(v, 9) for v in tuple(first['transform'])[:6])})")
    if not _nodata_equal(meta["nodata"], first["nodata"]):
        raise InputError(f"{path}: nodata value {meta['nodata']} differs from {first_path} ({first['nodata']})")


def _stack_times(paths, metas, times) -> tuple:
    """(order, times, source, notes): ``--times`` when given (in the order given). Else, when
    every frame has an acquisition time, the frames in that time order (duplicates refused);
    when only file times (TIFFTAG_DATETIME) are there, those if they increase in the order
    given; else no times. Notes say what was done and why."""
    given = list(range(len(paths)))
    if times is not None:
        return given, parse_times_arg(times, len(paths)), "--times", []
    notes, found = [], []
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
    key = metas[0]["time_key"]
    if found and all(m["time_key"].split(":")[-1].upper() in ACQUISITION_KEYS for m in metas):
        order = time_order(found, paths, key)
        if order != given:
            notes.append(f"note: frames given out of time order; processed in the order of their acquisition "
                         f"times ({key}): {', '.join(Path(paths[i]).name for i in order)}")
        return order, [found[i] for i in order], "metadata", notes
    if found and is_increasing(found):
        return given, found, "metadata", notes
    if found:
        notes.append(f"note: the frames' {key} times do not increase in the order given; {key} is often the "
                     "file's creation time, so the frames are processed in the order given, without times. "
                     "Pass --times to give their acquisition times.")
    elif any(m["time_text"] for m in metas) and not notes:
        missing = next(p for p, m in zip(paths, metas) if m["time_text"] is None)
        notes.append(f"note: {missing} has no acquisition time in its metadata; times ignored")
    return given, [None] * len(paths), "none", notes


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
        colormap=colormap, files=list(ds.files),
    )


def _fmt(v):
    return f"{v[0]}x{v[1]}" if isinstance(v, tuple) else str(v)


def _crs_name(crs):
    if crs is None:
        return "none"
    return crs.to_string() if crs.to_epsg() else (crs.to_wkt()[:80] + "...")


def hr_transform(t: Affine, scale: int = SCALE) -> Affine:
    """Pixel size (and rotation terms) divided by ``scale``; same origin (top-left corner)."""
    return Affine(t.a / scale, t.b / scale, t.c, t.d / scale, t.e / scale, t.f)

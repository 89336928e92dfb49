"""The frames of a stack folder: every image file GDAL reads (the formats ``run`` takes), in
natural number order, without hidden and system files.

Natural order because research datasets and camera exports number frames without zero
padding (``f1.tif`` ... ``f11.tif``): name order would put ``f10`` before ``f2``. When every
frame has an acquisition time, ``geo.stack.read_stack_info`` orders them by it anyway.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import InputError

# Raster formats taken from a folder: those of satellite archives (GeoTIFF, JPEG 2000, VRT,
# ERDAS, NITF) and the image formats frames are often exported in (PNG, JPEG, BMP, WebP).
# GDAL's side files (.aux.xml, .msk, .ovr, world files) are not frames.
IMAGE_SUFFIXES = (".tif", ".tiff", ".gtif", ".jp2", ".j2k", ".vrt", ".img", ".ntf", ".nitf",
                  ".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
SYSTEM_FILES = ("thumbs.db", "desktop.ini", ".ds_store")  # made by file browsers, never frames


def natural_key(name: str) -> tuple:
    """Sort key: runs of digits compare as numbers (f2 < f10), the rest as text."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), p) if p.isdigit() else (1, p.lower(), p) for p in parts if p), name


def natural_order(paths) -> list:
    return sorted(paths, key=lambda p: natural_key(Path(p).name))


def hidden(name: str) -> bool:
    """Hidden files (``.name``, macOS ``._name`` resource forks) and file browsers' own files."""
    return name.startswith(".") or name.lower() in SYSTEM_FILES


def image_files(folder) -> list:
    """The frames in ``folder`` (paths, natural order); InputError when it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"stack folder {folder} not found" if not folder.exists()
                         else f"{folder} is not a folder")
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise InputError(f"stack folder {folder}: {exc.strerror or exc}") from None
    return natural_order(str(p) for p in entries
                         if not hidden(p.name) and p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def order_note(paths) -> str | None:
    """A line for the log when natural order differs from plain name order."""
    by_name = sorted(paths, key=lambda p: Path(p).name)
    if list(paths) == by_name:
        return None
    names = [Path(p).name for p in paths]
    shown = ", ".join(names) if len(names) <= 6 else ", ".join(names[:3] + ["..."] + names[-2:])
    return f"note: frames taken in natural number order ({shown}), not in name order"

"""Clip sources for training and evaluation: 7 HR frames and the 4 LR inputs (frames 1, 3, 5, 7),
or, for long held-out clips, 2N-1 HR frames and the N LR inputs (the odd frames).

Three layouts, one interface (``len(ds)``, ``ds.clip(i) -> Clip``):

* ``SeptupletDataset`` - Vimeo-90K septuplet style, how Jilin-189 is distributed and what
  ``mstt-stvsr synth`` writes: ``<root>/sequences/<clip>/<part>/im1.png .. im7.png`` and a list
  file (``sep_trainlist.txt`` / ``sep_testlist.txt``, one ``<clip>/<part>`` per line). A clip
  folder with more frames (im1 .. im19) is one long clip.
* ``SplitDataset`` - per-split folders of frame sequences:
  ``<root>/<split>/GT/<seq>/<frame>.png`` (HR, required), ``<root>/<split>/LR4x/<seq>/<frame>.png``
  (LR, optional: made from GT when absent), ``<root>/<split>/Bicubic4x/...`` (ignored: bicubic is
  recomputed). Frames sort by name; every run of 7 consecutive frames (``stride`` apart) is a clip.
* ``GeoTiffFramesDataset`` - a folder of time-ordered GeoTIFF frames (HR only; LR made on the fly),
  ordered by their acquisition-time tags when all have one, else by file name.
* ``FrameFoldersDataset`` - real video: native frames (PNG / JPEG / TIFF) as ground truth, one
  folder per clip (a folder of such folders, or the clip folders themselves), frames in natural
  name order; each folder is one clip of all its frames (2N-1, so the network gets N inputs),
  optionally centre-cropped. This is how Jilin-189 is scored: the LR is the native frames'
  Jilin-189 degradation.

LR not read from disk is made with degrade.py (the Jilin-189 degradation). HR frames whose
size does not divide by 4 are cropped at the bottom/right.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..geo.frames import hidden, natural_key
from ..net.spec import INPUT_POS, N_OUT, SCALE
from .degrade import crop_to_multiple, downsample

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Real video kept for validation (../shared/realvideo): read by evaluation, never by training.
VALIDATION_ONLY = "realvideo"


def refuse_validation_only(root) -> None:
    """Training never reads real video kept for validation (a folder under one named
    ``realvideo``): its frames judge the shipped weights, so they must never have trained them."""
    if VALIDATION_ONLY in Path(root).resolve().parts:
        raise InputError(f"{root}: real video kept for validation only (under a '{VALIDATION_ONLY}' folder); "
                         "training never reads it")


@dataclass
class Clip:
    name: str
    hr: np.ndarray  # (2N-1, H, W, 3) uint8; N = 4 but in long held-out clips
    lr: np.ndarray  # (N, H/4, W/4, 3) uint8: the odd HR frames' LR


def read_rgb(path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from None


def clip_from_frames(name: str, hr: np.ndarray, lr: np.ndarray | None = None) -> Clip:
    hr = crop_to_multiple(np.asarray(hr, np.uint8))
    if len(hr) < N_OUT or len(hr) % 2 == 0:
        raise InputError(f"{name}: {len(hr)} HR frames; a clip has an odd number, at least {N_OUT}")
    if lr is None:
        lr = downsample(hr[0::2])
    h, w = hr.shape[1:3]
    if lr.shape[1:3] != (h // SCALE, w // SCALE):
        lr = np.ascontiguousarray(lr[:, : h // SCALE, : w // SCALE])
        if lr.shape[1:3] != (h // SCALE, w // SCALE):
            raise InputError(f"{name}: LR frames {lr.shape[2]}x{lr.shape[1]} do not match GT {w}x{h} / {SCALE}")
    return Clip(name, hr, lr)


class SeptupletDataset:
    """Vimeo septuplet layout (see module docstring)."""

    def __init__(self, root, list_file: str | None = None):
        self.root = Path(root)
        if list_file is None:
            found = [n for n in ("sep_trainlist.txt", "sep_testlist.txt") if (self.root / n).is_file()]
            if not found:
                raise InputError(f"{self.root}: no sep_trainlist.txt or sep_testlist.txt (Vimeo septuplet layout)")
            list_file = found[0]
        path = self.root / list_file
        if not path.is_file():
            raise InputError(f"{path}: list file not found")
        self.names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        if not self.names:
            raise InputError(f"{path}: the list is empty")
        first = self.root / "sequences" / self.names[0]
        if not (first / "im1.png").is_file():
            raise InputError(f"{first}: im1.png not found (expected sequences/<clip>/<part>/im1..im7.png)")

    def __len__(self) -> int:
        return len(self.names)

    def clip(self, i: int) -> Clip:
        d = self.root / "sequences" / self.names[i]
        count = N_OUT
        while (d / f"im{count + 1}.png").is_file():
            count += 1
        hr = np.stack([read_rgb(d / f"im{t + 1}.png") for t in range(count)])
        return clip_from_frames(self.names[i], hr)


class SplitDataset:
    """``<root>/<split>/{GT,LR4x}/<seq>/<frame>`` sequences, 7-frame windows ``stride`` apart."""

    def __init__(self, root, split: str = "train", stride: int = 1):
        self.base = Path(root) / split
        gt = self.base / "GT"
        if not gt.is_dir():
            raise InputError(f"{gt}: not found (expected <root>/<split>/GT/<seq>/<frame>.png)")
        self.seqs = {}
        for d in sorted((p for p in gt.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
            frames = sorted((f.name for f in d.iterdir() if f.suffix.lower() in IMAGE_EXT), key=natural_key)
            if len(frames) >= N_OUT:
                self.seqs[d.name] = frames
        if not self.seqs:
            raise InputError(f"{gt}: no sequence folder with at least {N_OUT} frames")
        self.index = [(s, k) for s, fr in self.seqs.items() for k in range(0, len(fr) - N_OUT + 1, stride)]

    def __len__(self) -> int:
        return len(self.index)

    def clip(self, i: int) -> Clip:
        seq, k = self.index[i]
        names = self.seqs[seq][k:k + N_OUT]
        hr = np.stack([read_rgb(self.base / "GT" / seq / n) for n in names])
        lr = None
        lr_dir = self.base / "LR4x" / seq
        if lr_dir.is_dir():
            paths = [self._match(lr_dir, names[p]) for p in INPUT_POS]
            if all(p is not None for p in paths):
                lr = np.stack([read_rgb(p) for p in paths])
        return clip_from_frames(f"{seq}/{k}", hr, lr)

    @staticmethod
    def _match(folder: Path, name: str):
        """The LR frame with the GT frame's name (any image extension)."""
        stem = Path(name).stem
        for ext in (Path(name).suffix, *IMAGE_EXT):
            p = folder / (stem + ext)
            if p.is_file():
                return p
        return None


class GeoTiffFramesDataset:
    """A folder of HR GeoTIFF frames in time order; 7-frame windows ``stride`` apart."""

    def __init__(self, folder, stride: int = 1, bands=(1, 2, 3)):
        import rasterio

        self.folder = Path(folder)
        paths = sorted((p for p in self.folder.iterdir() if p.suffix.lower() in (".tif", ".tiff")),
                       key=lambda p: natural_key(p.name)) if self.folder.is_dir() else []
        if len(paths) < N_OUT:
            raise InputError(f"{self.folder}: need at least {N_OUT} GeoTIFF frames, found {len(paths)}")
        times = []
        for p in paths:
            with rasterio.open(p) as ds:
                times.append(_acq_time(ds))
        if all(t is not None for t in times):
            paths = [p for _, p in sorted(zip(times, paths), key=lambda tp: tp[0])]
        self.paths, self.bands = paths, tuple(bands)
        self.index = list(range(0, len(paths) - N_OUT + 1, stride))

    def __len__(self) -> int:
        return len(self.index)

    def clip(self, i: int) -> Clip:
        import rasterio

        k = self.index[i]
        frames = []
        for p in self.paths[k:k + N_OUT]:
            with rasterio.open(p) as ds:
                if ds.count < len(self.bands) or ds.dtypes[0] != "uint8":
                    raise InputError(f"{p}: need >= {len(self.bands)} uint8 bands for training, "
                                     f"got {ds.count} x {ds.dtypes[0]}")
                frames.append(ds.read(list(self.bands)).transpose(1, 2, 0))
        return clip_from_frames(f"{self.folder.name}/{k}", np.stack(frames))


def image_files(folder: Path) -> list[Path]:
    """The frames of a folder in natural name order (``f2`` before ``f10``), hidden files and
    system files (macOS ``._*``, ``Thumbs.db``) left out."""
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXT
                   and not hidden(p.name)), key=lambda p: natural_key(p.name))


class FrameListsDataset:
    """Clips given as lists of native frames: ``clips`` is [(name, [frame paths in time order])],
    each one clip of all its frames (an even count drops its last: a clip of 2N-1 frames has N
    inputs at its odd frames). ``crop``: centre crop of this many HR pixels a side (a multiple
    of 4). The LR is the frames' Jilin-189 degradation."""

    def __init__(self, clips, crop: int | None = None, root: str = ""):
        self.clips: list[tuple[str, list[Path]]] = []
        for name, frames in clips:
            frames = [Path(p) for p in frames]
            if len(frames) < N_OUT:
                raise InputError(f"{name}: {len(frames)} frame(s); a clip needs at least {N_OUT}")
            self.clips.append((name, frames[: len(frames) - (1 - len(frames) % 2)]))
        if crop is not None and (crop <= 0 or crop % SCALE):
            raise InputError(f"crop {crop}: must be a positive multiple of {SCALE}")
        self.crop = crop
        self.root = root

    def __len__(self) -> int:
        return len(self.clips)

    def clip(self, i: int) -> Clip:
        name, paths = self.clips[i]
        hr = np.stack([read_rgb(p) for p in paths]) if len({read_size(p) for p in paths}) == 1 else None
        if hr is None:
            raise InputError(f"{name}: frames of different sizes")
        if self.crop:
            h, w = hr.shape[1:3]
            if self.crop > min(h, w):
                raise InputError(f"{name}: crop {self.crop} is larger than the frames ({w}x{h})")
            y, x = (h - self.crop) // 2, (w - self.crop) // 2
            hr = hr[:, y:y + self.crop, x:x + self.crop]
        return clip_from_frames(name, hr)


class FrameFoldersDataset(FrameListsDataset):
    """Folders of native frames, each one clip of all its frames (see module docstring).

    ``folders``: clip folders, or folders whose sub-folders are clips. A clip with an even
    number of frames drops its last (a clip of 2N-1 frames has N inputs at its odd frames).
    ``crop``: centre crop of this many HR pixels a side (a multiple of 4), for quick scans."""

    def __init__(self, folders, crop: int | None = None):
        clips = []
        for folder in map(Path, folders):
            if not folder.is_dir():
                raise InputError(f"{folder}: not a folder of frames")
            own = image_files(folder)
            subs = [] if own else sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
                                         key=lambda d: natural_key(d.name))
            for d, frames in ([(folder, own)] if own else [(d, image_files(d)) for d in subs]):
                if len(frames) < N_OUT:
                    raise InputError(f"{d}: {len(frames)} frame(s); a clip needs at least {N_OUT}")
                clips.append((d.name, frames))
        if not clips:
            raise InputError(f"{', '.join(map(str, folders))}: no folder of frames found")
        super().__init__(clips, crop, ", ".join(map(str, folders)))


def read_size(path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from None


def _acq_time(ds):
    """The frame's acquisition time (naive), read as ``mstt-stvsr run`` reads it; None if absent."""
    from ..geo.stack import read_time_tag
    from ..geo.times import parse_time

    text, _ = read_time_tag(ds)
    if text is None:
        return None
    try:
        return parse_time(text).replace(tzinfo=None)
    except ValueError:
        return None


def open_dataset(root, layout: str = "auto", split: str = "train", list_file=None, stride: int = 1):
    """Pick the layout of ``root``: septuplet list file, ``<split>/GT`` folders, or GeoTIFFs."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: data folder does not exist")
    if layout == "auto":
        if list_file or any((root / n).is_file() for n in ("sep_trainlist.txt", "sep_testlist.txt")):
            layout = "septuplet"
        elif (root / split / "GT").is_dir():
            layout = "split"
        elif any(p.suffix.lower() in (".tif", ".tiff") for p in root.iterdir()):
            layout = "geotiff"
        else:
            raise InputError(f"{root}: not a known dataset layout (septuplet list file, "
                             f"{split}/GT/<seq>/ folders, or a folder of GeoTIFF frames)")
    if layout == "septuplet":
        return SeptupletDataset(root, list_file)
    if layout == "split":
        return SplitDataset(root, split, stride)
    if layout == "geotiff":
        return GeoTiffFramesDataset(root, stride)
    raise InputError(f"unknown dataset layout {layout!r} (septuplet, split, geotiff or auto)")

"""A user's own video as fine-tuning reads it: native frames (the ground truth), checked up
front, split into the frames trained on and the frames held out for validation.

A video is a folder of consecutive frames (PNG / JPEG / 8-bit TIFF or GeoTIFF, natural name
order) or a list file naming them. Every frame is decoded and hashed before anything trains,
so a truncated file fails at once, not an hour into training, and the frame list's SHA-256
identifies exactly what a fine-tune read.

The split: the last part of each video of at least ``2 x 7`` frames (``val_share`` of its
frames, whole 7-frame clips, at least one), or, when no video is that long, the last videos
given (whole); ``max_clips`` caps the held-out clips (the shortest videos give theirs back to
training first). Training draws only from the rest (``VideoWindows``: every 7-frame window).
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..net.spec import N_OUT, SCALE
from .datasets import IMAGE_EXT, VALIDATION_ONLY, clip_from_frames, image_files, read_rgb

VAL_SHARE = 0.10  # share of each video's frames held out for validation (its last frames)
MIN_SPLIT = 2 * N_OUT  # a video this long gives a training part and a validation clip of its own
EIGHT_BIT_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")  # Pillow modes of 8-bit frames


@dataclass
class Video:
    source: Path  # the folder or list file as given (absolute)
    frames: list  # frame paths in time order
    size: tuple  # (width, height)
    sha256: str  # of the frame list: each frame's name and the SHA-256 of its bytes
    train: list = field(default_factory=list)  # frames trained on
    val: list = field(default_factory=list)  # frames held out: only ever scored
    validation_only: bool = False  # read from under a 'realvideo' folder (--allow-validation-data)

    @property
    def tag(self) -> str:
        return f"{self.source.name}-{self.sha256[:10]}"

    def record(self) -> dict:
        return {"video": str(self.source), "frames": len(self.frames), "size": list(self.size),
                "train_frames": len(self.train), "validation_frames": len(self.val), "frames_sha256": self.sha256}


def list_frames(source: Path) -> list:
    """A folder's frames (natural name order), or the frames a list file names (one path a
    line, relative to the list file's folder; blank lines and ``#`` comments skipped)."""
    if source.is_dir():
        frames = image_files(source)
        if not frames and any(d.is_dir() for d in source.iterdir()):
            raise InputError(f"{source}: no frames, only sub-folders; give each video's own folder of frames")
        return frames
    if not source.is_file():
        raise InputError(f"{source}: no such folder or list file")
    if source.suffix.lower() in IMAGE_EXT:
        raise InputError(f"{source}: a single frame; give the folder of the video's frames (or a list file)")
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{source}: not a readable list file of frames ({exc})") from None
    names = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    frames = [p if p.is_absolute() else source.parent / p for p in map(Path, names)]
    missing = [str(p) for p in frames if not p.is_file()]
    if missing:
        raise InputError(f"{source}: {len(missing)} listed frame(s) not found, e.g. {missing[0]}")
    return frames


def check_frame(path: Path) -> tuple:
    """Decode the whole frame (a truncated file fails here, not an hour into training); return
    ((width, height), SHA-256 of its bytes)."""
    from PIL import Image

    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            mode, size = im.mode, im.size
            im.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: cannot read frame ({exc})") from None
    if mode not in EIGHT_BIT_MODES:
        raise InputError(f"{path}: not an 8-bit frame (pixel mode {mode}); fine-tuning reads 8-bit frames (PNG, "
                         "JPEG, 8-bit TIFF): convert deeper frames to 8 bit as you view them first")
    return size, hashlib.sha256(data).hexdigest()


def open_video(source, allow_validation_data: bool = False) -> Video:
    """The video's frames, all checked: at least 7, readable, 8-bit, one size."""
    source = Path(source).expanduser().absolute()
    frames = list_frames(source) if VALIDATION_ONLY not in source.resolve().parts else []
    held = VALIDATION_ONLY in source.resolve().parts or any(VALIDATION_ONLY in p.resolve().parts for p in frames)
    if held and not allow_validation_data:  # however it is reached: the folder, a link, a list file's lines
        raise InputError(f"{source}: real video kept for validation only (under a '{VALIDATION_ONLY}' folder): it "
                         "judges the shipped weights, so they never train on it; for a throwaway copy of the weights "
                         "fine-tuned on it, add --allow-validation-data")
    frames = frames or list_frames(source)
    if len(frames) < N_OUT:
        raise InputError(f"{source}: {len(frames)} frame(s); a video needs at least {N_OUT} consecutive frames")
    digest, sizes = hashlib.sha256(), {}
    for p in frames:
        size, sha = check_frame(p)
        sizes.setdefault(size, p)
        if len(sizes) > 1:
            (w0, h0), first = next(iter(sizes.items()))
            raise InputError(f"{source}: frames of different sizes: {p.name} is {size[0]}x{size[1]}, "
                             f"{first.name} {w0}x{h0}")
        digest.update(f"{p.name}\t{sha}\n".encode())
    (w, h), = sizes
    if w < SCALE * 4 or h < SCALE * 4:
        raise InputError(f"{source}: frames of {w}x{h} px are too small to fine-tune on")
    return Video(source, frames, (w, h), digest.hexdigest(), validation_only=held)


def split_videos(videos: list, val_share: float = VAL_SHARE, max_clips: int | None = None) -> None:
    """Hold out the validation frames (see the module docstring); sets each video's train/val.
    ``max_clips``: at most this many held-out 7-frame clips in all (many short videos would
    otherwise each give one, and validating twice would eat the time box): the shortest
    videos give theirs back to training first."""
    if not 0 < val_share < 1:
        raise InputError(f"validation share {val_share}: must be between 0 and 1")
    if max_clips is not None and max_clips < 1:
        raise InputError(f"--val-clips {max_clips}: must be at least 1")
    long = [v for v in videos if len(v.frames) >= MIN_SPLIT]
    for v in videos:
        v.train, v.val = list(v.frames), []
    if long:
        clips = {id(v): max(1, min(round(val_share * len(v.frames) / N_OUT), (len(v.frames) - N_OUT) // N_OUT))
                 for v in long}  # whole 7-frame clips, at least one each
        excess = sum(clips.values()) - max_clips if max_clips is not None else 0
        for v in sorted(long, key=lambda v: len(v.frames)):  # the shortest give theirs back first
            take = min(clips[id(v)], max(0, excess))
            clips[id(v)] -= take
            excess -= take
        for v in long:
            n, k = len(v.frames), clips[id(v)]
            v.train, v.val = v.frames[: n - k * N_OUT], v.frames[n - k * N_OUT:]
        return
    if len(videos) < 2:
        v = videos[0]
        raise InputError(f"{v.source}: {len(v.frames)} frames; one video needs at least {MIN_SPLIT} (the last "
                         f"{N_OUT} are held out for validation, never trained on), or give several videos")
    total, held = sum(len(v.frames) for v in videos), 0
    for count, v in enumerate(reversed(videos[1:]), 1):  # the last videos given, whole (one clip each),
        v.train, v.val = [], list(v.frames)                 # until they hold the share
        held += len(v.frames)
        if held >= val_share * total or count == max_clips:
            break


def validation_clips(videos: list) -> list:
    """(name, frames) of the held-out clips: the held-out part in 7-frame clips (a whole
    held-out short video is one clip)."""
    clips = []
    for v in videos:
        if not v.val:
            continue
        if v.train:
            clips += [(f"{v.source.name}/val{j + 1}", v.val[j * N_OUT:(j + 1) * N_OUT]) for j in range(len(v.val) // N_OUT)]
        else:
            clips.append((f"{v.source.name}/all", v.val))
    return clips


class VideoWindows:
    """Training clips: every 7-frame window of each video's training part (the clip dataset
    interface of datasets.py). Clip names carry the frame list's hash, so the flow cache never
    mixes two videos of one name."""

    def __init__(self, videos: list):
        self.videos = [v for v in videos if len(v.train) >= N_OUT]
        self.index = [(i, k) for i, v in enumerate(self.videos) for k in range(len(v.train) - N_OUT + 1)]
        if not self.index:
            raise InputError("no video has 7 consecutive frames left to train on after the validation frames")
        self.root = ", ".join(str(v.source) for v in self.videos)

    def __len__(self) -> int:
        return len(self.index)

    def clip(self, i: int):
        v, k = self.index[i]
        video = self.videos[v]
        hr = np.stack([read_rgb(p) for p in video.train[k:k + N_OUT]])
        return clip_from_frames(f"{video.tag}/{k}", hr)

"""What a run is asked to do, as one value: ``RunOptions`` (frozen), checked before any work.

Torch-free on purpose: ``mstt-stvsr run --help`` and the QGIS dialog list these choices without
loading torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

from ..errors import InputError

DEVICES = ("auto", "cpu", "cuda")
# Window plans (core.run.windows): "fast" steps windows by 3 inputs (about (N-1)/3 network
# windows for N frames), "central" takes each output from the window where it is most
# central (N-1 windows).
WINDOW_MODES = ("fast", "central")
DEFAULT_WINDOWS = "fast"
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# Seconds a run on a Dask cluster waits while no worker is connected (a worker restarted by a
# supervisor comes back within this) before it fails saying so, instead of waiting for ever.
DEFAULT_WORKER_WAIT = 300
# LR pixels each tile shares with its neighbours (blended across the seam).
DEFAULT_OVERLAP = 16


@dataclass(frozen=True)
class RunOptions:
    """Options of one run (``None`` = the default chosen for this machine).

    tile_size / overlap / margin: LR pixels (tile sizes are rounded up to the network's 80-px
    unit; margin = reflect padding beyond the scene, default half the overlap). times: N
    acquisition times (list or comma-separated ISO 8601) instead of the frames' metadata.
    tiles_per_forward: tiles stacked into one network call (1 on CPU, fitted to free GPU
    memory on CUDA). compile: ``torch.compile`` the network's stages (eager if that fails)."""

    weights: str | None = None
    tile_size: int | None = None
    overlap: int | None = None
    margin: int | None = None
    device: str = "auto"
    precision: str = "auto"
    times: object = None
    prefix: str | None = None
    overwrite: bool = False
    cog: bool = False
    threads: int | None = None
    tiles_per_forward: int | None = None
    compile: bool = False
    windows: str = DEFAULT_WINDOWS
    ensemble: bool = False  # the 8 flips/rotations of each window, averaged (8x the cost)
    resume: bool = False  # reuse what an interrupted run of these outputs finished (core.run.resume)
    worker_wait: float = DEFAULT_WORKER_WAIT  # on a Dask cluster: seconds without any worker before failing

    @property
    def overlap_px(self) -> int:
        """The tile overlap a run uses: the one asked for, else DEFAULT_OVERLAP."""
        return DEFAULT_OVERLAP if self.overlap is None else int(self.overlap)

    def check(self) -> None:
        """Raise InputError for a value no run could use (the machine is not consulted)."""
        _count(self.tile_size, "tile size", "a positive number of pixels", minimum=1)
        _count(self.overlap, "overlap", "0 or more pixels", minimum=0)
        _count(self.margin, "margin", "0 or more pixels", minimum=0)
        _count(self.tiles_per_forward, "tiles per forward", "a positive number", minimum=1)
        _count(self.threads, "threads", "a positive number", minimum=1)
        if isinstance(self.worker_wait, bool) or not isinstance(self.worker_wait, (int, float)) \
                or not self.worker_wait > 0:
            raise InputError(f"worker wait must be a positive number of seconds, got {self.worker_wait!r}")
        if self.windows not in WINDOW_MODES:
            raise InputError(f"unknown window plan {self.windows!r}; choose one of {', '.join(WINDOW_MODES)}")
        _file_name(self.prefix, "prefix")


def _file_name(value, label: str) -> None:
    """A name to start file names with: no folder in it (outputs stay in the output folder)."""
    if value is None:
        return
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{label} must be a non-empty name, got {value!r}")
    if value in (".", "..") or any(c in value for c in "/\\") or any(ord(c) < 32 for c in value):
        raise InputError(f"{label} {value!r} must be a plain file name start: no folders (/ or \\), "
                         "no '..', no control characters")


def _count(value, label: str, expected: str, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise InputError(f"{label} must be {expected}, got {value!r}")

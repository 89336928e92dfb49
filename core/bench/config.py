"""What one benchmark measures, as one frozen value: ``BenchConfig``."""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class BenchConfig:
    """Sizes in LR pixels. ``None`` = the default chosen for this machine: precisions fp32 + bf16
    on CPU, fp32 + fp16 + bf16 on CUDA; the end-to-end tile, batch and overlap as the pipeline
    chooses them. ``scene`` 0 skips the end-to-end run; ``workdir`` holds its synthetic stack
    (default: the system's temporary folder); ``e2e_check`` also runs that stack through the
    command line in a fresh process and marks the row unreliable when the two disagree."""

    device: str = "auto"
    tiles: tuple = (80, 160, 320)
    batches: tuple = (1, 2, 4)
    precisions: tuple | None = None
    reps: int = 3
    warmup: int = 1
    scene: int = 2048
    e2e_tile: int | None = None
    e2e_precision: str = "auto"
    e2e_batch: int | None = None
    overlap: int | None = None
    threads: int | None = None
    weights: str | None = None
    compile: bool = False
    quick: bool = False
    workdir: str | None = None
    compare_tile: int = 160  # the side-by-side network paths (0 = skip)
    window_frames: int = 10  # the window plans end to end (0 = skip), on a stack of this many
    window_scene: int = 320  # frames of this LR side, one tile
    e2e_check: bool = True  # the end-to-end row against a real `mstt-stvsr run` of its stack
    notes: tuple = ()

    @classmethod
    def quick_config(cls, **changes) -> "BenchConfig":
        """A few minutes on a 2-core CPU: small tiles, three repetitions (the fewest whose spread
        tells a disturbed row), a 256-px scene; batches beyond 1 only at the smallest tile."""
        return replace(cls(tiles=(80, 160), batches=(1, 2), reps=3, warmup=1, scene=256, window_scene=160, quick=True),
                       **changes)

    def as_dict(self) -> dict:
        """The settings as the JSON report lists them (notes are reported apart)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "notes"}

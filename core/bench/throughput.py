"""Network throughput: output megapixels per second of one forward (4 LR frames -> 7 HR
frames, flows given) per tile size, batch and precision, after warm-up, with the device
synchronised around each timed call."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import InputError
from ..net.spec import N_IN, N_OUT, SCALE
from ..run import device
from .config import BenchConfig
from .flops import count_flops
from .disturbance import Sample, Stopwatch, judge
from .hardware import sync


def precision_list(cfg: BenchConfig, dev: torch.device) -> list:
    if cfg.precisions:
        return list(cfg.precisions)
    return ["fp32", "fp16", "bf16"] if dev.type == "cuda" else ["fp32", "bf16"]


def precision_usable(name: str, dev: torch.device) -> tuple[torch.dtype | None, str]:
    """(dtype, "") or (None, why not): the pipeline's own rules, then a real autocast conv."""
    try:
        dtype = device.resolve_precision(name, dev)
    except InputError as exc:
        return None, str(exc)
    if dtype == torch.float32:
        return dtype, ""
    try:
        conv = torch.nn.Conv2d(3, 4, 3).to(dev)
        with torch.inference_mode(), device.autocast(dev, dtype):
            y = conv(torch.rand(1, 3, 8, 8, device=dev))
        if y.dtype != dtype:
            return None, f"autocast to {name} left convolutions in {y.dtype}"
    except Exception as exc:  # an old CPU or build without the kernels
        return None, f"{name} autocast unavailable: {exc}"
    return dtype, ""


def forward_inputs(dev, batch: int, tile: int, seed: int = 0) -> tuple:
    """Random LR frames and flows of one forward's shape, on ``dev``."""
    g = torch.Generator().manual_seed(seed)
    lr = torch.rand(batch, N_IN, 3, tile, tile, generator=g).to(dev)
    fl = (torch.randn(batch, N_IN - 1, 4, tile, tile, generator=g) * 0.5).to(dev)
    return lr, fl


def timed_forward(net, dev, dtype, inputs) -> Sample:
    """One forward (full 7-output network, flows given), the device synchronised around it."""
    sync(dev)
    with Stopwatch() as watch:
        with torch.inference_mode(), device.autocast(dev, dtype):
            y = net(*inputs)
        sync(dev)
    del y
    return watch.sample


def time_forward(net, dev, dtype, batch: int, tile: int, reps: int, warmup: int, seed: int = 0) -> list[Sample]:
    """``reps`` timed forwards after ``warmup`` untimed ones, one after the other."""
    inputs = forward_inputs(dev, batch, tile, seed)
    for _ in range(warmup):
        timed_forward(net, dev, dtype, inputs)
    return [timed_forward(net, dev, dtype, inputs) for _ in range(reps)]


@dataclass
class Meter:
    """What every throughput measurement of one benchmark shares: the network prepared on its
    device, the model it came from (whose config the FLOP counter copies), the device's peaks
    and the repetitions; FLOPs are counted once per (tile, batch)."""

    net: torch.nn.Module
    model: torch.nn.Module
    dev: torch.device
    peaks: dict
    reps: int
    warmup: int
    flops: dict = field(default_factory=dict)

    def start(self, precision: str, dtype: torch.dtype, tile: int, batch: int) -> tuple[dict, tuple | None]:
        """A row warmed up on its own shape: (row, inputs), or (row with status "out of
        memory", None)."""
        row = {"precision": precision, "tile": tile, "batch": batch, "dtype": dtype}
        if (tile, batch) not in self.flops:
            self.flops[tile, batch] = count_flops(self.model, batch, tile, tile)
        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.dev)
        inputs = forward_inputs(self.dev, batch, tile)
        try:
            for _ in range(max(1, self.warmup)):
                timed_forward(self.net, self.dev, dtype, inputs)
        except Exception as exc:
            if not device.is_oom(exc):
                raise
            device.free_memory(self.dev)
            row.update(status="out of memory")
            return row, None
        return row, inputs

    def finish(self, row: dict, samples: list[Sample]) -> dict:
        """The row's figures from its timed samples: median seconds, output MP/s, TFLOP/s,
        share of peak, and whether the timing can be trusted (disturbance.judge)."""
        verdict = judge(samples)
        flops = self.flops[row["tile"], row["batch"]]
        sec = verdict.median
        out_mp = row["batch"] * N_OUT * (SCALE * row["tile"]) ** 2 / 1e6
        tflops = flops / sec / 1e12
        peak = self.peaks.get(row["precision"])
        row.pop("dtype", None)
        row.update(status="ok", seconds=sec, seconds_all=[s.wall for s in samples], out_mp=out_mp,
                   mp_per_s=out_mp / sec, gflop=flops / 1e9, gflop_per_mp=flops / 1e9 / out_mp, tflops=tflops,
                   peak_tflops=peak, peak_fraction=(tflops / peak) if peak else None, **verdict.as_row())
        if self.dev.type == "cuda":
            row["gpu_peak_mb"] = torch.cuda.max_memory_allocated(self.dev) / 2 ** 20
        return row

    def measure(self, precision: str, dtype: torch.dtype, tile: int, batch: int) -> dict:
        """One table row measured on its own (its repeats one after the other)."""
        row, inputs = self.start(precision, dtype, tile, batch)
        if inputs is None:
            return row
        return self.finish(row, [timed_forward(self.net, self.dev, dtype, inputs) for _ in range(self.reps)])


def run_throughput(cfg: BenchConfig, meter: Meter, log) -> list:
    """The table: every precision x tile x batch of ``cfg`` (quick: batches beyond 1 only at
    the smallest tile); a precision this device cannot run is one "skipped" row. Each row is
    warmed up on its own shape, then the repeats are interleaved (repeat 1 of every row, then
    repeat 2, ...), so a disturbance during the table shows in the spread of every row it hits
    instead of shifting one row unseen."""
    rows, started = [], []
    smallest = min(cfg.tiles)
    for precision in precision_list(cfg, meter.dev):
        dtype, why = precision_usable(precision, meter.dev)
        if dtype is None:
            rows.append({"precision": precision, "status": f"skipped: {why}"})
            log(f"  {precision}: skipped ({why})")
            continue
        for tile in cfg.tiles:
            for batch in cfg.batches:
                if cfg.quick and batch > 1 and tile != smallest:
                    continue
                row, inputs = meter.start(precision, dtype, tile, batch)
                rows.append(row)
                if inputs is None:
                    log(f"  {precision} tile {tile} batch {batch}: {row['status']}")
                else:
                    started.append((row, dtype, inputs, []))
    for _ in range(meter.reps):
        for row, dtype, inputs, samples in started:
            samples.append(timed_forward(meter.net, meter.dev, dtype, inputs))
    for row, _, _, samples in started:
        meter.finish(row, samples)
        flag = f"  UNRELIABLE: {'; '.join(row['unreliable'])}" if row["unreliable"] else ""
        log(f"  {row['precision']} tile {row['tile']} batch {row['batch']}: {row['seconds']:.3f} s, "
            f"{row['mp_per_s']:.3f} MP/s, {row['tflops']:.3f} TFLOP/s{flag}")
    return rows


def find_row(rows, precision: str, tile: int, batch: int = 1) -> dict | None:
    """The measured ("ok") row of that configuration, or None."""
    for r in rows:
        if (r.get("precision") == precision and r.get("tile") == tile and r.get("batch") == batch
                and r.get("status") == "ok"):
            return r
    return None

"""Side-by-side measurements in one run, so that their ratios mean the same on any machine:
the network's default path against the previous default (NCHW) and plain eager fp32, its
achieved FLOP/s against a large matmul timed now, and the two window plans end to end."""
from __future__ import annotations

import contextlib
import time

import torch

from ..net.transformer import KERNEL_AUTO, KERNEL_SDPA, set_kernel
from ..run import device
from ..run.options import DEFAULT_OVERLAP, RunOptions
from ..training.metrics import psnr
from .config import BenchConfig
from .end_to_end import timed_run
from .flops import count_flops
from .hardware import sync
from .disturbance import judge
from .throughput import Meter, time_forward


@contextlib.contextmanager
def network_path(net: torch.nn.Module, fmt: torch.memory_format, kernel: str, strips: bool):
    """``net`` in layout ``fmt`` with attention ``kernel`` and the HR stages in strips or not
    for a while, then back to the pipeline's own (channels_last, "auto", strips)."""
    net.to(memory_format=fmt)
    set_kernel(net, kernel)
    net.hr_strips = strips
    try:
        yield net
    finally:
        net.to(memory_format=torch.channels_last)
        set_kernel(net, KERNEL_AUTO)
        net.hr_strips = True


def matmul_tflops(dev: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """TFLOP/s of an n x n x n matmul in ``dtype``: what this device sustains on dense
    arithmetic, measured beside the network (a nominal peak means little on a shared CPU).
    The best of ``reps`` runs: a ~20 ms call is easily disturbed by another process, and the
    share is meant against what the cores can do."""
    a = torch.rand(n, n, device=dev).to(dtype)
    b = torch.rand(n, n, device=dev).to(dtype)
    times = []
    for i in range(reps + 2):
        sync(dev)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(dev)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / min(times) / 1e12


# the network paths compared (names in results and reports)
DEFAULT_PATH, PREVIOUS_PATH, EAGER_PATH = "default", "previous default (NCHW, SDPA, whole frames)", "eager fp32 NCHW"


def network_paths(cfg: BenchConfig, meter: Meter, log) -> dict:
    """At one tile: the default path (channels_last, the device's default precision, attention
    as attention() picks, HR stages in strips) against the previous default (same precision,
    NCHW, torch's SDPA, whole frames) and plain eager fp32 NCHW (likewise): seconds per
    forward, the outputs' PSNR against the fp32 reference, and FLOP/s against a same-run
    matmul."""
    tile = device.round_tile(cfg.compare_tile)
    dtype = device.resolve_precision("auto", meter.dev)
    paths = {DEFAULT_PATH: (torch.channels_last, dtype, KERNEL_AUTO, True),
             PREVIOUS_PATH: (torch.contiguous_format, dtype, KERNEL_SDPA, False),
             EAGER_PATH: (torch.contiguous_format, torch.float32, KERNEL_SDPA, False)}
    res = {"tile": tile, "precision": device.precision_name(dtype), "paths": {}}
    g = torch.Generator().manual_seed(1)
    lr = torch.rand(1, 4, 3, tile, tile, generator=g).to(meter.dev)
    fl = (torch.randn(1, 3, 4, tile, tile, generator=g) * 0.5).to(meter.dev)
    outputs = {}
    for name, (fmt, dt, kernel, strips) in paths.items():
        with network_path(meter.net, fmt, kernel, strips):
            verdict = judge(time_forward(meter.net, meter.dev, dt, 1, tile, cfg.reps, cfg.warmup))
            with torch.inference_mode(), device.autocast(meter.dev, dt):
                outputs[name] = meter.net(lr, fl).float()
        res["paths"][name] = {"seconds": verdict.median, **verdict.as_row()}
        log(f"  {name}: {res['paths'][name]['seconds']:.3f} s per forward")
    ref = outputs[EAGER_PATH]
    for name in paths:
        res["paths"][name]["psnr_vs_fp32_db"] = psnr(outputs[name].cpu().numpy(), ref.cpu().numpy(), peak=1.0)
    flops = count_flops(meter.model, 1, tile, tile)
    res["network_tflops"] = flops / res["paths"][DEFAULT_PATH]["seconds"] / 1e12
    res["matmul_tflops"] = matmul_tflops(meter.dev, dtype)
    log(f"  network {res['network_tflops']:.3f} TFLOP/s, {res['precision']} matmul {res['matmul_tflops']:.3f} TFLOP/s")
    return res


def window_plans(cfg: BenchConfig, meter: Meter, log) -> dict:
    """End to end on a ``cfg.window_frames``-frame stack: the fast plan against central."""
    dtype = device.resolve_precision("auto", meter.dev)
    res = {"frames": cfg.window_frames, "scene": cfg.window_scene}
    for mode in ("central", "fast"):
        options = RunOptions(tile_size=cfg.window_scene, overlap=DEFAULT_OVERLAP, device=str(meter.dev),
                             precision=device.precision_name(dtype), overwrite=True, threads=cfg.threads,
                             windows=mode)
        run = timed_run(options, cfg.window_scene, meter.model, meter.dev, cfg.workdir, frames=cfg.window_frames)
        res[mode] = {"wall_seconds": run["wall_seconds"], "model_seconds": run["stages"]["model"],
                     "pipeline_log": run["pipeline_log"]}
        log(f"  {mode}: {run['wall_seconds']:.1f} s wall, network {run['stages']['model']:.1f} s")
    return res

"""``mstt-stvsr bench``: how fast the network and the whole pipeline run on this machine.

Three measurements, all in one process so that their ratios compare like with like:

1. Network throughput: output megapixels per second of one forward (4 LR frames -> 7 HR
   frames) for LR tiles of several sizes, batch sizes and precisions, after warm-up, with the
   device synchronised. FLOPs are counted once per shape with ``FlopCounterMode`` on the meta
   device (no arithmetic is done; pure-PyTorch deformable conv so that its contraction counts),
   giving achieved TFLOP/s and the fraction of the device's peak.
2. End to end: ``pipeline.run_stack`` on a synthetic 4-frame georeferenced stack written with
   rasterio, timed by stage (read, flow, model, blend, write, and the network's waits for the
   reader and writer threads), with peak host RSS and GPU memory.
3. Overheads: the run's network time per output megapixel against the untiled throughput at
   the same tile and precision; and the analytic share of that caused by tile overlap and by
   the time windows (4 frames give 3 windows, each reconstructing only the outputs it owns).

Without a weights file a randomly initialised full model is used: speed does not depend on
the weights' values.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..run import device as accel
from ..run.options import RunOptions

SCALE = 4
N_IN, N_OUT = 4, 7
# busy seconds per stage (pipeline._Clock): the reader thread reads and crops flows, the writer
# blends and writes, beside the network; wait_* is the network thread idling for them
STAGES = ("read", "flow", "model", "blend", "write", "wait_flow", "wait_read", "wait_write")

# Dense tensor-core peaks in TFLOP/s from NVIDIA's datasheets (no sparsity). "tf32" applies
# to fp32 convolutions while cuDNN's TF32 is on (PyTorch's default).
GPU_PEAKS = {
    "H100 SXM": {"bf16": 989.0, "fp16": 989.0, "tf32": 494.0, "fp32": 67.0},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0},
    "H200": {"bf16": 989.0, "fp16": 989.0, "tf32": 494.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
}


@dataclass
class BenchConfig:
    device: str = "auto"
    tiles: tuple = (80, 160, 320)
    batches: tuple = (1, 2, 4)
    precisions: tuple | None = None  # None: fp32 + bf16 on CPU, fp32 + fp16 + bf16 on CUDA
    reps: int = 3
    warmup: int = 1
    scene: int = 2048  # LR side of the synthetic stack; 0 = no end-to-end run
    e2e_tile: int | None = None  # None: the pipeline's default for the device
    e2e_precision: str = "auto"
    e2e_batch: int | None = None  # tiles per forward in the end-to-end run (None: the pipeline's choice)
    overlap: int | None = None
    threads: int | None = None
    weights: str | None = None
    compile: bool = False
    quick: bool = False
    workdir: str | None = None  # where the synthetic stack goes (default: a temp dir)
    notes: list = field(default_factory=list)

    @classmethod
    def quick_config(cls, **kw) -> "BenchConfig":
        """A few minutes on a 2-core CPU: small tiles, one repetition, a 256-px scene; batches
        beyond 1 only at the smallest tile."""
        base = dict(tiles=(80, 160), batches=(1, 2), reps=1, warmup=1, scene=256, quick=True)
        base.update(kw)
        return cls(**base)


# -- device facts ----------------------------------------------------------------------------
def cpu_mhz() -> float | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("cpu mhz"):
                return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def cpu_peaks(threads: int) -> tuple[dict, str]:
    """Estimated peak TFLOP/s = threads x clock x FLOP per cycle per core: fp32 from the FMA
    width (assuming 2 FMA units, as server cores have), bf16 from AMX tiles (1024 FLOP/cycle)
    or AVX-512 BF16 dot products. Turbo, shared load and memory limits are ignored."""
    flags, mhz = accel.cpu_flags(), cpu_mhz()
    if not mhz:
        return {}, "peak unknown (no clock frequency in /proc/cpuinfo)"
    if "avx512f" in flags:
        fp32 = 64
    elif "avx2" in flags and "fma" in flags:
        fp32 = 32
    elif "avx" in flags:
        fp32 = 16
    else:
        return {}, "peak unknown (no AVX)"
    bf16 = 1024 if "amx_bf16" in flags else 2 * fp32 if "avx512_bf16" in flags else fp32
    ghz = mhz / 1000
    peaks = {"fp32": threads * ghz * fp32 / 1000, "bf16": threads * ghz * bf16 / 1000}
    how = (f"estimate: {threads} core(s) x {ghz:.2f} GHz x {fp32} FLOP/cycle fp32, {bf16} bf16"
           + (" (AMX)" if "amx_bf16" in flags else ""))
    return peaks, how


def gpu_peaks(name: str) -> tuple[dict, str]:
    n = name.upper()
    key = None
    if "H200" in n:
        key = "H200"
    elif "H100" in n and ("PCIE" in n):
        key = "H100 PCIe"
    elif "H100" in n and ("HBM3" in n or "SXM" in n):
        key = "H100 SXM"
    elif "A100" in n:
        key = "A100"
    if key is None:
        return {}, f"peak unknown for {name}"
    peaks = dict(GPU_PEAKS[key])
    if torch.backends.cudnn.allow_tf32:
        peaks["fp32"] = peaks["tf32"]  # fp32 convolutions run on TF32 tensor cores
    return peaks, f"{key} datasheet, dense" + (", fp32 = TF32 (cuDNN allow_tf32)" if torch.backends.cudnn.allow_tf32 else "")


def device_facts(dev: torch.device, threads: int) -> dict:
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        peaks, how = gpu_peaks(name)
        total = torch.cuda.get_device_properties(dev).total_memory
        return {"type": "cuda", "name": name, "memory_gb": round(total / 2 ** 30, 1), "peaks_tflops": peaks,
                "peak_source": how, "torch": torch.__version__, "cuda": torch.version.cuda}
    peaks, how = cpu_peaks(threads)
    return {"type": "cpu", "name": cpu_name(), "threads": threads, "logical_cpus": os.cpu_count(),
            "load_avg": _loadavg(), "peaks_tflops": peaks, "peak_source": how, "torch": torch.__version__}


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# -- FLOP counting ---------------------------------------------------------------------------
def meta_model(model: torch.nn.Module) -> torch.nn.Module:
    """A shape-only twin of ``model`` (same class and config) on the meta device, with the
    pure-PyTorch deformable conv: FlopCounterMode does not see inside torchvision's fused op,
    and the two compute the same contraction."""
    from ..net.dcn import set_backend
    from ..net.model import MSTT

    cfg = getattr(model, "config", None) or {}
    with torch.device("meta"):
        twin = MSTT(**cfg) if isinstance(model, MSTT) else type(model)()
    for mod in twin.modules():  # the DCN's divergence warning reads a value: none on meta
        if hasattr(mod, "_warned"):
            mod._warned = True
    set_backend(twin, "pure")
    return twin.eval()


def count_flops(model: torch.nn.Module, batch: int, height: int, width: int, fn=None) -> float:
    """FLOPs of one forward (``fn(net, lr, flows)``, default ``net(lr, flows)``) on a
    (batch, 4, 3, height, width) window, counted by ``torch.utils.flop_counter`` on the meta
    device. Counts convolutions and matmuls (incl. attention and the deformable conv's
    contraction); NOT grid_sample (flow warping and deformable sampling), interpolation or
    elementwise ops, which are memory-bound and a small share of the arithmetic."""
    from torch.utils.flop_counter import FlopCounterMode

    net = meta_model(model)
    lr = torch.empty(batch, N_IN, 3, height, width, device="meta")
    fl = torch.empty(batch, N_IN - 1, 4, height, width, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        (fn or (lambda n, a, b: n(a, b)))(net, lr, fl)
    return float(counter.get_total_flops())


# -- network throughput ----------------------------------------------------------------------
def load_bench_model(weights=None):
    from ..net.model import MSTT
    from ..net.weights import default_weights_path, load_model

    if weights:
        return load_model(weights), f"weights {weights}"
    if default_weights_path().exists():
        return load_model(None), f"default weights {default_weights_path().name}"
    torch.manual_seed(0)
    return MSTT(), "random full model (no weights file; speed does not depend on weights)"


def precision_list(cfg: BenchConfig, dev: torch.device) -> list:
    if cfg.precisions:
        return list(cfg.precisions)
    return ["fp32", "fp16", "bf16"] if dev.type == "cuda" else ["fp32", "bf16"]


def precision_usable(name: str, dev: torch.device) -> tuple[torch.dtype | None, str]:
    """(dtype, "") or (None, why not): the pipeline's own rules, then a real autocast conv."""
    try:
        dtype = accel.resolve_precision(name, dev)
    except InputError as exc:
        return None, str(exc)
    if dtype == torch.float32:
        return dtype, ""
    try:
        conv = torch.nn.Conv2d(3, 4, 3).to(dev)
        with torch.inference_mode(), accel.autocast(dev, dtype):
            y = conv(torch.rand(1, 3, 8, 8, device=dev))
        if y.dtype != dtype:
            return None, f"autocast to {name} left convolutions in {y.dtype}"
    except Exception as exc:  # an old CPU or build without the kernels
        return None, f"{name} autocast unavailable: {exc}"
    return dtype, ""


def time_forward(net, dev, dtype, batch: int, tile: int, reps: int, warmup: int, seed: int = 0) -> list:
    """Seconds per forward (full 7-output network, flows given) over ``reps`` runs."""
    g = torch.Generator().manual_seed(seed)
    lr = torch.rand(batch, N_IN, 3, tile, tile, generator=g).to(dev)
    fl = (torch.randn(batch, N_IN - 1, 4, tile, tile, generator=g) * 0.5).to(dev)
    times = []
    for i in range(warmup + reps):
        sync(dev)
        t0 = time.perf_counter()
        with torch.inference_mode(), accel.autocast(dev, dtype):
            y = net(lr, fl)
        sync(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        del y
    return times


def measure_config(net, model, dev, precision: str, dtype, tile: int, batch: int, reps: int, warmup: int,
                   flops_cache: dict, peaks: dict) -> dict:
    row = {"precision": precision, "tile": tile, "batch": batch}
    key = (tile, batch)
    if key not in flops_cache:
        flops_cache[key] = count_flops(model, batch, tile, tile)
    flops = flops_cache[key]
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    try:
        times = time_forward(net, dev, dtype, batch, tile, reps, warmup)
    except Exception as exc:
        if not accel.is_oom(exc):
            raise
        accel.free_memory(dev)
        row.update(status="out of memory")
        return row
    sec = statistics.median(times)
    out_mp = batch * N_OUT * (SCALE * tile) ** 2 / 1e6
    peak = peaks.get(precision)
    row.update(status="ok", seconds=sec, seconds_all=times, out_mp=out_mp, mp_per_s=out_mp / sec,
               gflop=flops / 1e9, gflop_per_mp=flops / 1e9 / out_mp, tflops=flops / sec / 1e12,
               peak_tflops=peak, peak_fraction=(flops / sec / 1e12 / peak) if peak else None)
    if dev.type == "cuda":
        row["gpu_peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 20
    return row


def run_throughput(cfg: BenchConfig, net, model, dev, peaks: dict, log) -> list:
    rows, flops_cache = [], {}
    smallest = min(cfg.tiles)
    for precision in precision_list(cfg, dev):
        dtype, why = precision_usable(precision, dev)
        if dtype is None:
            rows.append({"precision": precision, "status": f"skipped: {why}"})
            log(f"  {precision}: skipped ({why})")
            continue
        for tile in cfg.tiles:
            for batch in cfg.batches:
                if cfg.quick and batch > 1 and tile != smallest:
                    continue
                row = measure_config(net, model, dev, precision, dtype, tile, batch, cfg.reps, cfg.warmup,
                                     flops_cache, peaks)
                rows.append(row)
                if row["status"] == "ok":
                    log(f"  {precision} tile {tile} batch {batch}: {row['seconds']:.3f} s, "
                        f"{row['mp_per_s']:.3f} MP/s, {row['tflops']:.3f} TFLOP/s")
                else:
                    log(f"  {precision} tile {tile} batch {batch}: {row['status']}")
    return rows


def find_row(rows, precision, tile, batch=1):
    for r in rows:
        if r.get("precision") == precision and r.get("tile") == tile and r.get("batch") == batch and r.get("status") == "ok":
            return r
    return None


# -- synthetic stack -------------------------------------------------------------------------
def write_synthetic_stack(folder, size: int, frames: int = N_IN, seed: int = 0) -> list:
    """``frames`` uint8 RGB GeoTIFFs of ``size`` x ``size`` (UTM, 1 m, one second apart):
    procedural ground drifting by a fraction of a pixel per frame, so flow has real work."""
    import cv2
    import rasterio
    from affine import Affine

    from ..training.synth import procedural_ground

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pad = 8
    ground = procedural_ground(np.random.default_rng(seed), size + 2 * pad, size + 2 * pad)
    paths = []
    for t in range(frames):
        m = np.float32([[1, 0, pad + 0.6 * t], [0, 1, pad - 0.35 * t]])
        img = cv2.warpAffine(ground, m, (size, size), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)
        data = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8).transpose(2, 0, 1)
        path = folder / f"bench_{t}.tif"
        profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32650",
                       transform=Affine(1.0, 0, 500000.0, 0, -1.0, 4400000.0), photometric="RGB")
        if size >= 256:
            profile.update(tiled=True, blockxsize=256, blockysize=256)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            dst.update_tags(TIFFTAG_DATETIME=f"2021:05:03 10:15:{t:02d}")
        paths.append(str(path))
    return paths


# -- memory ----------------------------------------------------------------------------------
def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_bytes(field_name: str = "VmHWM") -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    if field_name == "VmHWM":
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return None


# -- end to end ------------------------------------------------------------------------------
def window_flop_plan(model, tile: int, n_frames: int = N_IN) -> dict:
    """FLOPs the pipeline's network calls make per tile (each time window reconstructs only the
    outputs it owns) against one full 7-output forward, both counted on the meta device."""
    from ..run.windows import plan_windows

    full = count_flops(model, 1, tile, tile)
    per_window = []
    for win in plan_windows(n_frames):
        keep = [pos for _, pos in win.outputs]
        per_window.append(count_flops(model, 1, tile, tile, fn=lambda n, a, b, k=keep: n(a, b, keep=k)))
    return {"windows": len(per_window), "flops_full_forward": full, "flops_windows": sum(per_window),
            "window_factor": sum(per_window) / full}


def run_e2e(cfg: BenchConfig, model, dev, rows: list, peaks: dict, log) -> dict:
    from ..run import pipeline

    e2e_dtype = accel.resolve_precision(cfg.e2e_precision, dev)
    precision = accel.precision_name(e2e_dtype)
    tile = accel.round_tile(cfg.e2e_tile) if cfg.e2e_tile else accel.default_tile_size(dev, e2e_dtype, model)
    overlap = accel.DEFAULT_OVERLAP if cfg.overlap is None else int(cfg.overlap)
    size = int(cfg.scene)
    res = {"scene": size, "frames": N_IN, "tile": tile, "overlap": overlap, "precision": precision}

    # untiled throughput at the same tile and precision, measured now if the table lacks it
    ref = find_row(rows, precision, tile, 1)
    if ref is None:
        log(f"  reference: {precision} tile {tile} batch 1")
        ref = measure_config(accel.prepare_model(model, dev), model, dev, precision, e2e_dtype, tile, 1,
                             cfg.reps, cfg.warmup, {}, peaks)
        ref["extra"] = True
        rows.append(ref)

    grid = pipeline.make_grid(size, size, tile, overlap)
    res["grid"] = {"tiles": len(grid), "rows": len(grid.rows), "cols": len(grid.cols),
                   "area_factor": sum(r.size for r in grid.rows) * sum(c.size for c in grid.cols) / size ** 2}
    plan = window_flop_plan(model, tile)
    res["windows"] = plan
    if ref.get("status") == "ok":
        est = len(grid) * plan["window_factor"] * ref["seconds"]
        log(f"  {len(grid)} tiles of {tile} x {plan['windows']} time windows: network time estimated "
            f"at {est / 60:.1f} min")

    with tempfile.TemporaryDirectory(prefix="mstt-bench-", dir=cfg.workdir) as tmp:
        t0 = time.perf_counter()
        paths = write_synthetic_stack(Path(tmp) / "in", size)
        res["synth_seconds"] = time.perf_counter() - t0
        out_dir = Path(tmp) / "out"
        options = RunOptions(tile_size=tile, overlap=overlap, device=str(dev), precision=precision,
                             overwrite=True, threads=cfg.threads, tiles_per_forward=cfg.e2e_batch)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        rss_before = rss_bytes("VmRSS")
        res["rss_peak_reset"] = reset_peak_rss()
        logs: list = []
        t0 = time.perf_counter()
        timings: dict = {}
        out = pipeline.run_stack(paths, out_dir, options, model=model,
                                 hooks=pipeline.Hooks(timings=timings, log=logs.append))
        wall = time.perf_counter() - t0
        stages = {s: float(timings.get(s, 0.0)) for s in STAGES}
        res["pipeline_log"] = [line for line in logs if line.startswith(("tiles:", "out of"))]
        res["outputs"] = len(out)
        res["out_bytes"] = sum(Path(p).stat().st_size for p in out)
    res["rss_before_mb"] = (rss_before or 0) / 2 ** 20
    res["rss_peak_mb"] = (rss_bytes("VmHWM") or 0) / 2 ** 20
    res["rss_peak_scope"] = "this run" if res["rss_peak_reset"] else "whole process (peak could not be reset)"
    if dev.type == "cuda":
        res["gpu_peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 20
    out_mp = len(out) * (SCALE * size) ** 2 / 1e6
    # everything the network thread did not spend in the network: scene flow, waits, commit...
    res["not_model_seconds"] = max(0.0, wall - stages["model"])
    res.update(wall_seconds=wall, stages=stages, out_mp=out_mp, mp_per_s=out_mp / wall)

    if ref.get("status") == "ok":
        # untiled: the scene's outputs at the network's own throughput (one 7-output forward)
        ideal = out_mp / ref["mp_per_s"]
        res["model_ideal_seconds"] = ideal
        res["network_overhead"] = stages["model"] / ideal - 1  # tiles and time windows together
        res["window_overhead_flops"] = plan["window_factor"] - 1
        res["tiled_overhead"] = stages["model"] / (ideal * plan["window_factor"]) - 1
        res["tiled_overhead_expected"] = res["grid"]["area_factor"] - 1
        res["end_to_end_overhead"] = wall / ideal - 1
    return res


# -- the whole benchmark ---------------------------------------------------------------------
def run_bench(cfg: BenchConfig, model=None, log=None) -> dict:
    """Run the benchmark; returns a JSON-ready dict (see ``format_report``)."""
    log = log or (lambda line: None)
    dev = accel.resolve_device(cfg.device)
    threads = accel.set_threads(cfg.threads) if dev.type == "cpu" else torch.get_num_threads()
    facts = device_facts(dev, threads)
    peaks = facts.get("peaks_tflops", {})
    if model is None:
        model, source = load_bench_model(cfg.weights)
    else:
        source = f"given model {getattr(model, 'config', '')}"
    from ..run.compile import compile_stages, configure_backends

    backend = configure_backends(dev)
    net = accel.prepare_model(model, dev)
    compiled = compile_stages(net, log=log) if cfg.compile else []
    from ..net.dcn import deform_conv_backend

    result = {"device": facts, "model": source, "deform_conv": deform_conv_backend(), "backend": backend,
              "compiled": compiled, "config": {k: v for k, v in asdict(cfg).items() if k != "notes"},
              "flop_note": "FLOPs by torch.utils.flop_counter on the meta device: convolutions and matmuls "
                           "(attention, deformable-conv contraction); grid_sample (flow warping, deformable "
                           "sampling), interpolation and elementwise ops are not counted",
              "notes": list(cfg.notes)}
    log(f"device: {facts['name']} ({dev}); model: {source}; deformable conv: {result['deform_conv']}")
    t0 = time.perf_counter()
    rows = []
    if cfg.tiles and cfg.batches:
        log("network throughput")
        rows = run_throughput(cfg, net, model, dev, peaks, log)
    result["throughput"] = rows
    if cfg.scene:
        log(f"end to end: {N_IN} frames of {cfg.scene}x{cfg.scene}")
        result["e2e"] = run_e2e(cfg, model, dev, rows, peaks, log)
    result["ratios"] = ratios(result)
    result["seconds"] = time.perf_counter() - t0
    return result


def ratios(result: dict) -> dict:
    """Ratios between measurements of this run only."""
    rows = result.get("throughput", [])
    out = {}
    ok = [r for r in rows if r.get("status") == "ok" and not r.get("extra")]
    for r in ok:
        if r["precision"] != "fp32" and r["batch"] == 1:
            base = find_row(rows, "fp32", r["tile"], 1)
            if base:
                out[f"{r['precision']}/fp32 speed-up, tile {r['tile']}"] = r["mp_per_s"] / base["mp_per_s"]
        if r["batch"] > 1:
            base = find_row(rows, r["precision"], r["tile"], 1)
            if base:
                out[f"batch {r['batch']}/1 throughput, {r['precision']} tile {r['tile']}"] = r["mp_per_s"] / base["mp_per_s"]
    tiles = sorted({r["tile"] for r in ok})
    for prec in sorted({r["precision"] for r in ok}):
        small = find_row(rows, prec, tiles[0], 1) if tiles else None
        for t in tiles[1:]:
            big = find_row(rows, prec, t, 1)
            if small and big:
                out[f"tile {t}/{tiles[0]} throughput, {prec}"] = big["mp_per_s"] / small["mp_per_s"]
    e2e = result.get("e2e")
    if e2e:
        st, wall = e2e["stages"], e2e["wall_seconds"]
        out["model share of wall time"] = st["model"] / wall
        out["flow+IO share of wall time (all but the network)"] = e2e["not_model_seconds"] / wall
        out["network waiting for scene optical flow"] = st["wait_flow"] / wall
        out["network waiting for reads/flow crops"] = st["wait_read"] / wall
        out["network waiting for blend/writes"] = st["wait_write"] / wall
        if "tiled_overhead" in e2e:
            out["tiled overhead (overlap, margins; measured)"] = e2e["tiled_overhead"]
            out["tiled overhead expected (tile area / scene area)"] = e2e["tiled_overhead_expected"]
            out["time-window overhead (3 windows for 4 frames; FLOPs)"] = e2e["window_overhead_flops"]
            out["run's network time vs untiled 7-output forward"] = e2e["network_overhead"]
            out["end-to-end overhead (wall vs untiled network)"] = e2e["end_to_end_overhead"]
    return out


# -- report ----------------------------------------------------------------------------------
def _fmt(v, spec=".3g"):
    if v is None:
        return "-"
    return format(v, spec)


def format_report(result: dict) -> str:
    d = result["device"]
    lines = [f"MSTT benchmark on {d['name']} ({d['type']}" + (f", {d['threads']} threads, load {d.get('load_avg')}"
             if d["type"] == "cpu" else f", {d.get('memory_gb')} GB") + f"), torch {d['torch']}",
             f"model: {result['model']}; deformable conv: {result['deform_conv']}"
             + (f"; compiled: {', '.join(result['compiled'])}" if result.get("compiled") else ""),
             f"peak: {d.get('peak_source')}", ""]
    rows = result.get("throughput", [])
    if rows:
        head = f"{'precision':>9} {'tile':>5} {'batch':>5} {'s/fwd':>8} {'out MP/s':>9} {'GFLOP/MP':>9} {'TFLOP/s':>8} {'% peak':>7}"
        if d["type"] == "cuda":
            head += f" {'GPU MB':>8}"
        lines += ["Network: 4 LR frames -> 7 HR frames, one forward (flows given)", head]
        for r in rows:
            if r.get("status") != "ok":
                lines.append(f"{r.get('precision', ''):>9} {r.get('tile', ''):>5} {r.get('batch', ''):>5}  {r.get('status')}")
                continue
            frac = r.get("peak_fraction")
            line = (f"{r['precision']:>9} {r['tile']:>5} {r['batch']:>5} {r['seconds']:>8.3f} {r['mp_per_s']:>9.4g} "
                    f"{r['gflop_per_mp']:>9.4g} {r['tflops']:>8.4g} {_fmt(None if frac is None else 100 * frac, '.1f'):>7}")
            if d["type"] == "cuda":
                line += f" {r.get('gpu_peak_mb', 0):>8.0f}"
            lines.append(line)
        lines += [result["flop_note"] + ".", ""]
    e = result.get("e2e")
    if e:
        lines.append(f"End to end: {e['frames']} frames of {e['scene']}x{e['scene']} -> {e['outputs']} frames of "
                     f"{SCALE * e['scene']}x{SCALE * e['scene']}, tile {e['tile']}, overlap {e['overlap']}, "
                     f"{e['precision']}, {e['grid']['tiles']} tiles x {e['windows']['windows']} time windows")
        lines.append(f"  wall {e['wall_seconds']:.2f} s, {e['mp_per_s']:.4g} output MP/s; peak host RSS "
                     f"{e['rss_peak_mb']:.0f} MB ({e['rss_peak_scope']}; {e['rss_before_mb']:.0f} MB before)"
                     + (f"; peak GPU {e['gpu_peak_mb']:.0f} MB" if "gpu_peak_mb" in e else ""))
        for line in e.get("pipeline_log", []):
            lines.append(f"  pipeline: {line}")
        lines.append(f"  {'stage':>10} {'seconds':>8} {'of wall':>7}   (busy time; reader and writer threads overlap the network)")
        for s, v in e["stages"].items():
            lines.append(f"  {s:>10} {v:>8.2f} {100 * v / e['wall_seconds']:>6.1f}%")
        lines.append("")
    if result.get("ratios"):
        lines.append("Ratios (all from this run)")
        width = max(len(k) for k in result["ratios"])
        for k, v in result["ratios"].items():
            pct = any(w in k for w in ("share", "overhead", "vs untiled"))
            lines.append(f"  {k:<{width}}  {100 * v:.1f}%" if pct else f"  {k:<{width}}  {v:.2f}x")
    for n in result.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)


# -- CLI -------------------------------------------------------------------------------------
def _ints(text: str) -> tuple:
    try:
        vals = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def _precisions(text: str) -> tuple:
    vals = tuple(v.strip().lower() for v in str(text).split(",") if v.strip())
    bad = [v for v in vals if v not in accel.DTYPES]
    if bad or not vals:
        raise argparse.ArgumentTypeError(f"precisions are fp32, fp16, bf16; got {text!r}")
    return vals


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="a few minutes on a small CPU: tiles 80,160, 1 repetition, 256-px scene")
    parser.add_argument("--device", default="auto", choices=accel.DEVICES, help="default auto: CUDA if available")
    parser.add_argument("--tiles", type=_ints, help="LR tile sizes (default 80,160,320)")
    parser.add_argument("--batches", type=_ints, help="tiles per forward (default 1,2,4; CPU 1,2)")
    parser.add_argument("--precisions", type=_precisions, help="default fp32,bf16 on CPU, fp32,fp16,bf16 on CUDA")
    parser.add_argument("--reps", type=int, help="timed repetitions per configuration (default 3, quick 1)")
    parser.add_argument("--warmup", type=int, help="untimed runs first (default 1)")
    parser.add_argument("--scene", type=int, help="LR side of the synthetic 4-frame stack (default 2048, quick 256; 0 = skip)")
    parser.add_argument("--e2e-tile", type=int, help="tile of the end-to-end run (default: the pipeline's default)")
    parser.add_argument("--e2e-precision", default="auto", choices=accel.PRECISIONS, help="precision of the end-to-end run")
    parser.add_argument("--e2e-batch", type=int, help="tiles per forward in the end-to-end run (default: the pipeline's)")
    parser.add_argument("--overlap", type=int, help=f"tile overlap of the end-to-end run (default {accel.DEFAULT_OVERLAP})")
    parser.add_argument("--threads", type=int, help="CPU threads (default: all available)")
    parser.add_argument("--weights", help="weights file (default: the shipped weights, else a random model)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network's stages first")
    parser.add_argument("--workdir", help="folder for the temporary synthetic stack (default: system temp)")
    parser.add_argument("--json", metavar="PATH", help="also save all results as JSON")


def config_from_args(args) -> BenchConfig:
    dev = accel.resolve_device(args.device)
    cfg = BenchConfig.quick_config() if args.quick else BenchConfig()
    if dev.type == "cpu" and not args.quick:
        cfg.batches = (1, 2)
    for name in ("tiles", "batches", "precisions", "reps", "warmup", "scene", "e2e_tile", "e2e_batch", "overlap", "threads",
                 "weights", "workdir"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(cfg, name, value)
    cfg.device, cfg.e2e_precision, cfg.compile = args.device, args.e2e_precision, bool(args.compile)
    if cfg.reps < 1 or cfg.warmup < 0 or cfg.scene < 0:
        raise InputError("--reps must be >= 1, --warmup >= 0 and --scene >= 0")
    if dev.type == "cpu":
        cfg.notes.append("CPU figures depend on other processes sharing the cores (see load average)")
    return cfg


def save_json(result: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def main(args) -> int:
    cfg = config_from_args(args)
    result = run_bench(cfg, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_report(result))
    if args.json:
        print(f"saved {save_json(result, args.json)}", file=sys.stderr)
    return 0

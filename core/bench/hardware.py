"""The machine a benchmark runs on: its name, memory and load, and the peak TFLOP/s that
achieved throughput is compared with (datasheet figures on a GPU, an estimate on a CPU)."""
from __future__ import annotations

import os

import torch

from ..run.device import cpu_info

# Dense tensor-core peaks in TFLOP/s from NVIDIA's datasheets (no sparsity). "tf32" applies
# to fp32 convolutions while cuDNN's TF32 is on (PyTorch's default).
GPU_PEAKS = {
    "H100 SXM": {"bf16": 989.0, "fp16": 989.0, "tf32": 494.0, "fp32": 67.0},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0},
    "H200": {"bf16": 989.0, "fp16": 989.0, "tf32": 494.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
}
AMX_BF16_FLOP_PER_CYCLE = 1024  # one AMX tile multiply per cycle per core


def gpu_model(name: str) -> str | None:
    """The ``GPU_PEAKS`` entry for a CUDA device name, or None. Only the PCIe H100 says so in
    its name; the SXM one reports its memory (HBM3)."""
    n = name.upper()
    if "H200" in n:
        return "H200"
    if "H100" in n and "PCIE" in n:
        return "H100 PCIe"
    if "H100" in n and ("HBM3" in n or "SXM" in n):
        return "H100 SXM"
    if "A100" in n:
        return "A100"
    return None


def gpu_peaks(name: str) -> tuple[dict, str]:
    """(peak TFLOP/s per precision, where they come from) for a CUDA device name."""
    key = gpu_model(name)
    if key is None:
        return {}, f"peak unknown for {name}"
    peaks = dict(GPU_PEAKS[key])
    tf32 = torch.backends.cudnn.allow_tf32
    if tf32:
        peaks["fp32"] = peaks["tf32"]  # fp32 convolutions run on TF32 tensor cores
    return peaks, f"{key} datasheet, dense" + (", fp32 = TF32 (cuDNN allow_tf32)" if tf32 else "")


def cpu_peaks(threads: int) -> tuple[dict, str]:
    """Estimated peak TFLOP/s = threads x clock x FLOP per cycle per core: fp32 from the FMA
    width, bf16 from AMX tiles or AVX-512 BF16 dot products (twice fp32). Turbo, shared load
    and memory limits are ignored."""
    info = cpu_info()
    flags, mhz = info["flags"], info["cpu MHz"]
    if not mhz:
        return {}, "peak unknown (no clock frequency in /proc/cpuinfo)"
    fp32 = fp32_flop_per_cycle(flags)
    if fp32 is None:
        return {}, "peak unknown (no AVX)"
    amx = "amx_bf16" in flags
    bf16 = AMX_BF16_FLOP_PER_CYCLE if amx else 2 * fp32 if "avx512_bf16" in flags else fp32
    ghz = mhz / 1000
    peaks = {"fp32": threads * ghz * fp32 / 1000, "bf16": threads * ghz * bf16 / 1000}
    how = (f"estimate: {threads} core(s) x {ghz:.2f} GHz x {fp32} FLOP/cycle fp32, {bf16} bf16"
           + (" (AMX)" if amx else ""))
    return peaks, how


def fp32_flop_per_cycle(flags) -> int | None:
    """fp32 FLOP per cycle per core of the widest vectors, assuming 2 FMA units as server
    cores have: 16 lanes (AVX-512) x 2 FLOP x 2 units; None without AVX."""
    if "avx512f" in flags:
        return 64
    if "avx2" in flags and "fma" in flags:
        return 32
    if "avx" in flags:
        return 16  # no FMA: a multiply and an add, each 8 lanes
    return None


def device_facts(dev: torch.device, threads: int) -> dict:
    """Name, size and peaks of the device, and the versions that its figures depend on."""
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        peaks, how = gpu_peaks(name)
        total = torch.cuda.get_device_properties(dev).total_memory
        return {"type": "cuda", "name": name, "memory_gb": round(total / 2 ** 30, 1), "peaks_tflops": peaks,
                "peak_source": how, "torch": torch.__version__, "cuda": torch.version.cuda}
    peaks, how = cpu_peaks(threads)
    return {"type": "cpu", "name": cpu_info()["model name"], "threads": threads, "logical_cpus": os.cpu_count(),
            "load_avg": load_average(), "peaks_tflops": peaks, "peak_source": how, "torch": torch.__version__}


def load_average() -> list | None:
    """1, 5 and 15-minute load: other processes on the cores slow a CPU benchmark down."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def sync(dev: torch.device) -> None:
    """Wait for the device's queued work, so that a timer sees it finish."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)

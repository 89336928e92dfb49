"""Where and how the network runs: device, precision, memory layout, threads, tile size, and
recovery from running out of memory (smaller tiles).

CPU runs in fp32, unless bf16 autocast was measured faster on this kind of processor
(``CPU_BF16_SPEEDUP``: AMX tiles 3.7x, AMD's AVX-512 BF16 1.9x) and stays within 0.05 dB of fp32
(tested), so "auto" picks it there; elsewhere it is slower, even on an Intel Xeon with AVX-512 BF16
but no usable AMX (0.56-0.71x: a VM that hides AMX). CUDA runs under
autocast in bf16 where the GPU supports it (fp32's range, so the attention's long dot products
cannot overflow), else fp16, with channels_last convolutions. The default tile is the largest
that the free GPU memory holds (measured activation cost per LR pixel), a fixed size on CPU.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import platform

import torch

from ..errors import InputError
from ..net.spec import MULTIPLE
from .options import DEVICES, PRECISIONS

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# CPU defaults, measured (2-core CPU, full network): cost per scene pixel including overlap is
# flat from 80 to 240 px tiles (~290 us/px at overlap 16), peak memory is not (0.76 / 1.35 /
# 2.29 GB for 80 / 160 / 240), and larger tiles give the attention more context and fewer seams.
# 160 with 16 overlap (23 % extra work) is the balance; tools/tile_study.py measures quality.
CPU_TILE = 160  # the largest tile a CPU run picks by itself (cost.cpu_tile chooses 80 or 160)
MIN_TILE = 80
MAX_TILE = 960
# Peak activation bytes per LR tile pixel of the full model (nf=64) in the pipeline's inference
# (outputs reconstructed one at a time): measured 26-28 KB/px on CPU in fp32 at 160-240 px
# tiles; x1.5 for the CUDA caching allocator and cuDNN workspaces.
BYTES_PER_LR_PX_FP32 = 40_000


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """The first processor's ``model name``, ``vendor_id``, ``cpu MHz`` (float or None) and feature
    ``flags`` (a frozenset), from Linux /proc/cpuinfo; a name from ``platform`` and no vendor or
    flags elsewhere."""
    info = {"model name": platform.processor() or "CPU", "vendor_id": "", "cpu MHz": None, "flags": frozenset()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "vendor_id"):
                    info[key] = value.strip()
                elif key == "cpu MHz":
                    info[key] = float(value)
                elif key == "flags":
                    info[key] = frozenset(value.split())
                elif not key and info["flags"]:  # blank line: the first processor is complete
                    break
    except (OSError, ValueError):
        pass
    return info


def cpu_flags() -> frozenset:
    """The processor's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    return cpu_info()["flags"]


# Speed of bf16 autocast over fp32 per CPU kind: median seconds per forward of the full network
# on an 80-px LR tile, 2 cores (README "Performance"). Intel AMX 1.467 / 0.394 (issue 26, idle);
# AMD EPYC with AVX-512 BF16 0.959 / 0.506; an Intel Xeon with AVX-512 BF16 whose hypervisor hides
# AMX 1.387 / 2.481 and 1.394 / 2.428, two runs in a row (0.59-0.71x in three earlier ones):
# oneDNN's bf16 convolutions without AMX tiles are no faster than fp32 there, and the casts
# around them cost the rest. Unmeasured kinds run fp32.
CPU_BF16_SPEEDUP = {"amx": 3.72, "avx512_bf16": 1.90, "avx512_bf16_intel": 0.57}


def cpu_kind(flags: set | None = None, vendor: str | None = None) -> str:
    """The CPU families whose speeds were measured apart: "amx" (Intel AMX tiles),
    "avx512_bf16_intel" (an Intel CPU with AVX-512 BF16 but no AMX), "avx512_bf16" (AVX-512 BF16
    elsewhere, e.g. AMD EPYC Zen 4) or "other". ``flags`` / ``vendor``: this machine's by default."""
    flags = cpu_flags() if flags is None else flags
    vendor = cpu_info()["vendor_id"] if vendor is None else vendor
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16_intel" if vendor == "GenuineIntel" else "avx512_bf16"
    return "other"


def cpu_fast_bf16(flags: set | None = None, vendor: str | None = None) -> bool:
    """True when bf16 autocast was measured faster than fp32 on this CPU kind
    (``CPU_BF16_SPEEDUP``) and oneDNN is there to run it."""
    return CPU_BF16_SPEEDUP.get(cpu_kind(flags, vendor), 0.0) > 1.0 and torch.backends.mkldnn.is_available()


def resolve_device(name: str | None = "auto") -> torch.device:
    """"auto" = CUDA when available, else CPU; "cuda" (or "cuda:N") fails clearly without it."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            why = "this PyTorch has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise InputError(f"device {name!r} requested but CUDA is not available ({why}, torch "
                             f"{torch.__version__}); use --device cpu or auto")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    raise InputError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)} (or cuda:N)")


def resolve_precision(name: str | None, device: torch.device) -> torch.dtype:
    name = (name or "auto").strip().lower()
    if name not in PRECISIONS:
        raise InputError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    if name == "auto":
        if device.type != "cuda":
            return torch.bfloat16 if cpu_fast_bf16() else torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and name == "fp16":
        raise InputError("precision fp16 needs a CUDA device; use fp32 or bf16 on CPU")
    if device.type == "cuda" and name == "bf16" and not torch.cuda.is_bf16_supported():
        raise InputError("this GPU does not support bf16; use fp16 or fp32")
    return DTYPES[name]


def precision_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision for fp16/bf16 (weights stay fp32); a no-op context for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_threads(threads: int | None = None) -> int:
    """CPU threads for torch: as asked, else all cores this process may use."""
    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:
            threads = os.cpu_count() or 1
    threads = max(1, int(threads))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Eval mode on the device, channels_last: tensor-core friendly convolutions on CUDA, and
    oneDNN's fastest layout on CPU (the full network at 160 px in bf16: 2.29 s against 2.72 s
    for NCHW, measured on a 2-core AMD EPYC; same outputs). Runs happen under inference_mode,
    so parameters are left as the caller had them."""
    return model.eval().to(device).to(memory_format=torch.channels_last)


def round_tile(n: int) -> int:
    """Tiles are multiples of the network's 80-px padding unit: the padding would cost the same
    compute, so real neighbouring pixels are used instead."""
    return max(MIN_TILE, int(math.ceil(int(n) / MULTIPLE) * MULTIPLE))


def model_width(model) -> int:
    cfg = getattr(model, "config", None) or {}
    return int(cfg.get("nf", 64))


def default_tile_size(device: torch.device, dtype: torch.dtype = torch.float32, model=None) -> int:
    """CPU: a fixed size (speed per pixel is flat above it, memory stays ~2 GB). CUDA: the
    largest multiple of 80 whose estimated activations fill half of the free memory."""
    if device.type != "cuda":
        return CPU_TILE
    free, _ = torch.cuda.mem_get_info(device)
    per_px = BYTES_PER_LR_PX_FP32 * (model_width(model) / 64) * (0.5 if dtype != torch.float32 else 1.0)
    side = math.sqrt(0.5 * free / per_px)
    return int(min(MAX_TILE, max(MIN_TILE, (side // MULTIPLE) * MULTIPLE)))


def smaller_tile(tile: int) -> int | None:
    """Next tile size to try after running out of memory, or None when already minimal."""
    if tile <= MIN_TILE:
        return None
    return max(MIN_TILE, int((tile * 0.7) // MULTIPLE * MULTIPLE))


def is_oom(exc: BaseException) -> bool:
    """CUDA out of memory, or a failed CPU allocation (torch's or numpy's MemoryError)."""
    if isinstance(exc, (MemoryError, getattr(torch.cuda, "OutOfMemoryError", MemoryError))):
        return True
    msg = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg
                                              or "not enough memory" in msg)


def free_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

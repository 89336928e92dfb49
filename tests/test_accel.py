"""Device and precision choice, tile sizes, out-of-memory recognition."""
import pytest
import torch

from mstt_stvsr.core.run import device as accel
from mstt_stvsr.core.errors import InputError


def test_auto_device_and_precision():
    dev = accel.resolve_device("auto")
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu")
    cpu = torch.device("cpu")
    expect = torch.bfloat16 if accel.cpu_fast_bf16() else torch.float32
    assert accel.resolve_precision("auto", cpu) == expect
    assert accel.resolve_precision("bf16", cpu) == torch.bfloat16
    assert accel.resolve_precision("fp32", cpu) == torch.float32


def test_cpu_bf16_only_where_measured_faster():
    """auto picks bf16 on the CPU kinds where it was measured faster than fp32 (AMX tiles; AMD's
    AVX-512 BF16), not where it was measured slower (an Intel Xeon with AVX-512 BF16 but no
    usable AMX: 0.56-0.71x) nor where bf16 would be emulated."""
    mkl = torch.backends.mkldnn.is_available()
    amd, intel = "AuthenticAMD", "GenuineIntel"
    assert accel.cpu_fast_bf16({"avx2", "fma"}, amd) is False
    assert accel.cpu_fast_bf16({"avx512f"}, intel) is False
    assert accel.cpu_fast_bf16({"avx512f", "avx512_bf16"}, amd) is mkl
    assert accel.cpu_fast_bf16({"avx512f", "avx512_bf16"}, intel) is False
    assert accel.cpu_fast_bf16({"avx512_bf16", "amx_bf16", "amx_tile"}, intel) is mkl
    assert accel.cpu_kind({"avx512_bf16"}, intel) == "avx512_bf16_intel"
    assert accel.cpu_kind({"avx512_bf16"}, amd) == "avx512_bf16"
    assert accel.cpu_kind({"avx512_bf16", "amx_bf16"}, intel) == "amx"
    assert accel.cpu_fast_bf16() == accel.cpu_fast_bf16(accel.cpu_flags(), accel.cpu_info()["vendor_id"])
    # the rule is the measured speed-up, one table for the kinds
    assert {k for k, v in accel.CPU_BF16_SPEEDUP.items() if v > 1} == {"amx", "avx512_bf16"}


def test_clear_errors_for_impossible_choices():
    with pytest.raises(InputError, match="unknown device 'gpu'"):
        accel.resolve_device("gpu")
    with pytest.raises(InputError, match="unknown precision 'fp8'"):
        accel.resolve_precision("fp8", torch.device("cpu"))
    with pytest.raises(InputError, match="fp16 needs a CUDA device"):
        accel.resolve_precision("fp16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            accel.resolve_device("cuda")


def test_autocast_only_for_reduced_precision():
    with accel.autocast(torch.device("cpu"), torch.float32):
        assert not torch.is_autocast_enabled("cpu")
    with accel.autocast(torch.device("cpu"), torch.bfloat16):
        y = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
    assert y.dtype == torch.bfloat16


def test_tile_sizes():
    assert [accel.round_tile(n) for n in (1, 80, 81, 200, 640)] == [80, 80, 160, 240, 640]
    assert accel.default_tile_size(torch.device("cpu")) == accel.CPU_TILE
    assert accel.CPU_TILE % accel.MULTIPLE == 0
    seq = [480]
    while (t := accel.smaller_tile(seq[-1])) is not None:
        seq.append(t)
    assert seq == sorted(seq, reverse=True) and seq[-1] == accel.MIN_TILE and all(t % 80 == 0 for t in seq)


def test_out_of_memory_is_recognised():
    assert accel.is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert accel.is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert accel.is_oom(MemoryError())
    assert not accel.is_oom(RuntimeError("shape mismatch"))
    assert not accel.is_oom(ValueError("out of memory"))


def test_every_precision_choice_resolves_on_cpu():
    """The choices the CLI and QGIS offer (one torch-free list) are the ones the device layer takes."""
    from mstt_stvsr.core.run.options import PRECISIONS

    for name in PRECISIONS:
        if name == "fp16":
            with pytest.raises(InputError, match="fp16 needs a CUDA device"):
                accel.resolve_precision(name, torch.device("cpu"))
        else:
            assert accel.resolve_precision(name, torch.device("cpu")) in (torch.float32, torch.bfloat16)


def test_threads():
    before = torch.get_num_threads()
    try:
        assert accel.set_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_cpu_tile_is_the_faster_tiling_of_the_scene():
    """cost.cpu_tile weighs the tiles' area over the scene by the measured cost per pixel of each
    tile size: on 1024 x 1024 LR both tilings compute 1.56x the scene and 80 wins everywhere; on
    1000 x 1000 tile 160 computes 1.25x against 1.64x and wins where 160 costs less than 1.31x per
    pixel (AMD bf16 1.10) but not on AMX in bf16 (1.45); a scene of one tile stays one tile; the
    overlap rules out a tile it would leave no pixels of its own."""
    from mstt_stvsr.core.run import cost

    for kind in ("amx", "avx512_bf16", "avx512_bf16_intel", "other"):
        assert cost.cpu_tile(1024, 1024, 16, None, "bf16", kind) == 80
        assert cost.cpu_tile(144, 144, 16, None, "bf16", kind) == 160  # one tile, not 3 x 3
    assert cost.cpu_tile(1000, 1000, 16, None, "bf16", "avx512_bf16") == 160
    assert cost.cpu_tile(1000, 1000, 16, None, "bf16", "amx") == 80
    assert cost.cpu_tile(1000, 1000, 16, None, "fp32", "avx512_bf16_intel") == 160  # 1.16 per pixel
    assert cost.cpu_tile(1024, 1024, 40, None, "bf16", "amx") == 160  # 2 x 40 is no less than 80
    assert cost.cpu_grid_cost(1000, 1000, 160, 16, None, 1.0) / (1000 * 1000) == pytest.approx(1.254, abs=1e-3)
    assert cost.cpu_grid_cost(1000, 1000, 80, 16, None, 1.0) / (1000 * 1000) == pytest.approx(1.638, abs=1e-3)
    assert accel.cpu_kind({"avx512_bf16", "amx_bf16"}, "GenuineIntel") == "amx"
    assert accel.cpu_kind({"avx2"}, "AuthenticAMD") == "other"

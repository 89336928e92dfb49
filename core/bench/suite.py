"""The whole benchmark in one process, so that its ratios compare like with like: network
throughput, then the end-to-end run, then the ratios between them.

Without a weights file a randomly initialised full model is used: speed does not depend on
the weights' values."""
from __future__ import annotations

import time

import torch

from ..net.dcn import DCNv2Pack, deform_conv_backend
from ..net.model import MSTT
from ..net.spec import N_IN
from ..net.weights import default_weights_path, load_model
from ..run import device
from ..run.compile import compile_stages, configure_backends, uncompile_stages
from .compare import network_paths, window_plans
from .config import BenchConfig
from .end_to_end import run_e2e
from .flops import FLOP_NOTE
from .hardware import device_facts
from .report import ratios, unreliable_rows
from .throughput import Meter, run_throughput


def load_bench_model(weights=None) -> tuple[torch.nn.Module, str]:
    """(model, where it came from): ``weights``, else the shipped weights, else a random full
    model."""
    if weights:
        return load_model(weights), f"weights {weights}"
    if default_weights_path().exists():
        return load_model(None), f"default weights {default_weights_path().name}"
    torch.manual_seed(0)
    return MSTT(), "random full model (no weights file; speed does not depend on weights)"


def dcn_backends(model: torch.nn.Module) -> str:
    """The deformable-conv implementation(s) the model's layers run on."""
    names = {deform_conv_backend(m.backend) for m in model.modules() if isinstance(m, DCNv2Pack)}
    return ", ".join(sorted(names)) or "none"


def compile_fallbacks(net: torch.nn.Module, names) -> dict:
    """{stage: why} for the compiled stages of ``net`` that fell back to eager."""
    out = {}
    for name in names:
        target = getattr(net, name, None)
        call = target.forward if isinstance(target, torch.nn.Module) else target
        if getattr(call, "failed", None):
            out[name] = call.failed
    return out


def run_bench(cfg: BenchConfig, model=None, log=None) -> dict:
    """Run the benchmark; returns a JSON-ready dict (see ``report.format_report``). A given
    ``model`` gets its own stages back if ``cfg.compile`` compiled them."""
    log = log or (lambda line: None)
    dev = device.resolve_device(cfg.device)
    threads = device.set_threads(cfg.threads) if dev.type == "cpu" else torch.get_num_threads()
    facts = device_facts(dev, threads)
    if model is None:
        model, source = load_bench_model(cfg.weights)
    else:
        source = f"given model {getattr(model, 'config', '')}"
    backend = configure_backends(dev)
    net = device.prepare_model(model, dev)
    compiled = compile_stages(net, log=log) if cfg.compile else []
    result = {"device": facts, "model": source, "deform_conv": dcn_backends(model), "backend": backend,
              "compiled": compiled, "config": cfg.as_dict(), "flop_note": FLOP_NOTE, "notes": list(cfg.notes)}
    log(f"device: {facts['name']} ({dev}); model: {source}; deformable conv: {result['deform_conv']}")
    meter = Meter(net, model, dev, facts.get("peaks_tflops", {}), cfg.reps, cfg.warmup)
    t0 = time.perf_counter()
    try:
        rows = []
        if cfg.tiles and cfg.batches:
            log("network throughput")
            rows = run_throughput(cfg, meter, log)
        result["throughput"] = rows
        if cfg.scene:
            log(f"end to end: {N_IN} frames of {cfg.scene}x{cfg.scene}")
            result["e2e"] = run_e2e(cfg, meter, rows, log)
        if cfg.compare_tile:
            log(f"network paths side by side, tile {cfg.compare_tile}")
            result["paths"] = network_paths(cfg, meter, log)
        if cfg.window_frames:
            log(f"window plans end to end: {cfg.window_frames} frames of {cfg.window_scene}x{cfg.window_scene}")
            result["window_plans"] = window_plans(cfg, meter, log)
    finally:
        # a stage whose compiled call failed ran eager: its "compiled" figures are eager ones
        result["compile_fallbacks"] = compile_fallbacks(net, compiled)
        uncompile_stages(net, compiled)
    result["ratios"] = ratios(result)
    result["unreliable"] = unreliable_rows(result)
    result["seconds"] = time.perf_counter() - t0
    return result

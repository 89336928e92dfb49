"""``mstt-stvsr bench``: the command line over ``suite.run_bench``; the report goes to stdout,
progress to stderr, and everything to a JSON file with ``--json``."""
from __future__ import annotations

import argparse
import sys

from ..errors import InputError
from ..run import device
from ..run.options import DEFAULT_OVERLAP, DEVICES, PRECISIONS
from .config import BenchConfig
from .report import format_report, save_json
from .suite import run_bench

# arguments that, when given, replace the value of the BenchConfig field of the same name
OVERRIDES = ("tiles", "batches", "precisions", "reps", "warmup", "scene", "e2e_tile", "e2e_batch", "overlap",
             "threads", "weights", "workdir", "compare_tile", "window_frames", "window_scene")


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
    bad = [v for v in vals if v not in device.DTYPES]
    if bad or not vals:
        raise argparse.ArgumentTypeError(f"precisions are fp32, fp16, bf16; got {text!r}")
    return vals


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--quick", action="store_true", help="a few minutes on a small CPU: tiles 80,160, 1 repetition, 256-px scene")
    add("--device", default="auto", choices=DEVICES, help="default auto: CUDA if available")
    add("--tiles", type=_ints, help="LR tile sizes (default 80,160,320)")
    add("--batches", type=_ints, help="tiles per forward (default 1,2,4; CPU 1,2)")
    add("--precisions", type=_precisions, help="default fp32,bf16 on CPU, fp32,fp16,bf16 on CUDA")
    add("--reps", type=int, help="timed repetitions per configuration (default 3, quick 3; a row needs 3 for its spread)")
    add("--warmup", type=int, help="untimed runs first (default 1)")
    add("--scene", type=int, help="LR side of the synthetic 4-frame stack (default 2048, quick 256; 0 = skip)")
    add("--e2e-tile", type=int, help="tile of the end-to-end run (default: the pipeline's default)")
    add("--e2e-precision", default="auto", choices=PRECISIONS, help="precision of the end-to-end run")
    add("--e2e-batch", type=int, help="tiles per forward in the end-to-end run (default: the pipeline's)")
    add("--overlap", type=int, help=f"tile overlap of the end-to-end run (default {DEFAULT_OVERLAP})")
    add("--threads", type=int, help="CPU threads (default: all available)")
    add("--weights", help="weights file (default: the shipped weights, else a random model)")
    add("--compile", action="store_true", help="torch.compile the network's stages first")
    add("--workdir", help="folder for the temporary synthetic stack (default: system temp)")
    add("--compare-tile", type=int, help="tile of the side-by-side network paths (default 160; 0 = skip)")
    add("--window-frames", type=int, help="frames of the fast-vs-central windows run (default 10; 0 = skip)")
    add("--window-scene", type=int, help="LR side of that stack (default 320, quick 160)")
    add("--no-e2e-check", dest="e2e_check", action="store_false",
        help="skip checking the end-to-end row against a real `mstt-stvsr run` of its stack in a fresh process")
    add("--json", metavar="PATH", help="also save all results as JSON")


def config_from_args(args) -> BenchConfig:
    dev = device.resolve_device(args.device)
    changes = {name: getattr(args, name) for name in OVERRIDES if getattr(args, name, None) is not None}
    if dev.type == "cpu" and not args.quick:
        changes.setdefault("batches", (1, 2))  # batching does not help a CPU; see cost.tiles_per_forward
    if dev.type == "cpu":
        changes["notes"] = ("CPU figures depend on other processes sharing the cores (see load average)",)
    changes.update(device=args.device, e2e_precision=args.e2e_precision, compile=bool(args.compile),
                   e2e_check=args.e2e_check)
    cfg = BenchConfig.quick_config(**changes) if args.quick else BenchConfig(**changes)
    if cfg.reps < 1 or cfg.warmup < 0 or min(cfg.scene, cfg.compare_tile, cfg.window_frames) < 0:
        raise InputError("--reps must be >= 1; --warmup, --scene, --compare-tile and --window-frames >= 0")
    if cfg.window_frames == 1 or cfg.window_scene < 1:
        raise InputError("--window-frames must be 0 or at least 2, and --window-scene positive")
    return cfg


def main(args) -> int:
    cfg = config_from_args(args)
    result = run_bench(cfg, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_report(result))
    if args.json:
        print(f"saved {save_json(result, args.json)}", file=sys.stderr)
    return 0

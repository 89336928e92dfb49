"""``mstt-stvsr run``: the command line over ``pipeline.run_stack``, with a progress bar.

Its arguments are listed without importing torch, so ``--help`` stays fast."""
from __future__ import annotations

import argparse
import sys
import warnings

from .options import DEFAULT_WINDOWS, DEFAULT_WORKER_WAIT, DEVICES, PRECISIONS, WINDOW_MODES, RunOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("inputs", nargs="+", metavar="FRAME", help="input frames in time order (any raster GDAL reads)")
    add("-o", "--output-dir", required=True, metavar="OUTDIR", help="folder for the 2N-1 output GeoTIFFs")
    add_options(parser)


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options of a run (``RunOptions``, the cluster, quiet), shared with ``batch``."""
    add = parser.add_argument
    add("--weights", metavar="W", help="weights file (.safetensors or upstream .pth); default: the shipped weights")
    add("--tile-size", type=int, metavar="N",
        help="tile size in input pixels, rounded up to a multiple of 80 (default: 80 or 160 on CPU, whichever computes the scene faster on this CPU kind; fitted to GPU memory)")
    add("--overlap", type=int, metavar="N", help="overlap between tiles in input pixels (default 16)")
    add("--device", default="auto", choices=DEVICES, help="where to run (default auto: CUDA if available)")
    add("--precision", default="auto", choices=PRECISIONS,
        help="arithmetic (default auto: bf16 or fp16 on CUDA; bf16 on CPUs where it was measured faster: Intel AMX, AMD AVX-512 BF16; else fp32)")
    add("--tiles-per-forward", type=int, metavar="N",
        help="tiles stacked into one network call (default: 1 on CPU, fitted to free GPU memory)")
    add("--compile", action="store_true", help="torch.compile the network first (GPU; slow start, faster tiles)")
    add("--windows", default=DEFAULT_WINDOWS, choices=WINDOW_MODES,
        help="time windows: fast = one network window per 3 input frames (about 3x fewer than central), "
             "central = each output from the window where it is most central (N-1 windows)")
    add("--ensemble", action="store_true",
        help="average the network over the 8 flips/rotations of each window (8x slower; see README for its gain)")
    add("--times", metavar="T1,T2,...", help="acquisition times of the inputs (ISO 8601), instead of their metadata")
    add("--prefix", help="output file name prefix (default: the inputs' common name + '_x4')")
    add("--overwrite", action="store_true", help="replace existing output files")
    add("--cog", action="store_true", help="write Cloud Optimized GeoTIFFs")
    add("--threads", type=int, metavar="N", help="CPU threads for the network (default: all available)")
    add("--resume", action="store_true",
        help="reuse the parts an interrupted run of the same outputs finished (same inputs, weights and options; "
             "refused with what differs otherwise); with nothing to resume, start from the beginning. "
             "A run with --resume that stops early keeps its finished parts")
    add("--cluster", metavar="ADDRESS",
        help="run on a Dask cluster: local:N (N worker processes here) or a scheduler address (tcp://host:8786); "
             "needs dask and distributed")
    add("--worker-wait", type=float, default=DEFAULT_WORKER_WAIT, metavar="S",
        help=f"with --cluster: fail when no Dask worker is connected for S seconds (default {DEFAULT_WORKER_WAIT})")
    add("-q", "--quiet", action="store_true", help="no progress bar or messages")


def options_from_args(args) -> RunOptions:
    return RunOptions(weights=args.weights, tile_size=args.tile_size, overlap=args.overlap, device=args.device,
                      precision=args.precision, times=args.times, prefix=args.prefix, overwrite=args.overwrite,
                      cog=args.cog, threads=args.threads, tiles_per_forward=args.tiles_per_forward,
                      compile=args.compile, windows=args.windows, ensemble=args.ensemble,
                      resume=args.resume, worker_wait=args.worker_wait)


def main(args) -> int:
    from tqdm import tqdm

    bar = None  # made at the first progress report: a validation error prints one line only

    def progress(frac, msg):
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            bar = tqdm(total=100, file=sys.stderr, unit="%", dynamic_ncols=True,
                       bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}] {postfix}")
        bar.n = round(100 * frac, 1)
        bar.set_postfix_str(msg, refresh=False)
        bar.refresh()

    def log(line):
        if args.quiet:
            return
        if bar is not None:
            bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def warn(message, category, *rest, **kw):  # a library's warning: one line of the log, no source
        log(f"note: {message}")

    from .pipeline import Hooks, run_stack
    from .signals import SignalGuard

    try:
        with SignalGuard() as guard, warnings.catch_warnings():
            warnings.showwarning = warn
            hooks = Hooks(progress=progress, log=log, critical=guard.critical)
            if getattr(args, "cluster", None):  # Dask is imported only here
                from ..scale.run import run_with_cluster

                paths = run_with_cluster(args.cluster, args.inputs, args.output_dir, options_from_args(args), hooks=hooks)
            else:
                paths = run_stack(args.inputs, args.output_dir, options_from_args(args), hooks=hooks)
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        for p in paths:
            print(p)
    return 0

"""``mstt-stvsr train``: Charbonnier loss, Adam, cosine annealing with warm restarts, resumable.

Config in TOML (``config``); command-line flags override it. Each step draws random augmented
LR crops with their HR crops and optical flow (``crops``) and takes one optimizer step
(``trainer``).

Checkpoints (``<out>/last.pt``, written atomically) hold model, optimizer, step, training time
and RNG states; ``--resume`` continues exactly where it stopped. ``--max-minutes`` ends cleanly
with a checkpoint when this run's wall time or the training time of all runs reaches it; so does
Ctrl-C / SIGTERM. ``--schedule time`` anneals the learning rate over that budget instead of over
``--steps``. ``--export`` writes fp16 safetensors. ``<out>/log.csv`` gets the mean loss, the
learning rate and the time every ``log_every`` steps.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..run.device import resolve_device
from .config import load_config
from .crops import build_sampler
from .trainer import Trainer, export_checkpoint, export_weights

LOG_COLUMNS = ["step", "loss", "lr", "seconds", "step_seconds"]


@contextlib.contextmanager
def stop_signals():
    """Yields a dict whose "why" becomes the signal's name on SIGTERM / SIGINT, so the loop can
    stop between steps with a checkpoint; handlers are restored on exit. Signals can only be
    caught in the main thread; elsewhere nothing is installed."""
    stop = {"why": None}

    def on_signal(signum, _frame):
        stop["why"] = signal.Signals(signum).name

    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def start(cfg: dict, resume, log) -> Trainer:
    """The trainer on its device, resumed from ``<out>/last.pt`` (``resume`` "auto": if there is
    one) or from the checkpoint ``resume`` names; the config is saved beside it."""
    tr = cfg["train"]
    if tr["threads"]:
        torch.set_num_threads(int(tr["threads"]))
    out = Path(tr["out"])
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, resolve_device(tr["device"]))
    if resume:
        path = out / "last.pt" if resume in (True, "auto", "last") else Path(resume)
        if path.is_file() or resume not in (True, "auto"):
            trainer.load(path)
            log(f"resumed from {path} at step {trainer.step}")
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    return trainer


def loader_threads(value, device: torch.device) -> int:
    """Threads that sample batches beside the training step (``train.loader_threads``): "auto"
    is 0 on the CPU, where the step needs every core and sampling is ~1 % of it, and all cores
    but two (at most 12) on a GPU, where a step is shorter than reading and degrading its clips
    in one thread (~40 ms a crop of a 384-px clip on one AMD EPYC core)."""
    if value == "auto":
        return 0 if device.type == "cpu" else max(1, min(12, (os.cpu_count() or 1) - 2))
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = -1
    if n < 0:
        raise InputError(f"train.loader_threads = {value!r}: expected auto or a count >= 0")
    return n


def batches(sampler, rng, n: int, threads: int):
    """Endless batches of ``n``. With ``threads`` > 0 the next batch is sampled in the
    background, by that many threads, while the caller trains on this one (so ``rng`` runs
    one batch ahead of the steps taken: a resumed run skips one batch)."""
    if threads <= 0:
        while True:
            yield sampler.batch(rng, n)
    with ThreadPoolExecutor(threads) as pool, ThreadPoolExecutor(1) as ahead:
        nxt = ahead.submit(sampler.batch, rng, n, pool)
        while True:
            current = nxt.result()
            nxt = ahead.submit(sampler.batch, rng, n, pool)
            yield current


def train_loop(trainer: Trainer, feed, csv_file, stop: dict, bar, log, is_canceled=None) -> tuple:
    """Steps on the batches of ``feed`` until ``train.steps``, a stop signal, ``is_canceled()``
    or the time budget (whichever comes first; the budget counts this run's wall time or all
    runs' training time, and stops one step early rather than overrun it). Returns (last loss,
    smoothed seconds per step); ``stop["ended"]`` says why it ended (steps, budget, canceled or
    the signal's name)."""
    tr = trainer.cfg["train"]
    writer = csv.writer(csv_file)
    t0 = time.monotonic()
    budget = float(tr["max_minutes"]) * 60.0
    losses, last_loss, step_time = [], float("nan"), 0.0
    stop["ended"] = "steps"
    while trainer.step < tr["steps"]:
        if is_canceled is not None and is_canceled():
            stop["why"] = stop["why"] or "canceled"
        if stop["why"]:
            log(f"stopping on {stop['why']}")
            stop["ended"] = stop["why"]
            break
        elapsed = max(time.monotonic() - t0, trainer.seconds)
        if budget and elapsed + 1.2 * step_time > budget:
            log(f"time budget of {tr['max_minutes']:.4g} min reached")
            stop["ended"] = "budget"
            break
        ts = time.monotonic()
        last_loss = trainer.train_step(*next(feed))
        took = time.monotonic() - ts
        step_time = took if step_time == 0 else 0.9 * step_time + 0.1 * took
        if not math.isfinite(last_loss):
            raise RuntimeError(f"loss became {last_loss} at step {trainer.step}")
        losses.append(last_loss)
        if trainer.step % tr["log_every"] == 0 or trainer.step == tr["steps"]:
            writer.writerow([trainer.step, f"{np.mean(losses):.6f}", f"{trainer.opt.param_groups[0]['lr']:.3e}",
                             f"{time.monotonic() - t0:.1f}", f"{step_time:.3f}"])
            csv_file.flush()
            losses = []
        if trainer.step % tr["ckpt_every"] == 0:
            trainer.save(Path(tr["out"]) / "last.pt")
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}", s_per_step=f"{step_time:.2f}")
    return last_loss, step_time


def run_training(cfg: dict, resume=None, export=None, progress: bool = True, log=None, sampler=None,
                 bar=None, is_canceled=None) -> dict:
    """Train per cfg; returns a summary (steps done, last loss, seconds, paths, why it ended).
    The checkpoint is written however the loop ends, errors included. ``sampler``: what to
    train on (default: ``build_sampler(cfg)``); ``bar``: a progress reporter with tqdm's
    ``update`` and ``set_postfix`` (default: a tqdm bar when ``progress``); ``is_canceled``: a
    callable polled between steps (QGIS's Cancel)."""
    log = log or (lambda m: print(m, file=sys.stderr))
    trainer = start(cfg, resume, log)
    threads = loader_threads(cfg["train"]["loader_threads"], trainer.device)
    sampler = sampler or build_sampler(cfg)
    with ThreadPoolExecutor(threads) if threads else contextlib.nullcontext() as pool:
        sampler.precompute(progress, pool)
    out = Path(cfg["train"]["out"])
    csv_path = out / "log.csv"
    new_csv = not csv_path.is_file()
    own_bar = progress and bar is None
    if own_bar:
        from tqdm import tqdm

        bar = tqdm(total=cfg["train"]["steps"], initial=trainer.step, desc="train", unit="step", file=sys.stderr)
    t0 = time.monotonic()
    try:
        feed = batches(sampler, trainer.rng, int(cfg["train"]["batch"]), threads)
        with stop_signals() as stop, open(csv_path, "a", newline="") as fcsv, contextlib.closing(feed):
            if new_csv:
                csv.writer(fcsv).writerow(LOG_COLUMNS)
            last_loss, step_time = train_loop(trainer, feed, fcsv, stop, bar, log, is_canceled)
    finally:
        if own_bar:
            bar.close()
        trainer.save(out / "last.pt")
    summary = {"step": trainer.step, "last_loss": last_loss, "seconds": round(time.monotonic() - t0, 1),
               "checkpoint": str(out / "last.pt"), "seconds_per_step": round(step_time, 3),
               "ended": stop["ended"]}
    if export:
        summary["exported"] = str(export_weights(trainer.model, export, cfg, trainer.step))
    log(json.dumps(summary))
    return summary


# -- CLI ----------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("--config", help="TOML config (configs/default.toml, configs/tiny.toml)")
    parser.add_argument("--data", help="training data folder (overrides data.root)")
    parser.add_argument("--layout", choices=("auto", "septuplet", "split", "geotiff"))
    parser.add_argument("--list", help="septuplet list file (default sep_trainlist.txt in the data folder)")
    parser.add_argument("--out", help="run folder: last.pt, log.csv, config.json (overrides train.out)")
    parser.add_argument("--steps", type=int, help="total steps (overrides train.steps)")
    parser.add_argument("--crop", type=int, help="LR crop size (overrides data.crop; 80 avoids padding)")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--threads", type=int, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--loader-threads", help="threads sampling the next batch during a step (auto: 0 on CPU, cores-2 up to 12 on GPU)")
    parser.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"))
    parser.add_argument("--max-minutes", type=float, help="stop cleanly with a checkpoint after this many minutes")
    parser.add_argument("--schedule", choices=("steps", "time"),
                        help="cosine over --steps, or over --max-minutes (robust to a shared CPU)")
    parser.add_argument("--init", help="start from these weights (safetensors or upstream .pth)")
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="continue from <out>/last.pt (or the checkpoint given)")
    parser.add_argument("--export", help="write the final weights as fp16 safetensors here")
    parser.add_argument("--export-only", action="store_true",
                        help="with --export: convert the checkpoint (--resume PATH or <out>/last.pt) and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def main(args) -> int:
    overrides = {
        "data.root": args.data, "data.layout": args.layout, "data.list": args.list, "train.out": args.out, "train.steps": args.steps,
        "data.crop": args.crop, "train.batch": args.batch, "train.lr": args.lr, "train.threads": args.threads,
        "train.device": args.device, "train.amp": args.amp, "train.max_minutes": args.max_minutes,
        "train.init": args.init, "train.schedule": args.schedule, "train.loader_threads": args.loader_threads,
    }
    cfg = load_config(args.config, overrides)
    if args.export_only:
        if not args.export:
            raise InputError("--export-only needs --export PATH")
        ckpt = args.resume if args.resume not in (None, "auto") else Path(cfg["train"]["out"]) / "last.pt"
        print(export_checkpoint(ckpt, args.export))
        return 0
    from ..run.allocator import keep_freed_memory

    keep_freed_memory()  # this process is the training: each step reuses the last one's memory
    run_training(cfg, resume=args.resume, export=args.export, progress=not args.quiet)
    return 0

"""``mstt-stvsr train``: Charbonnier loss, Adam, cosine annealing with warm restarts, resumable.

Config in TOML (configs/*.toml: sections ``[model]``, ``[data]``, ``[train]``); command-line flags
override it. Each step draws random LR crops (HR crops at 4x the same window) with one of the 8
flips/rotations and an optional time reversal, applied alike to all 7 frames and to the optical
flow. The flow of each clip is computed once on its whole LR clip (core.flow.middle_flows, as at
inference) and cached on disk; crops cut the cached flow with the frames' window, and the
augmentations transform its vectors (a flip negates a component, a transpose swaps them).

Checkpoints (``<out>/last.pt``, written atomically) hold model, optimizer, step, training time
and RNG states; ``--resume`` continues exactly where it stopped. ``--max-minutes`` ends cleanly
with a checkpoint when this run's wall time or the training time of all runs reaches it; so does
Ctrl-C / SIGTERM. ``--schedule time`` anneals the learning rate over that budget instead of over
``--steps``. ``--export`` writes fp16 safetensors.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import PLUGIN_DIR
from ..errors import InputError
from .datasets import open_dataset

ROOT_CONFIGS = PLUGIN_DIR / "configs"
DEFAULTS = {
    "model": {"nf": 64, "groups": 8, "front_RBs": 5, "back_RBs": 10, "skip": True},
    "data": {"root": "build/data/train", "layout": "auto", "list": "", "crop": 80, "flow_cache": "",
             "time_reverse": True},
    "train": {"steps": 100000, "batch": 1, "lr": 4e-4, "lr_min": 1e-7, "restart": 0, "warmup": 0,
              "schedule": "steps", "betas": [0.9, 0.99],
              "charbonnier_eps": 1e-3, "grad_clip": 0.0, "seed": 0, "threads": 0, "device": "auto",
              "amp": "auto", "log_every": 10, "ckpt_every": 100, "max_minutes": 0.0, "out": "build/train/run",
              "init": ""},
}


# -- config -------------------------------------------------------------------------------
def load_config(path=None, overrides: dict | None = None) -> dict:
    """DEFAULTS <- TOML file <- overrides ({"train.steps": 10, ...}); unknown keys are errors."""
    cfg = json.loads(json.dumps(DEFAULTS))
    if path:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib

        p = Path(path)
        try:
            with open(p, "rb") as f:
                user = tomllib.load(f)
        except FileNotFoundError:
            raise InputError(f"{p}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{p}: not valid TOML ({exc})") from None
        for sec, items in user.items():
            if sec not in cfg or not isinstance(items, dict):
                raise InputError(f"{p}: unknown section [{sec}] (expected {', '.join(cfg)})")
            for k, v in items.items():
                if k not in cfg[sec]:
                    raise InputError(f"{p}: unknown key {sec}.{k}")
                cfg[sec][k] = v
    for dotted, v in (overrides or {}).items():
        if v is None:
            continue
        sec, k = dotted.split(".")
        cfg[sec][k] = v
    if cfg["data"]["crop"] <= 0 or cfg["data"]["crop"] % 4:
        raise InputError(f"data.crop = {cfg['data']['crop']}: must be a positive multiple of 4 (80 avoids padding)")
    return cfg


# -- augmentation (frames and flows alike) ------------------------------------------------
def dihedral_frames(x: np.ndarray, transpose: bool, hflip: bool, vflip: bool) -> np.ndarray:
    """(T, H, W, C) frames: optional transpose (swap x and y), then flips."""
    if transpose:
        x = x.transpose(0, 2, 1, 3)
    if hflip:
        x = x[:, :, ::-1]
    if vflip:
        x = x[:, ::-1]
    return x


def dihedral_flows(f: np.ndarray, transpose: bool, hflip: bool, vflip: bool) -> np.ndarray:
    """(P, 4, H, W) middle flows [dx, dy, dx, dy] under the same transform as the frames.

    A transpose swaps the fields' axes and the dx/dy components; a horizontal flip mirrors the
    field and negates dx; a vertical flip negates dy.
    """
    if transpose:
        f = f.transpose(0, 1, 3, 2)[:, [1, 0, 3, 2]]
    if hflip:
        f = f[:, :, :, ::-1].copy()
        f[:, 0::2] *= -1
    if vflip:
        f = f[:, :, ::-1].copy()
        f[:, 1::2] *= -1
    return f


def reverse_time(lr: np.ndarray, hr: np.ndarray, flows: np.ndarray):
    """Play the clip backwards: pair k becomes pair P-1-k and mid->prev swaps with mid->next."""
    return lr[::-1], hr[::-1], flows[::-1][:, [2, 3, 0, 1]]


# -- flow cache ---------------------------------------------------------------------------
class FlowCache:
    """Middle flows of each clip's whole LR input, computed once, stored as float16 .npy."""

    def __init__(self, folder, tag: str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tag = tag

    def path(self, name: str) -> Path:
        key = hashlib.sha1(f"{self.tag}|{name}".encode()).hexdigest()[:16]
        return self.folder / f"{key}.npy"

    def get(self, name: str, lr: np.ndarray) -> np.ndarray:
        p = self.path(name)
        if p.is_file():
            try:
                f = np.load(p)
                if f.shape == (lr.shape[0] - 1, 4, *lr.shape[1:3]):
                    return f.astype(np.float32)
            except (OSError, ValueError):
                pass
        from ..run.flow import middle_flows

        f = np.asarray(middle_flows(lr), np.float32)
        tmp = p.with_name(p.name + f".{os.getpid()}.tmp.npy")
        np.save(tmp, f.astype(np.float16))
        tmp.replace(p)
        return f


class CropSampler:
    """Random augmented crops of a dataset: (lr (4,3,c,c), hr (7,3,4c,4c), flows (3,4,c,c))."""

    def __init__(self, dataset, crop: int, flows: FlowCache, time_reverse: bool = True):
        self.ds, self.crop, self.flows, self.time_reverse = dataset, crop, flows, time_reverse

    def precompute(self, progress: bool = True) -> None:
        it = range(len(self.ds))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="flows", unit="clip", file=sys.stderr)
        for i in it:
            c = self.ds.clip(i)
            self.flows.get(c.name, c.lr)

    def sample(self, rng: np.random.Generator):
        c = self.ds.clip(int(rng.integers(len(self.ds))))
        flows = self.flows.get(c.name, c.lr)
        h, w = c.lr.shape[1:3]
        s = self.crop
        if h < s or w < s:
            raise InputError(f"clip {c.name}: LR size {w}x{h} is smaller than the crop {s}")
        y, x = int(rng.integers(h - s + 1)), int(rng.integers(w - s + 1))
        lr = c.lr[:, y:y + s, x:x + s]
        hr = c.hr[:, 4 * y:4 * (y + s), 4 * x:4 * (x + s)]
        fl = flows[:, :, y:y + s, x:x + s]
        t, hf, vf = (bool(b) for b in rng.integers(0, 2, 3))
        lr, hr, fl = dihedral_frames(lr, t, hf, vf), dihedral_frames(hr, t, hf, vf), dihedral_flows(fl, t, hf, vf)
        if self.time_reverse and rng.random() < 0.5:
            lr, hr, fl = reverse_time(lr, hr, fl)
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).float().div_(255.0)  # noqa: E731
        return to_t(lr), to_t(hr), torch.from_numpy(np.ascontiguousarray(fl)).float()

    def batch(self, rng, n: int):
        items = [self.sample(rng) for _ in range(n)]
        return tuple(torch.stack(z) for z in zip(*items))


# -- learning rate ------------------------------------------------------------------------
def lr_at(tr: dict, step: int, seconds: float) -> float:
    """Linear warm-up, then cosine annealing with warm restarts.

    ``schedule = "steps"``: periods of ``restart`` steps (0 = one period of ``steps``).
    ``schedule = "time"``: the cosine runs over the ``max_minutes`` budget instead (``restart``
    then counts periods in it), so a run on a shared, unevenly loaded CPU still anneals fully by
    its deadline.
    """
    base, low = float(tr["lr"]), float(tr["lr_min"])
    warm = min(1.0, (step + 1) / tr["warmup"]) if tr["warmup"] else 1.0
    if tr["schedule"] == "time":
        budget = float(tr["max_minutes"]) * 60.0
        if budget <= 0:
            raise InputError("train.schedule = 'time' needs train.max_minutes (--max-minutes)")
        periods = max(1, int(tr["restart"]) or 1)
        x = min(seconds / budget, 1.0 - 1e-9) * periods % 1.0
    elif tr["schedule"] == "steps":
        period = max(1, int(tr["restart"]) or int(tr["steps"]))
        x = (step % period) / period
    else:
        raise InputError(f"train.schedule = {tr['schedule']!r}: expected 'steps' or 'time'")
    return low + (base - low) * 0.5 * (1.0 + math.cos(math.pi * x)) * warm


# -- training -----------------------------------------------------------------------------
def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r}: CUDA is not available")
    return torch.device(name)


def amp_dtype(mode: str, device: torch.device):
    """None (fp32) when off; bf16 where supported, else fp16 with a grad scaler (CUDA). On CPU,
    "auto" is bf16 where the processor has bf16 matrix units (2x faster steps, measured), else
    fp32; fp16 needs CUDA."""
    from ..run.device import cpu_fast_bf16

    if mode in ("off", "fp32", False):
        return None
    if device.type != "cuda":
        if mode == "bf16" or (mode == "auto" and cpu_fast_bf16()):
            return torch.bfloat16
        if mode == "fp16":
            raise InputError("train.amp = 'fp16' needs a CUDA device; use bf16 or off on CPU")
        return None
    if mode == "fp16":
        return torch.float16
    if mode in ("auto", "bf16"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    raise InputError(f"train.amp = {mode!r}: expected auto, bf16, fp16 or off")


@dataclass
class Trainer:
    cfg: dict
    device: torch.device
    log: object = print

    def __post_init__(self):
        from ..net.model import MSTT

        tr = self.cfg["train"]
        torch.manual_seed(tr["seed"])
        self.model = MSTT(**self.cfg["model"]).to(self.device)
        if tr["init"]:
            from ..net.weights import load_model

            src = load_model(tr["init"])
            self.model.load_state_dict(src.state_dict())
        self.opt = torch.optim.Adam(self.model.parameters(), lr=tr["lr"], betas=tuple(tr["betas"]))
        self.seconds = 0.0  # training time over all runs of this checkpoint (for schedule = "time")
        self.amp = amp_dtype(tr["amp"], self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.step = 0
        self.rng = np.random.default_rng(tr["seed"])

    # checkpoints --------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "step": self.step, "config": self.cfg, "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(), "seconds": self.seconds,
            "scaler": self.scaler.state_dict(), "rng_numpy": self.rng.bit_generator.state,
            "rng_torch": torch.get_rng_state(), "rng_python": random.getstate(),
        }

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state(), tmp)
        tmp.replace(path)
        return path

    def load(self, path) -> None:
        try:
            st = torch.load(str(path), map_location=self.device, weights_only=False)
        except FileNotFoundError:
            raise InputError(f"{path}: checkpoint not found") from None
        if st["config"]["model"] != self.cfg["model"]:
            raise InputError(f"{path}: checkpoint model {st['config']['model']} differs from config {self.cfg['model']}")
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.seconds = float(st.get("seconds", 0.0))
        self.scaler.load_state_dict(st["scaler"])
        self.rng.bit_generator.state = st["rng_numpy"]
        torch.set_rng_state(st["rng_torch"])
        random.setstate(st["rng_python"])
        self.step = int(st["step"])

    # one step -----------------------------------------------------------------------------
    def train_step(self, lr, hr, flows) -> float:
        self.model.train()
        t0 = time.monotonic()
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.cfg["train"], self.step, self.seconds)
        lr, hr, flows = (t.to(self.device, non_blocking=True) for t in (lr, hr, flows))
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            out = self.model(lr, flows)
        loss = charbonnier(out.float(), hr, self.cfg["train"]["charbonnier_eps"])
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg["train"]["grad_clip"] > 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg["train"]["grad_clip"])
        self.scaler.step(self.opt)
        self.scaler.update()
        self.step += 1
        self.seconds += time.monotonic() - t0
        return float(loss.detach())


def build_sampler(cfg: dict) -> CropSampler:
    d = cfg["data"]
    ds = open_dataset(d["root"], d["layout"], list_file=d["list"] or None)
    cache = Path(d["flow_cache"]) if d["flow_cache"] else Path(d["root"]) / "flow_cache"
    return CropSampler(ds, int(d["crop"]), FlowCache(cache, f"{Path(d['root']).resolve()}|{d['layout']}"),
                       bool(d["time_reverse"]))


def run_training(cfg: dict, resume=None, export=None, progress: bool = True, log=None) -> dict:
    """Train per cfg; returns a summary (steps done, last loss, seconds, paths)."""
    log = log or (lambda m: print(m, file=sys.stderr))
    tr = cfg["train"]
    if tr["threads"]:
        torch.set_num_threads(int(tr["threads"]))
    device = pick_device(tr["device"])
    out = Path(tr["out"])
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, device, log)
    ckpt = out / "last.pt"
    if resume:
        path = ckpt if resume in (True, "auto", "last") else Path(resume)
        if path.is_file() or resume not in (True, "auto"):
            trainer.load(path)
            log(f"resumed from {path} at step {trainer.step}")
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    sampler = build_sampler(cfg)
    sampler.precompute(progress)

    stop = {"why": None}

    def on_signal(signum, _frame):
        stop["why"] = signal.Signals(signum).name

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)} \
        if hasattr(signal, "SIGTERM") and _main_thread() else {}
    csv_path = out / "log.csv"
    new_csv = not csv_path.is_file()
    t0 = time.monotonic()
    budget = float(tr["max_minutes"]) * 60.0
    losses, last_loss, step_time = [], float("nan"), 0.0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=tr["steps"], initial=trainer.step, desc="train", unit="step", file=sys.stderr)
    try:
        with open(csv_path, "a", newline="") as fcsv:
            w = csv.writer(fcsv)
            if new_csv:
                w.writerow(["step", "loss", "lr", "seconds", "step_seconds"])
            while trainer.step < tr["steps"]:
                if stop["why"]:
                    log(f"stopping on {stop['why']}")
                    break
                elapsed = max(time.monotonic() - t0, trainer.seconds)  # this run / all runs
                if budget and elapsed + 1.2 * step_time > budget:
                    log(f"time budget of {tr['max_minutes']} min reached")
                    break
                ts = time.monotonic()
                batch = sampler.batch(trainer.rng, int(tr["batch"]))
                last_loss = trainer.train_step(*batch)
                step_time = time.monotonic() - ts if step_time == 0 else 0.9 * step_time + 0.1 * (time.monotonic() - ts)
                if not math.isfinite(last_loss):
                    raise RuntimeError(f"loss became {last_loss} at step {trainer.step}")
                losses.append(last_loss)
                if trainer.step % tr["log_every"] == 0 or trainer.step == tr["steps"]:
                    w.writerow([trainer.step, f"{np.mean(losses):.6f}", f"{trainer.opt.param_groups[0]['lr']:.3e}",
                                f"{time.monotonic() - t0:.1f}", f"{step_time:.3f}"])
                    fcsv.flush()
                    losses = []
                if trainer.step % tr["ckpt_every"] == 0:
                    trainer.save(ckpt)
                if bar:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_loss:.4f}", s_per_step=f"{step_time:.2f}")
    finally:
        if bar:
            bar.close()
        trainer.save(ckpt)
        for s, h in old.items():
            signal.signal(s, h)
    summary = {"step": trainer.step, "last_loss": last_loss, "seconds": round(time.monotonic() - t0, 1),
               "checkpoint": str(ckpt), "seconds_per_step": round(step_time, 3)}
    if export:
        summary["exported"] = str(export_weights(trainer.model, export, cfg, trainer.step))
    log(json.dumps(summary))
    return summary


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def export_weights(model, path, cfg: dict, step: int, half: bool = True) -> Path:
    from ..net.weights import save_weights

    meta = {"trained_steps": step, "train_data": cfg["data"]["root"], "crop_lr": cfg["data"]["crop"],
            "batch": cfg["train"]["batch"], "lr": cfg["train"]["lr"]}
    return save_weights(model.cpu().eval(), path, extra_meta=meta, half=half)


def export_checkpoint(ckpt, path, half: bool = True) -> Path:
    """Weights of a training checkpoint as safetensors (no training needed)."""
    from ..net.model import MSTT

    try:
        st = torch.load(str(ckpt), map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise InputError(f"{ckpt}: checkpoint not found") from None
    model = MSTT(**st["config"]["model"])
    model.load_state_dict(st["model"])
    return export_weights(model, path, st["config"], int(st["step"]), half)


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
        "train.init": args.init, "train.schedule": args.schedule,
    }
    cfg = load_config(args.config, overrides)
    if args.export_only:
        if not args.export:
            raise InputError("--export-only needs --export PATH")
        ckpt = args.resume if args.resume not in (None, "auto") else Path(cfg["train"]["out"]) / "last.pt"
        print(export_checkpoint(ckpt, args.export))
        return 0
    run_training(cfg, resume=args.resume, export=args.export, progress=not args.quiet)
    return 0

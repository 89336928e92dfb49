"""``mstt-stvsr finetune``: adapt the network to a user's own sensor from their own video.

Each VIDEO is a folder of consecutive native frames (PNG / JPEG / 8-bit TIFF or GeoTIFF) or a
list file naming them (native_video.py reads, checks and splits them); the native frames are the ground truth and their Jilin-189 degradation
(degrade.py) the input, exactly as Jilin-189 itself is made. Training draws 7-frame windows
across each video's training part with crops, flips and time reversal (crops.CropSampler),
mixed with a share of the synthetic training set so that the network keeps what that taught
it (crops.MixedSampler), and runs the ordinary trainer (train.run_training: checkpoints, exact
resume, time budget, bf16 where fast) from the base weights.

Validation is held out before anything trains (native_video.split_videos: the last part of
each video, or the last videos given). Those frames are scored before and after
with the real-video evaluation (evaluate.evaluate); the result is the better of the base and
the fine-tuned weights, and both scores, the sources (folders, frame counts, SHA-256 of the
frames), steps, minutes and the base weights go into the output's metadata (key ``finetune``;
``mstt-stvsr info --weights`` shows it).

``minutes`` boxes the whole command: checks, flows and the first validation are measured, the
second validation is reserved at the first one's cost, and training gets the rest. The run
folder (``<output stem>.finetune`` beside the output, or ``work``) holds the plan with the
scores before (``finetune.json``), the checkpoint (``last.pt``), the log and the flow cache;
``resume`` continues a stopped run there. A stop (Ctrl-C, SIGTERM, QGIS's Cancel) ends
training with a checkpoint, then the weights trained so far are validated and the better of
them and the base is written: a stopped run still leaves its best weights.

Without the synthetic set (the training config's ``data.root``, ``build/data/train_city``
made by ``make data``; not in the plugin's ZIP) the default fine-tunes on the user's video alone and says so; a ``synth_data``
that was asked for and is missing is an error.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import sys
import time
import uuid
from pathlib import Path

from .. import PLUGIN_DIR
from ..checksum import file_sha256
from ..errors import Canceled, InputError
from ..net.spec import N_OUT, SCALE
from .datasets import VALIDATION_ONLY, FrameListsDataset
from .native_video import VAL_SHARE, VideoWindows, open_video, split_videos, validation_clips

META_KEY = "finetune"  # the weights' metadata key of the fine-tune record
PLAN = "finetune.json"  # the run folder's plan: sources, settings, scores before
SYNTH_SHARE = 0.25  # share of training samples from the synthetic set (so that it does not forget)
VAL_CROP = 512  # HR px a side of the validation clips' centre crop: scoring whole 4K frames twice on a CPU would eat the time box
FINETUNE_LR = 1e-4  # a quarter of training's: start from good weights, move them gently
DEFAULT_CONFIG = PLUGIN_DIR / "configs" / "default.toml"
EXPORT_RESERVE_S = 5.0  # writing the weights and the plan after the second validation
KEPT_FINETUNED, KEPT_BASE = "fine-tuned", "base"


# -- where it writes ----------------------------------------------------------------------
def check_output(output, overwrite: bool, resume_id: str | None = None) -> Path:
    """The output weights path, refused when it would replace the shipped weights (or write
    into their folder), or an existing file without ``overwrite`` (unless it is the one the
    run being resumed wrote)."""
    from ..net.weights import default_weights_path, read_metadata

    out = Path(output).expanduser().absolute()
    shipped = default_weights_path().resolve()
    if out.resolve() == shipped or shipped.parent in out.resolve().parents or out.resolve().parent == shipped.parent:
        raise InputError(f"{out}: that would write into the plugin's weights folder ({shipped.parent}), where the "
                         "shipped default weights live; write your fine-tuned copy elsewhere")
    if out.suffix.lower() != ".safetensors":
        raise InputError(f"{out}: the output weights are a .safetensors file")
    if out.is_dir():
        raise InputError(f"{out}: is a folder; give a .safetensors file name")
    if out.exists() and not overwrite:
        try:
            ours = resume_id and json.loads(read_metadata(out).get(META_KEY, "{}")).get("run_id") == resume_id
        except Exception:  # not our weights: refused below
            ours = False
        if not ours:
            raise InputError(f"{out} already exists; use --overwrite to replace it")
    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: output folder does not exist")
    return out


# -- progress -----------------------------------------------------------------------------
class Progress:
    """What train_loop calls on a tqdm bar (``update``, ``set_postfix``), turned into
    ``report(fraction, text)`` for the whole command: the fraction of its time box done, and
    (every ``every`` seconds) a line with the step, the loss and the time left."""

    def __init__(self, report, started: float, train_left: float, reserve: float, step: int, every: float = 10.0):
        self.report, self.started, self.reserve, self.every = report, started, reserve, every
        self.train_end = time.monotonic() + max(0.0, train_left)
        self.step, self.loss, self.last = step, None, -math.inf  # the first step reports at once

    def update(self, n: int = 1) -> None:
        self.step += n
        now = time.monotonic()
        left = max(0.0, self.train_end - now) + self.reserve
        done = now - self.started
        text = None
        if now - self.last >= self.every:
            self.last = now
            eta = (dt.datetime.now() + dt.timedelta(seconds=left)).strftime("%H:%M")
            loss = f", loss {self.loss}" if self.loss else ""
            text = f"fine-tuning: step {self.step}{loss}, {fmt_minutes(done)} done, about {fmt_minutes(left)} left (ends ~{eta})"
        self.report(done / max(done + left, 1e-9), text)

    def set_postfix(self, loss=None, **_):
        self.loss = loss

    def close(self) -> None:
        pass


def fmt_minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


# -- scores -------------------------------------------------------------------------------
def scores(res: dict) -> dict:
    """The part of an evaluate() result a fine-tune record keeps: MSTT and bicubic PSNR/SSIM
    (all frames, RGB) and MSTT's PSNR per clip."""
    m = res["mean"]
    return {"psnr": round(m["mstt"]["all"]["psnr_rgb"], 4), "ssim": round(m["mstt"]["all"]["ssim_rgb"], 5),
            "bicubic_psnr": round(m["baseline"]["all"]["psnr_rgb"], 4),
            "psnr_new_frames": round(m["mstt"]["new"]["psnr_rgb"], 4),
            "per_clip": {r["clip"]: round(r["mstt"]["all"]["psnr_rgb"], 4) for r in res["per_clip"]},
            "seconds": res["seconds"]}


def validate(model, clips: list, crop: int | None, device, log) -> dict:
    from .evaluate import evaluate

    ds = FrameListsDataset(clips, crop, root="validation frames")
    return scores(evaluate(ds, model=model, device=device, progress=False, log=log))


# -- the command --------------------------------------------------------------------------
def finetune(videos, output, weights=None, minutes: float = 30.0, synth_data=None, synth_share: float = SYNTH_SHARE,
             val_share: float = VAL_SHARE, val_crop: int | None = VAL_CROP, val_clips: int | None = None,
             crop: int | None = None,
             lr: float = FINETUNE_LR, steps: int | None = None, batch: int | None = None, config=None,
             device: str = "auto", work=None,
             resume: bool = False, overwrite: bool = False, allow_validation_data: bool = False, threads: int = 0,
             report=None, log=None, is_canceled=None, progress_every: float = 10.0) -> dict:
    """Fine-tune (see the module docstring); returns the record written into the output's
    metadata, plus ``output`` and ``work``. Every check runs before anything is written.
    ``report(fraction, text)``: progress of the whole command, a text line (step, loss, time
    left) every ``progress_every`` seconds of training; ``is_canceled()``: polled between steps."""
    import torch

    from ..net.weights import default_weights_path, load_model, read_metadata
    from ..run.device import resolve_device
    from .config import load_config
    from .crops import CropSampler, FlowCache, MixedSampler, build_sampler

    started = time.monotonic()
    log = log or (lambda m: print(m, file=sys.stderr))
    report = report or (lambda fraction, text: text and log(text))
    is_canceled = is_canceled or (lambda: False)
    if minutes <= 0:
        raise InputError(f"--minutes {minutes}: must be > 0")
    if not 0 <= synth_share < 1:
        raise InputError(f"--synth-share {synth_share}: must be at least 0 and below 1 (1 would not use your video)")
    if val_crop is not None and (val_crop <= 0 or val_crop % SCALE):
        raise InputError(f"--val-crop {val_crop}: must be a positive multiple of {SCALE} (0 = whole frames)")
    if not videos:
        raise InputError("no video given")

    # run folder and plan (a resumed run keeps its plan: same sources, base, settings, scores before)
    out_guess = Path(output).expanduser().absolute()
    work = Path(work).expanduser().absolute() if work else out_guess.with_name(out_guess.stem + ".finetune")
    if VALIDATION_ONLY in work.resolve().parts:
        raise InputError(f"{work}: the run folder would be under a '{VALIDATION_ONLY}' folder; give --work elsewhere")
    plan_path = work / PLAN
    plan = None
    if resume:
        if not plan_path.is_file():
            raise InputError(f"{work}: no fine-tune to resume there ({PLAN} not found); run without --resume")
        plan = json.loads(plan_path.read_text())
    elif plan_path.is_file() or (work / "last.pt").is_file():
        raise InputError(f"{work} holds an earlier fine-tune; --resume continues it, or remove the folder (or give --work)")
    output = check_output(output, overwrite, plan["run_id"] if plan else None)
    if plan is not None:  # a resumed run trains as it started
        crop, lr, batch, synth_share = plan["crop"], plan["lr"], plan["batch"], plan["synthetic"]["share"]
        synth_data, val_share = plan["synthetic"]["data"], plan["validation"]["share"]
        val_clips = plan["validation"].get("max_clips")

    base = Path(weights).expanduser().absolute() if weights else default_weights_path()
    base_model = load_model(base)
    if base_model.upstream_exact:
        raise InputError(f"{base}: upstream-exact weights (.pth) cannot be fine-tuned here; start from MSTT-STVSR "
                         "weights (.safetensors), e.g. the shipped ones")
    videos = [open_video(v, allow_validation_data) for v in videos]
    split_videos(videos, val_share, val_clips)
    cfg = load_config(config or DEFAULT_CONFIG)
    crop = int(crop or cfg["data"]["crop"])
    if crop <= 0 or crop % SCALE:
        raise InputError(f"--crop {crop}: must be a positive multiple of {SCALE} (LR px)")
    small = [v for v in videos if v.train and min(v.size) < SCALE * crop]
    if small:
        v = small[0]
        raise InputError(f"{v.source}: frames of {v.size[0]}x{v.size[1]} px are smaller than the training crop "
                         f"({crop} LR px = {SCALE * crop} px); give --crop {max(SCALE, min(v.size) // SCALE // SCALE * SCALE)} "
                         "or less")
    clips = validation_clips(videos)
    smallest = min(min(v.size) for v in videos if v.val)
    val_crop = min(val_crop, smallest // SCALE * SCALE) if val_crop else None
    if plan is not None:  # scored after as before
        val_crop = plan["validation"]["crop"]

    synth_root, synth_note = None, None
    if synth_share > 0:
        asked = synth_data is not None
        # default: the training config's data.root (build/data/train_city, `make data`), from the checkout
        synth_root = Path(synth_data).expanduser().absolute() if asked else PLUGIN_DIR / cfg["data"]["root"]
        if not synth_root.exists():
            if asked:
                raise InputError(f"--synth-data {synth_root}: not found (make data writes build/data/train_city)")
            synth_note = (f"note: no synthetic training set at {synth_root} (`make data` makes it); fine-tuning on "
                          "your video alone, which may forget some of what the synthetic set taught")
            synth_root, synth_share = None, 0.0
    record_sources = [v.record() for v in videos]
    if plan is not None:
        if [s["frames_sha256"] for s in plan["sources"]] != [s["frames_sha256"] for s in record_sources]:
            raise InputError(f"{work}: the fine-tune there was of other frames; give the same videos to resume it")
        if plan["base_weights"]["sha256"] != file_sha256(base):
            raise InputError(f"{work}: the fine-tune there started from other weights ({plan['base_weights']['path']})")

    # the training config: the base's network, the user's crop and rate, a time schedule
    cfg["model"] = {k: v for k, v in base_model.config.items()}
    cfg["data"].update(root=str(synth_root or ""), crop=crop, flow_cache="", list="")
    tr = cfg["train"]
    tr.update(init=str(base), lr=float(lr), out=str(work), device=device, schedule="time", threads=threads)
    tr["lr_min"] = min(tr["lr_min"], tr["lr"] / 10)
    if steps is not None:
        tr["steps"] = int(steps)
    if batch is not None:
        if batch < 1:
            raise InputError(f"--batch {batch}: must be at least 1")
        tr["batch"] = int(batch)
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(int(threads))
    windows = VideoWindows(videos)
    synth_sampler = build_sampler(cfg) if synth_root is not None else None  # refuses validation-only data too
    if synth_note:
        log(synth_note)
    # nothing has been written so far; from here on the run folder fills
    work.mkdir(parents=True, exist_ok=True)
    parts = [(CropSampler(windows, crop, FlowCache(work / "flow_cache", "user video"), True), 1.0 - synth_share)]
    if synth_sampler is not None:
        parts.append((synth_sampler, synth_share))
    sampler = MixedSampler(parts)

    if plan is None:
        n_train = sum(len(v.train) for v in videos)
        log(f"fine-tuning on {len(videos)} video(s): {n_train} frames to train on, {sum(len(v.val) for v in videos)} "
            f"held out for validation ({len(clips)} clip(s)); synthetic share {synth_share:.0%}; device {dev}")
        report(0.0, "validating the base weights on the held-out frames")
        before = validate(base_model, clips, val_crop, dev, log)
        log(f"before: {before['psnr']:.2f} dB (bicubic {before['bicubic_psnr']:.2f} dB) on the held-out frames")
        plan = {"run_id": uuid.uuid4().hex, "sources": record_sources,
                "base_weights": {"path": str(base), "sha256": file_sha256(base)},
                "synthetic": {"data": str(synth_root) if synth_root else None, "share": synth_share},
                "validation": {"share": val_share, "crop": val_crop, "clips": len(clips), "max_clips": val_clips,
                               "metric": "PSNR RGB dB, all frames (inputs and new), mean over clips"},
                "crop": crop, "lr": float(lr), "batch": int(tr["batch"]), "minutes": minutes,
                "throwaway": any(v.validation_only for v in videos),
                "before": before, "trained_seconds": 0.0, "wall_seconds": 0.0}
        report(0.02, "computing optical flow of the training clips")
        precompute(sampler, tr["loader_threads"], dev)
        spent = time.monotonic() - started
        reserve = 1.1 * before["seconds"] + EXPORT_RESERVE_S
        plan["train_seconds"] = max(0.0, minutes * 60 - spent - reserve)
        plan_path.write_text(json.dumps(plan, indent=1))
    else:
        log(f"resuming the fine-tune in {work} ({plan['trained_seconds']:.0f} s of {plan['train_seconds']:.0f} s trained)")
        precompute(sampler, tr["loader_threads"], dev)
        reserve = 1.1 * plan["before"]["seconds"] + EXPORT_RESERVE_S
    before = plan["before"]
    tr["max_minutes"] = plan["train_seconds"] / 60

    summary = {"step": 0, "ended": "no time left to train", "seconds": 0.0}
    left = plan["train_seconds"] - plan["trained_seconds"]
    if is_canceled():
        raise Canceled("canceled before training; no weights written")
    if left > 0:
        from .train import run_training

        tr["max_minutes"] = max(tr["max_minutes"], 1e-3)
        bar = Progress(report, started, left, reserve, plan.get("steps", 0), progress_every)
        summary = run_training(cfg, resume="auto", progress=False, log=log, sampler=sampler, bar=bar,
                               is_canceled=is_canceled)
    else:
        log(f"note: the time box of {minutes} min leaves no time to train after validating twice; "
            "give more --minutes")

    trained, steps_done, seconds = load_trained(work / "last.pt", cfg)
    after = None
    if trained is not None and steps_done > 0:
        report(0.97, f"validating the fine-tuned weights ({steps_done} steps) on the held-out frames")
        trained = trained.half().float()  # scored as written: the output is fp16
        after = validate(trained, clips, val_crop, dev, log)
    kept = KEPT_FINETUNED if after is not None and after["psnr"] > before["psnr"] else KEPT_BASE
    record = {"version": 1, **{k: plan[k] for k in ("run_id", "sources", "base_weights", "synthetic", "validation",
                                                     "crop", "lr", "batch", "throwaway")},
              "before": before, "after": after, "kept": kept, "steps": steps_done,
              "minutes": round(seconds / 60, 2), "ended": summary["ended"], "device": str(dev),
              "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    plan["trained_seconds"], plan["steps"] = seconds, steps_done
    plan["wall_seconds"] += time.monotonic() - started
    record["wall_minutes"] = round(plan["wall_seconds"] / 60, 2)
    base_meta = {k: v for k, v in read_metadata(base).items() if k not in ("format", "config", "variant", META_KEY)} \
        if base.suffix.lower() == ".safetensors" else {}
    if kept == KEPT_FINETUNED:
        write_weights(trained, output, {**base_meta, META_KEY: record}, half=True)
    else:  # the base as it is stored, so that the file scores what "before" measured
        write_weights(base_model, output, {**base_meta, META_KEY: record}, half=stored_half(base))
    plan_path.write_text(json.dumps(plan, indent=1))
    return {**record, "output": str(output), "work": str(work)}


def precompute(sampler, threads, device) -> None:
    """The flow cache of every training clip, by the threads training would sample with (none
    on a CPU, where the step needs every core)."""
    import contextlib
    from concurrent.futures import ThreadPoolExecutor

    from .train import loader_threads

    n = loader_threads(threads, device)
    with ThreadPoolExecutor(n) if n else contextlib.nullcontext() as pool:
        sampler.precompute(progress=False, pool=pool)


def load_trained(ckpt: Path, cfg: dict):
    """The fine-tuned network of the run's checkpoint, its steps and training seconds (None,
    0, 0 before its first checkpoint)."""
    import torch

    from ..net.model import MSTT

    if not ckpt.is_file():
        return None, 0, 0.0
    st = torch.load(str(ckpt), map_location="cpu", weights_only=False)
    model = MSTT(**cfg["model"])
    model.load_state_dict(st["model"])
    return model.eval(), int(st["step"]), float(st.get("seconds", 0.0))


def write_weights(model, output: Path, meta: dict, half: bool) -> Path:
    """Safetensors, fp16 or fp32, written atomically by save_weights."""
    from ..net.weights import save_weights

    return save_weights(model.cpu().eval(), output, extra_meta=meta, half=half)


def stored_half(path: Path) -> bool:
    """Whether a weights file stores fp16 tensors (the shipped ones do)."""
    if path.suffix.lower() != ".safetensors":
        return False
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        key = next(iter(f.keys()))
        return str(f.get_slice(key).get_dtype()) in ("F16", "float16")


def summary_line(rec: dict) -> str:
    """One paragraph for the user: before, after, which was kept, and why."""
    b, a = rec["before"], rec["after"]
    head = (f"held-out frames of your video: base weights {b['psnr']:.2f} dB (bicubic {b['bicubic_psnr']:.2f} dB)")
    if a is None:
        return head + f"; not fine-tuned ({rec['ended']}): the output is the base weights"
    gain = a["psnr"] - b["psnr"]
    tail = (f"; fine-tuned {a['psnr']:.2f} dB ({gain:+.2f} dB) after {rec['steps']} steps in {rec['minutes']:.1f} min")
    if rec["kept"] == KEPT_FINETUNED:
        return head + tail + ": kept the fine-tuned weights"
    return head + tail + ": no better than the base, so the output is the base weights"


def describe(rec: dict) -> list:
    """(label, text) lines for ``mstt-stvsr info --weights`` about a fine-tune record."""
    lines = [("fine-tuned", summary_line(rec))]
    for s in rec["sources"]:
        lines.append(("video", f"{s['video']}: {s['frames']} frames {s['size'][0]}x{s['size'][1]}, {s['train_frames']} "
                               f"trained on, {s['validation_frames']} held out; frames SHA-256 {s['frames_sha256']}"))
    syn = rec["synthetic"]
    lines += [("synthetic share", f"{syn['share']:.0%}" + (f" of {syn['data']}" if syn["data"] else "")),
              ("base weights", f"{rec['base_weights']['path']} (SHA-256 {rec['base_weights']['sha256'][:16]}...)"),
              ("steps", f"{rec['steps']} in {rec['minutes']} min of training, {rec['wall_minutes']} min in all "
                        f"({rec['device']}, ended: {rec['ended']})"),
              ("validation", f"{rec['validation']['clips']} clip(s), centre crop {rec['validation']['crop'] or 'none'}; "
                             f"{rec['validation']['metric']}"),
              ("date", rec["date"])]
    if rec.get("throwaway"):
        lines.append(("throwaway", "trained on video kept for validation (--allow-validation-data): never ship these"))
    return lines


# -- CLI ----------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("videos", nargs="+", metavar="VIDEO",
                        help="a folder of consecutive native frames (PNG, JPEG, 8-bit TIFF/GeoTIFF; natural name order), "
                             f"or a list file naming them; at least {N_OUT} frames, one size within a video")
    parser.add_argument("-o", "--output", required=True, help="the fine-tuned weights (.safetensors)")
    parser.add_argument("--weights", help="start from these weights (default: the shipped ones)")
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="time box of the whole command, validation included (default 30)")
    parser.add_argument("--synth-share", type=float, default=SYNTH_SHARE,
                        help=f"share of training samples from the synthetic set, so that the network does not forget "
                             f"(default {SYNTH_SHARE}; 0 = your video alone)")
    parser.add_argument("--synth-data", help="the synthetic training set (default: build/data/train_city of `make data`; "
                                             "when that is missing, your video alone)")
    parser.add_argument("--val-share", type=float, default=VAL_SHARE,
                        help=f"share of each video's last frames held out for validation (default {VAL_SHARE})")
    parser.add_argument("--val-clips", type=int, metavar="N",
                        help="at most N held-out 7-frame clips in all (default: every video of 14+ frames gives at "
                             "least one); with many short videos, the shortest give theirs back to training first")
    parser.add_argument("--val-crop", type=int, default=VAL_CROP,
                        help=f"validate on a centre crop of this many px a side (default {VAL_CROP}; 0 = whole frames)")
    parser.add_argument("--crop", type=int, help="training crop, LR px (default: the config's, 80)")
    parser.add_argument("--lr", type=float, default=FINETUNE_LR, help=f"learning rate (default {FINETUNE_LR})")
    parser.add_argument("--steps", type=int, help="stop after this many steps even within the time box")
    parser.add_argument("--batch", type=int, help="crops per step (default: the config's, 2; a GPU takes 16)")
    parser.add_argument("--config", help="training config (default configs/default.toml; configs/tiny.toml for tests)")
    parser.add_argument("--device", default="auto", help="auto (a CUDA GPU if present), cpu, cuda, cuda:1 ...")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all)")
    parser.add_argument("--work", help="run folder: plan, checkpoint, log, flow cache (default <output stem>.finetune)")
    parser.add_argument("--resume", action="store_true", help="continue the stopped fine-tune in the run folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--allow-validation-data", action="store_true",
                        help=f"read video under a '{VALIDATION_ONLY}' folder (kept to judge the shipped weights): the "
                             "result is a throwaway copy, marked so in its metadata")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def main(args) -> int:
    def report(fraction, text):
        if text and not args.quiet:
            print(text, file=sys.stderr, flush=True)

    rec = finetune(args.videos, args.output, weights=args.weights, minutes=args.minutes, synth_data=args.synth_data,
                   synth_share=args.synth_share, val_share=args.val_share, val_crop=args.val_crop or None,
                   val_clips=args.val_clips,
                   crop=args.crop, lr=args.lr, steps=args.steps, batch=args.batch, config=args.config,
                   device=args.device,
                   work=args.work, resume=args.resume, overwrite=args.overwrite,
                   allow_validation_data=args.allow_validation_data, threads=args.threads, report=report,
                   log=(lambda m: None) if args.quiet else None)
    print(summary_line(rec))
    print(rec["output"])
    return 0

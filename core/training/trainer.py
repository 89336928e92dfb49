"""One training run's state and step: MSTT, Adam, Charbonnier loss, the learning-rate schedule,
mixed precision, and checkpoints that resume exactly.

The model is kept in channels_last memory format on every device: oneDNN (CPU) and cuDNN (CUDA)
convolutions run faster on NHWC, and the weights' values do not depend on the layout, so a
checkpoint loads either way. Under autocast the weights stay fp32.

A checkpoint is a ``torch.save`` dict: step, config, model, optimizer, seconds (training time
of all runs), scaler, and the numpy / torch / Python RNG states (rng_numpy, rng_torch,
rng_python).
"""
from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..run.device import autocast, resolve_precision


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean of sqrt((pred - target)^2 + eps^2): L1 that stays smooth at zero."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


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


def amp_dtype(mode, device: torch.device):
    """Autocast dtype of ``train.amp`` on ``device``, None for fp32 ("off").

    The choice is inference's (``core.run.device.resolve_precision``): "auto" is bf16 on GPUs
    that support it, else fp16 (with a grad scaler); on CPU bf16 on the kinds where it was
    measured faster (AMD EPYC: 2x faster steps), else fp32 (an Intel Xeon without usable AMX:
    fp32 steps 14.7-15.1 s against bf16's 16.1-17.1 s). fp16 needs CUDA."""
    if mode in ("off", "fp32", False):
        return None
    if mode not in ("auto", "bf16", "fp16"):
        raise InputError(f"train.amp = {mode!r}: expected auto, bf16, fp16 or off")
    try:
        dtype = resolve_precision(mode, device)
    except InputError as exc:
        raise InputError(f"train.amp = {mode!r}: {exc}") from None
    return None if dtype == torch.float32 else dtype


def like_params(opt: torch.optim.Optimizer) -> None:
    """Give per-parameter optimizer state the memory format of its parameter (a checkpoint
    written from a contiguous model keeps contiguous moments, which would then mix layouts in
    every update)."""
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p, {})
            for k, v in state.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    state[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


# Parameters (or modules) a model may have that the weights it starts from lack: they keep their
# initial values (cosine attention's temperatures when starting from dot-attention weights; the
# neighbour fusion, whose zero output conv makes it a no-op until trained).
NEW_PARAMETERS = ("log_temperature", "neighbour_fusion")


def init_from(model, state: dict, source) -> None:
    """Load ``state`` into ``model``; only parameters named in NEW_PARAMETERS may be missing
    (they keep the model's initial values). Anything else that does not fit is a WeightsError
    listing it, as loading weights reports it."""
    from ..net.weights import check_state_dict

    new = {k: v for k, v in model.state_dict().items() if set(k.split(".")) & set(NEW_PARAMETERS)}
    state = {**new, **state}
    check_state_dict(model, state, str(source))
    model.load_state_dict(state)


class Trainer:
    """Model, optimizer, grad scaler, step counter, training seconds and the sampling RNG of one
    run, from ``cfg`` (see config.py) on ``device``."""

    def __init__(self, cfg: dict, device: torch.device):
        from ..net.model import MSTT

        self.cfg, self.device = cfg, device
        tr = cfg["train"]
        torch.manual_seed(tr["seed"])
        self.model = MSTT(**cfg["model"])
        if tr["init"]:
            from ..net.weights import load_model

            init_from(self.model, load_model(tr["init"]).state_dict(), tr["init"])
        self.model = self.model.to(device, memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=tr["lr"], betas=tuple(tr["betas"]))
        self.seconds = 0.0  # training time over all runs of this checkpoint (for schedule = "time")
        self.amp = amp_dtype(tr["amp"], device)
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
        """Write the checkpoint atomically (a crash mid-write leaves the previous one)."""
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
        like_params(self.opt)
        self.seconds = float(st.get("seconds", 0.0))
        self.scaler.load_state_dict(st["scaler"])
        self.rng.bit_generator.state = st["rng_numpy"]
        torch.set_rng_state(st["rng_torch"])
        random.setstate(st["rng_python"])
        self.step = int(st["step"])

    # one step -----------------------------------------------------------------------------
    def train_step(self, lr, hr, flows) -> float:
        """One optimizer step on a batch (lr (B, 4, 3, h, w), hr (B, 7, 3, 4h, 4w), flows
        (B, 3, 4, h, w)); returns the loss."""
        self.model.train()
        t0 = time.monotonic()
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.cfg["train"], self.step, self.seconds)
        lr, hr, flows = (t.to(self.device, non_blocking=True) for t in (lr, hr, flows))
        with autocast(self.device, self.amp or torch.float32):
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


def export_weights(model, path, cfg: dict, step: int, half: bool = True) -> Path:
    """The model's weights as safetensors (fp16 by default), with the training facts as metadata."""
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

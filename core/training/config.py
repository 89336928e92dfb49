"""Training configuration: ``DEFAULTS`` <- a TOML file (configs/*.toml: sections ``[model]``,
``[data]``, ``[train]``) <- command-line overrides. Unknown sections and keys are errors, so a
typo cannot silently train with a default."""
from __future__ import annotations

import json
from pathlib import Path

from .. import PLUGIN_DIR
from ..errors import InputError

ROOT_CONFIGS = PLUGIN_DIR / "configs"
DEFAULTS = {
    "model": {"nf": 64, "groups": 8, "front_RBs": 5, "back_RBs": 10, "skip": True, "attention": "cosine", "neighbours": True,
              "subpixel": True},
    "data": {"root": "build/data/train", "layout": "auto", "list": "", "crop": 80, "flow_cache": "",
             "time_reverse": True},
    "train": {"steps": 100000, "batch": 1, "lr": 4e-4, "lr_min": 1e-7, "restart": 0, "warmup": 0,
              "schedule": "steps", "betas": [0.9, 0.99],
              "charbonnier_eps": 1e-3, "grad_clip": 0.0, "seed": 0, "threads": 0, "device": "auto",
              "amp": "auto", "log_every": 10, "ckpt_every": 100, "max_minutes": 0.0, "out": "build/train/run",
              "init": "", "loader_threads": "auto"},
}


def read_toml(path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    p = Path(path)
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise InputError(f"{p}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{p}: not valid TOML ({exc})") from None


def load_config(path=None, overrides: dict | None = None) -> dict:
    """DEFAULTS <- TOML file <- overrides ({"train.steps": 10, ...}, None = keep); a new dict."""
    cfg = json.loads(json.dumps(DEFAULTS))
    if path:
        for sec, items in read_toml(path).items():
            if sec not in cfg or not isinstance(items, dict):
                raise InputError(f"{path}: unknown section [{sec}] (expected {', '.join(cfg)})")
            for k, v in items.items():
                if k not in cfg[sec]:
                    raise InputError(f"{path}: unknown key {sec}.{k}")
                cfg[sec][k] = v
    for dotted, v in (overrides or {}).items():
        if v is None:
            continue
        sec, k = dotted.split(".")
        cfg[sec][k] = v
    crop = cfg["data"]["crop"]
    if crop <= 0 or crop % 4:
        raise InputError(f"data.crop = {crop}: must be a positive multiple of 4 (80 avoids padding)")
    return cfg

"""Weights IO: safetensors is our format; upstream ``.pth`` state_dicts load safely too.

Our files carry the network config (and whether the bicubic/flow base ``skip`` is used) in the
safetensors metadata, so a file alone rebuilds the model. ``.pth`` files are read with
``torch.load(weights_only=True)``: no pickle code runs. Any mismatch becomes a WeightsError that
lists missing/unexpected keys and wrong shapes instead of a traceback from inside torch.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .. import PLUGIN_DIR
from ..errors import WeightsError
from .model import MSTT

FORMAT = "mstt_stvsr"
WRAPPERS = ("state_dict", "params_ema", "params", "model", "net", "generator")


def default_weights_path() -> Path:
    return PLUGIN_DIR / "resources" / "weights" / "mstt_default.safetensors"


def save_weights(model: MSTT, path, extra_meta: dict | None = None, half: bool = False) -> Path:
    """Write the model's state_dict and config; fp16 halves the file at no visible cost."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": json.dumps(model.config), "variant": model.variant}
    for key, value in (extra_meta or {}).items():
        meta[str(key)] = value if isinstance(value, str) else json.dumps(value)
    tmp = path.with_name(path.name + ".part")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_metadata(path) -> dict:
    """The metadata of one of our safetensors files (training data, steps, scores...)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def infer_config(state: dict) -> dict:
    """Rebuild constructor arguments from tensor shapes (for files that do not carry them)."""
    try:
        nf = state["conv_first.weight"].shape[0]
        groups = state["MSD_align.dcnpack.conv_offset_mask.weight"].shape[0] // 27
    except KeyError as exc:
        raise WeightsError(f"not an MSTT state_dict: key {exc.args[0]!r} is missing") from None

    def count(prefix: str) -> int:
        idx = {int(m.group(1)) for k in state if (m := re.match(rf"{prefix}\.(\d+)\.", k))}
        return max(idx) + 1 if idx else 0

    return dict(nf=nf, groups=groups, front_RBs=count("feature_extraction"), back_RBs=count("recon_trunk"))


def _read_pth(path: Path) -> dict:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for anything beyond plain tensors/containers
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"{path}: cannot read as a PyTorch state_dict without running pickle code ({first[:200]})"
        ) from None
    for _ in range(3):  # nested wrappers such as {"state_dict": {"params": ...}}
        if isinstance(obj, dict):
            key = next((k for k in WRAPPERS if k in obj and isinstance(obj[k], dict)), None)
            if key is not None and not any(isinstance(v, torch.Tensor) for v in obj.values()):
                obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: no state_dict of tensors found (expected a dict, or one under {', '.join(WRAPPERS)})")
    return {re.sub(r"^(module\.)+", "", k): v for k, v in obj.items()}


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
        meta = read_metadata(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    return state, meta


def check_finite(state: dict, source: str) -> None:
    """Raise a WeightsError naming the tensors holding NaN or infinity: such a network makes
    black (or NaN) frames that look like a result."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        raise WeightsError(f"{source}: {len(bad)} tensor(s) hold NaN or infinite values: {', '.join(bad[:3])}{more}; "
                           "the file is damaged, or training diverged")


def check_state_dict(model: torch.nn.Module, state: dict, source: str) -> None:
    """Raise a WeightsError naming every missing/unexpected key and wrong shape."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or wrong):
        return

    def listed(items):
        return ", ".join(items[:6]) + (f" (+{len(items) - 6} more)" if len(items) > 6 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {listed(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {listed(unexpected)}")
    if wrong:
        parts.append(f"{len(wrong)} shape mismatches: {listed(wrong)}")
    raise WeightsError(f"{source} does not fit the MSTT network: " + "; ".join(parts))


def _inferred(state: dict, path: Path) -> dict:
    try:
        return infer_config(state)
    except WeightsError as exc:
        raise WeightsError(f"{path}: {exc}") from None


def load_model(path=None, map_location="cpu") -> MSTT:
    """Build MSTT from a weights file (None = the shipped default) in eval mode."""
    path = Path(path) if path is not None else default_weights_path()
    if not path.exists():
        hint = " (the shipped default weights are missing; reinstall the plugin or pass weights)" if path == default_weights_path() else ""
        raise WeightsError(f"weights file not found: {path}{hint}")
    if not path.is_file():
        raise WeightsError(f"weights path is not a file: {path}")
    if path.suffix.lower() == ".safetensors":
        state, meta = _read_safetensors(path)
        if "config" in meta:
            try:
                config = json.loads(meta["config"])
            except ValueError:
                raise WeightsError(f"{path}: corrupt config metadata") from None
        else:  # a converted upstream checkpoint: computes what upstream's code computes
            config = dict(_inferred(state, path), skip=False, upstream_exact=True)
    else:
        state = _read_pth(path)
        config = dict(_inferred(state, path), skip=False, upstream_exact=True)
    try:
        model = MSTT(**config)
    except TypeError as exc:
        raise WeightsError(f"{path}: unsupported network config {config} ({exc})") from None
    check_state_dict(model, state, str(path))
    check_finite(state, str(path))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.to(map_location).eval()

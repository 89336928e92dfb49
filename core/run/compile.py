"""Backend settings and ``torch.compile`` of the network's stages, with an eager fallback: a
missing compiler must slow a run down, never stop it."""
from __future__ import annotations

import warnings

import torch

from .device import is_oom

def configure_backends(device: torch.device) -> dict:
    """cuDNN autotuning: all tiles of a run share one shape, so the kernel search is paid once.
    TF32 settings are left as PyTorch sets them (cuDNN convs use TF32 in fp32 by default)."""
    if device.type != "cuda":
        return {}
    torch.backends.cudnn.benchmark = True
    return {"cudnn.benchmark": True, "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32}


class EagerFallback:
    """Calls a compiled function; on the first failure that is not out-of-memory, warns once
    and uses the eager function from then on (a missing compiler must not stop a run)."""

    def __init__(self, eager, compiled, name: str = "", log=None):
        self.eager, self.compiled, self.name, self.log = eager, compiled, name, log
        self.failed: str | None = None

    def __call__(self, *args, **kwargs):
        if self.failed is None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:
                if is_oom(exc):
                    raise
                self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                msg = f"torch.compile of {self.name or 'the model'} failed ({self.failed}); running eager"
                (self.log or (lambda m: warnings.warn(m, RuntimeWarning)))(msg)
        return self.eager(*args, **kwargs)


NETWORK_STAGES = ("extract", "middle_features", "MSST_former", "reconstruct")


def compile_stages(net, stages=NETWORK_STAGES, log=None, **compile_kwargs) -> list:
    """``torch.compile`` the network's stages in place, each with an eager fallback; returns
    the names compiled. A method stage becomes an instance attribute of ``net``; a submodule
    stage (``MSST_former``) gets its ``forward`` replaced on the instance, so module names and
    the state_dict are untouched. ``uncompile_stages`` undoes both. Stages, not ``forward``:
    the pipeline asks only for the outputs a window owns, so each stage's shapes stay fixed
    within a run and compile once."""
    done = []
    for name in stages:
        target = getattr(net, name, None)
        if target is None:
            continue
        if isinstance(target, torch.nn.Module):
            fn = target.forward
            target.forward = EagerFallback(fn, torch.compile(fn, **compile_kwargs), name, log)
        else:
            setattr(net, name, EagerFallback(target, torch.compile(target, **compile_kwargs), name, log))
        done.append(name)
    return done


def uncompile_stages(net, names) -> None:
    """Give ``net`` back its own stages after ``compile_stages``."""
    for name in names:
        target = getattr(net, name, None)
        if isinstance(target, torch.nn.Module):
            target.__dict__.pop("forward", None)
        else:
            net.__dict__.pop(name, None)



"""FLOPs of the network, counted by ``torch.utils.flop_counter`` on the meta device: shapes
only, so the full model at any tile size is counted in moments and without memory."""
from __future__ import annotations

import torch

from ..net.dcn import set_backend
from ..net.model import MSTT
from ..net.spec import N_IN
from ..run.windows import plan_windows

FLOP_NOTE = ("FLOPs by torch.utils.flop_counter on the meta device: convolutions and matmuls "
             "(attention, deformable-conv contraction); grid_sample (flow warping, deformable "
             "sampling), interpolation and elementwise ops are not counted")


def meta_model(model: torch.nn.Module) -> torch.nn.Module:
    """A shape-only twin of ``model`` (same class and config) on the meta device, with the
    pure-PyTorch deformable conv: FlopCounterMode does not see inside torchvision's fused op,
    and the two compute the same contraction."""
    cfg = getattr(model, "config", None) or {}
    with torch.device("meta"):
        twin = MSTT(**cfg) if isinstance(model, MSTT) else type(model)()
    set_backend(twin, "pure")
    return twin.eval()


def full_forward(net, lr, flows):
    """All 7 outputs in one batch."""
    return net(lr, flows)


def count_flops(model: torch.nn.Module, batch: int, height: int, width: int, fn=full_forward) -> float:
    """FLOPs of ``fn(net, lr, flows)`` on a (batch, 4, 3, height, width) window. Counts
    convolutions and matmuls (incl. attention and the deformable conv's contraction); NOT
    grid_sample (flow warping and deformable sampling), interpolation or elementwise ops, which
    are memory-bound and a small share of the arithmetic."""
    from torch.utils.flop_counter import FlopCounterMode

    net = meta_model(model)
    lr = torch.empty(batch, N_IN, 3, height, width, device="meta")
    flows = torch.empty(batch, N_IN - 1, 4, height, width, device="meta")
    counter = FlopCounterMode(display=False)
    # with gradients enabled the network runs its HR stages on whole frames: the count is the
    # network's arithmetic, without the halo rows inference's strips recompute (+1.5 % at 160)
    with counter, torch.enable_grad():
        fn(net, lr, flows)
    return float(counter.get_total_flops())


def window_flop_plan(model: torch.nn.Module, tile: int, n_frames: int = N_IN, mode: str = "central") -> dict:
    """FLOPs the pipeline's network calls make per tile with the ``mode`` window plan (each
    window reconstructs only the outputs it owns) against one full 7-output forward."""
    full = count_flops(model, 1, tile, tile)
    per_window = []
    for win in plan_windows(n_frames, mode):
        keep = [pos for _, pos in win.outputs]
        per_window.append(count_flops(model, 1, tile, tile, fn=lambda net, lr, fl, k=keep: net(lr, fl, keep=k)))
    return {"windows": len(per_window), "flops_full_forward": full, "flops_windows": sum(per_window),
            "window_factor": sum(per_window) / full}

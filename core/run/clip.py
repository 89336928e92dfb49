"""The network over a whole small clip, window by window, without tiles: what the pipeline does
to a stack, for evaluation and studies on clips held in memory."""
from __future__ import annotations

import torch

from .ensemble import ensemble_forward
from .flow import flows_tensor
from .windows import SWAPPED_HALVES, plan_windows, stored_pair


def window_flows(flows: torch.Tensor, pairs) -> torch.Tensor:
    """(B, T-1, 4, H, W) flows of consecutive pairs -> (B, 3, 4, H, W) for a window's pairs.
    A reversed pair (k+1, k) is pair k with its two halves swapped: each half is the flow
    applied to one of the two frames, whichever comes first in the window."""
    out = []
    for a, b in pairs:
        k, swapped = stored_pair(a, b)
        out.append(flows[:, k][:, SWAPPED_HALVES] if swapped else flows[:, k])
    return torch.stack(out, dim=1)


@torch.no_grad()
def run_clip(model, lr: torch.Tensor, mode: str = "fast", ensemble: bool = False) -> torch.Tensor:
    """lr (B, T, 3, H, W) in [0, 1] -> (B, 2T-1, 3, 4H, 4W): every output from the window
    ``plan_windows(T, mode)`` assigns it, flows estimated once per pair on whole frames;
    ``ensemble``: each window averaged over its 8 flips/rotations."""
    flows = flows_tensor(lr, model.flow_kind)
    outs = {}
    for win in plan_windows(lr.shape[1], mode):
        keep = [pos for _, pos in win.outputs]
        x, fl = lr[:, list(win.frames)], window_flows(flows, win.pairs)
        y = ensemble_forward(model, x, fl, keep) if ensemble else model(x, fl, keep=keep)
        outs.update({p: y[:, i] for i, (p, _) in enumerate(win.outputs)})
    return torch.stack([outs[p] for p in sorted(outs)], dim=1)

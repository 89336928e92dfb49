"""Small networks for tests that run whole stacks in seconds on 2 cores.

With ``skip=True`` a fresh MSTT's last conv is zero, so its output is exactly the
parameter-free bicubic/flow base: a test of tiles, windows or band groups would then pass
even if the network's inputs were wrong. ``tiny_mstt`` gives the learned part a real say."""
import torch

from mstt_stvsr.core.net.model import MSTT

TINY = dict(nf=8, groups=2, front_RBs=1, back_RBs=1)
RESIDUAL = 0.05  # std of the last conv's weights: the residual moves outputs by several DN


def tiny_mstt(residual: float = RESIDUAL, seed: int = 0, **config) -> MSTT:
    """A tiny MSTT in eval mode whose residual over the base is non-zero (``residual`` > 0)."""
    torch.manual_seed(seed)
    m = MSTT(**{**TINY, **config})
    if residual:
        torch.nn.init.normal_(m.conv_last.weight, std=residual)
        if m.neighbour_fusion is not None:  # zero-initialised too: give the fusion a say as well
            torch.nn.init.normal_(m.neighbour_fusion.out.weight, std=residual)
            if m.neighbour_fusion.subpixel is not None:
                torch.nn.init.normal_(m.neighbour_fusion.subpixel.weight, std=residual)
    return m.eval()

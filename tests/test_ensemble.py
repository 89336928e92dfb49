"""Test-time self-ensemble: the 8 flips/rotations of a window, flows turned with their frames."""
import torch

from mstt_stvsr.core.run import ensemble as E
from mstt_stvsr.core.run.flow import flows_tensor
from nets import tiny_mstt


def moving_clip(h=24, w=32, seed=0):
    """4 frames of a smooth random scene drifting 0.7 px right and 0.4 px down per frame."""
    g = torch.Generator().manual_seed(seed)
    scene = torch.nn.functional.interpolate(torch.rand(1, 3, h // 4 + 2, w // 4 + 2, generator=g), size=(h + 8, w + 8),
                                            mode="bicubic", align_corners=False)
    frames = []
    for t in range(4):
        theta = torch.tensor([[[1.0, 0, -0.7 * t * 2 / (w + 8)], [0, 1.0, -0.4 * t * 2 / (h + 8)]]])
        grid = torch.nn.functional.affine_grid(theta, (1, 3, h + 8, w + 8), align_corners=False)
        frames.append(torch.nn.functional.grid_sample(scene, grid, align_corners=False)[..., 4:-4, 4:-4])
    return torch.cat(frames).unsqueeze(0).clamp(0, 1)


def test_transforms_invert_and_cover_the_square():
    x = torch.arange(2 * 3 * 5, dtype=torch.float32).view(2, 3, 5)
    seen = set()
    for tf in E.TRANSFORMS:
        y = E.transform_frames(x, *tf)
        assert torch.equal(E.untransform_frames(y, *tf), x)
        seen.add(tuple(y.flatten().tolist()))
    assert len(seen) == 8


def test_flows_follow_their_frames():
    """Flows estimated on a transformed clip equal the clip's flows transformed (to DIS accuracy)."""
    lr = moving_clip()
    fl = flows_tensor(lr)
    for tf in E.TRANSFORMS:
        got = flows_tensor(E.transform_frames(lr, *tf))
        want = E.transform_flows(fl, *tf)
        inner = (..., slice(4, -4), slice(4, -4))
        assert (got - want)[inner].abs().mean() < 0.1, tf


def ensemble_error(net, lr, fl):
    with torch.no_grad():
        return (E.ensemble_forward(net, lr, fl) - net(lr, fl)).abs().mean().item()


def test_an_equivariant_network_is_unchanged_and_wrong_flows_show(monkeypatch):
    """The parameter-free base commutes with flips and rotations, so its ensemble is itself
    (to interpolation rounding); flows turned without negating their components must not be."""
    net = tiny_mstt(residual=0.0)  # output = the base: bicubic inputs, flow-warped new frames
    lr = moving_clip()
    fl = flows_tensor(lr)
    good = ensemble_error(net, lr, fl)
    assert good < 2e-3
    monkeypatch.setattr(E, "transform_flows", lambda f, t, fy, fx: E.transform_frames(f, t, fy, fx))
    assert ensemble_error(net, lr, fl) > 5 * good + 1e-3


def test_ensemble_averages_a_real_network():
    net = tiny_mstt()
    lr = moving_clip()
    fl = flows_tensor(lr)
    with torch.no_grad():
        y = E.ensemble_forward(net, lr, fl, keep=[1, 2])
        single = net(lr, fl, keep=[1, 2])
    assert y.shape == single.shape
    assert 0 < (y - single).abs().mean() < 0.05

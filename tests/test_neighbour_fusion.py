"""Neighbour fusion: each input frame's features merged with its neighbours', aligned by flow.

The alignment must put a neighbour's content where the frame has it (else the fusion learns to
ignore the neighbour, as upstream's unaligned transformer tokens were ignored); the module must
join existing weights as an exact no-op; the option must survive saving and loading."""
import numpy as np
import pytest
import torch

from mstt_stvsr.core.net.model import MSTT
from mstt_stvsr.core.net.neighbour_fusion import NeighbourFusion, neighbour_flows
from mstt_stvsr.core.net.weights import load_model, save_weights
from mstt_stvsr.core.run.flow import flows_tensor
from mstt_stvsr.core.training.trainer import init_from

from nets import TINY, tiny_mstt


def drifting_clip(shift=(2, -1), n: int = 4, size: int = 48, seed: int = 0) -> torch.Tensor:
    """(1, n, 3, size, size): one smooth random texture moving by ``shift`` (dx, dy) LR px per frame."""
    g = torch.Generator().manual_seed(seed)
    big = torch.rand(1, 3, size // 4 + 8, size // 4 + 8, generator=g)
    big = torch.nn.functional.interpolate(big, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    dx, dy = shift
    m = 12  # margin the motion moves within
    frames = [big[0, :, m - i * dy: m - i * dy + size, m - i * dx: m - i * dx + size] for i in range(n)]
    return torch.stack(frames).unsqueeze(0)


def test_neighbour_flows_put_each_neighbour_onto_the_frame():
    lr = drifting_clip()
    flows = flows_tensor(lr)  # the pipeline's own flows (OpenCV DIS), not constructed ones
    fusion = NeighbourFusion(nf=3)
    w_prev, w_next = (x.view(lr.shape) for x in fusion.aligned_neighbours(lr, flows))
    inner = (slice(None), slice(None), slice(None), slice(8, -8), slice(8, -8))
    for t in range(1, 4):
        err = (w_prev[:, t] - lr[:, t])[inner[1:]].abs().mean()
        raw = (lr[:, t - 1] - lr[:, t])[inner[1:]].abs().mean()
        assert err < 0.1 * raw, (t, float(err), float(raw))  # aligned: a tenth of the misalignment or better
    for t in range(3):
        err = (w_next[:, t] - lr[:, t])[inner[1:]].abs().mean()
        raw = (lr[:, t + 1] - lr[:, t])[inner[1:]].abs().mean()
        assert err < 0.1 * raw, (t, float(err), float(raw))
    # at the ends the frame itself stands in, with zero flow (identity up to grid_sample's rounding)
    assert torch.allclose(w_prev[:, 0], lr[:, 0], atol=1e-5) and torch.allclose(w_next[:, 3], lr[:, 3], atol=1e-5)
    fl = neighbour_flows(flows)
    assert fl[:, 0, 0:2].abs().max() == 0 and fl[:, 3, 2:4].abs().max() == 0


def test_fusion_of_a_frame_sees_only_its_two_neighbours():
    torch.manual_seed(0)
    fusion = NeighbourFusion(nf=4).eval()
    torch.nn.init.normal_(fusion.out.weight, std=0.1)
    feats = torch.rand(1, 4, 4, 16, 16, requires_grad=True)
    flows = torch.zeros(1, 3, 4, 16, 16)
    fusion(feats, flows)[:, 0].sum().backward()
    reach = feats.grad.abs().flatten(2).sum(-1)[0]
    assert reach[0] > 0 and reach[1] > 0 and reach[2] == 0 and reach[3] == 0


def test_fusion_joins_trained_weights_as_a_no_op():
    """Starting from weights without the module (the shipped ones) changes no output until trained."""
    plain = tiny_mstt(attention="cosine")
    fused = MSTT(**TINY, attention="cosine", neighbours=True).eval()
    init_from(fused, plain.state_dict(), "weights without fusion")
    lr = drifting_clip(size=40)
    flows = flows_tensor(lr)
    with torch.no_grad():
        assert torch.allclose(fused(lr, flows), plain(lr, flows), atol=1e-6)  # adds an exact zero
        torch.nn.init.normal_(fused.neighbour_fusion.out.weight, std=0.05)
        assert (fused(lr, flows) - plain(lr, flows)).abs().max() > 1e-3  # and then it acts


def test_subpixel_branch_joins_fused_weights_as_a_no_op():
    """Weights trained with the bilinear fusion alone (run 6) gain the sub-pixel branch unchanged."""
    fused = tiny_mstt(attention="cosine", neighbours=True)
    sub = MSTT(**TINY, attention="cosine", neighbours=True, subpixel=True).eval()
    init_from(sub, fused.state_dict(), "weights without the sub-pixel branch")
    lr = drifting_clip(shift=(1, 0), size=40)
    lr = torch.cat([lr[:, :1], 0.5 * (lr[:, 1:] + lr[:, :-1])], dim=1)  # half-pixel steps: fractional flows
    flows = flows_tensor(lr)
    with torch.no_grad():
        assert torch.equal(sub(lr, flows), fused(lr, flows))  # adds an exact zero, same float path otherwise
        torch.nn.init.normal_(sub.neighbour_fusion.subpixel.weight, std=0.05)
        assert (sub(lr, flows) - fused(lr, flows)).abs().max() > 1e-3  # and then it acts


def test_subpixel_samples_are_unblended_and_offsets_say_where_they_lie():
    """The sub-pixel branch's inputs: each neighbour's feature taken whole at the nearest pixel
    of p + flow (no blending of two pixels), and the flow's remainder, the sample's offset."""
    fusion = NeighbourFusion(nf=2, subpixel=True)
    feats = torch.arange(4 * 2 * 12 * 12, dtype=torch.float32).view(1, 4, 2, 12, 12)
    flows = torch.zeros(1, 3, 4, 12, 12)
    flows[:, :, 2], flows[:, :, 3] = 0.7, -1.2  # mid->later; mid->earlier stays 0: earlier->later (0.7, -1.2)
    prev, nxt = (x.view(1, 4, 2, 12, 12) for x in fusion.aligned_neighbours(feats, flows, mode="nearest"))
    for t in range(3):  # the next frame's pixel at (x + 1, y - 1) exactly: 0.7 -> 1, -1.2 -> -1
        assert torch.equal(nxt[0, t, :, 3:10, 1:10], feats[0, t + 1, :, 2:9, 2:11])
    for t in range(1, 4):  # the previous frame's, at (x - 1, y + 1)
        assert torch.equal(prev[0, t, :, 2:9, 2:10], feats[0, t - 1, :, 3:10, 1:9])
    off = fusion.sample_offsets(flows).view(1, 4, 4, 12, 12)
    assert torch.allclose(off[0, 1:, 0:2, 5, 5], torch.tensor([0.3, 0.2]).expand(3, 2), atol=1e-6)
    assert torch.allclose(off[0, :3, 2:4, 5, 5], torch.tensor([-0.3, -0.2]).expand(3, 2), atol=1e-6)
    assert off[0, 0, 0:2].abs().max() == 0 and off[0, 3, 2:4].abs().max() == 0  # the ends: the frame itself
    # bilinear warping blends: the same neighbour at 0.7 px is no single pixel of it
    bil = fusion.aligned_neighbours(feats, flows)[1].view(1, 4, 2, 12, 12)
    assert not torch.equal(bil[0, 0, :, 3:10, 1:10], feats[0, 1, :, 2:9, 2:11])


def test_fusion_option_saves_and_loads(tmp_path):
    m = tiny_mstt(neighbours=True)
    assert m.neighbour_fusion.out.weight.abs().max() > 0  # tiny_mstt gives it a say
    again = load_model(save_weights(m, tmp_path / "nf.safetensors"))
    assert again.config.get("neighbours") is True and "neighbour fusion" in again.variant
    lr, flows = torch.rand(1, 4, 3, 20, 20), torch.rand(1, 3, 4, 20, 20) - 0.5
    with torch.no_grad():
        assert torch.allclose(m(lr, flows), again(lr, flows), atol=1e-6)  # same float32 path
    assert again.neighbour_fusion.subpixel is None and "subpixel" not in again.config
    plain = load_model(save_weights(tiny_mstt(), tmp_path / "plain.safetensors"))
    assert plain.neighbour_fusion is None and "neighbours" not in plain.config
    with pytest.raises(ValueError, match="upstream-exact"):
        MSTT(**TINY, upstream_exact=True, neighbours=True)
    sub = tiny_mstt(neighbours=True, subpixel=True)
    again = load_model(save_weights(sub, tmp_path / "sub.safetensors"))
    assert again.config.get("subpixel") is True and "sub-pixel" in again.variant
    with torch.no_grad():
        assert torch.allclose(sub(lr, flows), again(lr, flows), atol=1e-6)
    with pytest.raises(ValueError, match="needs neighbours"):
        MSTT(**TINY, subpixel=True)


def test_alignment_commutes_with_flips_as_the_ensemble_needs():
    """Flipping the clip (frames and flows) flips the aligned neighbours: the self-ensemble
    transforms flows and relies on it."""
    lr = drifting_clip(size=40)
    flows = flows_tensor(lr)
    flipped_flows = flows.flip(-1).clone()
    flipped_flows[:, :, 0::2] *= -1  # dx changes sign under a horizontal flip
    fusion = NeighbourFusion(nf=3)
    pa = [x.flip(-1) for x in fusion.aligned_neighbours(lr, flows)]
    pb = fusion.aligned_neighbours(lr.flip(-1), flipped_flows)
    for x, y in zip(pa, pb):
        assert np.allclose(x.numpy(), y.numpy(), atol=1e-4)  # bilinear sampling, float32 rounding
    assert not np.allclose(pa[0].numpy(), fusion.aligned_neighbours(lr.flip(-1), flows.flip(-1))[0].numpy(), atol=1e-2)
    # the sub-pixel offsets turn with the clip: x offsets change sign under the flip
    oa = NeighbourFusion.sample_offsets(flows).flip(-1)
    oa[:, 0::2] *= -1
    assert torch.allclose(oa, NeighbourFusion.sample_offsets(flipped_flows), atol=1e-6)


def test_shipped_weights_take_detail_from_the_neighbours():
    """With the shipped weights an input time's output depends on what its neighbours hold, and
    the neighbour fusion is part of that: replacing the neighbours by copies of the frame moves
    the output, and by a different amount when the fusion's output conv is zeroed (the fusion
    then being a no-op). How much the neighbours are worth is measured on real video
    (`mstt-stvsr eval --multiframe`, README), not here: the shipped run-10 weights trained their
    fusion for 126 steps only (0.01 DN on the sample stack, where run 6 moved it by 0.8 DN)."""
    from pathlib import Path

    import rasterio

    from mstt_stvsr.core.net.spec import INPUT_POS
    from mstt_stvsr.core.net.weights import default_weights_path
    from mstt_stvsr.core.run.flow import flows_tensor
    from mstt_stvsr.core.training.multiframe import control_clip

    path = default_weights_path()
    if not path.exists():
        pytest.skip("needs the shipped weights")
    net = load_model(path).eval()
    if net.neighbour_fusion is None:  # real video chooses the shipped weights (README); these have none
        pytest.skip("the shipped weights have no neighbour fusion")
    sample = Path(__file__).resolve().parents[1] / "resources" / "sample"
    frames = []
    for i in range(4):
        with rasterio.open(sample / f"frame_{i:02d}.tif") as ds:
            frames.append(ds.read().transpose(1, 2, 0)[:80, :80])
    lr_u8 = np.stack(frames)
    real = torch.from_numpy(lr_u8).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)

    def effect(k):
        with torch.no_grad():
            out = [net(x, flows_tensor(x, net.flow_kind), keep=[INPUT_POS[k]])[0, 0]
                   for x in (real, control_clip(lr_u8, k, "copies"))]
        return float((out[0] - out[1]).abs().mean()) * 255

    with_fusion = [effect(k) for k in (1, 2)]
    with torch.no_grad():
        net.neighbour_fusion.out.weight.zero_()
        net.neighbour_fusion.out.bias.zero_()
    without = [effect(k) for k in (1, 2)]
    for a, b in zip(with_fusion, without):
        assert a > MIN_NEIGHBOUR_EFFECT_DN and abs(a - b) > MIN_NEIGHBOUR_EFFECT_DN, (with_fusion, without)


MIN_NEIGHBOUR_EFFECT_DN = 1e-3  # mean |change| in DN (float outputs); see the test above

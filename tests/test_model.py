"""The MSTT network: upstream-compatible state_dict, shapes, padding, the skip base, training signal."""
from pathlib import Path

import pytest
import torch

from mstt_stvsr.core.net.model import MSTT, pad_to_multiple
from mstt_stvsr.core.net.weights import check_state_dict
from mstt_stvsr.core.run.flow import flows_tensor

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "upstream_mstt_state_dict.tsv"


def upstream_shapes():
    path = REF if REF.exists() else Path(__file__).parent / "data" / "upstream_mstt_state_dict.tsv"
    rows = [line.split("\t") for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return {key: tuple(int(d) for d in shape.split("x")) for key, shape, _ in rows}


def tiny(**kw):
    torch.manual_seed(0)
    return MSTT(nf=8, groups=2, front_RBs=1, back_RBs=1, **kw)


def test_state_dict_matches_upstream_exactly():
    shapes = upstream_shapes()
    assert len(shapes) == 112
    state = MSTT().state_dict()
    assert list(state) == list(shapes)  # same keys, same order
    assert {k: tuple(v.shape) for k, v in state.items()} == shapes
    assert sum(v.numel() for v in state.values()) == 4_925_723


def test_random_upstream_tensors_load_strict():
    torch.manual_seed(1)
    random_state = {k: torch.randn(s) for k, s in upstream_shapes().items()}
    model = MSTT(skip=False)
    check_state_dict(model, random_state, "random")
    model.load_state_dict(random_state, strict=True)
    assert torch.equal(model.upconv2.weight, random_state["upconv2.weight"])


@pytest.mark.parametrize("h,w", [(80, 80), (36, 52)])
def test_full_model_forward_shapes(h, w):
    torch.manual_seed(0)
    model = MSTT().eval()
    lr = torch.rand(1, 4, 3, h, w)
    with torch.no_grad():
        out = model(lr, flows_tensor(lr))
    assert out.shape == (1, 7, 3, 4 * h, 4 * w)
    assert torch.isfinite(out).all()


def test_tiny_model_batch_and_odd_sizes():
    model = tiny().eval()
    lr = torch.rand(2, 4, 3, 13, 27)
    with torch.no_grad():
        out = model(lr, flows_tensor(lr))
    assert out.shape == (2, 7, 3, 52, 108)
    with pytest.raises(ValueError, match=r"\(B, 4, 3, H, W\)"):
        model(torch.rand(1, 3, 3, 16, 16), torch.zeros(1, 2, 4, 16, 16))
    with pytest.raises(ValueError, match=r"flows must have shape \(2, 3, 4, 13, 27\), got None"):
        model(lr, None)


def test_skip_base_at_init_is_motion_compensated_bicubic():
    """With conv_last zeroed, the output is the base; for a static scene that is bicubic x4."""
    model = tiny(skip=True).eval()
    frame = torch.rand(1, 3, 20, 24)
    lr = frame.unsqueeze(1).repeat(1, 4, 1, 1, 1)
    flows = torch.zeros(1, 3, 4, 20, 24)
    with torch.no_grad():
        out = model(lr, flows)
    up = torch.nn.functional.interpolate(frame, scale_factor=4, mode="bicubic", align_corners=False)
    for t in range(7):
        torch.testing.assert_close(out[0, t], up[0], atol=1e-5, rtol=0)


def test_given_flows_are_used_for_middle_frames():
    model = tiny(skip=True).eval()
    lr = torch.rand(1, 4, 3, 16, 16)
    f0 = torch.zeros(1, 3, 4, 16, 16)
    f1 = f0.clone()
    f1[:, :, 0] = 1.5  # mid->prev shifted right by 1.5 px
    with torch.no_grad():
        a, b = model(lr, f0), model(lr, f1)
    assert torch.equal(a[:, 0::2], b[:, 0::2])  # input frames: flows only touch middle frames here
    assert (a[:, 1::2] - b[:, 1::2]).abs().max() > 1e-3


def test_pad_to_multiple_small_and_large():
    x = torch.arange(6.0).view(1, 1, 2, 3)
    y = pad_to_multiple(x, 80)
    assert y.shape == (1, 1, 80, 80)
    assert torch.equal(y[..., :2, :3], x)
    z = pad_to_multiple(torch.rand(2, 4, 3, 81, 160), 80)
    assert z.shape == (2, 4, 3, 160, 160)


@pytest.mark.parametrize("skip", [True, False])
def test_gradients_reach_every_parameter_and_loss_drops(skip):
    torch.manual_seed(0)
    model = tiny(skip=skip).train()
    gt = torch.rand(1, 7, 3, 64, 64)
    lr = torch.nn.functional.avg_pool2d(gt[:, 0::2].reshape(-1, 3, 64, 64), 4).view(1, 4, 3, 16, 16)
    flows = torch.zeros(1, 3, 4, 16, 16)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = torch.sqrt((model(lr, flows) - gt) ** 2 + 1e-6).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    unchanged = [k for k, v in model.named_parameters() if torch.equal(v, before[k])]
    assert unchanged == []
    assert losses[-1] < losses[0]


def test_reconstruction_crop_changes_nothing_inside_the_frame():
    """forward() reconstructs only the frame plus a receptive-field margin of the padding."""
    torch.manual_seed(0)
    model = MSTT(nf=8, groups=2, front_RBs=1, back_RBs=2, skip=False).eval()
    lr = torch.rand(1, 4, 3, 21, 34)
    flows = torch.randn(1, 3, 4, 21, 34)
    with torch.no_grad():
        out = model(lr, flows)
        # the same stages without the crop: reconstruct the whole padded frame, then cut
        lr_p, fl_p = pad_to_multiple(lr, 80), pad_to_multiple(flows, 80)
        feats = model.extract(lr_p.reshape(4, 3, 80, 80)).view(1, 4, 8, 80, 80)
        from mstt_stvsr.core.net.model import interleave
        seq = model.MSST_former(interleave(feats, model.middle_features(feats, fl_p)))
        full = model.reconstruct(seq.reshape(7, 8, 80, 80)).view(1, 7, 3, 320, 320)[..., :84, :136]
    torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)


def test_keep_makes_only_those_outputs_and_equals_the_full_forward():
    """The pipeline asks only for the outputs a time window owns; they must be the full
    forward's, in the order asked, with the base too (random last conv so both parts count)."""
    model = tiny(skip=True).eval()
    torch.nn.init.normal_(model.conv_last.weight, std=0.05)
    torch.manual_seed(3)
    lr, flows = torch.rand(2, 4, 3, 36, 52), torch.randn(2, 3, 4, 36, 52)
    calls = []
    model.recon_trunk.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    with torch.inference_mode():
        full = model(lr, flows)
        for keep in ([2, 3, 4], [0], [5, 6], [1, 3, 5], [6, 0]):
            calls.clear()
            part = model(lr, flows, keep=keep)
            torch.testing.assert_close(part, full[:, keep], rtol=1e-5, atol=1e-5)
            assert calls == [2] * len(keep)  # one kept frame (of each batch item) at a time
        with pytest.raises(ValueError, match="keep"):
            model(lr, flows, keep=[7])


def test_the_network_package_imports_no_io_or_gis_library():
    """core.net is the network only: OpenCV, rasterio, GDAL and QGIS stay out of its imports,
    and the run options (what the CLI and QGIS list) need no torch."""
    import subprocess
    import sys

    code = ("import sys, mstt_stvsr.core.net, mstt_stvsr.core.net.model, mstt_stvsr.core.net.weights, "
            "mstt_stvsr.core.net.dcn, mstt_stvsr.core.net.warp\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'cv2', 'rasterio', 'osgeo', 'qgis', 'PIL'}))\n"
            "import mstt_stvsr.core.net.spec\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    code = "import sys, mstt_stvsr.core.run.options, mstt_stvsr.core.net.spec; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


@pytest.mark.parametrize("config", [dict(), dict(attention="cosine", neighbours=True)])
def test_channels_last_computes_what_nchw_computes_without_converting(config):
    """The run and training layout: features stay channels_last between stages (the convolutions
    would otherwise convert every input, ~10 % of a CPU forward), the transformer orders token
    values as memory holds them, and the outputs are NCHW's. Tolerance 1e-4 in float32: oneDNN
    picks different convolution algorithms per layout, so sums round differently."""
    from nets import tiny_mstt

    net = tiny_mstt(**config)
    lr = torch.rand(2, 4, 3, 40, 56)
    flows = torch.rand(2, 3, 4, 40, 56) - 0.5
    with torch.no_grad():
        want = net(lr, flows)
        net.to(memory_format=torch.channels_last)
        assert net.memory_format == torch.channels_last
        converted = []
        hooks = [m.register_forward_pre_hook(lambda m, i, name=name: converted.append(name)
                                             if not i[0].is_contiguous(memory_format=torch.channels_last) else None)
                 for name, m in net.named_modules() if isinstance(m, torch.nn.Conv2d) and name != "conv_first"]
        got = net(lr, flows)
        for h in hooks:
            h.remove()
    assert converted == []  # conv_first takes the 3-band frames as they come
    assert (got - want).abs().max() < 1e-4


@pytest.mark.parametrize("rows", [8, 9, 64])
def test_high_res_stages_in_strips_equal_the_whole_frame(monkeypatch, rows):
    """Inference runs the 4x stages in strips of rows with a halo (cache-sized); the halo must
    cover what the strip's outputs read, or strip edges show. Tolerance 1e-5 in float32: the
    convolutions may pick other algorithms for other sizes."""
    from mstt_stvsr.core.net import model as model_module
    from nets import tiny_mstt

    net = tiny_mstt()
    feats = torch.rand(2, 8, 37, 21)  # 74 rows at 2x: several strips and a short last one
    with torch.enable_grad():
        whole = net.reconstruct(feats).detach()
    monkeypatch.setattr(model_module, "HR_STRIP_ROWS", rows)
    with torch.no_grad():
        strips = net.reconstruct(feats)
    assert strips.shape == whole.shape == (2, 3, 148, 84)
    assert (strips - whole).abs().max() < 1e-5
    monkeypatch.setattr(model_module, "HR_HALO", 1)  # too small a halo: the strip edges differ
    with torch.no_grad():
        assert (net.reconstruct(feats) - whole).abs().max() > 1e-4

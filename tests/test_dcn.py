"""Modulated deformable conv: the pure-PyTorch version against a loop reference (values and
gradients), against F.conv2d, against torchvision where it imports, and on CUDA where present."""
from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from mstt_stvsr.core.net import dcn
from mstt_stvsr.core.net.dcn import DCNv2Pack, deform_conv_backend, modulated_deform_conv2d, modulated_deform_conv2d_pure


# -- slow, obviously correct reference ------------------------------------------------------
def bilinear_ref(img, y, x):
    """img (C, H, W) at real (y, x): torchvision's rule, zero at/after -1 and H (W), and
    corners outside the image count as zero."""
    _, h, w = img.shape
    zero = img.new_zeros(img.shape[0])
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return zero
    y0, x0 = math.floor(float(y.detach())), math.floor(float(x.detach()))
    ly, lx = y - y0, x - x0

    def px(yi, xi):
        return img[:, yi, xi] if 0 <= yi < h and 0 <= xi < w else zero

    return ((1 - ly) * (1 - lx) * px(y0, x0) + (1 - ly) * lx * px(y0, x0 + 1)
            + ly * (1 - lx) * px(y0 + 1, x0) + ly * lx * px(y0 + 1, x0 + 1))


def dcn_ref(x, offset, mask, weight, bias, stride=1, padding=1, dilation=1):
    """Per output pixel, per deformable group, per kernel point: sample, modulate, dot."""
    b_, c, _, _ = x.shape
    cout, _, kh, kw = weight.shape
    ho, wo = offset.shape[-2:]
    k = kh * kw
    g = offset.shape[1] // (2 * k)
    cg = c // g
    wmat = weight.reshape(cout, c * k)  # column index = channel * k + kernel point
    out = x.new_zeros(b_, cout, ho, wo)
    for b in range(b_):
        for oy in range(ho):
            for ox in range(wo):
                per_group = []
                for gi in range(g):
                    img = x[b, gi * cg:(gi + 1) * cg]
                    pts = []
                    for i in range(kh):
                        for j in range(kw):
                            kk = i * kw + j
                            y = oy * stride - padding + i * dilation + offset[b, 2 * (gi * k + kk), oy, ox]
                            xx = ox * stride - padding + j * dilation + offset[b, 2 * (gi * k + kk) + 1, oy, ox]
                            pts.append(bilinear_ref(img, y, xx) * mask[b, gi * k + kk, oy, ox])
                    per_group.append(torch.stack(pts, dim=1))  # (cg, k)
                col = torch.cat(per_group, dim=0).reshape(c * k)
                val = wmat @ col
                if bias is not None:
                    val = val + bias
                out[b, :, oy, ox] = val
    return out


def make_inputs(b=2, c=4, h=6, w=7, cout=3, g=2, ksize=3, stride=1, padding=1, dilation=1,
                max_off=3.0, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ho = (h + 2 * padding - dilation * (ksize - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (ksize - 1) - 1) // stride + 1
    k = ksize * ksize
    x = torch.randn(b, c, h, w, generator=gen, dtype=dtype)
    offset = (torch.rand(b, 2 * g * k, ho, wo, generator=gen, dtype=dtype) * 2 - 1) * max_off
    mask = torch.rand(b, g * k, ho, wo, generator=gen, dtype=dtype)
    weight = torch.randn(cout, c, ksize, ksize, generator=gen, dtype=dtype)
    bias = torch.randn(cout, generator=gen, dtype=dtype)
    return x, offset, mask, weight, bias


def grads(fn, tensors, gen_seed=1):
    ts = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*ts)
    r = torch.randn(out.shape, generator=torch.Generator().manual_seed(gen_seed), dtype=out.dtype)
    (out * r).sum().backward()
    return out.detach(), [t.grad for t in ts]


CASES = [
    dict(stride=1, padding=1, dilation=1),
    dict(stride=2, padding=1, dilation=1),
    dict(stride=1, padding=2, dilation=2),
]


@pytest.mark.parametrize("geom", CASES, ids=["plain", "stride2", "dilation2"])
def test_pure_matches_loop_reference_values_and_gradients(geom):
    inputs = make_inputs(h=5, w=6, **geom)
    x, offset = inputs[0], inputs[1]
    # the random offsets (±3 px) really send points outside the image, partly and wholly
    ho, wo = offset.shape[-2:]
    base_y = torch.arange(ho, dtype=x.dtype).view(1, 1, 1, ho, 1) * geom["stride"] - geom["padding"]
    ky = (torch.arange(3, dtype=x.dtype) * geom["dilation"]).repeat_interleave(3).view(1, 1, 9, 1, 1)
    ys = base_y + ky + offset[:, 0::2].reshape(x.shape[0], 2, 9, ho, wo)
    assert (ys <= -1).any() and ((ys > -1) & (ys < 0)).any() and (ys >= x.shape[2]).any()

    def pure(*t):
        return modulated_deform_conv2d_pure(*t, **geom)

    def ref(*t):
        return dcn_ref(*t, **geom)

    out_p, g_p = grads(pure, inputs)
    out_r, g_r = grads(ref, inputs)
    torch.testing.assert_close(out_p, out_r, atol=1e-10, rtol=1e-10)
    for name, a, b in zip(("input", "offset", "mask", "weight", "bias"), g_p, g_r):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10, msg=f"grad wrt {name}")
        assert b.abs().sum() > 0, name


def test_zero_offset_full_mask_is_conv2d():
    for geom in CASES + [dict(stride=1, padding=0, dilation=1)]:
        x, offset, mask, weight, bias = make_inputs(b=2, c=6, h=9, w=8, g=3, dtype=torch.float32, **geom)
        got = modulated_deform_conv2d_pure(x, torch.zeros_like(offset), torch.ones_like(mask), weight, bias, **geom)
        want = F.conv2d(x, weight, bias, **geom)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_integer_offset_shifts_sampling():
    """An offset of exactly (dy, dx) = (+1, -2) everywhere is a plain conv of the zero-padded
    input moved by that amount: point (i, j) of output (y, x) reads x(y + i, x + j - 3)."""
    x, offset, mask, weight, bias = make_inputs(b=1, c=4, h=8, w=9, g=2)
    off = torch.zeros_like(offset)
    off[:, 0::2], off[:, 1::2] = 1.0, -2.0
    got = modulated_deform_conv2d_pure(x, off, torch.ones_like(mask), weight, bias)
    want = F.conv2d(F.pad(x, (3, 0, 0, 2)), weight, bias)[..., :8, :9]
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


def test_gradcheck_pure():
    x, offset, mask, weight, bias = make_inputs(b=1, c=2, h=3, w=4, cout=2, g=2, max_off=1.5, seed=3)
    ts = [t.requires_grad_(True) for t in (x, offset, mask, weight, bias)]
    assert torch.autograd.gradcheck(lambda *t: modulated_deform_conv2d_pure(*t), ts, eps=1e-6, atol=1e-6)


def test_degenerate_one_pixel_rows_and_columns():
    """H or W of 1 must still sample correctly (grid normalisation has no span there)."""
    for h, w in ((1, 5), (5, 1), (1, 1)):
        x, offset, mask, weight, bias = make_inputs(b=1, c=2, h=h, w=w, cout=2, g=1, max_off=1.5, seed=h * 7 + w)
        got = modulated_deform_conv2d_pure(x, offset, mask, weight, bias)
        torch.testing.assert_close(got, dcn_ref(x, offset, mask, weight, bias), atol=1e-10, rtol=1e-10)


def test_half_precision_inputs_keep_dtype_and_accuracy():
    x, offset, mask, weight, bias = make_inputs(b=1, c=4, h=6, w=300, g=2, dtype=torch.float32, seed=5)
    want = modulated_deform_conv2d_pure(x, offset, mask, weight, bias)
    got = modulated_deform_conv2d_pure(*(t.bfloat16() for t in (x, offset, mask, weight, bias)))
    assert got.dtype == torch.bfloat16
    # bf16 storage of inputs/outputs only; positions far along a 300-px row stay sub-pixel exact
    err = (got.float() - want).abs().mean() / want.abs().mean()
    assert err < 0.02, err


def test_shape_errors():
    x, offset, mask, weight, bias = make_inputs(b=1, c=4, h=5, w=5, g=2)
    with pytest.raises(ValueError, match="offset"):
        modulated_deform_conv2d_pure(x, offset[:, :-1], mask, weight, bias)
    with pytest.raises(ValueError, match="mask"):
        modulated_deform_conv2d_pure(x, offset, mask[:, :-1], weight, bias)
    with pytest.raises(ValueError, match="input channels"):
        modulated_deform_conv2d_pure(x[:, :3], offset, mask, weight, bias)


# -- backend selection -----------------------------------------------------------------------
def test_backend_choice():
    assert deform_conv_backend("pure") == "pure"
    if dcn._tv_deform_conv2d is None:
        with pytest.raises(RuntimeError, match="torchvision"):
            deform_conv_backend("torchvision")
    else:
        assert deform_conv_backend("torchvision") == "torchvision"
    with pytest.raises(ValueError, match="'cuda-magic'"):
        deform_conv_backend("cuda-magic")
    assert deform_conv_backend() == ("pure" if dcn._tv_deform_conv2d is None else "torchvision")


def test_set_backend_reaches_every_deformable_layer():
    from mstt_stvsr.core.net.model import MSTT

    net = MSTT(nf=8, groups=2, front_RBs=1, back_RBs=1)
    assert dcn.set_backend(net, "pure") == "pure"
    packs = [m for m in net.modules() if isinstance(m, DCNv2Pack)]
    assert packs and all(m.backend == "pure" for m in packs)
    assert "backend" not in "".join(net.state_dict())  # a run setting, not a weight


# -- DCNv2Pack -------------------------------------------------------------------------------
def test_pack_starts_as_plain_conv_with_half_mask():
    torch.manual_seed(0)
    pack = DCNv2Pack(8, 6, deformable_groups=4)
    assert tuple(pack.conv_offset_mask.weight.shape) == (4 * 27, 8, 3, 3)
    assert set(dict(pack.named_parameters())) == {"weight", "bias", "conv_offset_mask.weight", "conv_offset_mask.bias"}
    with torch.no_grad():
        pack.bias.normal_()
    x, feat = torch.randn(2, 8, 10, 11), torch.randn(2, 8, 10, 11)
    want = 0.5 * F.conv2d(x, pack.weight, None, padding=1) + pack.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(pack(x, feat), want, atol=1e-5, rtol=1e-5)


def test_pack_offset_and_mask_layout():
    """conv_offset_mask output is split o1 | o2 | mask; cat(o1, o2) is torchvision's layout."""
    pack = DCNv2Pack(4, 3, deformable_groups=2).double()
    k = 9
    with torch.no_grad():
        pack.conv_offset_mask.bias.normal_(generator=torch.Generator().manual_seed(2))
    x, feat = make_inputs(b=1, c=4, h=5, w=6, g=2)[0], torch.zeros(1, 4, 5, 6, dtype=torch.float64)
    o1, o2, m = pack.conv_offset_mask.bias.view(3, 2 * k)
    offset = torch.cat([o1, o2]).view(1, -1, 1, 1).expand(1, 4 * k, 5, 6)
    mask = torch.sigmoid(m).view(1, -1, 1, 1).expand(1, 2 * k, 5, 6)
    want = dcn_ref(x, offset, mask, pack.weight.detach(), pack.bias.detach())
    torch.testing.assert_close(pack(x, feat).detach(), want, atol=1e-10, rtol=1e-10)


def test_pack_warns_once_on_diverged_offsets(caplog):
    pack = DCNv2Pack(4, 4, deformable_groups=2)
    x = torch.randn(1, 4, 6, 6)
    with caplog.at_level(logging.WARNING, logger=dcn.__name__):
        pack(x, x)
        assert not caplog.records
        with torch.no_grad():
            pack.conv_offset_mask.bias[: 2 * 2 * 9] = 80.0
        pack(x, x)
        pack(x, x)
    msgs = [r for r in caplog.records if "offset" in r.getMessage()]
    assert len(msgs) == 1


def test_pack_backward_reaches_offset_branch():
    pack = DCNv2Pack(4, 4, deformable_groups=2)
    x, feat = torch.randn(1, 4, 7, 7), torch.randn(1, 4, 7, 7)
    pack(x, feat).square().sum().backward()
    # zero-initialised offsets still get gradient through the sampling positions and the mask
    assert pack.conv_offset_mask.weight.grad.abs().sum() > 0
    assert pack.weight.grad.abs().sum() > 0


# -- other backends and devices ----------------------------------------------------------------
def test_pure_matches_torchvision():
    tv = pytest.importorskip("torchvision.ops")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        for geom in CASES:
            inputs = [t.to(dev) for t in make_inputs(b=2, c=8, h=9, w=10, g=4, **geom)]

            def tvf(x, o, m, w_, b_):
                return tv.deform_conv2d(x, o, w_, b_, stride=geom["stride"], padding=geom["padding"],
                                        dilation=geom["dilation"], mask=m)

            def pure(*t):
                return modulated_deform_conv2d_pure(*t, **geom)

            out_t, g_t = grads(lambda *t: tvf(*t).cpu(), inputs)
            out_p, g_p = grads(lambda *t: pure(*t).cpu(), inputs)
            torch.testing.assert_close(out_p, out_t, atol=1e-8, rtol=1e-8)
            for name, a, b in zip(("input", "offset", "mask", "weight", "bias"), g_p, g_t):
                torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-7, msg=f"{dev} grad wrt {name}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pure_cuda_matches_cpu():
    inputs = make_inputs(b=2, c=8, h=12, w=13, g=4, dtype=torch.float32)
    out_c, g_c = grads(lambda *t: modulated_deform_conv2d_pure(*t), inputs)
    out_g, g_g = grads(lambda *t: modulated_deform_conv2d_pure(*(u.cuda() for u in t)).cpu(), inputs)
    torch.testing.assert_close(out_g, out_c, atol=1e-4, rtol=1e-4)
    for a, b in zip(g_g, g_c):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


def test_dispatch_uses_selected_backend(monkeypatch):
    """backend="pure" reaches the pure version with the caller's arguments and returns its result."""
    x, offset, mask, weight, bias = make_inputs(b=1, c=4, h=5, w=5, g=2)
    calls = []
    pure = dcn.modulated_deform_conv2d_pure

    def spy(*args, **kwargs):
        calls.append(args)
        return pure(*args, **kwargs)

    monkeypatch.setattr(dcn, "modulated_deform_conv2d_pure", spy)
    out = modulated_deform_conv2d(x, offset, mask, weight, bias, backend="pure")
    assert len(calls) == 1 and all(a is b for a, b in zip(calls[0], (x, offset, mask, weight, bias)))
    # the dispatcher must not alter the result: a float32 tolerance, as the CPU may reorder sums
    torch.testing.assert_close(out, pure(x, offset, mask, weight, bias), atol=1e-6, rtol=1e-6)


def test_inference_row_chunks_match_one_pass():
    """Without autograd the pure version works in row chunks and modulates in place.

    The chunks run the same arithmetic in smaller batched matmuls, whose float32 blocking (and
    so summation order) BLAS picks per shape and CPU: each output sums 4 x 9 = 36 products of
    values ~1, so reordering moves it by a few float32 ulps (6e-7 seen on AMD EPYC, 0 on Intel).
    1e-5 is that bound with room; a wrong row offset or a lost modulation moves outputs by ~0.1."""
    x, offset, mask, weight, bias = make_inputs(b=2, c=4, h=11, w=9, g=2, dtype=torch.float32, seed=4)
    whole = modulated_deform_conv2d_pure(x, offset, mask, weight, bias)  # no grad needed: one pass
    with torch.no_grad():  # 3 rows per chunk, the last one short
        chunked = modulated_deform_conv2d_pure(x, offset, mask, weight, bias, chunk_elements=2 * 4 * 9 * 9 * 3)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked, dcn_ref(x.double(), offset.double(), mask.double(), weight.double(),
                                                bias.double()).float(), atol=1e-5, rtol=1e-5)
    # the network hands over channels_last maps (offset and mask as channel slices of one
    # convolution's output): each chunk is copied out of them on its own
    om = torch.cat([offset, mask], dim=1).to(memory_format=torch.channels_last)
    n = offset.shape[1]
    with torch.no_grad():
        cl = modulated_deform_conv2d_pure(x.to(memory_format=torch.channels_last), om[:, :n], om[:, n:], weight, bias,
                                          chunk_elements=2 * 4 * 9 * 9 * 3)
    torch.testing.assert_close(cl, whole, atol=1e-5, rtol=1e-5)

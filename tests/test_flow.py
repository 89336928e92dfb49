"""Optical flow (DIS) accuracy on known sub-pixel motion, warping, and the middle-time flows."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mstt_stvsr.core.run import flow as flow_mod
from mstt_stvsr.core.net.warp import flow_warp
from mstt_stvsr.core.run.flow import estimate_flow, flows_tensor, middle_flows, pair_flows

AERO = Path("/usr/share/doc/opencv-doc/examples/data/aero1.jpg")
MARGIN = 8  # border pixels where content enters/leaves the frame


def textured(h=180, w=220, seed=0) -> np.ndarray:
    """Satellite-like texture in [0, 1]: blurred noise at two scales (fields + fine detail)."""
    rng = np.random.default_rng(seed)
    fine = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 1.2)
    coarse = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 6.0)
    img = 0.5 * (fine - fine.mean()) / fine.std() + 1.0 * (coarse - coarse.mean()) / coarse.std()
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


def aerial() -> np.ndarray:
    """A real aerial photo (grey, [0, 1]) at LR-frame size, if opencv-doc is installed."""
    img = cv2.imread(str(AERO), cv2.IMREAD_GRAYSCALE)
    img = cv2.resize(img, (240, 180), interpolation=cv2.INTER_AREA)
    return img.astype(np.float32) / 255.0


IMAGES = {"texture": textured}
if AERO.exists():
    IMAGES["aero1"] = aerial


def shifted_pair(img: np.ndarray, dx: float, dy: float, crop: int = 12):
    """(a, b) with b(q) = a(q - (dx, dy)), i.e. a(p) = b(p + (dx, dy)): the true flow a->b is (dx, dy).
    Shifted by cubic interpolation on the full image, then both cropped so no border enters."""
    h, w = img.shape[:2]
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    b = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return img[crop:-crop, crop:-crop].copy(), b[crop:-crop, crop:-crop].copy()


def inner(a: np.ndarray) -> np.ndarray:
    return a[MARGIN:-MARGIN, MARGIN:-MARGIN]


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_recovers_subpixel_shift(name):
    a, b = shifted_pair(IMAGES[name](), 1.3, -0.7)
    f = estimate_flow(a, b)
    assert f.dtype == np.float32 and f.shape == (*a.shape, 2)
    err = np.hypot(inner(f)[..., 0] - 1.3, inner(f)[..., 1] + 0.7)
    assert np.median(err) < 0.15 and err.mean() < 0.15, (np.median(err), err.mean())
    # reverse direction: the negated shift
    r = estimate_flow(b, a)
    err_r = np.hypot(inner(r)[..., 0] + 1.3, inner(r)[..., 1] - 0.7)
    assert np.median(err_r) < 0.15, np.median(err_r)


def test_accepts_rgb_float_and_uint8_alike():
    a, b = shifted_pair(textured(seed=3), -2.4, 1.6)
    rgb = lambda g: np.repeat(g[..., None], 3, axis=2)  # noqa: E731
    u8 = lambda g: np.round(g * 255).astype(np.uint8)  # noqa: E731
    for src, dst in ((rgb(a), rgb(b)), (u8(a), u8(b)), (rgb(u8(a)), rgb(u8(b)))):
        f = estimate_flow(src, dst)
        assert np.median(np.hypot(inner(f)[..., 0] + 2.4, inner(f)[..., 1] - 1.6)) < 0.15


def test_low_contrast_frames_still_give_subpixel_flow():
    """Dim satellite frames span few grey levels; the joint stretch keeps them usable."""
    img = 0.30 + 0.03 * textured(seed=5)  # ~8 of 256 levels; unstretched DIS errs ~0.1 px here
    a, b = shifted_pair(img, 0.6, 0.9)
    f = estimate_flow(a, b)
    err = np.hypot(inner(f)[..., 0] - 0.6, inner(f)[..., 1] - 0.9)
    assert np.median(err) < 0.06 and err.mean() < 0.06, (np.median(err), err.mean())


def test_affine_motion_is_followed():
    """Rotation + zoom: flow varies over the frame and must follow it, not just the mean."""
    img = textured(200, 240, seed=7)
    h, w = img.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 2.0, 1.02)
    b = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    true = np.stack([m[0, 0] * xx + m[0, 1] * yy + m[0, 2] - xx, m[1, 0] * xx + m[1, 1] * yy + m[1, 2] - yy], -1)
    c = 20
    f = estimate_flow(img[c:-c, c:-c], b[c:-c, c:-c])
    err = np.hypot(*(inner(f) - inner(true[c:-c, c:-c])).transpose(2, 0, 1))
    assert np.abs(true).max() > 3  # the motion really varies by pixels over the frame
    assert np.median(err) < 0.15, np.median(err)


def test_warping_with_estimated_flow_reconstructs_source():
    a, b = shifted_pair(textured(seed=1), 1.3, -0.7)
    f = estimate_flow(a, b)
    warped = flow_warp(torch.from_numpy(b)[None, None], torch.from_numpy(f).permute(2, 0, 1)[None])[0, 0].numpy()
    true = np.broadcast_to(np.float32([1.3, -0.7]).reshape(1, 2, 1, 1), (1, 2, *a.shape))
    ideal = flow_warp(torch.from_numpy(b)[None, None], torch.from_numpy(true.copy()))[0, 0].numpy()
    before = np.abs(inner(b) - inner(a)).mean()
    after = np.abs(inner(warped) - inner(a)).mean()
    best = np.abs(inner(ideal) - inner(a)).mean()  # what bilinear resampling allows at all
    assert after < 0.2 * before and after < 1.25 * best, (after, best, before)


def test_farneback_fallback_without_dis(monkeypatch):
    monkeypatch.delattr(cv2, "DISOpticalFlow_create")
    a, b = shifted_pair(textured(seed=2), 1.3, -0.7)
    f = estimate_flow(a, b)
    err = np.hypot(inner(f)[..., 0] - 1.3, inner(f)[..., 1] + 0.7)
    assert np.median(err) < 0.15, np.median(err)


def test_tiny_and_mismatched_frames():
    for h, w in ((1, 7), (5, 5), (9, 30), (12, 12)):
        img = textured(h + 24, w + 24, seed=h)[12:12 + h, 12:12 + w]
        f = estimate_flow(img, img)
        assert f.shape == (h, w, 2) and np.isfinite(f).all()
    with pytest.raises(ValueError, match="differ in size"):
        estimate_flow(np.zeros((20, 20)), np.zeros((20, 21)))


# -- flow_warp -------------------------------------------------------------------------------
def devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("dev", devices())
def test_flow_warp_zero_flow_is_identity(dev):
    """Identity up to float32 rounding of the normalised grid (~1e-7 of the width in pixels)."""
    x = torch.rand(2, 3, 17, 230, device=dev)
    zero = torch.zeros(2, 2, 17, 230, device=dev)
    for dt, tol in ((torch.float64, 1e-12), (torch.float32, 1e-4), (torch.float16, 1e-3), (torch.bfloat16, 1e-2)):
        xd = x.to(dt)
        out = flow_warp(xd, zero)
        assert out.dtype == dt
        torch.testing.assert_close(out, xd, atol=tol, rtol=0)
    for mode in ("bilinear", "bicubic"):
        torch.testing.assert_close(flow_warp(x, zero, padding_mode="border", mode=mode), x, atol=1e-4, rtol=0)


@pytest.mark.parametrize("dev", devices())
def test_flow_warp_integer_shift_is_roll(dev):
    x = torch.rand(1, 2, 20, 700, device=dev)
    flow = torch.zeros(1, 2, 20, 700, device=dev)
    flow[:, 0], flow[:, 1] = 3.0, -2.0  # out(p) = x(p + (3, -2))
    ref = np.roll(x.cpu().numpy(), shift=(2, -3), axis=(2, 3))
    out = flow_warp(x, flow).cpu().numpy()
    np.testing.assert_allclose(out[..., 2:, :-3], ref[..., 2:, :-3], atol=2e-4)
    assert np.abs(out[..., :2, :]).max() < 1e-5 and np.abs(out[..., -3:]).max() < 1e-5  # outside reads zeros
    # bfloat16 storage: positions 600 px along a row still land on exact pixels
    xb = x.bfloat16()
    outb = flow_warp(xb, flow.bfloat16()).float().cpu().numpy()
    refb = np.roll(xb.float().cpu().numpy(), shift=(2, -3), axis=(2, 3))
    np.testing.assert_allclose(outb[..., 2:, :-3], refb[..., 2:, :-3], atol=2e-3)


def test_flow_warp_subpixel_is_bilinear():
    """Bilinear sampling reproduces a linear ramp exactly at fractional positions."""
    h, w = 9, 31
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ramp = (2 * xx + 3 * yy)[None, None]
    flow = torch.empty(1, 2, h, w, dtype=torch.float64)
    flow[:, 0], flow[:, 1] = 0.25, -0.6
    out = flow_warp(ramp, flow)[0, 0]
    want = 2 * (xx + 0.25) + 3 * (yy - 0.6)
    torch.testing.assert_close(out[1:, :-1], want[1:, :-1], atol=1e-9, rtol=0)


def test_flow_warp_shape_error():
    with pytest.raises(ValueError, match="flow"):
        flow_warp(torch.zeros(1, 3, 8, 8), torch.zeros(1, 2, 8, 9))


# -- middle flows ----------------------------------------------------------------------------
def test_pair_flows_half_motion_opposite_signs():
    a, b = shifted_pair(textured(seed=4), 2.0, -1.2)  # a(p) = b(p + v), v = (2, -1.2)
    to_a, to_b = pair_flows(a, b)
    np.testing.assert_array_equal(to_a, -to_b)
    for f, want in ((to_a, (-1.0, 0.6)), (to_b, (1.0, -0.6))):
        err = np.hypot(inner(f)[..., 0] - want[0], inner(f)[..., 1] - want[1])
        assert np.median(err) < 0.1, np.median(err)


def test_middle_flows_linear_motion():
    img = textured(200, 240, seed=6)
    v = (1.6, 0.8)
    frames = []
    for t in range(3):  # frame t is the scene moved by t * v
        m = np.float32([[1, 0, t * v[0]], [0, 1, t * v[1]]])
        fr = cv2.warpAffine(img, m, (240, 200), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        frames.append(np.repeat(fr[12:-12, 12:-12, None], 3, axis=2))
    mf = middle_flows(np.stack(frames))
    assert mf.shape == (2, 4, 176, 216) and mf.dtype == np.float32
    # the middle frame m(p) = prev(p - v/2) = next(p + v/2)
    want = np.array([-v[0] / 2, -v[1] / 2, v[0] / 2, v[1] / 2], np.float32)
    med = np.median(mf[..., MARGIN:-MARGIN, MARGIN:-MARGIN].reshape(2, 4, -1), axis=-1)
    np.testing.assert_allclose(med, np.broadcast_to(want, (2, 4)), atol=0.08)
    np.testing.assert_array_equal(mf[:, 0:2], -mf[:, 2:4])


def test_flows_tensor_matches_middle_flows():
    b_, t, h, w = 2, 4, 60, 72
    lr = torch.empty(b_, t, 3, h, w)
    for i in range(b_):
        base = textured(h + 40, w + 40, seed=10 + i)
        for j in range(t):
            m = np.float32([[1, 0, 0.7 * j], [0, 1, -0.4 * j]])
            fr = cv2.warpAffine(base, m, (w + 40, h + 40), flags=cv2.INTER_CUBIC)[20:-20, 20:-20]
            lr[i, j] = torch.from_numpy(np.stack([fr, 0.9 * fr, 0.8 * fr]))
    out = flows_tensor(lr)
    assert out.shape == (b_, t - 1, 4, h, w) and out.dtype == lr.dtype and out.device == lr.device
    for i in range(b_):
        ref = middle_flows(lr[i].permute(0, 2, 3, 1).numpy())
        assert np.abs(out[i].numpy() - ref).mean() < 1e-3
        med = np.median(ref[..., MARGIN:-MARGIN, MARGIN:-MARGIN].reshape(t - 1, 4, -1), axis=-1)
        np.testing.assert_allclose(med, np.broadcast_to([-0.35, 0.2, 0.35, -0.2], (t - 1, 4)), atol=0.1)
    assert flows_tensor(lr.double()).dtype == torch.float64
    with pytest.raises(ValueError, match="flows_tensor"):
        flows_tensor(lr[:, :1])


def test_joint_quantisation_uses_one_map():
    """Frames of a clip share one stretch: a uniformly brighter frame stays brighter."""
    g = textured(40, 50, seed=8) * 0.5
    u_a, u_b = flow_mod.quantize_jointly([g, g + 0.1])
    assert u_a.dtype == np.uint8 and u_a.flags.c_contiguous
    assert u_b.astype(int).mean() - u_a.astype(int).mean() > 30
    assert u_a.min() == 0 and u_b.max() == 255


def test_pair_flows_do_not_depend_on_clip_or_order():
    """The pipeline reuses a pair's flows across windows and swaps them for mirrored pairs."""
    frames = [shifted_pair(textured(seed=9), 0.9 * t, -0.5 * t)[1] * (1 + 0.2 * t) for t in range(3)]
    three = middle_flows(np.stack(frames))
    two = middle_flows(np.stack(frames[:2]))
    rev = middle_flows(np.stack(frames[1::-1]))
    np.testing.assert_array_equal(three[:1], two)
    np.testing.assert_array_equal(rev[0], two[0][[2, 3, 0, 1]])


def test_nodata_and_uint16_frames():
    """NaN holes do not break the flow elsewhere; 16-bit counts are stretched like floats."""
    a, b = shifted_pair(textured(seed=11), 1.3, -0.7)
    a16, b16 = (np.round(300 + 900 * a)).astype(np.uint16), (np.round(300 + 900 * b)).astype(np.uint16)
    for src, dst in ((a16, b16), (np.where(np.arange(a.shape[1]) < 20, np.nan, a), b)):
        f = estimate_flow(src, dst)
        assert np.isfinite(f).all()
        err = np.hypot(f[MARGIN:-MARGIN, 40:-MARGIN, 0] - 1.3, f[MARGIN:-MARGIN, 40:-MARGIN, 1] + 0.7)
        assert np.median(err) < 0.15, np.median(err)

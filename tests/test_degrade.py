"""The LR degradation: anti-aliased bicubic x4 (PIL), 8-bit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mstt_stvsr.core.training.degrade import crop_to_multiple, downsample, downsample_float, downsample_tensor
from mstt_stvsr.core.errors import InputError


def test_matches_pil_bicubic_and_shapes():
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (3, 32, 48, 3), dtype=np.uint8)
    lr = downsample(hr)
    assert lr.shape == (3, 8, 12, 3) and lr.dtype == np.uint8
    assert np.array_equal(lr[1], np.asarray(Image.fromarray(hr[1]).resize((12, 8), Image.BICUBIC)))
    four = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    assert downsample(four).shape == (4, 4, 4)


def test_flat_stays_flat_and_stripes_are_antialiased():
    assert np.all(downsample(np.full((16, 16, 3), 77, np.uint8)) == 77)
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, 0::2] = 255  # above LR Nyquist: must average out, not alias into bands
    lr = downsample(stripes).astype(float)
    assert np.abs(lr[2:-2, 2:-2] - 127.5).max() < 2


def test_torch_twin_agrees():
    rng = np.random.default_rng(1)
    hr = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
    hr = np.array(Image.fromarray(hr).resize((160, 160), Image.BICUBIC))  # smooth-ish content
    a = downsample(hr).astype(float)
    b = downsample_tensor(torch.from_numpy(hr).permute(2, 0, 1).float() / 255).permute(1, 2, 0).numpy() * 255
    assert np.abs(a - b)[2:-2, 2:-2].mean() < 0.5
    f = downsample_float(hr.astype(np.float32) / 255)
    assert np.array_equal(np.rint(f * 255).astype(np.uint8), downsample(hr))


def test_errors_and_crop():
    with pytest.raises(InputError, match="multiple of 4"):
        downsample(np.zeros((10, 12, 3), np.uint8))
    with pytest.raises(InputError, match="uint8"):
        downsample(np.zeros((8, 8, 3), np.float32))
    assert crop_to_multiple(np.zeros((2, 10, 13, 3))).shape == (2, 8, 12, 3)

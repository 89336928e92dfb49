"""The LR degradation of Jilin-189: anti-aliased bicubic x4 downsampling, rounded to 8 bit.

PIL's ``Image.resize(..., BICUBIC)`` widens the cubic kernel by the scale factor (MATLAB
``imresize`` style anti-aliasing); it reproduces the published Jilin-189 LR frames to ~0.12 DN,
where OpenCV's INTER_CUBIC (no anti-aliasing) is ~3.7 DN off. Training, evaluation and the sample
stack all go through :func:`downsample`, so the model sees exactly the degradation users have.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import InputError
from ..net.spec import SCALE


def crop_to_multiple(img: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """Drop bottom/right rows and columns so H and W divide by ``scale`` (keeps the origin)."""
    h, w = img.shape[-3], img.shape[-2]
    return img[..., : h - h % scale, : w - w % scale, :]


def downsample(hr: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """(H, W, C) or (T, H, W, C) uint8 -> LR uint8, each channel PIL-bicubic-resized by 1/scale.

    H and W must divide by ``scale`` (use :func:`crop_to_multiple`), so LR pixels tile HR pixels
    exactly and georeferencing stays a pure pixel-size change.
    """
    hr = np.asarray(hr)
    if hr.dtype != np.uint8:
        raise InputError(f"downsample expects uint8 frames, got {hr.dtype}")
    if hr.ndim == 4:
        return np.stack([downsample(f, scale) for f in hr])
    if hr.ndim != 3:
        raise InputError(f"downsample expects (H, W, C) or (T, H, W, C), got shape {hr.shape}")
    h, w, c = hr.shape
    if h % scale or w % scale:
        raise InputError(f"frame size {w}x{h} is not a multiple of {scale}")
    size = (w // scale, h // scale)
    if c == 3:
        return np.asarray(Image.fromarray(hr, "RGB").resize(size, Image.BICUBIC))
    chans = [np.asarray(Image.fromarray(hr[..., i], "L").resize(size, Image.BICUBIC)) for i in range(c)]
    return np.stack(chans, axis=-1)


def downsample_float(hr: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """(…, H, W, C) float in [0, 1] -> LR float in [0, 1] quantised to 8 bit like the real data."""
    u8 = np.clip(np.rint(np.asarray(hr, np.float32) * 255.0), 0, 255).astype(np.uint8)
    return downsample(u8, scale).astype(np.float32) / 255.0


def downsample_tensor(hr, scale: int = SCALE):
    """Torch twin of :func:`downsample` for (…, C, H, W) float tensors in [0, 1] (e.g. on a GPU).

    ``interpolate(antialias=True)`` widens the cubic like PIL; measured on aero1.jpg it agrees
    with the PIL path to 0.1 DN mean (up to a few DN at the frame border, where the edge
    handling differs).
    """
    import torch
    import torch.nn.functional as F

    shape = hr.shape
    x = hr.reshape(-1, *shape[-3:]).float()
    lr = F.interpolate(x, size=(shape[-2] // scale, shape[-1] // scale), mode="bicubic",
                       align_corners=False, antialias=True)
    lr = torch.round(lr.clamp(0, 1) * 255.0) / 255.0
    return lr.reshape(*shape[:-2], *lr.shape[-2:])

"""tools/fusion_headroom.py finds room for fusion where the neighbours carry information the
frame lacks (noise only in the LR, clean ground truth) and none where the frame's own noise is
in its ground truth too, as in real video."""
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from fusion_headroom import clip_headroom  # noqa: E402

from mstt_stvsr.core.training.degrade import downsample


def scene(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.uniform(0, 255, (128, 128, 3)).astype(np.float32), (0, 0), 2.0)
    return np.clip((base - base.mean()) * 4 + 128, 0, 255)


def test_noise_only_in_the_inputs_leaves_room():
    rng = np.random.default_rng(1)
    hr = np.repeat(scene()[None], 7, 0).astype(np.uint8)  # static scene, clean ground truth
    lr = downsample(hr[0::2]).astype(np.float32) + rng.normal(0, 6, (4, 32, 32, 3))
    r = clip_headroom(np.clip(lr, 0, 255).astype(np.uint8), hr)
    assert r["whole"]["0.5"] > 0.3 and r["high_pass"]["0.5"] > 0.1, r


def test_noise_in_the_ground_truth_leaves_none():
    rng = np.random.default_rng(2)
    hr = np.clip(scene()[None] + rng.normal(0, 12, (7, 128, 128, 3)), 0, 255).astype(np.uint8)
    r = clip_headroom(downsample(hr[0::2]), hr)
    assert all(v < 0 for band in ("whole", "high_pass") for v in r[band].values()), r

"""The shipped sample stack (resources/sample): 5 georeferenced frames of synthetic 10 fps
satellite video over the held-out Yellowstone still, with traffic on its real road, and the
9 HR truth frames a perfect space-time super-resolution would make of it.

Everything that decides its pixels is in ``SAMPLE`` and ``YELL541_ROAD``; tools/make_sample.py
regenerates the same files from the imagery of tools/fetch_imagery.py.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from affine import Affine

from ..errors import InputError
from ..geo.synthetic import write_frames
from ..net.spec import SCALE
from .clips import Camera, render
from .degrade import downsample
from .imagery import CATALOGUE, IMAGERY_DIR, load_source
from .scenes import Scene
from .traffic import CAR_COLOURS, Mover, offset_path

# Centre line of the road in yell541 (source pixels at 10 cm, x, y), traced from its grey pixels.
YELL541_ROAD = np.array([
    (149, -60), (159, 0), (174, 60), (184, 120), (200, 180), (215, 240), (246, 300), (263, 360),
    (287, 420), (311, 480), (340, 540), (368, 600), (400, 660), (434, 720), (467, 780), (503, 840),
    (548, 900), (593, 960), (633, 1020), (660, 1060),
], np.float64)
SAMPLE = dict(
    source="yell541", hr_gsd=0.2, lr_size=(152, 120), frames=5, step_s=0.1,
    crs="EPSG:32612", origin=(541200.0, 4977800.0), start="2019-07-15T18:05:30.000",
    seed=20190715,
)
DESCRIPTION = "MSTT-STVSR sample: synthetic satellite video from NEON YELL orthophoto (see README.md)"


def road_traffic(rng, road: np.ndarray, ppm: float) -> list[Mover]:
    """Three vehicles per direction, at least 20 m apart, one speed per lane (15-25 m/s) so that
    nobody drives through anybody."""
    movers = []
    for side, n in ((1, 3), (-1, 3)):
        path = offset_path(road, side * 1.8 * ppm)
        if side < 0:
            path = path[::-1]
        total = float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())
        starts = np.sort(rng.uniform(0.05, 0.95, n)) * total
        starts = starts[0] + np.maximum.accumulate(starts - starts[0] + np.arange(n) * 20 * ppm)
        v_lane = float(rng.uniform(15, 25)) * ppm
        for s0 in starts:
            truck = rng.random() < 0.25
            lm, wm = (float(rng.uniform(9, 12)), 2.5) if truck else (float(rng.uniform(4.2, 5.0)), 1.85)
            col = tuple(CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))])
            movers.append(Mover(path, float(s0), v_lane, lm * ppm, wm * ppm, col, "truck" if truck else "car"))
    return movers


def sample_scene(imagery, rng) -> Scene:
    """The held-out Yellowstone still at 0.2 m with traffic on its real road and a few animals."""
    cfg = SAMPLE
    img = load_source(str(imagery), cfg["source"], cfg["hr_gsd"]) if imagery else None
    if img is None:
        raise InputError(f"the sample needs {CATALOGUE[cfg['source']].path} under {imagery} "
                         "(run tools/fetch_imagery.py)")
    img = img.copy()
    ppm = 1.0 / cfg["hr_gsd"]
    road = YELL541_ROAD * (CATALOGUE[cfg["source"]].gsd / cfg["hr_gsd"])
    sun = np.array([-0.8, -0.6])  # the trees' shadows fall to the upper left
    movers = road_traffic(rng, road, ppm)
    h, w = img.shape[:2]
    for _ in range(3):  # bison grazing in the clearings: slow, own direction
        p = np.array([w, h]) * rng.uniform(0.55, 0.9, 2)
        ang = float(rng.uniform(0, 2 * math.pi))
        path = np.stack([p, p + 50 * ppm * np.array([math.cos(ang), math.sin(ang)])])
        movers.append(Mover(path, 0.0, float(rng.uniform(0.5, 1.5)) * ppm, 2.6 * ppm, 1.2 * ppm,
                            (0.22, 0.16, 0.12), "blob"))
    return Scene(img, movers, cfg["hr_gsd"], sun, "real", cfg["source"])


def sample_frames(imagery=None):
    """(hr, lr, times): 2N-1 HR truth frames (uint8 (2N-1, H, W, 3)) at half steps, the N LR
    inputs (uint8 (N, H/4, W/4, 3)), and the N input times. ``imagery``: default IMAGERY_DIR.

    The HR frames at odd positions are the truth for the frames a model has to invent.
    """
    cfg = SAMPLE
    imagery = IMAGERY_DIR if imagery is None else imagery
    rng = np.random.default_rng(cfg["seed"])
    scene = sample_scene(imagery, rng)
    n = cfg["frames"]
    lw, lh = cfg["lr_size"]
    # platform motion per half step (one output frame): residual drift ~0.3 HR px, tiny roll/zoom
    cam = Camera(drift=(0.3, -0.18), jitter=0.03, rotation=0.01, zoom=1e-4, gain=0.003, noise=0.8,
                 psf=0.4, dt=cfg["step_s"] / 2)
    hr = render(scene, cam, 2 * n - 1, SCALE * lh, SCALE * lw, rng)
    lr = downsample(hr[0::2])
    t0 = datetime.fromisoformat(cfg["start"])
    times = [t0 + timedelta(seconds=cfg["step_s"] * i) for i in range(n)]
    return hr, lr, times


def make_sample_stack(out_dir, imagery=None, gt_dir=None) -> list[Path]:
    """Write the sample stack: N RGB uint8 GeoTIFFs (DEFLATE), UTM 12N, LR pixel 4 x the HR one.

    Times go in ACQUISITIONDATETIME (ISO, 0.1 s steps = 10 fps video) and TIFFTAG_DATETIME (the
    TIFF tag only holds whole seconds). ``gt_dir`` also receives the 2N-1 HR truth frames.
    """
    cfg = SAMPLE
    hr, lr, times = sample_frames(imagery)
    x0, y0 = cfg["origin"]

    def write(folder, frames, pixel, names, when):
        return write_frames(folder, frames, names=names, crs=cfg["crs"], transform=Affine(pixel, 0, x0, 0, -pixel, y0),
                            times=when, time_keys=("TIFFTAG_DATETIME", "ACQUISITIONDATETIME"), timespec="milliseconds",
                            tags={"TIFFTAG_IMAGEDESCRIPTION": DESCRIPTION}, descriptions=("red", "green", "blue"),
                            compress=True)

    paths = write(out_dir, lr, SCALE * cfg["hr_gsd"], "frame_{i:02d}.tif", times)
    if gt_dir is not None:
        half = (times[1] - times[0]) / 2
        write(gt_dir, hr, cfg["hr_gsd"], "gt_{i:02d}.tif", [times[0] + half * j for j in range(len(hr))])
    return paths

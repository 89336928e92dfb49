"""The ground under synthetic video: real aerial stills (the catalogue of tools/fetch_imagery.py,
split into training and held-out images) resampled to satellite-video pixel sizes, or procedural
noise texture where they are absent (tests, CI), so that synthesis always works.

Images are float32 RGB in [0, 1], (H, W, 3).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .. import PLUGIN_DIR

IMAGERY_DIR = PLUGIN_DIR / "build" / "imagery"  # where tools/fetch_imagery.py puts the stills


@dataclass(frozen=True)
class Source:
    path: str  # relative to the imagery folder
    gsd: float  # native metres per pixel (nominal for the oblique aero photos)
    split: str  # "train" | "test" | "texture"
    rows: tuple = (0.0, 1.0)  # fraction of rows to use (cuts sky / horizon off oblique photos)
    view: str = "ground"  # "ground": nadir orthophoto of land (also under procedural cities),
    # "city": nadir satellite crop of a city (whole scenes only), "oblique": aerial photo


CATALOGUE = {
    "yell528": Source("neon/2019_YELL_2_528000_4978000_image_crop2.png", 0.1, "train"),
    "osbs029": Source("neon/OSBS_029.png", 0.1, "train"),
    "soap031": Source("neon/SOAP_031.png", 0.1, "train"),
    "aero1": Source("opencv/aero1.jpg", 1.0, "train", (0.35, 1.0), "oblique"),
    # real satellite crops of cities (tools/fetch_imagery.py: solaris's SpaceNet samples)
    "vegas": Source("spacenet/vegas.png", 0.3, "train", view="city"),
    "atlanta": Source("spacenet/atlanta.png", 0.5, "train", view="city"),
    "rotterdam1": Source("spacenet/rotterdam1.png", 0.5, "train", view="city"),
    "rotterdam2": Source("spacenet/rotterdam2.png", 0.5, "train", view="city"),
    "rotterdam3": Source("spacenet/rotterdam3.png", 0.5, "train", view="city"),
    # held out: evaluation clips and the sample stack only
    "yell541": Source("neon/2019_YELL_2_541000_4977000_image_crop.png", 0.1, "test"),
    "soap061": Source("neon/SOAP_061.png", 0.1, "test"),
    "aero3": Source("opencv/aero3.jpg", 1.0, "test", (0.45, 1.0), "oblique"),
}
# large enough to be a whole scene
BIG = ("yell528", "yell541", "aero1", "aero3", "vegas", "atlanta", "rotterdam1", "rotterdam2", "rotterdam3")


@lru_cache(maxsize=32)
def load_source(imagery: str, name: str, gsd: float) -> np.ndarray | None:
    """A catalogue image resampled (area-style) to ``gsd`` m/px, float32 RGB; None if absent."""
    src = CATALOGUE[name]
    path = Path(imagery) / src.path
    if not path.is_file():
        return None
    Image.MAX_IMAGE_PIXELS = None
    im = Image.open(path).convert("RGB")
    w, h = im.size
    r0, r1 = int(src.rows[0] * h), int(src.rows[1] * h)
    im = im.crop((0, r0, w, r1))
    f = src.gsd / gsd
    if f < 0.999:  # only ever reduce: upsampling would invent a blurry "ground truth"
        im = im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.LANCZOS)
    return np.asarray(im, np.float32) / 255.0


def available(imagery, split: str) -> list[str]:
    """Catalogue names of ``split`` whose files are in the ``imagery`` folder (None: none)."""
    if imagery is None:
        return []
    return [n for n, s in CATALOGUE.items() if s.split == split and (Path(imagery) / s.path).is_file()]


NADIR_GSD_M = (0.55, 1.0)  # m: the ground sampling the nadir stills are resampled to
GSD_STEP = 0.05  # m: target ground samplings are multiples of this, so resamples are cached


def source_gsd(rng, name: str, extent_m: float | None = None) -> float:
    """Target ground sampling for a source: 0.55-1 m for the nadir stills (towards Jilin-1
    video's ~1 m, where a car is 4-5 px long; the 10 cm stills are only 230 px wide at 1 m);
    near native for aero. A city crop is taken no coarser than ``extent_m`` (its shorter side
    over the canvas's longer one), down to 0.55 m: a street mirrored at the canvas edge is a
    city no satellite sees (the smallest crops, 180 m, still mirror a little at 0.55 m)."""
    src = CATALOGUE[name]
    if src.view == "oblique":
        return src.gsd * float(rng.uniform(1.0, 1.3))
    gsd = round(float(rng.uniform(*NADIR_GSD_M)) / GSD_STEP) * GSD_STEP
    if src.view == "city" and extent_m is not None and gsd > extent_m:
        gsd = max(math.floor(extent_m / GSD_STEP) * GSD_STEP, NADIR_GSD_M[0], src.gsd)
    return gsd


def extent(imagery, name: str) -> tuple[float, float]:
    """(height, width) in metres of a catalogue still (its used rows), read from the header."""
    src = CATALOGUE[name]
    with Image.open(Path(imagery) / src.path) as im:
        w, h = im.size
    return h * (src.rows[1] - src.rows[0]) * src.gsd, w * src.gsd


def dihedral(img: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of an (H, W, C) image."""
    img = np.rot90(img, k % 4)
    return img[:, ::-1] if k >= 4 else img


def fit(img: np.ndarray, h: int, w: int, rng) -> np.ndarray:
    """Random (h, w) window of img, mirror-extended when img is smaller."""
    ph, pw = max(0, h - img.shape[0]), max(0, w - img.shape[1])
    if ph or pw:
        img = np.pad(img, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode="symmetric")
    y = int(rng.integers(0, img.shape[0] - h + 1))
    x = int(rng.integers(0, img.shape[1] - w + 1))
    return np.ascontiguousarray(img[y:y + h, x:x + w])


def noise_texture(rng, h: int, w: int, scales=(64, 16, 4), amps=(1.0, 0.5, 0.25)) -> np.ndarray:
    """Fractal value noise in [0, 1], (h, w): smooth random fields summed over scales."""
    out = np.zeros((h, w), np.float32)
    for s, a in zip(scales, amps):
        g = rng.standard_normal((h // s + 2, w // s + 2)).astype(np.float32)
        out += a * cv2.resize(g, (w + 2 * s, h + 2 * s), interpolation=cv2.INTER_CUBIC)[s:s + h, s:s + w]
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def procedural_ground(rng, h: int, w: int) -> np.ndarray:
    """Vegetation/soil ground when no real imagery is at hand (tests, CI)."""
    n = noise_texture(rng, h, w)[..., None]
    fine = noise_texture(rng, h, w, (8, 2), (1.0, 0.6))[..., None]
    green = np.array([0.28, 0.38, 0.20], np.float32)
    soil = np.array([0.55, 0.50, 0.40], np.float32)
    img = green * (1 - n) + soil * n
    return np.clip(img * (0.75 + 0.5 * fine), 0, 1).astype(np.float32)


def ground_texture(rng, h: int, w: int, gsd: float, imagery, split: str) -> np.ndarray:
    """(h, w, 3) ground at about ``gsd`` m/px: a random window of a random still of ``split``
    (orthophotos preferred), flipped/rotated and colour-jittered; procedural without stills."""
    names = available(imagery, split)
    names = [n for n in names if CATALOGUE[n].view == "ground"] or names
    if not names:
        return procedural_ground(rng, h, w)
    name = names[int(rng.integers(len(names)))]
    img = load_source(str(imagery), name, max(gsd, CATALOGUE[name].gsd))
    img = dihedral(img, int(rng.integers(8)))
    tex = fit(img, h, w, rng)
    jitter = rng.uniform(0.85, 1.12, 3).astype(np.float32)  # season / sensor colour balance
    return np.clip(tex * jitter, 0, 1)

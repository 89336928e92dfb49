"""Synthetic satellite video: 7-frame HR clips cut from real aerial stills, deterministic per seed.

Jilin-189 is out of reach, so we make what a video satellite would see: a ground scene (a real
orthophoto resampled to 0.3-1 m, or a procedural city of roads, building blocks with shadows and
parking lots laid over real ground texture) filmed by a platform with residual sub-pixel drift,
a slight rotation and scale change, with vehicles and other small objects moving on their own,
illumination change and sensor noise. Everything is drawn in ground coordinates and then warped
into the frame, so the camera motion and the objects' own motion compose like in real video.

The real stills are those of tools/fetch_imagery.py (``build/imagery``); ``CATALOGUE`` says which
are for training and which are held out for evaluation and the sample stack. Without them (CI,
tests) the ground is procedural noise texture, so the module always works.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .. import PLUGIN_DIR
from ..errors import InputError
from .degrade import downsample



@dataclass(frozen=True)
class Source:
    path: str  # relative to the imagery folder
    gsd: float  # native metres per pixel (nominal for the oblique aero photos)
    split: str  # "train" | "test" | "texture"
    rows: tuple = (0.0, 1.0)  # fraction of rows to use (cuts sky / horizon off oblique photos)


CATALOGUE = {
    "yell528": Source("neon/2019_YELL_2_528000_4978000_image_crop2.png", 0.1, "train"),
    "osbs029": Source("neon/OSBS_029.png", 0.1, "train"),
    "soap031": Source("neon/SOAP_031.png", 0.1, "train"),
    "aero1": Source("opencv/aero1.jpg", 1.0, "train", (0.35, 1.0)),
    # held out: evaluation clips and the sample stack only
    "yell541": Source("neon/2019_YELL_2_541000_4977000_image_crop.png", 0.1, "test"),
    "soap061": Source("neon/SOAP_061.png", 0.1, "test"),
    "aero3": Source("opencv/aero3.jpg", 1.0, "test", (0.45, 1.0)),
}
BIG = ("yell528", "yell541", "aero1", "aero3")  # large enough to be a whole scene

ROOF_COLOURS = np.array([  # RGB in [0, 1]: concrete, dark, white, terracotta, blue/green metal, tar
    (0.62, 0.62, 0.60), (0.40, 0.40, 0.41), (0.85, 0.85, 0.83), (0.62, 0.36, 0.28),
    (0.35, 0.47, 0.62), (0.42, 0.55, 0.50), (0.28, 0.28, 0.29), (0.72, 0.68, 0.60),
], np.float32)
CAR_COLOURS = np.array([
    (0.92, 0.92, 0.92), (0.08, 0.08, 0.09), (0.55, 0.56, 0.58), (0.75, 0.76, 0.78),
    (0.65, 0.12, 0.10), (0.14, 0.25, 0.55), (0.80, 0.70, 0.20), (0.25, 0.35, 0.22),
], np.float32)


def default_imagery_dir() -> Path:
    return Path(os.environ.get("MSTT_IMAGERY", PLUGIN_DIR / "build" / "imagery"))


# -- imagery ------------------------------------------------------------------------------
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
    names = [n for n, s in CATALOGUE.items() if s.split == split]
    if imagery is None:
        return []
    return [n for n in names if (Path(imagery) / CATALOGUE[n].path).is_file()]


def source_gsd(rng, name: str) -> float:
    """Target ground sampling for a source: 0.3-1 m for orthophotos; near native for aero."""
    src = CATALOGUE[name]
    if src.gsd >= 0.5:
        return src.gsd * float(rng.uniform(1.0, 1.3))
    return round(float(rng.uniform(0.3, 1.0)) / 0.05) * 0.05  # quantised so resamples are cached


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
    names = available(imagery, split)
    names = [n for n in names if CATALOGUE[n].gsd < 0.5] or names
    if not names:
        return procedural_ground(rng, h, w)
    name = names[int(rng.integers(len(names)))]
    img = load_source(str(imagery), name, max(gsd, CATALOGUE[name].gsd))
    img = dihedral(img, int(rng.integers(8)))
    tex = fit(img, h, w, rng)
    jitter = rng.uniform(0.85, 1.12, 3).astype(np.float32)  # season / sensor colour balance
    return np.clip(tex * jitter, 0, 1)


# -- drawing ------------------------------------------------------------------------------
def rect(cx, cy, length, width, angle) -> np.ndarray:
    """Corners (4, 2) of a rectangle centred at (cx, cy), long side along ``angle`` (radians)."""
    c, s = math.cos(angle), math.sin(angle)
    u, v = np.array([c, s]) * length / 2, np.array([-s, c]) * width / 2
    p = np.array([cx, cy])
    return np.array([p + u + v, p - u + v, p - u - v, p + u - v], np.float64)


def poly_mask(shape, pts: np.ndarray):
    """Anti-aliased coverage of a convex polygon within its bounding box: (mask, y0, x0) or None."""
    h, w = shape
    x0, y0 = max(int(np.floor(pts[:, 0].min())) - 1, 0), max(int(np.floor(pts[:, 1].min())) - 1, 0)
    x1, y1 = min(int(np.ceil(pts[:, 0].max())) + 2, w), min(int(np.ceil(pts[:, 1].max())) + 2, h)
    if x1 <= x0 or y1 <= y0:
        return None
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    p = np.round((pts - [x0, y0]) * 16).astype(np.int32)  # 4 fractional bits: sub-pixel edges
    cv2.fillConvexPoly(m, p, 255, lineType=cv2.LINE_AA, shift=4)
    return m.astype(np.float32)[..., None] / 255.0, y0, x0


def paint(img: np.ndarray, pts: np.ndarray, colour, alpha: float = 1.0, texture=None) -> None:
    """Blend a colour (or colour * texture) into img inside the polygon."""
    r = poly_mask(img.shape[:2], pts)
    if r is None:
        return
    m, y0, x0 = r
    reg = img[y0:y0 + m.shape[0], x0:x0 + m.shape[1]]
    col = np.asarray(colour, np.float32)
    if texture is not None:
        col = col * texture[y0:y0 + m.shape[0], x0:x0 + m.shape[1]]
    reg[:] = reg * (1 - alpha * m) + col * alpha * m


def darken(img: np.ndarray, pts: np.ndarray, factor: float) -> None:
    r = poly_mask(img.shape[:2], pts)
    if r is None:
        return
    m, y0, x0 = r
    img[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] *= 1 - (1 - factor) * m


def hull(pts: np.ndarray) -> np.ndarray:
    return cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)


# -- moving objects -----------------------------------------------------------------------
@dataclass
class Mover:
    """A vehicle or small object travelling along a polyline at constant speed (px per second)."""
    path: np.ndarray  # (K, 2) canvas px
    s0: float  # arc-length position at t = 0 (px)
    speed: float  # px / s (signed: negative runs the path backwards)
    length: float  # px
    width: float  # px
    colour: tuple
    kind: str = "car"  # car | truck | blob
    cum: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        seg = np.linalg.norm(np.diff(self.path, axis=0), axis=1)
        self.cum = np.concatenate([[0.0], np.cumsum(seg)])

    def pose(self, t: float):
        """(x, y, heading) at time t seconds."""
        s = self.s0 + self.speed * t
        s = float(np.clip(s, 0, self.cum[-1]))
        i = int(np.clip(np.searchsorted(self.cum, s) - 1, 0, len(self.path) - 2))
        a, b = self.path[i], self.path[i + 1]
        f = (s - self.cum[i]) / max(self.cum[i + 1] - self.cum[i], 1e-9)
        x, y = a + f * (b - a)
        ang = math.atan2(b[1] - a[1], b[0] - a[0]) + (math.pi if self.speed < 0 else 0.0)
        return x, y, ang


def draw_mover(img: np.ndarray, m: Mover, t: float, sun: np.ndarray, px_per_m: float) -> None:
    x, y, ang = m.pose(t)
    body = rect(x, y, m.length, m.width, ang)
    darken(img, body + sun * (0.8 * px_per_m), 0.55)  # vehicle's own shadow
    if m.kind == "blob":
        paint(img, body, m.colour)
        return
    paint(img, body, m.colour)
    fwd = np.array([math.cos(ang), math.sin(ang)])
    if m.kind == "car":  # windscreen and rear window: the dark bands that make a car read as one
        paint(img, rect(*(np.array([x, y]) + fwd * m.length * 0.18), m.length * 0.16, m.width * 0.85, ang),
              (0.1, 0.11, 0.13), 0.8)
        paint(img, rect(*(np.array([x, y]) - fwd * m.length * 0.3), m.length * 0.1, m.width * 0.8, ang),
              (0.12, 0.12, 0.14), 0.7)
    else:  # truck / bus: a cab and a lighter roof box
        paint(img, rect(*(np.array([x, y]) + fwd * m.length * 0.4), m.length * 0.18, m.width, ang),
              np.asarray(m.colour) * 0.7)


def lane_movers(rng, start, end, half_width: float, px_per_m: float, lanes_per_dir: int,
                both_ways: bool = True, busy: float = 1.0) -> list[Mover]:
    """Vehicles on a straight road from start to end (canvas px), lanes on each side."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    d = end - start
    n = np.array([-d[1], d[0]]) / max(np.linalg.norm(d), 1e-9)
    length = float(np.linalg.norm(d))
    movers = []
    lane_w = min(3.5 * px_per_m, half_width / max(lanes_per_dir, 1))
    for side in ((1, -1) if both_ways else (1,)):
        for lane in range(lanes_per_dir):
            off = side * (lane + 0.5) * lane_w
            path = np.stack([start + n * off, end + n * off])
            stopped = rng.random() < 0.15
            v_lane = 0.0 if stopped else float(rng.uniform(4, 25)) * px_per_m  # 15-90 km/h
            gap_m = float(rng.uniform(7, 12) if stopped else rng.uniform(12, 60)) / busy
            s = float(rng.uniform(0, gap_m)) * px_per_m
            while s < length:
                big = rng.random() < 0.12
                lm = float(rng.uniform(8, 13) if big else rng.uniform(3.8, 5.2))
                wm = float(rng.uniform(2.3, 2.6) if big else rng.uniform(1.7, 2.0))
                colour = tuple(CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))] * rng.uniform(0.9, 1.05))
                v = v_lane * float(rng.uniform(0.9, 1.1)) * side
                movers.append(Mover(path, s, v, lm * px_per_m, wm * px_per_m, colour, "truck" if big else "car"))
                s += (lm + gap_m * float(rng.uniform(0.6, 1.6))) * px_per_m
    return movers


def draw_road(img, rng, start, end, width_px: float, px_per_m: float, markings: bool = True, grain=None) -> None:
    start, end = np.asarray(start, float), np.asarray(end, float)
    d = end - start
    length = float(np.linalg.norm(d))
    ang = math.atan2(d[1], d[0])
    c = (start + end) / 2
    side = float(rng.uniform(1.5, 3.5)) * px_per_m  # pavement
    paint(img, rect(*c, length, width_px + 2 * side, ang), np.full(3, rng.uniform(0.55, 0.72)))
    tone = float(rng.uniform(0.22, 0.42))
    if grain is None:
        grain = 0.9 + 0.2 * noise_texture(rng, img.shape[0], img.shape[1], (16, 4), (0.5, 1.0))[..., None]
    paint(img, rect(*c, length, width_px, ang), np.array([tone, tone, tone * 1.03]), texture=grain)
    if not markings:
        return
    u = d / max(length, 1e-9)
    dash, gap = 3.0 * px_per_m, float(rng.uniform(6, 10)) * px_per_m
    mark_w = max(0.15 * px_per_m, 0.35)
    colour = (0.9, 0.9, 0.85) if rng.random() < 0.7 else (0.85, 0.75, 0.3)
    s = float(rng.uniform(0, dash + gap))
    while s < length:
        p = start + u * (s + dash / 2)
        paint(img, rect(*p, dash, mark_w, ang), colour, 0.8)
        s += dash + gap


# -- scenes -------------------------------------------------------------------------------
@dataclass
class Scene:
    static: np.ndarray  # (H, W, 3) float32 canvas, ground coordinates
    movers: list
    gsd: float  # metres per canvas pixel (= per HR pixel)
    sun: np.ndarray  # unit vector of shadow direction, canvas px
    kind: str
    source: str


def building(img, rng, cx, cy, lm, wm, ang, px_per_m, sun, shadows: list):
    """Footprint, roof colour and grain of a rectangular building; its cast shadow is queued."""
    h_m = float(min(rng.lognormal(math.log(10), 0.6), 80))
    foot = rect(cx, cy, lm * px_per_m, wm * px_per_m, ang)
    shade = foot + sun * (h_m * float(rng.uniform(0.4, 0.9)) * px_per_m)
    shadows.append(hull(np.concatenate([foot, shade])))
    col = ROOF_COLOURS[int(rng.integers(len(ROOF_COLOURS)))] * float(rng.uniform(0.85, 1.12))
    return foot, col, h_m


def urban_scene(rng, h: int, w: int, gsd: float, imagery, split: str) -> Scene:
    """Streets in a grid, blocks of buildings with shadows, parking lots, parks; cars on streets."""
    ppm = 1.0 / gsd
    img = ground_texture(rng, h, w, gsd, imagery, split).copy()
    phi = float(rng.uniform(0, math.pi))
    u, v = np.array([math.cos(phi), math.sin(phi)]), np.array([-math.sin(phi), math.cos(phi)])
    sun_ang = float(rng.uniform(0, 2 * math.pi))
    sun = np.array([math.cos(sun_ang), math.sin(sun_ang)])
    c = np.array([w / 2, h / 2])
    reach = 0.75 * math.hypot(h, w)
    bu, bv = float(rng.uniform(60, 160)) * ppm, float(rng.uniform(50, 130)) * ppm
    ou, ov = float(rng.uniform(0, bu)), float(rng.uniform(0, bv))
    main_w = float(rng.uniform(8, 24)) * ppm
    cross_w = float(rng.uniform(6, 14)) * ppm
    cross = rng.random() > 0.25
    vs = np.arange(-reach - ov, reach + bv, bv)
    us = np.arange(-reach - ou, reach + bu, bu) if cross else np.array([-4 * reach, 4 * reach])

    # blocks between streets
    shadows, roofs, parked = [], [], []
    grain = 0.93 + 0.14 * noise_texture(rng, h, w, (8, 2), (0.6, 1.0))[..., None]
    road_grain = 0.9 + 0.2 * noise_texture(rng, h, w, (16, 4), (0.5, 1.0))[..., None]
    for i in range(len(us) - 1):
        for j in range(len(vs) - 1):
            u0, u1 = us[i] + cross_w / 2, us[i + 1] - cross_w / 2
            v0, v1 = vs[j] + main_w / 2, vs[j + 1] - main_w / 2
            if u1 - u0 < 8 * ppm or v1 - v0 < 8 * ppm:
                continue
            uc, vc = (u0 + u1) / 2, (v0 + v1) / 2
            centre = c + u * uc + v * vc
            if np.abs(centre - c).max() > reach:
                continue
            kind = rng.choice(["buildings", "park", "parking", "plaza"], p=[0.62, 0.14, 0.14, 0.10])
            if kind == "plaza":
                paint(img, rect(*centre, u1 - u0, v1 - v0, phi), np.full(3, rng.uniform(0.5, 0.75)))
            elif kind == "parking":
                tone = float(rng.uniform(0.3, 0.5))
                paint(img, rect(*centre, u1 - u0, v1 - v0, phi), (tone, tone, tone))
                rows = max(1, int((v1 - v0) / (6 * ppm)))
                for r in range(rows):
                    vr = v0 + (r + 0.5) * (v1 - v0) / rows
                    k = int((u1 - u0) / (2.6 * ppm))
                    for q in range(k):
                        if rng.random() < 0.35:
                            continue
                        ur = u0 + (q + 0.5) * (u1 - u0) / max(k, 1)
                        p = c + u * ur + v * vr
                        col = tuple(CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))])
                        parked.append(Mover(np.stack([p, p + v]), 0.0, 0.0, 4.5 * ppm, 1.8 * ppm, col))
            elif kind == "buildings":
                nu, nv = int(rng.integers(1, 5)), int(rng.integers(1, 4))
                du, dv = (u1 - u0) / nu, (v1 - v0) / nv
                for a in range(nu):
                    for b in range(nv):
                        if rng.random() < 0.15:
                            continue
                        set_u, set_v = rng.uniform(1.5, 6, 2) * ppm
                        lm, wm = (du - 2 * set_u) / ppm * rng.uniform(0.6, 1.0), (dv - 2 * set_v) / ppm * rng.uniform(0.6, 1.0)
                        if lm < 4 or wm < 4:
                            continue
                        p = c + u * (u0 + (a + 0.5) * du) + v * (v0 + (b + 0.5) * dv)
                        roofs.append(building(img, rng, *p, lm, wm, phi, ppm, sun, shadows))
    # streets over the ground, then shadows, then roofs
    movers = []
    for vv in vs:
        a, b = c + v * vv - u * reach, c + v * vv + u * reach
        draw_road(img, rng, a, b, main_w, ppm, grain=road_grain)
        movers += lane_movers(rng, a, b, main_w / 2, ppm, max(1, int(main_w / ppm / 7)))
    if cross:
        for uu in us:
            a, b = c + u * uu - v * reach, c + u * uu + v * reach
            draw_road(img, rng, a, b, cross_w, ppm, markings=rng.random() < 0.5, grain=road_grain)
            movers += lane_movers(rng, a, b, cross_w / 2, ppm, 1, busy=0.5)
    dark = float(rng.uniform(0.35, 0.6))
    for s in shadows:
        darken(img, s, dark)
    for foot, col, h_m in roofs:
        paint(img, foot, col, texture=grain)
        if rng.random() < 0.4:  # gable: one half lit, one half in shade
            half = foot.copy()
            half[2:] = (foot[2:] + foot[1::-1]) / 2
            paint(img, half, col * 0.8, texture=grain)
        for _ in range(int(rng.integers(0, 5))):  # rooftop units
            r1, r2 = rng.uniform(-0.35, 0.35, 2)
            fc = foot.mean(0) + (foot[0] - foot[1]) * r1 + (foot[0] - foot[3]) * r2
            unit = rect(*fc, rng.uniform(1.5, 4) * ppm, rng.uniform(1.5, 3) * ppm, phi)
            darken(img, unit + sun * 1.2 * ppm, 0.6)
            paint(img, unit, np.clip(col * rng.uniform(0.7, 1.3), 0, 1))
    for m in parked:
        draw_mover(img, m, 0.0, sun, ppm)
    return Scene(img, movers, gsd, sun, "urban", "procedural")


def real_scene(rng, h: int, w: int, imagery, split: str) -> Scene | None:
    """A window of a held real still, optionally crossed by a road with traffic and small movers."""
    names = [n for n in available(imagery, split) if n in BIG]
    if not names:
        return None
    name = names[int(rng.integers(len(names)))]
    gsd = source_gsd(rng, name)
    img = load_source(str(imagery), name, gsd)
    img = fit(dihedral(img, int(rng.integers(8))), h, w, rng).copy()
    ppm = 1.0 / gsd
    sun_ang = float(rng.uniform(0, 2 * math.pi))
    sun = np.array([math.cos(sun_ang), math.sin(sun_ang)])
    movers = []
    if rng.random() < 0.5:
        ang = float(rng.uniform(0, math.pi))
        d = np.array([math.cos(ang), math.sin(ang)]) * math.hypot(h, w)
        p = np.array([w, h]) * rng.uniform(0.3, 0.7, 2)
        width = float(rng.uniform(6, 16)) * ppm
        draw_road(img, rng, p - d, p + d, width, ppm)
        movers += lane_movers(rng, p - d, p + d, width / 2, ppm, max(1, int(width / ppm / 7)))
    for _ in range(int(rng.integers(0, 6))):  # animals, boats, people: small, own direction
        p = np.array([w, h]) * rng.uniform(0.1, 0.9, 2)
        ang = float(rng.uniform(0, 2 * math.pi))
        path = np.stack([p, p + 200 * ppm * np.array([math.cos(ang), math.sin(ang)])])
        size = float(rng.uniform(1, 3)) * ppm
        col = tuple(rng.uniform(0.05, 0.95) * np.ones(3) * rng.uniform(0.8, 1.2, 3))
        movers.append(Mover(path, 0.0, float(rng.uniform(1, 6)) * ppm, size * 1.5, size, col, "blob"))
    return Scene(img, movers, gsd, sun, "real", name)


def visible(movers: list, h: int, w: int, margin: float) -> list:
    """Drop movers that start farther than ``margin`` px outside the canvas (saves drawing time)."""
    keep = []
    for m in movers:
        x, y, _ = m.pose(0.0)
        if -margin < x < w + margin and -margin < y < h + margin:
            keep.append(m)
    return keep


# -- the camera ---------------------------------------------------------------------------
@dataclass
class Camera:
    """Platform motion in HR pixels per frame; applied about the frame centre."""
    drift: tuple = (0.0, 0.0)  # px / frame
    jitter: float = 0.0  # px, random per frame
    rotation: float = 0.0  # degrees / frame
    zoom: float = 0.0  # relative scale change / frame
    gain: float = 0.0  # relative illumination change / frame
    noise: float = 0.0  # sensor noise sigma, DN
    psf: float = 0.0  # Gaussian blur sigma of the optics, HR px
    dt: float = 0.1  # seconds between frames

    def margin(self, frames: int, size: int) -> int:
        span = frames / 2 + 1
        rot = math.radians(abs(self.rotation)) * span * size
        return int(math.ceil(math.hypot(*self.drift) * span + 3 * self.jitter + rot + abs(self.zoom) * span * size)) + 8


PSF_RANGE = (0.0, 0.6)  # Gaussian sigma of the optics, HR px (0 = as sharp as the resampled still)


def random_camera(rng, psf_range=None) -> Camera:
    speed = float(np.exp(rng.uniform(math.log(0.1), math.log(2.0))))  # 0.1-2 HR px per frame
    ang = float(rng.uniform(0, 2 * math.pi))
    return Camera(
        drift=(speed * math.cos(ang), speed * math.sin(ang)),
        jitter=float(rng.uniform(0, 0.15)),
        rotation=float(rng.uniform(-0.05, 0.05)),
        zoom=float(rng.uniform(-1e-3, 1e-3)),
        gain=float(rng.uniform(-0.01, 0.01)),
        noise=float(rng.uniform(0.3, 1.5)),
        psf=float(rng.uniform(*(psf_range or PSF_RANGE))),
        dt=float(rng.uniform(0.07, 0.2)),  # 5-15 fps video
    )


def render(scene: Scene, cam: Camera, frames: int, h: int, w: int, rng) -> np.ndarray:
    """(frames, h, w, 3) uint8: movers drawn at their time, then the platform's view warped in."""
    ch, cw = scene.static.shape[:2]
    cc = np.array([cw / 2, ch / 2])
    oc = np.array([w / 2, h / 2])
    mid = (frames - 1) / 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field_phase = rng.uniform(0, 2 * math.pi, 2)
    field_k = rng.uniform(0.5, 2.0, 2) * 2 * math.pi / max(h, w)
    out = np.empty((frames, h, w, 3), np.uint8)
    for t in range(frames):
        canvas = scene.static.copy()
        for m in scene.movers:
            draw_mover(canvas, m, t * cam.dt, scene.sun, 1.0 / scene.gsd)
        k = t - mid
        th = math.radians(cam.rotation * k)
        s = 1.0 + cam.zoom * k
        a = s * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        d = np.array(cam.drift) * k + rng.normal(0, cam.jitter, 2)
        m_aff = np.concatenate([a, (cc + d - a @ oc)[:, None]], axis=1)  # output px -> canvas px
        f = cv2.warpAffine(canvas, m_aff, (w, h), flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REFLECT)
        if cam.psf > 0.05:
            f = cv2.GaussianBlur(f, (0, 0), cam.psf)
        light = 1.0 + cam.gain * k + 0.01 * k / max(mid, 1) * np.sin(field_k[0] * xx + field_phase[0]) * np.cos(field_k[1] * yy + field_phase[1])
        f = f * light[..., None] * 255.0 + rng.normal(0, cam.noise, f.shape)
        out[t] = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    return out


def make_clip(seed: int, size=(256, 256), frames: int = 7, split: str = "train", imagery=None,
              kind: str | None = None, psf_range=None):
    """One clip, deterministic from ``seed``: (frames uint8 (T, H, W, 3), info dict).

    kind: "urban" (procedural city on real ground texture), "real" (a window of a real still with
    optional traffic) or None (urban 60 %, real 40 %). ``imagery=None`` uses procedural ground.
    """
    h, w = (size, size) if isinstance(size, int) else size
    if h % 4 or w % 4:
        raise InputError(f"clip size {w}x{h} must be a multiple of 4 (the LR scale)")
    rng = np.random.default_rng(seed)
    cam = random_camera(rng, psf_range)
    m = cam.margin(frames, max(h, w))
    ch, cw = h + 2 * m, w + 2 * m
    if kind is None:
        kind = "urban" if rng.random() < 0.6 else "real"
    scene = real_scene(rng, ch, cw, imagery, split) if kind == "real" else None
    if scene is None:
        gsd = round(float(rng.uniform(0.4, 1.0)) / 0.05) * 0.05
        scene = urban_scene(rng, ch, cw, gsd, imagery, split)
    scene.movers = visible(scene.movers, ch, cw, 40.0 / scene.gsd)
    clip = render(scene, cam, frames, h, w, rng)
    info = dict(seed=seed, kind=scene.kind, source=scene.source, gsd=round(scene.gsd, 3),
                drift_px_per_frame=[round(x, 3) for x in cam.drift], rotation_deg_per_frame=round(cam.rotation, 4),
                zoom_per_frame=round(cam.zoom, 5), gain_per_frame=round(cam.gain, 4), noise_dn=round(cam.noise, 2),
                psf_px=round(cam.psf, 2), dt_s=round(cam.dt, 3), movers=len(scene.movers))
    return clip, info


# -- datasets on disk ---------------------------------------------------------------------
def write_septuplets(out, clips: int, size, split: str = "train", seed: int = 0, imagery=None,
                     frames: int = 7, progress=True, psf_range=None) -> Path:
    """Vimeo-septuplet layout: sequences/<clip>/0001/im1..im7.png + sep_{train,test}list.txt."""
    out = Path(out)
    listname = "sep_trainlist.txt" if split == "train" else "sep_testlist.txt"
    entries, infos = [], []
    it = range(clips)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"synth {split}", unit="clip")
    for i in it:
        clip_seed = seed * 100003 + i  # disjoint streams per (seed, i)
        frames_u8, info = make_clip(clip_seed, size, frames, split, imagery, psf_range=psf_range)
        rel = f"{i + 1:05d}/0001"
        d = out / "sequences" / rel
        d.mkdir(parents=True, exist_ok=True)
        for t, f in enumerate(frames_u8):
            Image.fromarray(f).save(d / f"im{t + 1}.png", compress_level=1)
        entries.append(rel)
        infos.append(dict(clip=rel, **info))
    (out / listname).write_text("\n".join(entries) + "\n")
    (out / "clips.json").write_text(json.dumps(dict(split=split, seed=seed, size=list(np.broadcast_to(size, 2).tolist()),
                                                    imagery=str(imagery) if imagery else None,
                                                    psf_range=list(psf_range or PSF_RANGE), clips=infos), indent=1))
    return out


# -- the georeferenced sample stack ---------------------------------------------------------
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


def offset_path(path: np.ndarray, d: float) -> np.ndarray:
    """Polyline moved sideways by d (px, to the left of travel in image coordinates)."""
    t = np.gradient(path, axis=0)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return path + d * np.stack([-t[:, 1], t[:, 0]], axis=1)


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
    movers = []
    for side, n in ((1, 3), (-1, 3)):
        path = offset_path(road, side * 1.8 * ppm)
        if side < 0:
            path = path[::-1]
        total = float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())
        starts = np.sort(rng.uniform(0.05, 0.95, n)) * total
        starts = starts[0] + np.maximum.accumulate(starts - starts[0] + np.arange(n) * 20 * ppm)  # >= 20 m apart
        v_lane = float(rng.uniform(15, 25)) * ppm  # one speed per lane: nobody drives through anybody
        for s0 in starts:
            truck = rng.random() < 0.25
            lm, wm = (float(rng.uniform(9, 12)), 2.5) if truck else (float(rng.uniform(4.2, 5.0)), 1.85)
            col = tuple(CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))])
            movers.append(Mover(path, float(s0), v_lane, lm * ppm, wm * ppm, col,
                                "truck" if truck else "car"))
    h, w = img.shape[:2]
    for _ in range(3):  # bison grazing in the clearings: slow, own direction
        p = np.array([w, h]) * rng.uniform(0.55, 0.9, 2)
        ang = float(rng.uniform(0, 2 * math.pi))
        path = np.stack([p, p + 50 * ppm * np.array([math.cos(ang), math.sin(ang)])])
        movers.append(Mover(path, 0.0, float(rng.uniform(0.5, 1.5)) * ppm, 2.6 * ppm, 1.2 * ppm,
                            (0.22, 0.16, 0.12), "blob"))
    return Scene(img, movers, cfg["hr_gsd"], sun, "real", cfg["source"])


def sample_frames(imagery=None):
    """(hr, lr, times): 2N-1 HR truth frames at half steps, the N LR inputs, and the N input times.

    The HR frames at odd positions are the truth for the frames a model has to invent.
    """
    from datetime import datetime, timedelta

    cfg = SAMPLE
    imagery = default_imagery_dir() if imagery is None else imagery
    rng = np.random.default_rng(cfg["seed"])
    scene = sample_scene(imagery, rng)
    n = cfg["frames"]
    lw, lh = cfg["lr_size"]
    # platform motion per half step (one output frame): residual drift ~0.3 HR px, tiny roll/zoom
    cam = Camera(drift=(0.3, -0.18), jitter=0.03, rotation=0.01, zoom=1e-4, gain=0.003, noise=0.8,
                 psf=0.4, dt=cfg["step_s"] / 2)
    hr = render(scene, cam, 2 * n - 1, 4 * lh, 4 * lw, rng)
    lr = downsample(hr[0::2])
    t0 = datetime.fromisoformat(cfg["start"])
    times = [t0 + timedelta(seconds=cfg["step_s"] * i) for i in range(n)]
    return hr, lr, times


def make_sample_stack(out_dir, imagery=None, gt_dir=None) -> list[Path]:
    """Write the sample stack: N RGB uint8 GeoTIFFs (DEFLATE), UTM 12N, LR pixel 4 x the HR one.

    Times go in ACQUISITIONDATETIME (ISO, 0.1 s steps = 10 fps video) and TIFFTAG_DATETIME (the
    TIFF tag only holds whole seconds). ``gt_dir`` also receives the 2N-1 HR truth frames.
    """
    import rasterio
    from rasterio.transform import Affine

    cfg = SAMPLE
    hr, lr, times = sample_frames(imagery)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    px = 4 * cfg["hr_gsd"]
    x0, y0 = cfg["origin"]
    paths = []

    def write(path, frames_hwc, transform, when):
        h, w = frames_hwc.shape[:2]
        profile = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs=cfg["crs"],
                       transform=transform, compress="deflate", predictor=2, photometric="RGB",
                       interleave="pixel", tiled=False)
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(frames_hwc.transpose(2, 0, 1))
            ds.update_tags(TIFFTAG_DATETIME=when.strftime("%Y:%m:%d %H:%M:%S"),
                           ACQUISITIONDATETIME=when.isoformat(timespec="milliseconds") + "Z",
                           TIFFTAG_IMAGEDESCRIPTION="MSTT-STVSR sample: synthetic satellite video from NEON "
                                                    "YELL orthophoto (see README.md)")
            for b, name in enumerate(("red", "green", "blue"), 1):
                ds.set_band_description(b, name)

    for i, (frame, when) in enumerate(zip(lr, times)):
        path = out / f"frame_{i:02d}.tif"
        write(path, frame, Affine(px, 0, x0, 0, -px, y0), when)
        paths.append(path)
    if gt_dir is not None:
        gt = Path(gt_dir)
        gt.mkdir(parents=True, exist_ok=True)
        hp = cfg["hr_gsd"]
        for j, frame in enumerate(hr):
            when = times[0] + (times[1] - times[0]) * (j / 2)
            write(gt / f"gt_{j:02d}.tif", frame, Affine(hp, 0, x0, 0, -hp, y0), when)
    return paths


# -- CLI ----------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="output folder (Vimeo septuplet layout; with --sample: the stack)")
    parser.add_argument("--clips", type=int, default=300, help="number of clips (default 300)")
    parser.add_argument("--size", type=int, default=384, help="HR clip size in pixels, multiple of 4 (default 384)")
    parser.add_argument("--frames", type=int, default=7)
    parser.add_argument("--split", choices=("train", "test"), default="train",
                        help="which imagery to use: train, or the held-out test stills")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--imagery", default=None,
                        help=f"folder of tools/fetch_imagery.py (default {default_imagery_dir()}); "
                             "procedural ground if missing")
    parser.add_argument("--psf", default=None, metavar="MIN,MAX",
                        help=f"range of the optics' Gaussian blur sigma in HR px (default {PSF_RANGE[0]},{PSF_RANGE[1]})")
    parser.add_argument("--sample", action="store_true", help="write the georeferenced sample stack instead")
    parser.add_argument("--quiet", action="store_true")


def main(args) -> int:
    imagery = Path(args.imagery) if args.imagery else default_imagery_dir()
    if args.imagery and not imagery.is_dir():
        raise InputError(f"imagery folder {imagery} does not exist (run tools/fetch_imagery.py)")
    if not imagery.is_dir():
        imagery = None
    if args.sample:
        paths = make_sample_stack(args.out, imagery)
        if not args.quiet:
            print("\n".join(str(p) for p in paths))
        return 0
    if args.size % 4:
        raise InputError(f"--size {args.size} is not a multiple of 4")
    psf = None
    if args.psf:
        try:
            psf = tuple(float(v) for v in args.psf.split(","))
            assert len(psf) == 2 and 0 <= psf[0] <= psf[1]
        except (ValueError, AssertionError):
            raise InputError(f"--psf {args.psf!r}: expected MIN,MAX with 0 <= MIN <= MAX (HR pixels)") from None
    write_septuplets(args.out, args.clips, args.size, args.split, args.seed, imagery, args.frames,
                     progress=not args.quiet, psf_range=psf)
    return 0

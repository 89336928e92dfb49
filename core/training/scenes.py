"""Ground scenes for synthetic video, drawn once in ground coordinates (canvas pixels of ``gsd``
metres): a procedural city (a street grid with traffic, blocks of buildings with cast shadows,
parking lots, plazas and parks over real ground texture) or a window of a real still, optionally
crossed by a road, with small objects moving on their own.

Every random draw comes from the ``rng`` passed in, in a fixed order, so a seed gives the same
scene each time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .imagery import BIG, available, dihedral, extent, fit, ground_texture, load_source, noise_texture, source_gsd
from .shapes import darken, hull, paint, rect
from .traffic import CAR_COLOURS, Mover, draw_mover, lane_movers, taxiing_aircraft

ROOF_COLOURS = np.array([  # RGB in [0, 1]: concrete, dark, white, terracotta, blue/green metal, tar
    (0.62, 0.62, 0.60), (0.40, 0.40, 0.41), (0.85, 0.85, 0.83), (0.62, 0.36, 0.28),
    (0.35, 0.47, 0.62), (0.42, 0.55, 0.50), (0.28, 0.28, 0.29), (0.72, 0.68, 0.60),
], np.float32)


# Share of procedural cities crossed by a taxiway with aircraft (airports are common targets of
# staring video satellites; their aircraft are the largest things that move on their own).
TAXIWAY_SHARE = 0.1

# Buildings at least this tall are drawn per frame, leaning with the view (parallax: see
# clips.Camera.lean); the roofs of lower ones move less than ~0.1 px over a clip.
TALL_M = 15.0


@dataclass
class Tower:
    """A tall building: its footprint (canvas px), roof colour, height and whether gabled."""
    foot: np.ndarray
    colour: np.ndarray
    height_m: float
    gabled: bool


@dataclass
class Scene:
    static: np.ndarray  # (H, W, 3) float32 canvas, ground coordinates
    movers: list
    gsd: float  # metres per canvas pixel (= per HR pixel)
    sun: np.ndarray  # unit vector of shadow direction, canvas px
    kind: str
    source: str
    towers: list = field(default_factory=list)  # Tower, drawn per frame over the movers


def draw_tower(img: np.ndarray, t: Tower, offset) -> None:
    """The tower seen with its roof displaced by ``offset`` canvas px from its base: the walls
    between base and roof (darker than the roof), then the roof."""
    roof = t.foot + np.asarray(offset, np.float64)
    paint(img, hull(np.concatenate([t.foot, roof])), t.colour * 0.55)
    paint(img, roof, t.colour)
    if t.gabled:
        half = roof.copy()
        half[2:] = (roof[2:] + roof[1::-1]) / 2
        paint(img, half, t.colour * 0.8)


def sun_direction(rng) -> np.ndarray:
    ang = float(rng.uniform(0, 2 * math.pi))
    return np.array([math.cos(ang), math.sin(ang)])


def draw_road(img, rng, start, end, width_px: float, px_per_m: float, markings: bool = True, grain=None) -> None:
    """A straight road from start to end: pavements, asphalt (times ``grain``, (H, W, 1)), and
    dashed centre markings."""
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


# -- the city ---------------------------------------------------------------------------------
@dataclass
class StreetGrid:
    """Streets along ``u`` (spaced ``vs``, width ``main_w``) and, if ``cross``, across them
    (spaced ``us``, width ``cross_w``), about the canvas centre ``c``; px, radians."""
    ppm: float  # canvas px per metre
    phi: float  # direction of the main streets
    u: np.ndarray
    v: np.ndarray
    sun: np.ndarray
    c: np.ndarray
    reach: float  # half-length of every street: the canvas diagonal with room to spare
    main_w: float
    cross_w: float
    cross: bool
    us: np.ndarray
    vs: np.ndarray


@dataclass
class Lots:
    """What the blocks queue for drawing after the streets: shadows under roofs, cars on top."""
    shadows: list = field(default_factory=list)
    roofs: list = field(default_factory=list)  # (footprint, colour, height m)
    parked: list = field(default_factory=list)
    towers: list = field(default_factory=list)  # the roofs at least TALL_M high, as Tower


def street_grid(rng, h: int, w: int, ppm: float) -> StreetGrid:
    phi = float(rng.uniform(0, math.pi))
    u, v = np.array([math.cos(phi), math.sin(phi)]), np.array([-math.sin(phi), math.cos(phi)])
    sun = sun_direction(rng)
    reach = 0.75 * math.hypot(h, w)
    bu, bv = float(rng.uniform(60, 160)) * ppm, float(rng.uniform(50, 130)) * ppm
    ou, ov = float(rng.uniform(0, bu)), float(rng.uniform(0, bv))
    main_w = float(rng.uniform(8, 24)) * ppm
    cross_w = float(rng.uniform(6, 14)) * ppm
    cross = rng.random() > 0.25
    vs = np.arange(-reach - ov, reach + bv, bv)
    us = np.arange(-reach - ou, reach + bu, bu) if cross else np.array([-4 * reach, 4 * reach])
    return StreetGrid(ppm, phi, u, v, sun, np.array([w / 2, h / 2]), reach, main_w, cross_w, cross, us, vs)


def building(rng, cx, cy, lm, wm, ang, px_per_m, sun, shadows: list):
    """Footprint, roof colour and height of a rectangular building; its cast shadow is queued."""
    h_m = float(min(rng.lognormal(math.log(10), 0.6), 80))
    foot = rect(cx, cy, lm * px_per_m, wm * px_per_m, ang)
    shade = foot + sun * (h_m * float(rng.uniform(0.4, 0.9)) * px_per_m)
    shadows.append(hull(np.concatenate([foot, shade])))
    col = ROOF_COLOURS[int(rng.integers(len(ROOF_COLOURS)))] * float(rng.uniform(0.85, 1.12))
    return foot, col, h_m


def parking_lot(img, rng, g: StreetGrid, u0, u1, v0, v1, centre, lots: Lots) -> None:
    """Asphalt with rows of parked cars (about two thirds of the bays taken)."""
    ppm = g.ppm
    tone = float(rng.uniform(0.3, 0.5))
    paint(img, rect(*centre, u1 - u0, v1 - v0, g.phi), (tone, tone, tone))
    rows = max(1, int((v1 - v0) / (6 * ppm)))
    for r in range(rows):
        vr = v0 + (r + 0.5) * (v1 - v0) / rows
        k = int((u1 - u0) / (2.6 * ppm))
        for q in range(k):
            if rng.random() < 0.35:
                continue
            ur = u0 + (q + 0.5) * (u1 - u0) / max(k, 1)
            p = g.c + g.u * ur + g.v * vr
            col = tuple(CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))])
            lots.parked.append(Mover(np.stack([p, p + g.v]), 0.0, 0.0, 4.5 * ppm, 1.8 * ppm, col))


def building_lot(rng, g: StreetGrid, u0, u1, v0, v1, lots: Lots) -> None:
    """Up to 4 x 3 buildings set back from their plots' edges; a few plots stay empty."""
    ppm = g.ppm
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
            p = g.c + g.u * (u0 + (a + 0.5) * du) + g.v * (v0 + (b + 0.5) * dv)
            lots.roofs.append(building(rng, *p, lm, wm, g.phi, ppm, g.sun, lots.shadows))


def fill_blocks(img, rng, g: StreetGrid, lots: Lots) -> None:
    """Each block between streets becomes buildings, a park (the ground as is), a parking lot
    or a plaza."""
    for i in range(len(g.us) - 1):
        for j in range(len(g.vs) - 1):
            u0, u1 = g.us[i] + g.cross_w / 2, g.us[i + 1] - g.cross_w / 2
            v0, v1 = g.vs[j] + g.main_w / 2, g.vs[j + 1] - g.main_w / 2
            if u1 - u0 < 8 * g.ppm or v1 - v0 < 8 * g.ppm:
                continue
            centre = g.c + g.u * ((u0 + u1) / 2) + g.v * ((v0 + v1) / 2)
            if np.abs(centre - g.c).max() > g.reach:
                continue
            kind = rng.choice(["buildings", "park", "parking", "plaza"], p=[0.62, 0.14, 0.14, 0.10])
            if kind == "plaza":
                paint(img, rect(*centre, u1 - u0, v1 - v0, g.phi), np.full(3, rng.uniform(0.5, 0.75)))
            elif kind == "parking":
                parking_lot(img, rng, g, u0, u1, v0, v1, centre, lots)
            elif kind == "buildings":
                building_lot(rng, g, u0, u1, v0, v1, lots)


def draw_streets(img, rng, g: StreetGrid, grain) -> list[Mover]:
    """Main streets (marked, traffic both ways), then cross streets (quieter); their traffic."""
    movers = []
    for vv in g.vs:
        a, b = g.c + g.v * vv - g.u * g.reach, g.c + g.v * vv + g.u * g.reach
        draw_road(img, rng, a, b, g.main_w, g.ppm, grain=grain)
        movers += lane_movers(rng, a, b, g.main_w / 2, g.ppm, max(1, int(g.main_w / g.ppm / 7)))
    if g.cross:
        for uu in g.us:
            a, b = g.c + g.u * uu - g.v * g.reach, g.c + g.u * uu + g.v * g.reach
            draw_road(img, rng, a, b, g.cross_w, g.ppm, markings=rng.random() < 0.5, grain=grain)
            movers += lane_movers(rng, a, b, g.cross_w / 2, g.ppm, 1, busy=0.5)
    return movers


def draw_roofs(img, rng, g: StreetGrid, lots: Lots, grain) -> None:
    """Shadows, then roofs over them (some gabled: one half in shade) with rooftop units."""
    dark = float(rng.uniform(0.35, 0.6))
    for s in lots.shadows:
        darken(img, s, dark)
    for foot, col, height in lots.roofs:
        if height >= TALL_M:
            lots.towers.append(Tower(foot, col, height, bool(rng.random() < 0.4)))
            continue
        paint(img, foot, col, texture=grain)
        if rng.random() < 0.4:
            half = foot.copy()
            half[2:] = (foot[2:] + foot[1::-1]) / 2
            paint(img, half, col * 0.8, texture=grain)
        for _ in range(int(rng.integers(0, 5))):
            r1, r2 = rng.uniform(-0.35, 0.35, 2)
            fc = foot.mean(0) + (foot[0] - foot[1]) * r1 + (foot[0] - foot[3]) * r2
            unit = rect(*fc, rng.uniform(1.5, 4) * g.ppm, rng.uniform(1.5, 3) * g.ppm, g.phi)
            darken(img, unit + g.sun * 1.2 * g.ppm, 0.6)
            paint(img, unit, np.clip(col * rng.uniform(0.7, 1.3), 0, 1))


def urban_scene(rng, h: int, w: int, gsd: float, imagery, split: str) -> Scene:
    """Streets in a grid, blocks of buildings with shadows, parking lots, parks; cars on streets."""
    img = ground_texture(rng, h, w, gsd, imagery, split).copy()
    g = street_grid(rng, h, w, 1.0 / gsd)
    lots = Lots()
    grain = 0.93 + 0.14 * noise_texture(rng, h, w, (8, 2), (0.6, 1.0))[..., None]
    road_grain = 0.9 + 0.2 * noise_texture(rng, h, w, (16, 4), (0.5, 1.0))[..., None]
    fill_blocks(img, rng, g, lots)
    movers = draw_streets(img, rng, g, road_grain)
    draw_roofs(img, rng, g, lots, grain)
    for m in lots.parked:
        draw_mover(img, m, 0.0, g.sun, g.ppm)
    if rng.random() < TAXIWAY_SHARE:
        aircraft, off_taxiway = draw_taxiway(img, rng, h, w, g.ppm)
        movers += aircraft
        lots.towers = [t for t in lots.towers if off_taxiway(t.foot)]  # drawn over the blocks
    return Scene(img, movers, gsd, g.sun, "urban", "procedural", sorted(lots.towers, key=lambda t: t.height_m))


def draw_taxiway(img, rng, h: int, w: int, ppm: float):
    """A concrete taxiway (30-50 m wide, yellow centreline) across the canvas; returns its
    aircraft and a test of whether points (K, 2) all lie off it."""
    ang = float(rng.uniform(0, math.pi))
    d = np.array([math.cos(ang), math.sin(ang)]) * math.hypot(h, w) / 2
    c = np.array([w, h]) * rng.uniform(0.35, 0.65, 2)
    width = float(rng.uniform(30, 50)) * ppm
    tone = float(rng.uniform(0.6, 0.75))
    paint(img, rect(*c, 2 * float(np.linalg.norm(d)), width, ang), np.array([tone, tone, tone * 0.98]))
    paint(img, rect(*c, 2 * float(np.linalg.norm(d)), max(0.3 * ppm, 0.35), ang), (0.85, 0.72, 0.2), 0.85)
    normal = np.array([-math.sin(ang), math.cos(ang)])

    def off_taxiway(pts) -> bool:
        return bool(np.all(np.abs((np.asarray(pts) - c) @ normal) > width / 2))

    return taxiing_aircraft(rng, c - d, c + d, ppm), off_taxiway


# -- a real still -----------------------------------------------------------------------------
def real_scene(rng, h: int, w: int, imagery, split: str) -> Scene | None:
    """A window of a held real still, optionally crossed by a road with traffic and small movers;
    None when no still of ``split`` is large enough."""
    names = [n for n in available(imagery, split) if n in BIG]
    if not names:
        return None
    name = names[int(rng.integers(len(names)))]
    gsd = source_gsd(rng, name, min(extent(imagery, name)) / max(h, w))
    img = load_source(str(imagery), name, gsd)
    img = fit(dihedral(img, int(rng.integers(8))), h, w, rng).copy()
    ppm = 1.0 / gsd
    sun = sun_direction(rng)
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

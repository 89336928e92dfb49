"""Things that move on their own in synthetic video: vehicles in lanes, aircraft taxiing,
animals and other small objects, each travelling along a polyline at constant speed and drawn at its position at the
frame's time, with its own shadow. Canvas pixels and seconds throughout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .shapes import darken, paint, rect

CAR_COLOURS = np.array([  # RGB in [0, 1]: white, black, greys, red, blue, yellow, green
    (0.92, 0.92, 0.92), (0.08, 0.08, 0.09), (0.55, 0.56, 0.58), (0.75, 0.76, 0.78),
    (0.65, 0.12, 0.10), (0.14, 0.25, 0.55), (0.80, 0.70, 0.20), (0.25, 0.35, 0.22),
], np.float32)


@dataclass
class Mover:
    """A vehicle or small object travelling along a polyline at constant speed (px per second)."""
    path: np.ndarray  # (K, 2) canvas px
    s0: float  # arc-length position at t = 0 (px)
    speed: float  # px / s (signed: negative runs the path backwards)
    length: float  # px
    width: float  # px
    colour: tuple
    kind: str = "car"  # car | truck | aircraft | blob
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
    """Draw ``m`` at time ``t``: shadow towards ``sun`` (unit vector), body, and for vehicles the
    details that make them read as one."""
    x, y, ang = m.pose(t)
    if m.kind == "aircraft":
        parts = aircraft_parts(x, y, m.length, ang)
        for part in parts:  # the shadow falls farther: the wings stand ~3 m above the apron
            darken(img, part + sun * (3.0 * px_per_m), 0.5)
        for part, shade in zip(parts, (1.0, 0.93, 0.93)):
            paint(img, part, np.asarray(m.colour) * shade)
        return
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


def aircraft_parts(x: float, y: float, length: float, ang: float) -> list:
    """An airliner seen from above, ``length`` px nose to tail: fuselage, swept-back wings as one
    span (span about the length) a little ahead of the middle, and the tailplane."""
    fwd = np.array([math.cos(ang), math.sin(ang)])
    c = np.array([x, y])
    return [rect(*c, length, 0.11 * length, ang),
            rect(*(c + fwd * 0.04 * length), 0.16 * length, 0.95 * length, ang),
            rect(*(c - fwd * 0.42 * length), 0.09 * length, 0.34 * length, ang)]


def taxiing_aircraft(rng, start, end, px_per_m: float) -> list[Mover]:
    """One or two aircraft on a taxiway's centreline from start to end (canvas px): 25-70 m long,
    white or light grey, taxiing at 3-12 m/s or holding (a quarter of them)."""
    path = np.stack([np.asarray(start, float), np.asarray(end, float)])
    length = float(np.linalg.norm(path[1] - path[0]))
    out = []
    for _ in range(int(rng.integers(1, 3))):
        lm = float(rng.uniform(25, 70))
        speed = 0.0 if rng.random() < 0.25 else float(rng.uniform(3, 12)) * float(rng.choice([-1, 1]))
        tone = float(rng.uniform(0.8, 0.95))
        out.append(Mover(path, float(rng.uniform(0.2, 0.8)) * length, speed * px_per_m, lm * px_per_m,
                         0.95 * lm * px_per_m, (tone, tone, tone * 1.01), "aircraft"))
    return out


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
            movers += lane_traffic(rng, path, length, side, px_per_m, busy)
    return movers


def lane_traffic(rng, path: np.ndarray, length: float, side: int, px_per_m: float, busy: float) -> list[Mover]:
    """One lane's vehicles: moving (15-90 km/h) or queued, cars and some trucks, random gaps."""
    stopped = rng.random() < 0.15
    v_lane = 0.0 if stopped else float(rng.uniform(4, 25)) * px_per_m
    gap_m = float(rng.uniform(7, 12) if stopped else rng.uniform(12, 60)) / busy
    s = float(rng.uniform(0, gap_m)) * px_per_m
    movers = []
    while s < length:
        big = rng.random() < 0.12
        lm = float(rng.uniform(8, 13) if big else rng.uniform(3.8, 5.2))
        wm = float(rng.uniform(2.3, 2.6) if big else rng.uniform(1.7, 2.0))
        colour = tuple(CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))] * rng.uniform(0.9, 1.05))
        v = v_lane * float(rng.uniform(0.9, 1.1)) * side
        movers.append(Mover(path, s, v, lm * px_per_m, wm * px_per_m, colour, "truck" if big else "car"))
        s += (lm + gap_m * float(rng.uniform(0.6, 1.6))) * px_per_m
    return movers


def visible(movers: list, h: int, w: int, margin: float) -> list:
    """Drop movers that start farther than ``margin`` px outside the canvas (saves drawing time)."""
    keep = []
    for m in movers:
        x, y, _ = m.pose(0.0)
        if -margin < x < w + margin and -margin < y < h + margin:
            keep.append(m)
    return keep


def offset_path(path: np.ndarray, d: float) -> np.ndarray:
    """Polyline moved sideways by d (px, to the left of travel in image coordinates)."""
    t = np.gradient(path, axis=0)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return path + d * np.stack([-t[:, 1], t[:, 0]], axis=1)

"""Synthetic satellite video: HR clips filmed from a scene, deterministic per seed.

Jilin-189 is out of reach, so we make what a video satellite would see: a ground scene
(``scenes``: a real orthophoto resampled to 0.3-1 m, or a procedural city over real ground
texture) filmed by a platform with residual sub-pixel drift, a slight rotation and scale change,
with vehicles and other small objects moving on their own, illumination change, optics blur and
sensor noise. Everything is drawn in ground coordinates and then warped into the frame, so the
camera motion and the objects' own motion compose like in real video. Tall buildings lean with
the view: an off-nadir view shows their walls, and as a staring satellite passes, the view
direction turns (about ground speed / orbit height, ~0.014 rad/s for Jilin-1 at 535 km), so
their roofs drift against the ground by height x that rate (parallax that no single global
motion explains).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InputError
from ..net.spec import N_OUT, SCALE
from .scenes import Scene, draw_tower, real_scene, urban_scene
from .traffic import draw_mover, visible
from .videostats import detail, luma

PSF_RANGE = (0.0, 0.6)  # Gaussian sigma of the optics, HR px (0 = as sharp as the resampled still)

# Real stabilised satellite video (viso012, measured with videostats.py; README's synthesis
# table): the product is registered frame to frame, so the platform barely moves (0.007-0.045
# native px per frame, jitter 0.014-0.033 px); each frame carries its own noise and JPEG
# compression (4 DN of temporal noise in flat areas, 8 x 8 block artefacts of quality 75 with
# 4:2:0 chroma), and brightness hardly flickers (0.05-0.14 % frame to frame). Most clips are
# drawn so; a minority keeps the drifting platform of earlier synthesis, for robustness.
STABILISED_SHARE = 0.8
STABLE_DRIFT = (0.003, 0.05)  # HR px per frame, log-uniform
STABLE_JITTER = (0.005, 0.035)  # HR px
DRIFT_SPEED = (0.1, 2.0)  # the drifting minority, HR px per frame, log-uniform
NOISE_DN = (6.0, 11.0)  # sensor noise sigma before compression, DN
JPEG_QUALITY = (50, 75)  # per clip; each frame compressed on its own
FLICKER = (0.0003, 0.0015)  # relative brightness change, random per frame
GSD_M = (0.8, 1.2)  # Jilin-1 video's ground sampling, m per HR px: a car is 4-5 px long
# Real video's fine detail (videostats.detail: the finest band of the clip's mean frame, where
# the noise averages out; viso012: -2.49 to -2.37, mean -2.41). One blur sigma leaves a crisp
# still and a soft procedural city 0.5 apart on it, so with a target (``make_clip(detail=...)``)
# each clip's sigma is fitted, within the psf range, to a level drawn from this range
# (``fit_psf``), instead of drawn uniformly.
DETAIL_TARGET = (-2.50, -2.32)
FIT_PSF_RANGE = (0.3, 2.0)  # the sigmas (HR px) a fit may choose when no psf range is given


def psf_limits(psf_range=None, detail=None) -> tuple:
    """The optics blur sigmas (HR px) a clip may get: ``psf_range`` if given, else the range a
    fit to a ``detail`` target chooses within, else the range the blur is drawn from."""
    return tuple(psf_range) if psf_range else FIT_PSF_RANGE if detail is not None else PSF_RANGE


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
    lean: tuple = (0.0, 0.0)  # roof displacement per metre of height at the clip's middle (tan off-nadir)
    lean_rate: tuple = (0.0, 0.0)  # its change per second as the view direction turns
    jpeg: int = 0  # JPEG quality each frame is compressed with (0: none)
    flicker: float = 0.0  # relative brightness change, random per frame

    def margin(self, frames: int, size: int) -> int:
        """Canvas border (px) that the view of a ``size`` frame never leaves over ``frames``."""
        span = frames / 2 + 1
        rot = math.radians(abs(self.rotation)) * span * size
        return int(math.ceil(math.hypot(*self.drift) * span + 3 * self.jitter + rot + abs(self.zoom) * span * size)) + 8


def random_camera(rng, psf_range=None, motion: str | None = None) -> Camera:
    """A camera as real video has them (see the calibration constants above). ``motion``:
    "stabilised" (registered frame to frame, as real video products are), "drift" (a platform
    drifting 0.1-2 px per frame) or None (stabilised with probability STABILISED_SHARE)."""
    if motion is None:
        motion = "stabilised" if rng.random() < STABILISED_SHARE else "drift"
    if motion not in ("stabilised", "drift"):
        raise InputError(f"camera motion {motion!r}: expected 'stabilised' or 'drift'")
    stable = motion == "stabilised"
    speed = log_uniform(rng, *(STABLE_DRIFT if stable else DRIFT_SPEED))
    ang = float(rng.uniform(0, 2 * math.pi))
    return Camera(
        drift=(speed * math.cos(ang), speed * math.sin(ang)),
        jitter=float(rng.uniform(*STABLE_JITTER) if stable else rng.uniform(0, 0.15)),
        rotation=float(rng.uniform(-0.05, 0.05)) * (0.01 if stable else 1.0),
        zoom=float(rng.uniform(-1e-3, 1e-3)) * (0.01 if stable else 1.0),
        gain=float(rng.uniform(-0.001, 0.001)),
        noise=float(rng.uniform(*NOISE_DN)),
        psf=float(rng.uniform(*psf_limits(psf_range))),
        dt=float(rng.uniform(0.07, 0.2)),  # 5-15 fps video
        lean=polar(float(rng.uniform(0.0, 0.3)), float(rng.uniform(0, 2 * math.pi))),
        lean_rate=polar(float(rng.uniform(0.004, 0.02)), float(rng.uniform(0, 2 * math.pi))),
        jpeg=int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)),
        flicker=float(rng.uniform(*FLICKER)),
    )


def log_uniform(rng, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(math.log(lo), math.log(hi))))


def compress(frame: np.ndarray, quality: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB through a JPEG of ``quality`` (4:2:0 chroma, as the real frames)."""
    ok, buf = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise InputError("JPEG encoding failed")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def polar(r: float, ang: float) -> tuple:
    return (r * math.cos(ang), r * math.sin(ang))


def expose(view: np.ndarray, cam: Camera, light, noise: np.ndarray) -> np.ndarray:
    """One frame as the sensor records it: (h, w, 3) float view (0-1) -> uint8 after the optics
    blur, the illumination ``light`` (scalar or (h, w)), the sensor ``noise`` (DN) and JPEG."""
    f = cv2.GaussianBlur(view, (0, 0), cam.psf) if cam.psf > 0.05 else view
    light = np.asarray(light)
    f = f * (light[..., None] if light.ndim else light) * 255.0 + noise
    out = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    return compress(out, cam.jpeg) if cam.jpeg else out


def fit_psf(view: np.ndarray, cam: Camera, target: float, bounds, frames: int, rng, step: float = 0.1) -> float:
    """The blur sigma within ``bounds`` (HR px) at which ``frames`` exposures of ``view`` (the
    camera's noise and JPEG, the same noise draws for every trial) measure ``target`` detail.
    Sigmas are tried upwards in ``step``s and the first that reaches the target is refined
    between it and the one before. Detail falls as the blur grows until the noise left in the
    mean frame dominates its finest band and it rises again, so a scene that never reaches the
    target gets the sigma that came closest."""
    noise = [rng.normal(0, cam.noise, view.shape) for _ in range(frames)]

    def measured(sigma: float) -> float:
        trial = Camera(noise=cam.noise, psf=sigma, jpeg=cam.jpeg)
        return detail(luma(np.stack([expose(view, trial, 1.0, n) for n in noise])))

    lo, hi = float(bounds[0]), float(bounds[1])
    tried = []
    for sigma in np.append(np.arange(lo, hi, step), hi):
        tried.append((float(sigma), measured(float(sigma))))
        if tried[-1][1] <= target:
            if len(tried) == 1:
                return lo
            (s0, d0), (s1, d1) = tried[-2:]
            return s0 + (s1 - s0) * (d0 - target) / (d0 - d1)
    return min(tried, key=lambda sd: sd[1])[0]


def render(scene: Scene, cam: Camera, frames: int, h: int, w: int, rng, detail_target: float | None = None,
           psf_bounds=None) -> np.ndarray:
    """(frames, h, w, 3) uint8: movers drawn at their time, then the platform's view warped in.
    ``detail_target``: fit ``cam.psf`` (within ``psf_bounds``) on the first frame's view."""
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
        lean = np.array(cam.lean) + np.array(cam.lean_rate) * (k * cam.dt)
        for tower in scene.towers:  # lowest first: taller ones hide what they lean over
            draw_tower(canvas, tower, lean * tower.height_m / scene.gsd)
        th = math.radians(cam.rotation * k)
        s = 1.0 + cam.zoom * k
        a = s * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        d = np.array(cam.drift) * k + rng.normal(0, cam.jitter, 2)
        m_aff = np.concatenate([a, (cc + d - a @ oc)[:, None]], axis=1)  # output px -> canvas px
        f = cv2.warpAffine(canvas, m_aff, (w, h), flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REFLECT)
        if t == 0 and detail_target is not None:
            cam.psf = fit_psf(f, cam, detail_target, psf_bounds or PSF_RANGE, frames, rng)
        # uneven illumination drifting over the clip: a smooth field, 1 % at the ends
        light = (1.0 + cam.gain * k + (rng.normal(0, cam.flicker) if cam.flicker else 0.0)
                 + 0.01 * k / max(mid, 1) * np.sin(field_k[0] * xx + field_phase[0]) * np.cos(field_k[1] * yy + field_phase[1]))
        out[t] = expose(f, cam, light, rng.normal(0, cam.noise, f.shape))
    return out


def make_clip(seed: int, size=(256, 256), frames: int = N_OUT, split: str = "train", imagery=None,
              kind: str | None = None, psf_range=None, motion: str | None = None, detail=None):
    """One clip, deterministic from ``seed``: (frames uint8 (T, H, W, 3), info dict).

    kind: "urban" (procedural city on real ground texture), "real" (a window of a real still with
    optional traffic) or None (urban 60 %, real 40 %). ``imagery=None`` uses procedural ground.
    motion: the camera's (``random_camera``). detail: (min, max) target (DETAIL_TARGET is real
    video's): the optics blur is then fitted within ``psf_range`` (default FIT_PSF_RANGE) to a
    level drawn from it instead of drawn uniformly from ``psf_range``.
    """
    h, w = (size, size) if isinstance(size, int) else size
    if h % SCALE or w % SCALE:
        raise InputError(f"clip size {w}x{h} must be a multiple of {SCALE} (the LR scale)")
    rng = np.random.default_rng(seed)
    cam = random_camera(rng, psf_range, motion)
    m = cam.margin(frames, max(h, w))
    ch, cw = h + 2 * m, w + 2 * m
    if kind is None:
        kind = "urban" if rng.random() < 0.6 else "real"
    scene = real_scene(rng, ch, cw, imagery, split) if kind == "real" else None
    if scene is None:
        gsd = round(float(rng.uniform(*GSD_M)) / 0.05) * 0.05
        scene = urban_scene(rng, ch, cw, gsd, imagery, split)
    scene.movers = visible(scene.movers, ch, cw, 40.0 / scene.gsd)
    target = float(rng.uniform(*detail)) if detail is not None else None
    clip = render(scene, cam, frames, h, w, rng, target, psf_limits(psf_range, detail))
    info = dict(seed=seed, kind=scene.kind, source=scene.source, gsd=round(scene.gsd, 3),
                drift_px_per_frame=[round(x, 3) for x in cam.drift], rotation_deg_per_frame=round(cam.rotation, 4),
                zoom_per_frame=round(cam.zoom, 5), gain_per_frame=round(cam.gain, 4), noise_dn=round(cam.noise, 2),
                psf_px=round(cam.psf, 2), dt_s=round(cam.dt, 3), movers=len(scene.movers),
                aircraft=sum(m.kind == "aircraft" for m in scene.movers), towers=len(scene.towers),
                lean=[round(x, 3) for x in cam.lean], lean_rate_per_s=[round(x, 4) for x in cam.lean_rate],
                jitter_px=round(cam.jitter, 4), jpeg_quality=cam.jpeg, flicker=round(cam.flicker, 5),
                **({} if target is None else dict(detail_target=round(target, 3))))
    return clip, info

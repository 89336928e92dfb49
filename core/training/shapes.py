"""Drawing on a float32 (H, W, 3) canvas in ground coordinates: anti-aliased convex polygons with
sub-pixel edges, painted (a colour, optionally times a texture) or darkened (shadows).

Points are (x, y) canvas pixels as float64 arrays of shape (K, 2).
"""
from __future__ import annotations

import math

import cv2
import numpy as np


def rect(cx, cy, length, width, angle) -> np.ndarray:
    """Corners (4, 2) of a rectangle centred at (cx, cy), long side along ``angle`` (radians)."""
    c, s = math.cos(angle), math.sin(angle)
    u, v = np.array([c, s]) * length / 2, np.array([-s, c]) * width / 2
    p = np.array([cx, cy])
    return np.array([p + u + v, p - u + v, p - u - v, p + u - v], np.float64)


def hull(pts: np.ndarray) -> np.ndarray:
    """Convex hull (K, 2) of points: a footprint and its displaced copy make a cast shadow."""
    return cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)


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
    """Blend a colour (or colour * texture, (H, W, 1) like img) into img inside the polygon."""
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
    """Multiply img by ``factor`` inside the polygon (a shadow)."""
    r = poly_mask(img.shape[:2], pts)
    if r is None:
        return
    m, y0, x0 = r
    img[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] *= 1 - (1 - factor) * m

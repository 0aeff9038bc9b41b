"""RGB-D segment masks, the pixel graph's cuts: which 4-neighbour edges are kept (depth step, plane membership,
concave crease, colour across a crease; step 3 of core/masks_rgbd.py)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from moonseg3r_ros.core.masks_rgbd_surfaces import dot3

if TYPE_CHECKING:
    from moonseg3r_ros.core.masks_rgbd import RgbdSegmentParams


def kept_edges(axis: int, depth: np.ndarray, valid: np.ndarray, normals: np.ndarray, normal_ok: np.ndarray,
               planes: np.ndarray, lab: np.ndarray, points: np.ndarray, params: RgbdSegmentParams) -> np.ndarray:
    """Kept edges between each pixel and its right (axis 1) or lower (axis 0) neighbour: h x (w-1) / (h-1) x w."""
    a, b = edge_pair(axis)
    za, zb = depth[a], depth[b]
    keep = valid[a] & valid[b]
    keep &= np.abs(za - zb) <= params.depth_threshold * np.maximum(np.minimum(za, zb), 1e-6)
    angle_cos, concave, defined = _crease(axis, normals, normal_ok, points, params.crease_step)
    keep &= planes[a] == planes[b]
    off_plane = (planes[a] < 0) & (planes[b] < 0)
    keep &= ~(off_plane & concave & (angle_cos < math.cos(math.radians(params.concave_degrees))))
    before, after = _shifted(lab, axis, params.crease_step)  # past the blur, not the blurred neighbours
    diff = before - after
    color_step = np.sqrt(dot3(diff, diff))
    color_cut = off_plane & (color_step > params.color_threshold)
    # across a slight concave crease, or where the crease is unknown (silhouettes): a texture on one smooth
    # surface is never cut
    color_cut &= (concave & (angle_cos < math.cos(math.radians(params.color_crease_degrees)))) | ~defined
    keep &= ~color_cut
    return keep


def edge_pair(axis: int) -> tuple[Any, Any]:
    """Slices of the first and second pixel of every edge along `axis` (1: right neighbour, 0: lower)."""
    return (np.s_[:, :-1], np.s_[:, 1:]) if axis == 1 else (np.s_[:-1], np.s_[1:])


def _crease(axis: int, normals: np.ndarray, normal_ok: np.ndarray, points: np.ndarray, step: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per edge: (cosine between the normals `step` pixels before and after it, concave?, both defined?).

    Edges whose stencil meets undefined normals read as flat (cosine 1, not concave) and undefined."""
    shift = step - 1
    n_pad = _shifted(normals, axis, shift)
    ok_pad = _shifted(normal_ok, axis, shift)
    p_pad = _shifted(points, axis, shift)
    before_n, after_n = n_pad
    before_ok, after_ok = ok_pad
    before_p, after_p = p_pad
    both = before_ok & after_ok
    cos = np.where(both, dot3(before_n, after_n), 1.0)
    concave = both & (dot3(after_n - before_n, after_p - before_p) < 0)
    return cos, concave, both


def _shifted(array: np.ndarray, axis: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Values `shift` pixels before each edge's first pixel and after its second, on the edge grid (edge-padded)."""
    pad = [(0, 0)] * array.ndim
    pad[axis] = (shift, shift)
    padded = np.pad(array, pad, mode="edge") if shift else array
    length = array.shape[axis] - 1
    before = np.take(padded, np.arange(0, length), axis=axis)
    after = np.take(padded, np.arange(2 * shift + 1, 2 * shift + 1 + length), axis=axis)
    return before, after


def lab_image(image: np.ndarray) -> np.ndarray:
    """hxwx3 uint8 RGB -> hxwx3 float32 CIELAB after a 5x5 Gaussian blur (JPEG blocks and noise)."""
    import cv2

    blurred = cv2.GaussianBlur(image, (5, 5), 0)
    lab = cv2.cvtColor(blurred.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    return lab

"""RGB-D segment masks, surfaces of the camera pointmap: normals facing the camera and the RANSAC support planes
(steps 1-2 of core/masks_rgbd.py)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from moonseg3r_ros.core.masks_rgbd import RgbdSegmentParams


def camera_normals(points: np.ndarray, valid: np.ndarray, depth_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """hxwx3 points, hxw valid -> (hxwx3 unit normals facing the camera, hxw bool where they are defined).

    Central differences, undefined next to invalid pixels and depth jumps, then a 5x5 validity-weighted
    box filter so that sensor noise does not read as creases."""
    import cv2

    p = np.where(valid[..., None], points, 0.0).astype(np.float32)
    z = p[..., 2]
    ok = valid.copy()
    du = np.zeros_like(p)
    dv = np.zeros_like(p)
    du[:, 1:-1] = p[:, 2:] - p[:, :-2]
    dv[1:-1] = p[2:] - p[:-2]
    ok[:, [0, -1]] = False
    ok[[0, -1], :] = False
    ok[:, 1:-1] &= valid[:, 2:] & valid[:, :-2]
    ok[1:-1] &= valid[2:] & valid[:-2]
    ok &= np.abs(du[..., 2]) <= 2 * depth_threshold * np.maximum(z, 1e-6)
    ok &= np.abs(dv[..., 2]) <= 2 * depth_threshold * np.maximum(z, 1e-6)
    n = cross3(du, dv)
    n *= ok[..., None]
    norm = np.sqrt(dot3(n, n))[..., None]
    n = n / np.maximum(norm, 1e-12)
    n = cv2.blur(n, (5, 5))
    norm = np.sqrt(dot3(n, n))[..., None]
    ok &= norm[..., 0] > 0.3
    n = n / np.maximum(norm, 1e-12)
    flip = dot3(n, p) > 0  # facing the camera: n . x < 0
    n[flip] *= -1
    return n.astype(np.float32), ok


def plane_ids(points: np.ndarray, normals: np.ndarray, normal_ok: np.ndarray, valid: np.ndarray,
              params: RgbdSegmentParams) -> tuple[np.ndarray, np.ndarray]:
    """-> (hxw int16 plane index per pixel (-1 = on no plane), hxw uint8 bit k set where the point lies behind
    plane k as seen from the camera: below a table top, not on it); planes by RANSAC on a point sample."""
    import open3d as o3d

    h, w = valid.shape
    ids = np.full((h, w), -1, np.int16)
    behind = np.zeros((h, w), np.uint8)
    usable = valid & normal_ok
    count = int(usable.sum())
    if count < 100 or params.max_planes <= 0:
        return ids, behind
    stride = max(1, int(math.sqrt(count / 4000)))
    sample = points[::stride, ::stride][usable[::stride, ::stride]].astype(np.float64)
    scale = float(np.median(points[..., 2][valid]))
    threshold = params.plane_distance * scale
    cos_limit = math.cos(math.radians(params.plane_normal_degrees))
    flat = points.reshape(-1, 3)
    flat_n = normals.reshape(-1, 3)
    free = valid.reshape(-1).copy()
    no_normal = ~normal_ok.reshape(-1)  # image border, next to depth jumps: distance alone decides
    remaining = sample
    for k in range(params.max_planes):
        if len(remaining) < max(50, params.plane_min_fraction * len(sample)):
            break
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(remaining))
        o3d.utility.random.seed(params.seed + k)
        # probability 1: all 120 iterations run; Open3D's early stop depends on its threads' timing, so identical
        # calls gave different planes
        model, inliers = cloud.segment_plane(threshold, 3, 120, probability=1.0)
        if len(inliers) < params.plane_min_fraction * len(sample):
            break
        normal = np.asarray(model[:3], np.float64)
        norm = np.linalg.norm(normal)
        normal, offset = normal / norm, float(model[3]) / norm
        if offset < 0:  # the camera (origin) on the positive side
            normal, offset = -normal, -offset
        signed = flat @ normal + offset
        behind.reshape(-1)[signed < 0.5 * threshold] |= np.uint8(1 << k)
        distance = np.abs(signed)
        agree = (np.abs(flat_n @ normal) >= cos_limit) | no_normal
        member = free & (distance < threshold) & agree
        ids.reshape(-1)[member] = k
        free &= ~member
        keep = np.ones(len(remaining), bool)
        keep[inliers] = False
        remaining = remaining[keep]
    return ids, behind


def dot3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """...x3, ...x3 -> ... dot products (faster than a sum over a last axis of 3)."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def cross3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """...x3, ...x3 -> ...x3 cross products."""
    out = np.empty_like(a)
    out[..., 0] = a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1]
    out[..., 1] = a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2]
    out[..., 2] = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    return out

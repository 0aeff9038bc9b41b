"""Pinhole camera math (ROS-free, numpy): poses, projection, back-projection, intrinsics and alignment.

Conventions: optical camera frame (x right, y down, z forward); pose_c2w is a 4x4 camera-to-world matrix;
K is 3x3 with pixel centres at integer coordinates (pixel (i, j) covers u in [j-0.5, j+0.5)).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

WORLD_UP = np.array([0.0, 0.0, 1.0])


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = WORLD_UP) -> np.ndarray:
    """4x4 camera-to-world pose of an optical camera at `eye` (3) looking at `target` (3), x = z cross up."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, eye
    return pose


def pinhole(focal: float, width: int, height: int) -> np.ndarray:
    """3x3 K with fx = fy = focal and the principal point at the image centre ((W-1)/2, (H-1)/2)."""
    return np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])


def estimate_intrinsics(points_cam: np.ndarray, valid: Optional[np.ndarray] = None,
                        min_depth: float = 1e-6) -> np.ndarray:
    """Pinhole K from a camera-frame pointmap (monocular input with unknown intrinsics).

    points_cam: HxWx3 camera-frame points (z forward); valid: HxW bool or None (all finite points with
    z > min_depth). The principal point is the image centre ((W-1)/2, (H-1)/2) in pixel-centre
    coordinates; one focal f (square pixels) minimises sum (u - cx - f x/z)^2 + (v - cy - f y/z)^2
    over the valid pixels: f = sum((u-cx) x/z + (v-cy) y/z) / sum((x/z)^2 + (y/z)^2).
    Returns 3x3 float64. Raises ValueError with fewer than 2 usable pixels or a non-positive focal.
    """
    points_cam = np.asarray(points_cam, np.float64)
    if points_cam.ndim != 3 or points_cam.shape[2] != 3:
        raise ValueError(f"points_cam must be HxWx3, got shape {points_cam.shape}")
    height, width = points_cam.shape[:2]
    z = points_cam[..., 2]
    usable = np.isfinite(points_cam).all(axis=2) & (z > min_depth)
    if valid is not None:
        usable &= np.asarray(valid, bool)
    if usable.sum() < 2:
        raise ValueError("estimate_intrinsics: fewer than 2 valid pixels in the pointmap")
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    rows, cols = np.nonzero(usable)
    p = points_cam[rows, cols]
    a = p[:, 0] / p[:, 2]
    b = p[:, 1] / p[:, 2]
    denom = float((a * a + b * b).sum())
    focal = float(((cols - cx) * a + (rows - cy) * b).sum()) / max(denom, 1e-300)
    if not np.isfinite(focal) or focal <= 0:
        raise ValueError(f"estimate_intrinsics: non-positive focal {focal} (pointmap not in the optical frame?)")
    return np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])


def camera_frame(points_world: np.ndarray, pose_c2w: np.ndarray, intrinsics: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """World Nx3 -> (camera-frame Nx3 float64 R^T (p - t), K 3x3 float64); checks the shapes."""
    pose = np.asarray(pose_c2w, np.float64)
    k = np.asarray(intrinsics, np.float64)
    if pose.shape != (4, 4) or k.shape != (3, 3):
        raise ValueError(f"pose_c2w must be 4x4 and intrinsics 3x3, got {pose.shape} and {k.shape}")
    rot, trans = pose[:3, :3], pose[:3, 3]
    return (np.asarray(points_world, np.float64) - trans) @ rot, k  # R^T (p - t), row form


def project_points(points_world: np.ndarray, pose_c2w: np.ndarray, intrinsics: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World Nx3 -> (u N, v N, z N) float64 pixel coordinates (pixel centres at integers) and depth."""
    cam, k = camera_frame(points_world, pose_c2w, intrinsics)
    z = cam[:, 2]
    safe = np.where(z > 0, z, 1.0)
    # u = k00 x / safe + k01 y / safe + k02, v = k11 y / safe + k12, with in-place passes (same operations and
    # order; the skew term is skipped when k01 == 0: adding +-0 to a finite value changes no comparison/floor)
    u = np.multiply(cam[:, 0], k[0, 0])
    u /= safe
    if k[0, 1] != 0:
        u += k[0, 1] * cam[:, 1] / safe
    u += k[0, 2]
    v = np.multiply(cam[:, 1], k[1, 1])
    v /= safe
    v += k[1, 2]
    return u, v, z


def backproject(depth: np.ndarray, k: np.ndarray) -> np.ndarray:
    """HxW depth, 3x3 K -> HxWx3 float32 camera-frame points (pixel centres at integer coordinates)."""
    height, width = depth.shape
    u = np.arange(width, dtype=np.float32)
    v = np.arange(height, dtype=np.float32)
    x = (u[None, :] - np.float32(k[0, 2]) - np.float32(k[0, 1]) * (v[:, None] - np.float32(k[1, 2]))
         / np.float32(k[1, 1])) / np.float32(k[0, 0])
    y = (v[:, None] - np.float32(k[1, 2])) / np.float32(k[1, 1])
    out = np.empty((height, width, 3), np.float32)
    out[..., 0] = x * depth
    out[..., 1] = np.broadcast_to(y, (height, width)) * depth
    out[..., 2] = depth
    return out


def to_world(points_cam: np.ndarray, pose_c2w: np.ndarray) -> np.ndarray:
    """HxWx3 camera points, 4x4 pose -> HxWx3 float32 world points."""
    rot = pose_c2w[:3, :3].astype(np.float32)
    trans = pose_c2w[:3, 3].astype(np.float32)
    return (points_cam @ rot.T + trans).astype(np.float32, copy=False)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """4x4 similarity S (scale s, rotation R, translation t) minimising |dst - (s R src + t)|^2 (src, dst Nx3)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, d, vt = np.linalg.svd(b.T @ a / len(src))
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1
    rotation = u @ sign @ vt
    var = (a ** 2).sum() / len(src)
    scale = float(np.trace(np.diag(d) @ sign) / var) if var > 0 else 1.0
    out = np.eye(4)
    out[:3, :3] = scale * rotation
    out[:3, 3] = mu_d - scale * rotation @ mu_s
    return out

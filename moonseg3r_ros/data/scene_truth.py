"""Ground truth and checks of rendered scenes: the visible vertex set, and the camera-model check.

Both work on any sequence of `Frame`s with depth, intrinsics, pose and instance ids (data/tabletop.py's).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from moonseg3r_ros.core.camera import backproject, project_points, to_world


def visible_vertex_set(frames, object_voxel: float, room_voxel: float, max_pixels: int = 80000
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Back-project every frame (at most ~max_pixels pixels each) and keep one point per voxel: the first
    seen, `object_voxel` metres on instances, `room_voxel` on instance 0 (floor, walls).

    -> (Nx3 float32 vertices, N int64 instance ids, Nx3 uint8 colours)."""
    keys, points, ids, colours = [], [], [], []
    for frame in frames:
        stride = max(1, int(math.sqrt(frame.depth.size / max_pixels)))
        depth = frame.depth[::stride, ::stride]
        K = frame.intrinsics.copy()
        K[:2] /= stride  # pixel j of the subsampled grid is pixel j * stride of the full one
        world = to_world(backproject(depth, K), frame.pose_c2w)
        valid = depth > 0
        pts, inst = world[valid], frame.instance_ids[::stride, ::stride][valid]
        voxel = np.where(inst > 0, object_voxel, room_voxel)[:, None]
        cell = np.floor(pts / voxel).astype(np.int64) + (1 << 20)
        key = (cell[:, 0] << 42) | (cell[:, 1] << 21) | cell[:, 2]
        key = np.where(inst > 0, key, -key - 1)  # separate key spaces for the two voxel sizes
        _, first = np.unique(key, return_index=True)
        keys.append(key[first])
        points.append(pts[first])
        ids.append(inst[first])
        colours.append(frame.image[::stride, ::stride][valid][first])
    key = np.concatenate(keys)
    _, first = np.unique(key, return_index=True)
    first.sort()
    return (np.concatenate(points)[first].astype(np.float32), np.concatenate(ids)[first].astype(np.int64),
            np.concatenate(colours)[first].astype(np.uint8))


def camera_check(scene, first: int = 0, second: Optional[int] = None, occlusion_m: float = 0.05) -> dict:
    """Numerical check of the camera model (principal point, depth conversion, pose convention).

    Back-projects frame `first`'s depth to the world, projects it into frame `second` (default: a third of
    the way along the sequence) and compares the projected z with that frame's depth, bilinearly
    interpolated (points hidden there, farther than `occlusion_m` off, are left out). Also measures how far
    floor pixels (instance 0 within 10 cm of z = 0) lie from the floor plane. Returns median/p90
    disagreement in mm, the floor's median |z| in mm and the number of points compared.
    """
    second = second if second is not None else min(len(scene.frames) - 1, first + max(1, len(scene.frames) // 3))
    a, b = scene.frames[first], scene.frames[second]
    valid = a.depth > 0
    world = to_world(backproject(a.depth, a.intrinsics), a.pose_c2w)[valid].astype(np.float64)
    u, v, z = project_points(world, b.pose_c2w, b.intrinsics)
    h, w = b.depth.shape
    inside = (z > 0) & (u >= 0) & (v >= 0) & (u <= w - 1.001) & (v <= h - 1.001)
    u, v, z = u[inside], v[inside], z[inside]
    j, i = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = u - j, v - i
    corners = np.stack([b.depth[i, j], b.depth[i, j + 1], b.depth[i + 1, j], b.depth[i + 1, j + 1]])
    weights = np.stack([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv])
    seen = (corners > 0).all(0) & (np.ptp(corners, axis=0) < 0.02)  # skip depth edges
    diff = np.abs((corners * weights).sum(0) - z)[seen]
    diff = diff[diff < occlusion_m]
    floor = world[:, 2][(a.instance_ids[valid] == 0) & (np.abs(world[:, 2]) < 0.1)]
    return {"frames": (first, second), "points": int(len(diff)),
            "reprojection_mm_median": float(np.median(diff) * 1000) if len(diff) else math.inf,
            "reprojection_mm_p90": float(np.percentile(diff, 90) * 1000) if len(diff) else math.inf,
            "floor_mm_median": float(np.median(np.abs(floor)) * 1000) if len(floor) else math.inf}

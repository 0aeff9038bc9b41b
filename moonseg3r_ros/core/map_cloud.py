"""The instance map as a point cloud to show: one point per voxel cell, per-point colours by instance."""
from __future__ import annotations

from typing import Sequence

import numpy as np

BACKGROUND = (128, 128, 128)  # uint8 rgb of unassigned points (id 0) and unknown ids


def voxel_downsample(xyz: np.ndarray, rgb: np.ndarray, ids: np.ndarray, voxel: float):
    """(Nx3, Nx3, N) -> the same arrays keeping one point per `voxel` cell (the first in input order).

    voxel <= 0 returns the inputs themselves.
    """
    if voxel <= 0 or xyz.shape[0] == 0:
        return xyz, rgb, ids
    cells = np.floor(xyz / voxel).astype(np.int64)
    cells -= cells.min(axis=0)
    extent = cells.max(axis=0) + 1
    if float(extent[0]) * float(extent[1]) * float(extent[2]) < 2**62:  # one int64 key per cell: fast 1-D unique
        keys = (cells[:, 0] * extent[1] + cells[:, 1]) * extent[2] + cells[:, 2]
        _, keep = np.unique(keys, return_index=True)
    else:
        _, keep = np.unique(cells, axis=0, return_index=True)
    keep.sort()
    return xyz[keep], rgb[keep], ids[keep]


def instance_colors(ids: np.ndarray, color_of: dict[int, Sequence[float]], background=BACKGROUND) -> np.ndarray:
    """N ids -> Nx3 uint8: color_of[id] (floats in [0, 1]) scaled to 0..255; id 0 / unknown = background."""
    ids = np.asarray(ids)
    out = np.empty((ids.shape[0], 3), dtype=np.uint8)
    out[:] = background
    if ids.size == 0 or not color_of:
        return out
    max_id = int(max(int(ids.max()), max(color_of)))
    table = np.empty((max_id + 1, 3), dtype=np.uint8)
    table[:] = background
    for iid, color in color_of.items():
        if 0 < iid <= max_id:
            table[iid] = np.clip(np.round(np.asarray(color, dtype=np.float64)[:3] * 255.0), 0, 255)
    valid = (ids > 0) & (ids <= max_id)
    out[valid] = table[ids[valid]]
    return out

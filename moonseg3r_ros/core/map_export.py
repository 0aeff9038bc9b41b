"""Instance map exports: binary PLY of the fused voxels, and ScanNet benchmark instance predictions over a
mesh's vertices (each vertex takes the id of the nearest voxel within a maximum distance)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
from scipy.spatial import cKDTree

from .colors import instance_color

if TYPE_CHECKING:
    from .instance_map import InstanceMap


def export_ply(instance_map: InstanceMap, path: str | os.PathLike, color_by: str = "instance") -> None:
    """Binary little-endian PLY: x y z float, red green blue uchar, instance_id int."""
    if color_by not in ("instance", "rgb"):
        raise ValueError(f"color_by must be 'instance' or 'rgb', got {color_by!r}")
    xyz, rgb, ids = instance_map.points()
    if color_by == "instance":
        rgb = palette(ids)
    vertex = np.empty(xyz.shape[0], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"),
                                           ("green", "u1"), ("blue", "u1"), ("instance_id", "<i4")])
    vertex["x"], vertex["y"], vertex["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    vertex["red"], vertex["green"], vertex["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    vertex["instance_id"] = ids
    header = ("ply\nformat binary_little_endian 1.0\ncomment moonseg3r instance map\n"
              f"element vertex {xyz.shape[0]}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty int instance_id\n"
              "end_header\n")
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(vertex.tobytes())


def palette(ids: np.ndarray) -> np.ndarray:
    """N ids -> Nx3 uint8 instance colours (colors.instance_color)."""
    unique, inverse = np.unique(ids, return_inverse=True)
    table = np.stack([instance_color(int(i)) for i in unique]) if unique.size else np.zeros((0, 3))
    return np.rint(table * 255).astype(np.uint8)[inverse.reshape(-1)]


def vertex_ids(instance_map: InstanceMap, vertices: np.ndarray, max_distance: Optional[float] = None) -> np.ndarray:
    """Vertices Vx3 -> V int32 id of the nearest voxel within max_distance (0 = none; default from MapConfig)."""
    vertices = np.asarray(vertices, np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be Vx3, got shape {vertices.shape}")
    config = instance_map.config
    if max_distance is None:
        max_distance = config.export_max_distance or 2.0 * config.voxel_size
    out = np.zeros(vertices.shape[0], np.int32)
    if len(instance_map) == 0 or vertices.shape[0] == 0:
        return out
    xyz, _, ids = instance_map.points()
    dist, idx = cKDTree(xyz).query(vertices, distance_upper_bound=max_distance)
    hit = np.isfinite(dist)
    out[hit] = ids[idx[hit]]
    return out


def export_scannet(instance_map: InstanceMap, vertices: np.ndarray, out_dir: str | os.PathLike, scene_name: str,
                   min_points: int = 1, max_distance: Optional[float] = None) -> list[int]:
    """ScanNet instance prediction files over mesh vertices Vx3 (class-agnostic, label id 1).

    Writes <out_dir>/<scene>.txt ("pred_mask/<scene>_<k>.txt 1 <confidence>" per instance) and
    <out_dir>/pred_mask/<scene>_<k>.txt (one 0/1 per vertex). Instances covering fewer than
    min_points vertices are skipped. Returns the exported instance ids in file order (k = 0, 1, ...).
    """
    labels = vertex_ids(instance_map, vertices, max_distance)
    out = Path(out_dir)
    (out / "pred_mask").mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    exported: list[int] = []
    for record in instance_map.instances():
        mask = labels == record.id
        if int(mask.sum()) < max(min_points, 1):
            continue
        name = f"pred_mask/{scene_name}_{len(exported):03d}.txt"
        _write_mask(out / name, mask)
        lines.append(f"{name} 1 {record.confidence:.6f}\n")
        exported.append(record.id)
    (out / f"{scene_name}.txt").write_text("".join(lines))
    return exported


def _write_mask(path: Path, mask: np.ndarray) -> None:
    """One '0'/'1' line per vertex, written as bytes without a Python loop."""
    text = np.empty(2 * mask.size, np.uint8)
    text[0::2] = ord("0") + mask.astype(np.uint8)
    text[1::2] = ord("\n")
    path.write_bytes(text.tobytes())

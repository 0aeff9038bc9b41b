"""3D query index memory M_t (block (c) of the paper's Figure 2).

An explicit sparse voxel store: every occupied cell (size `MemoryConfig.voxel_size`) holds the instance id of
the query that claims it. Cells are packed int64 keys (voxels.pack_keys) mapped to dense slots by the shared
allocator `voxels.VoxelSlots` (a vectorised open-addressing hash); per slot the memory keeps the cell centre
and the claiming id (0 = released). Every operation is vectorised (hash probes, bincounts), never a
per-point Python loop. Memory is bounded by the number of occupied cells, i.e. by the scene, not by the
number of frames.

Claim rule (`update`): within one update each cell takes the majority id of the points that fall in it
(ties -> the smaller id); across updates the latest claim wins. Points with id 0 claim nothing.

`retrieve(pose_c2w, K, H, W, depth)` projects the cell centres through P_t: a cell is visible when it is in
front of the camera (z > near), its centre projects inside the image (pixel (i, j) covers u in [j-0.5, j+0.5),
v in [i-0.5, i+0.5); pixel centres are integer coordinates) and, when a depth map is given, it is not
occluded (z <= depth + tolerance; pixels with invalid depth (<= 0 or not finite) occlude nothing). It
returns a `MemoryView` with the visible ids and, on request, a z-buffered HxW id raster (nearest cell per
pixel, 0 = none).

Usage (pipeline):
    memory = QueryIndexMemory(config.memory.voxel_size, config.memory.occlusion_tolerance)
    view = memory.retrieve(pose_c2w, K, H, W, depth_map=points_cam[..., 2], max_ids=cfg.max_contextual_queries)
    queries, tokens, boxes, counts = bank.get(view.ids)   # query_bank.QueryBank
    memory.update(points_world[mask_pixels], ids_of_those_pixels)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

from . import kernels
from .camera import camera_frame, project_points
from .voxels import VoxelSlots, dense_groups, majority_of_groups, unpack_keys, voxel_keys


def _kernel_inputs_ok(depth_map, depth_valid) -> bool:
    """kernels.visible_cells reproduces numpy exactly for float32/float64 depth and a bool validity mask."""
    return ((depth_map is None or np.asarray(depth_map).dtype in (np.float32, np.float64))
            and (depth_valid is None or np.asarray(depth_valid).dtype == np.bool_))


@dataclass
class MemoryView:
    """Result of `QueryIndexMemory.retrieve`.

    ids: V int32 sorted visible instance ids (at most max_ids: those with most visible cells);
    cell_counts: V int64 visible cells per id; raster: HxW int32 nearest visible cell's id (0 = none) or None.
    """

    ids: np.ndarray
    cell_counts: np.ndarray
    raster: Optional[np.ndarray] = None


class QueryIndexMemory:
    """Sparse voxel hash: occupied cell -> instance id of the query that claims it (see module docstring)."""

    def __init__(self, voxel_size: float = 0.05, occlusion_tolerance: float = 0.1, near: float = 1e-3):
        if voxel_size <= 0:
            raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
        self.voxel_size = float(voxel_size)
        self.occlusion_tolerance = float(occlusion_tolerance)
        self.near = float(near)
        self.reset()

    def reset(self) -> None:
        self._voxels = VoxelSlots()  # one slot per cell ever claimed (claimed or released)
        self._centres = np.zeros((self._voxels.capacity, 3), np.float64)
        self._ids = np.zeros(self._voxels.capacity, np.int32)  # 0 = released cell (keeps its slot, claims nothing)

    @property
    def _n(self) -> int:
        """Slots in use (claimed or released cells)."""
        return len(self._voxels)

    def __len__(self) -> int:
        """Number of claimed cells."""
        return int(np.count_nonzero(self._ids[: self._n]))

    @property
    def nbytes(self) -> int:
        return int(self._voxels.nbytes + self._centres.nbytes + self._ids.nbytes)

    def cells(self) -> tuple[np.ndarray, np.ndarray]:
        """(centres Cx3 float64 world cell centres, ids C int32) of all claimed cells."""
        claimed = np.flatnonzero(self._ids[: self._n])
        return self._centres[claimed].copy(), self._ids[claimed].copy()

    def ids(self) -> np.ndarray:
        """Sorted unique instance ids that own at least one cell."""
        ids = np.unique(self._ids[: self._n])
        return ids[ids != 0]

    def update(self, points_world: np.ndarray, instance_ids: np.ndarray) -> None:
        """Claim the cells of points_world Nx3 for instance_ids N (0 = no claim). Majority in-batch, latest wins."""
        instance_ids = np.asarray(instance_ids).reshape(-1)
        points_world = np.asarray(points_world)
        if points_world.shape[0] != instance_ids.shape[0]:
            raise ValueError(f"{points_world.shape[0]} points but {instance_ids.shape[0]} ids")
        finite = np.isfinite(points_world)
        keep = (instance_ids != 0) & finite[:, 0] & finite[:, 1] & finite[:, 2]
        if not keep.any():
            return
        ids = instance_ids[keep].astype(np.int64)
        slots = self._slots_for(voxel_keys(points_world[keep], self.voxel_size))
        if kernels.NUMBA_ENABLED:  # compiled: same groups, same majority rule
            kernels.claim_cells(slots, self._n, ids, self._ids)
            return
        touched, inverse = dense_groups(slots, self._n)
        vote, _ = majority_of_groups(inverse, ids, touched.size)
        self._ids[touched] = vote

    def _slots_for(self, keys: np.ndarray) -> np.ndarray:
        """Slot of every key, creating slots (and centres) for keys not seen before."""
        slots, new_slots = self._voxels.slots_for(keys)
        if new_slots.size:
            self._grow(self._voxels.capacity)
            self._centres[new_slots] = (unpack_keys(self._voxels.keys[new_slots]) + 0.5) * self.voxel_size
        return slots

    def _grow(self, capacity: int) -> None:
        if capacity <= self._ids.shape[0]:
            return
        for name in ("_centres", "_ids"):
            old = getattr(self, name)
            grown = np.zeros((capacity,) + old.shape[1:], old.dtype)
            grown[: old.shape[0]] = old  # rows past the used slots are still zero
            setattr(self, name, grown)

    def remove(self, ids: Iterable[int]) -> None:
        """Release every cell claimed by one of ids."""
        ids_now = self._ids[: self._n]
        ids_now[np.isin(ids_now, np.asarray(list(ids), np.int64))] = 0

    def ids_at(self, points_world: np.ndarray) -> np.ndarray:
        """Nx3 world points -> N int32 id claiming each point's cell (0 = unclaimed, unknown or non-finite)."""
        points = np.asarray(points_world, np.float64).reshape(-1, 3)
        out = np.zeros(points.shape[0], np.int32)
        ok = np.isfinite(points)
        ok = ok[:, 0] & ok[:, 1] & ok[:, 2]  # faster than .all(axis=1) on Nx3
        if not self._n or not ok.any():
            return out
        if ok.all():  # the usual case: no gather
            slots = self._voxels.lookup(voxel_keys(points, self.voxel_size))
            known = np.flatnonzero(slots >= 0)
        else:
            finite = np.flatnonzero(ok)
            slots = self._voxels.lookup(voxel_keys(points[finite], self.voxel_size))
            hit = slots >= 0
            out[finite[hit]] = self._ids.take(slots[hit])
            return out
        out[known] = self._ids.take(slots[known])
        return out

    def retrieve(self, pose_c2w: np.ndarray, intrinsics: np.ndarray, height: int, width: int,
                 depth_map: Optional[np.ndarray] = None, max_ids: Optional[int] = None,
                 with_raster: bool = False, depth_valid: Optional[np.ndarray] = None) -> MemoryView:
        """Ids whose cells are visible in the view P_t (pose_c2w 4x4, K 3x3, HxW, optional HxW depth; optional
        HxW bool `depth_valid`: pixels where it is False occlude nothing, as if their depth were 0)."""
        if depth_map is not None and np.shape(depth_map) != (height, width):
            raise ValueError(f"depth_map must be {height}x{width}, got {np.shape(depth_map)}")
        if depth_valid is not None and np.shape(depth_valid) != (height, width):
            raise ValueError(f"depth_valid must be {height}x{width}, got {np.shape(depth_valid)}")
        if kernels.NUMBA_ENABLED and _kernel_inputs_ok(depth_map, depth_valid):  # one compiled pass, same result
            idx, row, col, z = self._visible_compiled(pose_c2w, intrinsics, height, width, depth_map, depth_valid)
        else:
            idx, row, col, z = self._visible(pose_c2w, intrinsics, height, width, depth_map, depth_valid)
        cell_ids = self._ids[idx]
        per_id = np.bincount(cell_ids, minlength=1)  # ids are small positive ints: no sort
        ids = np.flatnonzero(per_id)
        counts = per_id[ids]
        if max_ids is not None and ids.size > max_ids:
            top = np.sort(np.argsort(-counts, kind="stable")[:max_ids])
            ids, counts = ids[top], counts[top]
        raster = self._raster(row, col, z, cell_ids, height, width) if with_raster else None
        return MemoryView(ids.astype(np.int32), counts.astype(np.int64), raster)

    def _visible(self, pose_c2w, intrinsics, height, width, depth_map, depth_valid):
        """(index V, row V, col V, z V) of the claimed cells seen in the view and not occluded (numpy)."""
        u, v, z = project_points(self._centres[: self._n], pose_c2w, intrinsics)
        u += 0.5  # floor(u + 0.5) is the pixel column; floor(x) in [0, W) <=> x in [0, W): no floor on every cell
        v += 0.5
        vis = (z > self.near) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
        vis &= self._ids[: self._n] != 0
        idx = np.flatnonzero(vis)
        col, row, z = np.floor(u[idx]).astype(np.int64), np.floor(v[idx]).astype(np.int64), z[idx]
        if depth_map is not None:
            observed = np.asarray(depth_map)[row, col]
            bad = ~np.isfinite(observed) | (observed <= 0)
            if depth_valid is not None:
                bad |= ~np.asarray(depth_valid)[row, col]
            unoccluded = bad | (z <= observed + self.occlusion_tolerance)
            idx, col, row, z = idx[unoccluded], col[unoccluded], row[unoccluded], z[unoccluded]
        return idx, row, col, z

    def _visible_compiled(self, pose_c2w, intrinsics, height, width, depth_map, depth_valid):
        """`_visible` with the per-cell tests in kernels.visible_cells (the camera transform stays numpy's matmul)."""
        cam, k = camera_frame(self._centres[: self._n], pose_c2w, intrinsics)
        use_depth, use_valid = depth_map is not None, depth_valid is not None
        depth = np.asarray(depth_map) if use_depth else np.zeros((1, 1), np.float64)
        valid = np.asarray(depth_valid) if use_valid else np.ones((1, 1), bool)
        tolerance = depth.dtype.type(self.occlusion_tolerance)  # numpy adds a Python float in the depth's dtype
        return kernels.visible_cells(cam, k, self.near, height, width, self._ids[: self._n], depth, valid,
                                     tolerance, use_depth, use_valid)

    @staticmethod
    def _raster(row: np.ndarray, col: np.ndarray, z: np.ndarray, ids: np.ndarray, height: int,
                width: int) -> np.ndarray:
        """Z-buffer: HxW int32 id of the nearest cell centre per pixel (0 = none)."""
        raster = np.zeros(height * width, np.int32)
        pixel = row * width + col
        order = np.lexsort((z, pixel))
        first = np.r_[True, pixel[order][1:] != pixel[order][:-1]]
        nearest = order[first]
        raster[pixel[nearest]] = ids[nearest]
        return raster.reshape(height, width)

"""3D query index memory M_t and query bank Q_t (block (c) of the paper's Figure 2).

QueryIndexMemory
    An explicit sparse voxel hash. Every occupied cell (size `MemoryConfig.voxel_size`) stores the instance
    id of the query that claims it. Cells are kept as a sorted int64 key array (the three integer cell
    coordinates packed into one int64, 21 bits each) and a parallel int32 id array, so every operation is
    a vectorised sort / searchsorted, never a per-point Python loop. Memory is bounded by the number of
    occupied cells, i.e. by the scene, not by the number of frames.

    Claim rule (`update`): within one update each cell takes the majority id of the points that fall in
    it (ties -> the smaller id); across updates the latest claim wins. Points with id 0 claim nothing.

    `retrieve(pose_c2w, K, H, W, depth)` projects the cell centres through P_t: a cell is visible when it
    is in front of the camera (z > near), its centre projects inside the image (pixel (i, j) covers
    u in [j-0.5, j+0.5), v in [i-0.5, i+0.5); pixel centres are integer coordinates) and, when a depth
    map is given, it is not occluded (z <= depth + tolerance; pixels with invalid depth (<= 0 or not
    finite) occlude nothing). It returns a `MemoryView` with the visible ids and, on request, a
    z-buffered HxW id raster (nearest cell per pixel, 0 = none).

    `estimate_intrinsics(points_cam)` gives a pinhole K for monocular input whose intrinsics are unknown.

QueryBank
    Per instance id: query vector (D), optional state token (S), 3D box (2x3: min, max), observation
    count. Update rule (`upsert`): an observation with weight w = 1 / min(count + 1, window) is blended
    in, q <- (1 - w) q + w q_new (a running mean over the first `window` observations, then an exponential
    average with weight 1/window); the same rule applies to the state token; boxes are the union
    of the stored box and the observed one. Vectors are not normalised (the association uses cosines).

Usage (pipeline):
    memory = QueryIndexMemory(config.memory.voxel_size, config.memory.occlusion_tolerance)
    view = memory.retrieve(pose_c2w, K, H, W, depth_map=points_cam[..., 2], max_ids=cfg.max_contextual_queries)
    queries, tokens, boxes, counts = bank.get(view.ids)
    memory.update(points_world[mask_pixels], ids_of_those_pixels)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import numpy as np

from . import kernels

_BITS = 21
_OFFSET = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1


# ----------------------------------------------------------------------------------------------------------
# voxel keys (shared with instance_map.py)


def cell_coords(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """Nx3 float points -> Nx3 int64 integer cell coordinates floor(p / voxel_size)."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be Nx3, got shape {points.shape}")
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
    return np.floor(points * (1.0 / voxel_size)).astype(np.int64)


def pack_keys(cells: np.ndarray) -> np.ndarray:
    """Nx3 int64 cell coordinates (each in [-2^20, 2^20)) -> N int64 keys (sort order: x, then y, then z)."""
    shifted = cells + _OFFSET
    if shifted.size and (shifted.min() < 0 or shifted.max() > _MASK):
        raise ValueError(f"cell coordinates outside +-{_OFFSET} cells; use a larger voxel size or recentre")
    return (shifted[:, 0] << (2 * _BITS)) | (shifted[:, 1] << _BITS) | shifted[:, 2]


def unpack_keys(keys: np.ndarray) -> np.ndarray:
    """N int64 keys -> Nx3 int64 cell coordinates (inverse of `pack_keys`)."""
    keys = np.asarray(keys, np.int64)
    cells = np.stack([(keys >> (2 * _BITS)) & _MASK, (keys >> _BITS) & _MASK, keys & _MASK], axis=1)
    return cells - _OFFSET


def voxel_keys(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """Nx3 float points -> N int64 keys of the cells that contain them."""
    return pack_keys(cell_coords(points, voxel_size))


def majority_per_group(group: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Most frequent id per group (ties -> smaller id).

    group: N int (group index of each element, any order); ids: N int.
    Returns (groups G int64 sorted unique, majority id G int64, its count G int64).
    """
    group = np.asarray(group, np.int64)
    ids = np.asarray(ids, np.int64)
    if group.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    order = np.lexsort((ids, group))
    g, i = group[order], ids[order]
    new_pair = np.r_[True, (g[1:] != g[:-1]) | (i[1:] != i[:-1])]
    starts = np.flatnonzero(new_pair)
    counts = np.diff(np.r_[starts, g.size])
    pg, pi = g[starts], i[starts]
    best = np.lexsort((pi, -counts, pg))  # per group: largest count first, then smaller id
    first = np.r_[True, pg[best][1:] != pg[best][:-1]]
    chosen = best[first]
    return pg[chosen], pi[chosen], counts[chosen]


def majority_of_groups(inverse: np.ndarray, ids: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Same result as `majority_per_group` for dense groups 0..G-1, sorting only the groups with mixed ids.

    inverse: N int group of each element; ids: N int (> 0). Returns (vote id G int64, its count G int64);
    groups without elements get id 0 and count 0.
    """
    cand = np.zeros(num_groups, np.int64)
    cand[inverse] = ids
    match = ids == cand[inverse]
    count = np.bincount(inverse[match], minlength=num_groups).astype(np.int64)
    mixed = (count < np.bincount(inverse, minlength=num_groups))[inverse]
    if mixed.any():
        groups, vote, n = majority_per_group(inverse[mixed], ids[mixed])
        cand[groups], count[groups] = vote, n
    return cand, count


def dense_groups(slots: np.ndarray, num_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """N slot indices in [0, num_slots) -> (touched slots U ascending, inverse N in [0, U)) without sorting."""
    touched = np.zeros(num_slots, bool)
    touched[slots] = True
    unique = np.flatnonzero(touched)
    rank = np.empty(num_slots, np.int32)
    rank[unique] = np.arange(unique.size, dtype=np.int32)
    return unique, rank.take(slots)


class VoxelHash:
    """Vectorised open-addressing (linear probing) hash table: int64 key >= 0 -> int64 slot.

    Lookups and inserts take whole arrays; the Python loop runs once per probe step, not per key.
    The table doubles when half full. Keys are never deleted (callers mark slots unused instead).
    """

    _EMPTY = -1
    _MULT = np.uint64(0x9E3779B97F4A7C15)

    def __init__(self, capacity: int = 1024):
        self._bits = max(int(np.ceil(np.log2(max(capacity, 16)))), 4)
        self._table = np.full((1 << self._bits, 2), self._EMPTY, np.int64)  # rows: (key, slot)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def _hash(self, keys: np.ndarray) -> np.ndarray:
        return ((keys.view(np.uint64) * self._MULT) >> np.uint64(64 - self._bits)).astype(np.int64)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """N int64 keys -> N int64 slots (-1 where absent)."""
        keys = np.ascontiguousarray(keys, np.int64)
        if kernels.NUMBA_ENABLED:
            return kernels.hash_lookup(self._table, self._bits, keys)
        mask = (1 << self._bits) - 1
        pos = self._hash(keys)
        rows = self._table.take(pos, axis=0)  # first probe for every key, without the pending indirection
        hit = rows[:, 0] == keys
        out = np.where(hit, rows[:, 1], -1)
        pending = np.flatnonzero(~hit & (rows[:, 0] != self._EMPTY))
        pos = (pos[pending] + 1) & mask
        while pending.size:
            rows = self._table.take(pos, axis=0)  # take: far faster than 2-D fancy indexing
            hit = rows[:, 0] == keys[pending]
            out[pending[hit]] = rows[hit, 1]
            more = ~hit & (rows[:, 0] != self._EMPTY)
            pending, pos = pending[more], (pos[more] + 1) & mask
        return out

    def insert(self, keys: np.ndarray, slots: np.ndarray) -> None:
        """Add unique keys that are not in the table yet, with their slots."""
        keys = np.ascontiguousarray(keys, np.int64)
        slots = np.ascontiguousarray(slots, np.int64)
        if 2 * (self._size + keys.size) > self._table.shape[0]:
            self._rebuild(2 * (self._size + keys.size))
        if kernels.NUMBA_ENABLED:
            kernels.hash_insert(self._table, self._bits, keys, slots)
            self._size += keys.size
            return
        mask = (1 << self._bits) - 1
        pending, pos = np.arange(keys.size), self._hash(keys)
        while pending.size:
            free = np.flatnonzero(self._table.take(pos, axis=0)[:, 0] == self._EMPTY)
            _, first = np.unique(pos[free], return_index=True)
            winners = free[first]
            self._table[pos[winners]] = np.stack([keys[pending[winners]], slots[pending[winners]]], axis=1)
            losers = np.ones(pending.size, bool)
            losers[winners] = False
            pending, pos = pending[losers], (pos[losers] + 1) & mask
        self._size += keys.size

    def _rebuild(self, min_capacity: int) -> None:
        used = self._table[self._table[:, 0] != self._EMPTY]
        self.__init__(max(min_capacity, 2 * self._table.shape[0]))
        if used.size:
            self.insert(used[:, 0], used[:, 1])


# ----------------------------------------------------------------------------------------------------------
# camera helpers


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


# ----------------------------------------------------------------------------------------------------------
# memory


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
        self._hash = VoxelHash()
        self._n = 0  # slots in use (claimed or released cells)
        self._keys = np.zeros(1024, np.int64)
        self._centres = np.zeros((1024, 3), np.float64)
        self._ids = np.zeros(1024, np.int32)  # 0 = released cell (kept in the hash, claims nothing)

    def __len__(self) -> int:
        """Number of claimed cells."""
        return int(np.count_nonzero(self._ids[: self._n]))

    @property
    def nbytes(self) -> int:
        return int(self._keys.nbytes + self._centres.nbytes + self._ids.nbytes + self._hash._table.nbytes)

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
        slots = self._hash.lookup(keys)
        absent = slots < 0
        if absent.any():
            new_keys, inverse = np.unique(keys[absent], return_inverse=True)
            new_slots = np.arange(self._n, self._n + new_keys.size)
            self._grow(self._n + new_keys.size)
            self._keys[new_slots] = new_keys
            self._centres[new_slots] = (unpack_keys(new_keys) + 0.5) * self.voxel_size
            self._hash.insert(new_keys, new_slots)
            self._n += new_keys.size
            slots[absent] = new_slots[inverse.reshape(-1)]
        return slots

    def _grow(self, need: int) -> None:
        if need <= self._keys.shape[0]:
            return
        capacity = max(need, 2 * self._keys.shape[0])
        for name in ("_keys", "_centres", "_ids"):
            old = getattr(self, name)
            grown = np.zeros((capacity,) + old.shape[1:], old.dtype)
            grown[: self._n] = old[: self._n]
            setattr(self, name, grown)

    def remove(self, ids: Iterable[int]) -> None:
        """Release every cell claimed by one of ids."""
        ids_now = self._ids[: self._n]
        ids_now[np.isin(ids_now, np.asarray(list(ids), np.int64))] = 0

    def relabel(self, mapping: Mapping[int, int]) -> None:
        """Rename ids (old -> new), e.g. after merging instances; new id 0 releases the cells."""
        if not mapping:
            return
        old = np.fromiter(mapping.keys(), np.int64)
        new = np.fromiter(mapping.values(), np.int64)
        order = np.argsort(old)
        old, new = old[order], new[order]
        ids_now = self._ids[: self._n]
        pos = np.clip(np.searchsorted(old, ids_now), 0, old.size - 1)
        hit = old[pos] == ids_now
        ids_now[hit] = new[pos[hit]]

    def ids_at(self, points_world: np.ndarray) -> np.ndarray:
        """Nx3 world points -> N int32 id claiming each point's cell (0 = unclaimed, unknown or non-finite)."""
        points = np.asarray(points_world, np.float64).reshape(-1, 3)
        out = np.zeros(points.shape[0], np.int32)
        ok = np.isfinite(points)
        ok = ok[:, 0] & ok[:, 1] & ok[:, 2]  # faster than .all(axis=1) on Nx3
        if not self._n or not ok.any():
            return out
        if ok.all():  # the usual case: no gather
            slots = self._hash.lookup(voxel_keys(points, self.voxel_size))
            known = np.flatnonzero(slots >= 0)
        else:
            finite = np.flatnonzero(ok)
            slots = self._hash.lookup(voxel_keys(points[finite], self.voxel_size))
            known = slots >= 0
            slots, known = slots[known], finite[known]
            out[known] = self._ids.take(slots)
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


# ----------------------------------------------------------------------------------------------------------
# query bank


class QueryBank:
    """Per-id query (D), state token (S or absent), box (2x3) and observation count (see module docstring)."""

    def __init__(self, dim: int, token_dim: Optional[int] = None, window: int = 20):
        if dim <= 0 or window <= 0:
            raise ValueError(f"dim and window must be > 0, got {dim}, {window}")
        self.dim = int(dim)
        self.token_dim = token_dim
        self.window = int(window)
        self.reset()

    def reset(self) -> None:
        self._row: dict[int, int] = {}
        self._ids = np.zeros(0, np.int64)
        self._queries = np.zeros((0, self.dim), np.float32)
        self._tokens = np.zeros((0, self.token_dim or 0), np.float32)
        self._has_token = np.zeros(0, bool)
        self._boxes = np.zeros((0, 2, 3), np.float32)
        self._counts = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, instance_id: int) -> bool:
        return int(instance_id) in self._row

    def ids(self) -> np.ndarray:
        """All stored ids, ascending."""
        return np.sort(np.fromiter(self._row.keys(), np.int64, len(self._row)))

    def _rows(self, ids: Iterable[int]) -> np.ndarray:
        try:
            return np.array([self._row[int(i)] for i in ids], np.int64)
        except KeyError as err:
            raise KeyError(f"query bank has no id {err.args[0]}") from None

    def get(self, ids: Iterable[int]) -> tuple[np.ndarray, Optional[np.ndarray], np.ndarray, np.ndarray]:
        """(queries VxD float32, tokens VxS float32 or None when any id lacks one, boxes Vx2x3, counts V)."""
        rows = self._rows(ids)
        tokens = self._tokens[rows] if rows.size and self._has_token[rows].all() else None
        if rows.size == 0 and self.token_dim:
            tokens = np.zeros((0, self.token_dim), np.float32)
        return self._queries[rows].copy(), tokens, self._boxes[rows].copy(), self._counts[rows].copy()

    def upsert(self, ids: Iterable[int], queries: np.ndarray, boxes: np.ndarray,
               tokens: Optional[np.ndarray] = None) -> None:
        """Insert new ids or blend observations into existing ones. queries NxD, boxes Nx2x3, tokens NxS."""
        ids = [int(i) for i in ids]
        if len(set(ids)) != len(ids):
            raise ValueError("upsert: ids must be unique within one call")
        queries = np.asarray(queries, np.float32).reshape(len(ids), self.dim)
        boxes = np.asarray(boxes, np.float32).reshape(len(ids), 2, 3)
        if tokens is not None:
            tokens = np.asarray(tokens, np.float32)
            self._ensure_token_dim(tokens.shape[1])
        self._append_missing(ids)
        rows = self._rows(ids)
        weight = (1.0 / np.minimum(self._counts[rows] + 1, self.window)).astype(np.float32)[:, None]
        self._queries[rows] = (1 - weight) * self._queries[rows] + weight * queries
        if tokens is not None:
            had = self._has_token[rows][:, None]
            blended = (1 - weight) * self._tokens[rows] + weight * tokens
            self._tokens[rows] = np.where(had, blended, tokens)
            self._has_token[rows] = True
        fresh = (self._counts[rows] == 0)[:, None, None]
        union = np.stack([np.minimum(self._boxes[rows, 0], boxes[:, 0]),
                          np.maximum(self._boxes[rows, 1], boxes[:, 1])], axis=1)
        self._boxes[rows] = np.where(fresh, boxes, union)
        self._counts[rows] += 1

    def set_boxes(self, ids: Iterable[int], boxes: np.ndarray) -> None:
        """Overwrite boxes (Nx2x3), e.g. with the instance map's boxes."""
        rows = self._rows(ids)
        self._boxes[rows] = np.asarray(boxes, np.float32).reshape(rows.size, 2, 3)

    def _ensure_token_dim(self, token_dim: int) -> None:
        if self.token_dim is None or (self.token_dim == 0 and not self._has_token.any()):
            self.token_dim = int(token_dim)
            self._tokens = np.zeros((self._ids.size, token_dim), np.float32)
        elif token_dim != self.token_dim:
            raise ValueError(f"state tokens have {token_dim} entries, the bank holds {self.token_dim}")

    def _append_missing(self, ids: list[int]) -> None:
        missing = [i for i in ids if i not in self._row]
        if not missing:
            return
        n, m = self._ids.size, len(missing)
        self._row.update({i: n + k for k, i in enumerate(missing)})
        self._ids = np.r_[self._ids, np.asarray(missing, np.int64)]
        self._queries = np.concatenate([self._queries, np.zeros((m, self.dim), np.float32)])
        self._tokens = np.concatenate([self._tokens, np.zeros((m, self._tokens.shape[1]), np.float32)])
        self._has_token = np.r_[self._has_token, np.zeros(m, bool)]
        self._boxes = np.concatenate([self._boxes, np.zeros((m, 2, 3), np.float32)])
        self._counts = np.r_[self._counts, np.zeros(m, np.int64)]

    def remove(self, ids: Iterable[int]) -> None:
        """Forget ids (unknown ids are ignored)."""
        drop = {int(i) for i in ids} & set(self._row)
        if not drop:
            return
        keep = np.array([int(i) not in drop for i in self._ids], bool)
        self._ids, self._queries = self._ids[keep], self._queries[keep]
        self._tokens, self._has_token = self._tokens[keep], self._has_token[keep]
        self._boxes, self._counts = self._boxes[keep], self._counts[keep]
        self._row = {int(i): k for k, i in enumerate(self._ids)}

    def merge(self, keep: int, drop: int) -> None:
        """Fold `drop` into `keep`: count-weighted mean of queries/tokens, union of boxes, summed counts."""
        rk, rd = self._rows([keep, drop])
        nk, nd = float(self._counts[rk]), float(self._counts[rd])
        wk = nk / max(nk + nd, 1.0) if nk + nd > 0 else 0.5
        self._queries[rk] = wk * self._queries[rk] + (1 - wk) * self._queries[rd]
        if self._has_token[rk] and self._has_token[rd]:
            self._tokens[rk] = wk * self._tokens[rk] + (1 - wk) * self._tokens[rd]
        elif self._has_token[rd]:
            self._tokens[rk], self._has_token[rk] = self._tokens[rd], True
        self._boxes[rk, 0] = np.minimum(self._boxes[rk, 0], self._boxes[rd, 0])
        self._boxes[rk, 1] = np.maximum(self._boxes[rk, 1], self._boxes[rd, 1])
        self._counts[rk] += self._counts[rd]
        self.remove([drop])

"""The instance map: fused, voxel-downsampled colored points with instance ids, plus per-instance records.

Storage
    One entry ("voxel") per occupied cell of size `MapConfig.voxel_size`, so memory grows with the scene,
    not with the number of frames. Voxels live in append-only slot arrays (capacity doubling) indexed by
    a vectorised open-addressing hash of int64 keys (packed cell coordinates, see voxels.VoxelSlots); an
    update never sorts the frame's points and never loops over points in Python.

Per-voxel rules (`integrate`)
    - xyz, rgb, confidence: running means of the points that fell in the voxel; the past weighs at most
      `MapConfig.max_point_weight` observations (so a capped running mean that can still adapt).
    - instance id: a Boyer-Moore majority vote with counts. In one update the voxel's batch vote is the
      majority id among its points with id != 0 (ties -> smaller id), with n = its point count. If it
      equals the current id the count grows by n, else it shrinks by n and the id switches when the
      count goes negative (count := -count). Counts are capped at `max_point_weight`. Points with id 0
      (unassigned) update geometry/colour only.
    Instance records: first_seen / last_seen are the stamps of the first / latest `integrate` that
    carried points of the id; confidence is the mean voxel confidence over the instance's voxels times
    the observation score (`observation_score`): how often the instance was observed (got a mask) in the
    keyframes in which it was in view (`count_keyframe`, called by the pipeline). A real object is matched
    in most keyframes that see it; a spurious fragment is observed once and then missed while in view.

Ids start at 1 and are never reused (`next_id()`; integrating an id >= the counter advances it).
`prune` makes the voxels of tiny or stale instances unassigned (id 0); their geometry stays.

Files
    `save(path)` / `InstanceMap.load(path)`: map_files.save_map / load_map (one .npz; exact round trip or
    MapFileError). `export_ply` / `export_scannet` / `vertex_ids`: map_export (binary PLY; ScanNet benchmark
    instance predictions over a mesh's vertices, nearest voxel within a max distance).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from . import kernels, map_export, map_files
from .colors import instance_color
from .config import MapConfig
from .timing import torch_single_thread
from .voxels import VoxelSlots, dense_groups, majority_of_groups, voxel_keys


@dataclass(eq=False)
class InstanceRecord:
    id: int
    confidence: float
    point_count: int  # voxels of the instance
    centroid: np.ndarray  # (3,) float64
    bbox_min: np.ndarray  # (3,) float32
    bbox_max: np.ndarray  # (3,) float32
    color: np.ndarray  # (3,) float rgb in [0, 1]
    first_seen: float
    last_seen: float
    descriptor: np.ndarray  # float32[D] (D = 0 when unset)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InstanceRecord):
            return NotImplemented
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if not (np.asarray(a).dtype == np.asarray(b).dtype and np.array_equal(a, b)):
                    return False
            elif a != b:
                return False
        return True


@dataclass
class _Meta:
    first_seen: float
    last_seen: float
    descriptor: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    observed: int = 0  # keyframes in which the instance got a mask (new or matched)
    in_view: int = 0  # keyframes in which it was in view or observed (>= observed)


def observation_score(observed: int, in_view: int) -> float:
    """Keyframe counts -> score in [0, 1]: (observed / in_view) * (1 - 2^-observed); 1 when never counted
    (maps filled by `integrate` alone keep their plain voxel confidence)."""
    if in_view <= 0:
        return 1.0
    return (observed / in_view) * (1.0 - 0.5 ** observed)


# Storage: the float columns live side by side in one Sx8 float32 array and the vote columns in one Sx2 int32
# array, so fusing a frame gathers and scatters one 32-byte (8-byte) record per touched voxel instead of one
# element per column (random access into a map of ~1M voxels is what costs). `_slots[name]` are views.
_ATTR_COLUMNS: dict[str, slice | int] = {"xyz": slice(0, 3), "rgb": slice(3, 6), "conf": 6, "weight": 7}
_VOTE_COLUMNS: dict[str, int] = {"vote_id": 0, "vote_count": 1}
_ATTR_RECORD = np.dtype((np.void, 32))
_VOTE_RECORD = np.dtype((np.void, 8))


class InstanceMap:
    """Voxel-fused colored points with instance ids and instance records (see module docstring)."""

    def __init__(self, config: Optional[MapConfig] = None):
        self.config = config if config is not None else MapConfig()
        self.reset()

    # ------------------------------------------------------------------------------------------ state
    def reset(self) -> None:
        self._voxels = VoxelSlots()
        self._allocate(self._voxels.capacity)
        self._meta: dict[int, _Meta] = {}
        self._next_id = 1

    def __len__(self) -> int:
        return self._n

    @property
    def _n(self) -> int:
        return len(self._voxels)

    @property
    def nbytes(self) -> int:
        return int(self._voxels.nbytes + self._attrs.nbytes + self._votes.nbytes)

    def next_id(self) -> int:
        """A fresh instance id (>= 1, never reused)."""
        new = self._next_id
        self._next_id += 1
        return new

    def _allocate(self, capacity: int) -> None:
        """Zeroed per-voxel storage for `capacity` voxels (the old storage's used rows copied over)."""
        attrs = np.zeros((capacity, 8), np.float32)
        votes = np.zeros((capacity, 2), np.int32)
        old: Optional[np.ndarray] = getattr(self, "_attrs", None)
        used = 0 if old is None else min(self._n, old.shape[0])
        if old is not None and used:
            attrs[:used], votes[:used] = old[:used], self._votes[:used]
        self._attrs: np.ndarray = attrs
        self._votes: np.ndarray = votes
        self._attr_records = attrs.view(_ATTR_RECORD).reshape(-1)
        self._vote_records = votes.view(_VOTE_RECORD).reshape(-1)
        self._slots: dict[str, np.ndarray] = {name: attrs[:, col] for name, col in _ATTR_COLUMNS.items()}
        self._slots.update({name: votes[:, col] for name, col in _VOTE_COLUMNS.items()})

    def _col(self, name: str) -> np.ndarray:
        return self._voxels.keys if name == "keys" else self._slots[name][: self._n]

    # ------------------------------------------------------------------------------------------ integrate
    def integrate(self, points_world: np.ndarray, colors: np.ndarray, instance_ids: np.ndarray, stamp: float,
                  confidences: Optional[np.ndarray] = None) -> None:
        """Fuse points Nx3 float32, colors Nx3 uint8, ids N int32 (0 = unassigned), confidences N or None."""
        points, colors, ids, conf = self._validated(points_world, colors, instance_ids, confidences)
        if points.shape[0] == 0:
            return
        slots = self._slots_for(voxel_keys(points, self.config.voxel_size))
        if kernels.NUMBA_ENABLED:  # one compiled pass, bit-identical to the numpy code below
            kernels.fuse_and_vote(slots, self._n, points, colors, conf, ids, self._attrs, self._votes,
                                  self.config.max_point_weight)
            self._touch(np.flatnonzero(np.bincount(ids[ids != 0])), float(stamp))
            return
        touched, inverse = dense_groups(slots, self._n)
        self._fuse_means(touched, inverse, points, colors, conf)
        assigned = ids != 0
        vote_id, vote_n = majority_of_groups(inverse[assigned], ids[assigned], touched.size)
        has_vote = vote_n > 0
        self._vote(touched[has_vote], vote_id[has_vote], vote_n[has_vote])
        self._touch(np.flatnonzero(np.bincount(ids[assigned])), float(stamp))

    def _validated(self, points, colors, ids, conf):
        points = np.asarray(points, np.float32)
        colors = np.asarray(colors)
        ids = np.asarray(ids).reshape(-1)
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"points_world must be Nx3, got shape {points.shape}")
        n = points.shape[0]
        if colors.shape != (n, 3) or ids.shape != (n,):
            raise ValueError(f"colors must be {n}x3 and instance_ids ({n},), got {colors.shape}, {ids.shape}")
        if ids.size and ids.min() < 0:
            raise ValueError("instance ids must be >= 0")
        conf = np.ones(n, np.float32) if conf is None else np.asarray(conf, np.float32).reshape(-1)
        if conf.shape != (n,):
            raise ValueError(f"confidences must have {n} entries, got {conf.shape}")
        ok = np.isfinite(points)
        finite = ok[:, 0] & ok[:, 1] & ok[:, 2] & np.isfinite(conf)  # faster than .all(axis=1) on Nx3
        if not finite.all():
            points, colors, ids, conf = points[finite], colors[finite], ids[finite], conf[finite]
        if colors.dtype != np.uint8:  # bincount takes uint8 weights as they are
            colors = colors.astype(np.float32)
        return points, colors, ids.astype(np.int64, copy=False), conf

    def _slots_for(self, keys: np.ndarray) -> np.ndarray:
        """Slot of every point's key, creating (zeroed) slots for keys not seen before."""
        slots, new_slots = self._voxels.slots_for(keys)
        if new_slots.size:
            if self._voxels.capacity > self._attrs.shape[0]:
                self._allocate(self._voxels.capacity)
            self._attrs[new_slots] = 0
            self._votes[new_slots] = 0
        return slots

    def _fuse_means(self, slots, inverse, points, colors, conf) -> None:
        """Running means of xyz, rgb, confidence over the touched voxels (one gather, one scatter).

        7xS float64 sums written in place by row, the old float32 means x old weight added from one contiguous
        7xS copy (same per-element operations as before, without the strided temporaries)."""
        size = slots.size
        count = np.bincount(inverse, minlength=size).astype(np.float32)
        record = self._attr_records.take(slots).view(np.float32).reshape(-1, 8)  # xyz rgb conf weight
        old_w = record[:, 7]
        total = old_w + count
        means = np.empty((7, size))  # rows: fast axis
        for c in range(3):
            means[c] = np.bincount(inverse, points[:, c], size)
            means[3 + c] = np.bincount(inverse, colors[:, c], size)
        means[6] = np.bincount(inverse, conf, size)
        prior = np.ascontiguousarray(record[:, :7].T)  # 7xS float32
        prior *= old_w
        means += prior
        means /= total
        fused = np.empty_like(record)
        fused[:, :7] = means.T
        np.minimum(total, float(self.config.max_point_weight), out=fused[:, 7])
        self._attr_records.put(slots, fused.view(_ATTR_RECORD).reshape(-1))

    def _vote(self, slots: np.ndarray, vote_id: np.ndarray, vote_n: np.ndarray) -> None:
        record = self._vote_records.take(slots).view(np.int32).reshape(-1, 2)  # vote_id, vote_count
        current = record[:, 0].astype(np.int64)
        count = record[:, 1].astype(np.int64)
        count = np.where(current == vote_id, count + vote_n, count - vote_n)
        switch = count < 0
        out = np.empty_like(record)
        out[:, 0] = np.where(switch, vote_id, current)
        out[:, 1] = np.minimum(np.abs(count), self.config.max_point_weight)
        self._vote_records.put(slots, out.view(_VOTE_RECORD).reshape(-1))

    def _touch(self, ids: np.ndarray, stamp: float) -> None:
        for i in ids.tolist():
            meta = self._meta.get(i)
            if meta is None:
                self._meta[i] = _Meta(stamp, stamp)
            else:
                meta.first_seen = min(meta.first_seen, stamp)
                meta.last_seen = max(meta.last_seen, stamp)
        if ids.size:
            self._next_id = max(self._next_id, int(ids.max()) + 1)

    # ------------------------------------------------------------------------------------------ queries
    def points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xyz Nx3 float32, rgb Nx3 uint8, ids N int32) of the fused voxels."""
        rgb = np.clip(np.rint(self._col("rgb")), 0, 255).astype(np.uint8)
        return self._col("xyz").copy(), rgb, self._col("vote_id").copy()

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        """(xyz Nx3 float32, ids N int32) of the fused voxels: points() without the colours."""
        return self._col("xyz").copy(), self._col("vote_id").copy()

    def instance_ids(self) -> np.ndarray:
        """Sorted ids that own at least one voxel."""
        ids = np.flatnonzero(np.bincount(self._col("vote_id")))  # ids are small non-negative ints: no sort
        return ids[ids != 0].astype(np.int64)

    def instances(self) -> list[InstanceRecord]:
        """One record per id owning at least one voxel, ascending id.

        Counts by bincount; per-id sums and min/max by torch index_add_ / scatter_reduce (compiled; numpy's
        ufunc.at is several times slower on ~1M voxels): 45 -> 23 ms for 500 records over 904k voxels."""
        ids = self._col("vote_id")
        size = int(ids.max(initial=0)) + 1  # not next_id: the work must not grow with the id counter
        counts = np.bincount(ids, minlength=size)
        present = np.flatnonzero(counts[1:]) + 1
        if present.size == 0:
            return []
        columns = np.empty((4, ids.size), np.float64)  # x, y, z, confidence rows
        columns[:3] = self._col("xyz").T
        columns[3] = self._col("conf")
        values = torch.from_numpy(columns)
        index = torch.from_numpy(ids.astype(np.int64))[None].expand(4, -1)
        with torch_single_thread():  # called from the node's worker and timers: no OpenMP hand-off stalls
            sums = torch.zeros((4, size), dtype=torch.float64).index_add_(1, index[0], values).numpy()
            lo_t = torch.full((3, size), np.inf, dtype=torch.float64).scatter_reduce_(1, index[:3], values[:3], "amin")
            hi_t = torch.full((3, size), -np.inf, dtype=torch.float64).scatter_reduce_(1, index[:3], values[:3], "amax")
        means = sums[:, present] / counts[present]
        centroid, conf = means[:3].T.copy(), means[3]
        lo, hi = lo_t.T.numpy().astype(np.float32), hi_t.T.numpy().astype(np.float32)  # exact: float32 inputs
        return [self._record(int(i), float(conf[k]), int(counts[i]), centroid[k], lo[i].copy(), hi[i].copy())
                for k, i in enumerate(present)]

    def _record(self, instance_id, confidence, count, centroid, lo, hi) -> InstanceRecord:
        meta = self._meta.get(instance_id) or _Meta(float("nan"), float("nan"))
        confidence *= observation_score(meta.observed, meta.in_view)
        return InstanceRecord(instance_id, confidence, count, centroid, lo, hi, instance_color(instance_id),
                              meta.first_seen, meta.last_seen, meta.descriptor.copy())

    def set_descriptor(self, instance_id: int, descriptor: np.ndarray) -> None:
        """Store a float32[D] descriptor (e.g. the bank query) for an id."""
        if instance_id <= 0:
            raise ValueError(f"instance id must be >= 1, got {instance_id}")
        meta = self._meta.setdefault(int(instance_id), _Meta(float("nan"), float("nan")))
        meta.descriptor = np.asarray(descriptor, np.float32).reshape(-1).copy()
        self._next_id = max(self._next_id, int(instance_id) + 1)

    def count_keyframe(self, observed_ids, visible_ids) -> None:
        """One keyframe's evidence: ids that got a mask, ids in view (memory cells visible, not occluded).
        Every id in either list counts one keyframe in view; observed ids count one observation."""
        observed = {int(i) for i in observed_ids}
        for i in observed | {int(i) for i in visible_ids}:
            if i <= 0:
                continue
            meta = self._meta.setdefault(i, _Meta(float("nan"), float("nan")))
            meta.in_view += 1
            meta.observed += i in observed
            self._next_id = max(self._next_id, i + 1)

    # ------------------------------------------------------------------------------------------ edits
    def prune(self, now: float, min_points: Optional[int] = None, stale_after_s: Optional[float] = None
              ) -> list[int]:
        """Unassign (id 0) the voxels of instances with < min_points voxels or unseen for > stale_after_s
        (0 = never stale); defaults from MapConfig. Returns the pruned ids, ascending."""
        min_points = self.config.min_instance_points if min_points is None else min_points
        stale = self.config.stale_after_s if stale_after_s is None else stale_after_s
        ids = self._col("vote_id")
        candidates = set(self._meta) | set(self.instance_ids().tolist())
        counts = np.bincount(ids, minlength=max(candidates, default=0) + 1)  # not next_id (may be far above)
        pruned = sorted(i for i in candidates
                        if counts[i] < min_points
                        or (stale > 0 and i in self._meta and now - self._meta[i].last_seen > stale))
        if pruned:
            hit = np.isin(ids, pruned)
            ids[hit] = 0
            self._col("vote_count")[hit] = 0
            for i in pruned:
                self._meta.pop(i, None)
        return pruned

    # ------------------------------------------------------------------------------------------ export
    def export_ply(self, path: str | os.PathLike, color_by: str = "instance") -> None:
        """Binary PLY of the voxels (map_export.export_ply)."""
        map_export.export_ply(self, path, color_by)

    def vertex_ids(self, vertices: np.ndarray, max_distance: Optional[float] = None) -> np.ndarray:
        """Vertices Vx3 -> V int32 id of the nearest voxel within max_distance (map_export.vertex_ids)."""
        return map_export.vertex_ids(self, vertices, max_distance)

    def export_scannet(self, vertices: np.ndarray, out_dir: str | os.PathLike, scene_name: str,
                       min_points: int = 1, max_distance: Optional[float] = None) -> list[int]:
        """ScanNet instance predictions over mesh vertices (map_export.export_scannet)."""
        return map_export.export_scannet(self, vertices, out_dir, scene_name, min_points, max_distance)

    # ------------------------------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Write the whole map to one .npz file (map_files.save_map; exact round trip with `load`)."""
        meta_ids = np.array(sorted(self._meta), np.int64)
        metas = [self._meta[i] for i in meta_ids.tolist()]
        map_files.save_map(path, map_files.MapState(
            self.config, self._next_id, {name: self._col(name) for name in map_files.SLOT_ARRAYS}, meta_ids,
            np.array([m.first_seen for m in metas], np.float64), np.array([m.last_seen for m in metas], np.float64),
            [m.descriptor for m in metas], np.array([m.observed for m in metas], np.int64),
            np.array([m.in_view for m in metas], np.int64)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "InstanceMap":
        """Read a map written by `save` (map_files.load_map: MapFileError when missing, corrupt, truncated or of
        another format version)."""
        state = map_files.load_map(path)
        instance_map = cls(state.config)
        n = state.slots["keys"].shape[0]
        if n:
            instance_map._voxels.restore(state.slots["keys"])
            instance_map._allocate(instance_map._voxels.capacity)
            for name, values in state.slots.items():
                if name != "keys":
                    instance_map._slots[name][:n] = values
        assert state.observed is not None and state.in_view is not None  # filled by MapState
        instance_map._meta = {int(i): _Meta(float(state.first_seen[k]), float(state.last_seen[k]),
                                            state.descriptors[k], int(state.observed[k]), int(state.in_view[k]))
                              for k, i in enumerate(state.meta_ids.tolist())}
        instance_map._next_id = state.next_id
        return instance_map

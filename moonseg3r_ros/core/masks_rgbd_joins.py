"""RGB-D segment masks, after the connected components: small fragments absorbed by a neighbour, and the parts
of a support (a table's edge, apron and legs) joined to its plane segment (step 4 of core/masks_rgbd.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from moonseg3r_ros.core.masks_rgbd_cuts import edge_pair

if TYPE_CHECKING:
    from moonseg3r_ros.core.masks_rgbd import RgbdSegmentParams


def absorb_fragments(labels: np.ndarray, depth: np.ndarray, valid: np.ndarray, params: RgbdSegmentParams
                     ) -> np.ndarray:
    """Segments under `fragment_pixels` (the bands of cut edges along creases) go to the nearest larger segment
    at a continuous depth; an object's rim where it meets its support is split between the two.

    labels hxw int32 (0 = none) -> hxw int32."""
    from scipy.ndimage import distance_transform_edt

    sizes = np.bincount(labels.reshape(-1))
    small = sizes < params.fragment_pixels
    small[0] = True
    hole = small[labels]
    if not hole.any() or hole.all():
        return labels
    _, (rows, cols) = distance_transform_edt(hole, return_indices=True)
    near = labels[rows, cols]
    near_depth = depth[rows, cols]
    ok = hole & valid & (np.abs(near_depth - depth) <= 3 * params.depth_threshold * np.maximum(depth, 1e-6))
    out = np.where(hole, 0, labels)
    out[ok] = near[ok]
    return out


def segment_contacts(labels: np.ndarray, depth: np.ndarray, valid: np.ndarray, params: RgbdSegmentParams
                     ) -> np.ndarray:
    """-> Px2 int64 segment pairs (a < b) that share at least `min_contact` depth-continuous boundary edges."""
    pairs = []
    for axis in (1, 0):
        a, b = edge_pair(axis)
        la, lb, za, zb = labels[a], labels[b], depth[a], depth[b]
        touch = valid[a] & valid[b] & (la != lb) & (la > 0) & (lb > 0)
        # a looser step than the cut's: a table top's overhang hides the legs' tops, yet they touch it
        touch &= np.abs(za - zb) <= params.contact_depth * np.maximum(np.minimum(za, zb), 1e-6)
        pairs.append(np.stack([np.minimum(la[touch], lb[touch]), np.maximum(la[touch], lb[touch])], axis=1))
    pairs_all = np.concatenate(pairs).astype(np.int64)
    if len(pairs_all) == 0:
        return pairs_all.reshape(0, 2)
    unique, counts = np.unique(pairs_all, axis=0, return_counts=True)
    return unique[counts >= params.min_contact]


def join_support_parts(labels: np.ndarray, planes: np.ndarray, behind: np.ndarray, contacts: np.ndarray,
                       points: np.ndarray, params: RgbdSegmentParams) -> np.ndarray:
    """Segments lying behind a plane segment, inside its footprint, and touching it (directly or through other
    such segments) join it: a table top's edge, apron and legs, a box's sides below its top. Objects rest in
    front of their support and stay apart; a plane segment joins only a larger one (the floor never does).

    labels hxw int32, planes hxw int16, behind hxw uint8 (bit per plane), contacts Px2, points hxwx3
    -> hxw int32."""
    n = int(labels.max()) + 1
    if len(contacts) == 0 or n <= 2:
        return labels
    flat = labels.reshape(-1)
    area = np.maximum(np.bincount(flat, minlength=n), 1)
    on_plane = planes.reshape(-1) >= 0
    seg_plane = np.full(n, -1, np.int64)
    seg_plane[flat[on_plane]] = planes.reshape(-1)[on_plane]
    planes_used = int(planes.max()) + 1
    behind_frac = np.stack([np.bincount(flat, weights=(behind.reshape(-1) >> k) & 1, minlength=n) / area
                            for k in range(max(planes_used, 1))])
    footprint = _Footprints(labels, points)
    parent = np.arange(n)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for _ in range(6):
        changed = False
        for a, b in contacts:
            for part, other in ((int(b), int(a)), (int(a), int(b))):
                target = root(other)
                plane = seg_plane[target]
                big_plane = seg_plane[part] >= 0 and area[part] >= area[target]  # the floor never joins a table
                if root(part) != part or target == part or plane < 0 or big_plane:
                    continue
                if behind_frac[plane, part] >= params.behind_fraction and footprint.inside(target, part):
                    parent[part] = target
                    changed = True
        if not changed:
            break
    group = np.array([root(x) for x in range(n)])
    group[0] = 0
    return group[labels].astype(np.int32)


class _Footprints:
    """Whether a segment's points fall inside a plane segment's extent (its principal axes, 5% margin)."""

    def __init__(self, labels: np.ndarray, points: np.ndarray):
        flat = labels.reshape(-1)
        order = np.argsort(flat, kind="stable")
        self.starts = np.searchsorted(flat[order], np.arange(int(flat.max()) + 2))
        self.order, self.points = order, points.reshape(-1, 3).astype(np.float64)
        self.frames: dict[int, tuple] = {}

    def _points(self, segment: int, most: int = 2000) -> np.ndarray:
        idx = self.order[self.starts[segment]:self.starts[segment + 1]]
        return self.points[idx[::max(1, len(idx) // most)]]

    def inside(self, support: int, part: int, fraction: float = 0.9) -> bool:
        if support not in self.frames:
            pts = self._points(support)
            centre = pts.mean(axis=0)
            _, _, axes = np.linalg.svd(pts - centre, full_matrices=False)
            coords = (pts - centre) @ axes[:2].T
            low, high = coords.min(axis=0), coords.max(axis=0)
            margin = 0.05 * (high - low)
            self.frames[support] = (centre, axes[:2], low - margin, high + margin)
        centre, axes, low, high = self.frames[support]
        coords = (self._points(part) - centre) @ axes.T
        return bool(((coords >= low) & (coords <= high)).all(axis=1).mean() >= fraction)

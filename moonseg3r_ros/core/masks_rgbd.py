"""RGB-D segment masks: a weight-free mask source that uses the frame's geometry (`masks.source` 'rgbd').

Per keyframe, on a working grid of at most `work_long_side` pixels (nearest-neighbour back to the frame):
1. normals of the camera pointmap (central differences, smoothed), facing the camera;
2. support planes: up to `max_planes` RANSAC planes (Open3D `segment_plane`) on a sample of the valid points,
   each kept when it holds at least `plane_min_fraction` of them; a pixel belongs to a plane when it lies within
   `plane_distance` (relative to the median depth) of it and its normal (where defined) agrees within
   `plane_normal_degrees`;
3. a 4-neighbour pixel graph whose edges are cut where geometry is invalid, where depth jumps by more than
   `depth_threshold` of the depth, between pixels of different planes (or plane and off-plane), at concave
   creases (normals `crease_step` pixels apart on either side turned towards each other by more than
   `concave_degrees`: an object standing on its support, two objects pressed together) and, off the planes,
   where colour (CIELAB, after a blur that hides JPEG blocks) changes by more than `color_threshold` across a
   crease of at least `color_crease_degrees` (touching objects of different colour; a textured convex or flat
   object is not cut by its texture);
4. its connected components (scipy) are the masks: a support plane's pixels make one segment per connected
   piece whatever their colour (checkered floor, wood grain), the objects on it are separate segments.

No weights; geometry is relative to depth, so monocular (CUT3R) pointmaps of unknown scale work the same.
Without geometry the frame's colour alone is segmented (the 'weight_free' source's colour edges).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from moonseg3r_ros.core.masks import masks_from_labels, resize_nearest
from moonseg3r_ros.core.types import Frame, FrameGeometry, MaskSet


@dataclass
class RgbdSegmentParams:
    work_long_side: int = 320  # pixels of the working grid's long side
    depth_threshold: float = 0.02  # relative depth step that separates neighbours
    concave_degrees: float = 20.0  # crease angle that separates concave neighbours
    crease_step: int = 2  # pixels on either side of an edge whose normals measure the crease
    max_planes: int = 4
    plane_distance: float = 0.012  # inlier distance, relative to the median depth
    plane_normal_degrees: float = 25.0
    plane_min_fraction: float = 0.04  # of the valid sample points
    color_threshold: float = 30.0  # CIELAB distance that separates neighbours across a crease
    color_crease_degrees: float = 6.0
    behind_fraction: float = 0.9  # a segment this much behind a support plane and touching it is part of it
    fragment_pixels: int = 30  # smaller segments (working grid) are absorbed by their nearest neighbour
    min_contact: int = 4  # boundary pixels that make two segments touch
    contact_depth: float = 0.15  # relative depth step up to which two segments still touch (for joining)
    seed: int = 0


class RgbdSegmentMasks:
    """Masks from planes, depth discontinuities, concave creases and colour; needs no weights."""

    def __init__(self, min_area: int = 100, max_masks: int = 100, params: Optional[RgbdSegmentParams] = None):
        self.min_area, self.max_masks = min_area, max_masks
        self.params = params or RgbdSegmentParams()

    @classmethod
    def from_config(cls, masks: Any) -> "RgbdSegmentMasks":
        """From a MaskConfig (its min_mask_area, max_masks and rgbd_* fields)."""
        params = RgbdSegmentParams(
            work_long_side=masks.rgbd_work_long_side, depth_threshold=masks.rgbd_depth_threshold,
            concave_degrees=masks.rgbd_concave_degrees, color_threshold=masks.rgbd_color_threshold,
            max_planes=masks.rgbd_max_planes, plane_distance=masks.rgbd_plane_distance)
        return cls(masks.min_mask_area, masks.max_masks, params)

    def generate(self, frame: Frame, geometry: Optional[FrameGeometry] = None) -> MaskSet:
        labels = self.labels(frame.image, geometry)
        return masks_from_labels(labels, self.min_area, self.max_masks)

    def labels(self, image: np.ndarray, geometry: Optional[FrameGeometry] = None) -> np.ndarray:
        """HxWx3 uint8 (+ geometry) -> HxW int32 segment ids (0 = invalid or boundary pixel)."""
        height, width = image.shape[:2]
        step = max(1, math.ceil(max(height, width) / self.params.work_long_side))
        if geometry is None:
            return _color_segments(image)
        points = np.asarray(geometry.points_cam[::step, ::step], np.float32)
        valid = np.asarray(geometry.valid[::step, ::step], bool) & np.isfinite(points).all(axis=2)
        valid &= points[..., 2] > 0
        small = _work_image(image, points.shape[:2])
        labels = segment_grid(points, valid, small, self.params)
        labels = resize_nearest(labels, height, width) if step > 1 else labels
        labels[~np.asarray(geometry.valid, bool)] = 0
        return labels


# ----------------------------------------------------------------------------------------------------------
# the working-grid segmentation


def segment_grid(points: np.ndarray, valid: np.ndarray, image: np.ndarray, params: RgbdSegmentParams) -> np.ndarray:
    """hxwx3 camera points, hxw valid, hxwx3 uint8 -> hxw int32 segment ids (0 = none)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    h, w = valid.shape
    if not valid.any():
        return np.zeros((h, w), np.int32)
    depth = np.where(valid, points[..., 2], 0.0).astype(np.float32)
    normals, normal_ok = camera_normals(points, valid, params.depth_threshold)
    planes, behind = plane_ids(points, normals, normal_ok, valid, params)
    lab = _lab(image)
    index = np.arange(h * w).reshape(h, w)
    src, dst = [], []
    for axis in (1, 0):
        keep = _edges(axis, depth, valid, normals, normal_ok, planes, lab, points, params)
        a = index[:, :-1] if axis == 1 else index[:-1]
        b = index[:, 1:] if axis == 1 else index[1:]
        src.append(a[keep])
        dst.append(b[keep])
    src_all, dst_all = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(src_all.size, np.int8), (src_all, dst_all)), shape=(h * w, h * w))
    _, components = connected_components(graph, directed=False)
    labels = components.reshape(h, w).astype(np.int32) + 1
    labels[~valid] = 0
    labels = absorb_fragments(labels, depth, valid, params)
    return join_support_parts(labels, planes, behind, _contacts(labels, depth, valid, params), points, params)


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


def _contacts(labels: np.ndarray, depth: np.ndarray, valid: np.ndarray, params: RgbdSegmentParams
              ) -> np.ndarray:
    """-> Px2 int64 segment pairs (a < b) that share at least `min_contact` depth-continuous boundary edges."""
    pairs = []
    for axis in (1, 0):
        a, b = _pair(axis)
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
    n = _cross(du, dv)
    n *= ok[..., None]
    norm = np.sqrt(_dot(n, n))[..., None]
    n = n / np.maximum(norm, 1e-12)
    n = cv2.blur(n, (5, 5))
    norm = np.sqrt(_dot(n, n))[..., None]
    ok &= norm[..., 0] > 0.3
    n = n / np.maximum(norm, 1e-12)
    flip = _dot(n, p) > 0  # facing the camera: n . x < 0
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
        model, inliers = cloud.segment_plane(threshold, 3, 120)
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


def _edges(axis: int, depth: np.ndarray, valid: np.ndarray, normals: np.ndarray, normal_ok: np.ndarray,
           planes: np.ndarray, lab: np.ndarray, points: np.ndarray, params: RgbdSegmentParams) -> np.ndarray:
    """Kept edges between each pixel and its right (axis 1) or lower (axis 0) neighbour: h x (w-1) / (h-1) x w."""
    a, b = _pair(axis)
    za, zb = depth[a], depth[b]
    keep = valid[a] & valid[b]
    keep &= np.abs(za - zb) <= params.depth_threshold * np.maximum(np.minimum(za, zb), 1e-6)
    angle_cos, concave, defined = _crease(axis, normals, normal_ok, points, params.crease_step)
    keep &= planes[a] == planes[b]
    off_plane = (planes[a] < 0) & (planes[b] < 0)
    keep &= ~(off_plane & concave & (angle_cos < math.cos(math.radians(params.concave_degrees))))
    before, after = _shifted(lab, axis, params.crease_step)  # past the blur, not the blurred neighbours
    diff = before - after
    color_step = np.sqrt(_dot(diff, diff))
    color_cut = off_plane & (color_step > params.color_threshold)
    # across a slight concave crease, or where the crease is unknown (silhouettes): a texture on one smooth
    # surface is never cut
    color_cut &= (concave & (angle_cos < math.cos(math.radians(params.color_crease_degrees)))) | ~defined
    keep &= ~color_cut
    return keep


def _pair(axis: int) -> tuple[Any, Any]:
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
    cos = np.where(both, _dot(before_n, after_n), 1.0)
    concave = both & (_dot(after_n - before_n, after_p - before_p) < 0)
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


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """...x3, ...x3 -> ... dot products (faster than a sum over a last axis of 3)."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty_like(a)
    out[..., 0] = a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1]
    out[..., 1] = a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2]
    out[..., 2] = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    return out


def _lab(image: np.ndarray) -> np.ndarray:
    """hxwx3 uint8 RGB -> hxwx3 float32 CIELAB after a 5x5 Gaussian blur (JPEG blocks and noise)."""
    import cv2

    blurred = cv2.GaussianBlur(image, (5, 5), 0)
    lab = cv2.cvtColor(blurred.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    return lab


def _work_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    if image.shape[:2] == shape:
        return np.ascontiguousarray(image)
    return cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def _color_segments(image: np.ndarray) -> np.ndarray:
    """No geometry: the colour-edge components of the older weight-free source (HxW int32)."""
    from moonseg3r_ros.core.masks import WeightFreeMasks

    return WeightFreeMasks().labels(image)

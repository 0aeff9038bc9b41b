"""RGB-D segment masks: a weight-free mask source that uses the frame's geometry (`masks.source` 'rgbd').

Per keyframe, on a working grid of at most `work_long_side` pixels (nearest-neighbour back to the frame):
1. normals of the camera pointmap (central differences, smoothed), facing the camera;
2. support planes: up to `max_planes` RANSAC planes (Open3D `segment_plane`) on a sample of the valid points,
   each kept when it holds at least `plane_min_fraction` of them; a pixel belongs to a plane when it lies within
   `plane_distance` (relative to the median depth) of it and its normal agrees within `plane_normal_degrees`;
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
Without geometry the frame's colour alone is segmented (scikit-image `felzenszwalb`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from moonseg3r_ros.core.masks import masks_from_labels, resize_nearest
from moonseg3r_ros.core.types import Frame, FrameGeometry, MaskSet


@dataclass
class RgbdSegmentParams:
    work_long_side: int = 320  # pixels of the working grid's long side
    depth_threshold: float = 0.03  # relative depth step that separates neighbours
    concave_degrees: float = 20.0  # crease angle that separates concave neighbours
    crease_step: int = 2  # pixels on either side of an edge whose normals measure the crease
    max_planes: int = 4
    plane_distance: float = 0.012  # inlier distance, relative to the median depth
    plane_normal_degrees: float = 25.0
    plane_min_fraction: float = 0.04  # of the valid sample points
    color_threshold: float = 30.0  # CIELAB distance that separates neighbours across a crease
    color_crease_degrees: float = 6.0
    seed: int = 0


class RgbdSegmentMasks:
    """Masks from planes, depth discontinuities, concave creases and colour; needs no weights."""

    def __init__(self, min_area: int = 100, max_masks: int = 100, params: Optional[RgbdSegmentParams] = None):
        self.min_area, self.max_masks = min_area, max_masks
        self.params = params or RgbdSegmentParams()

    def generate(self, frame: Frame, geometry: Optional[FrameGeometry] = None) -> MaskSet:
        labels = self.labels(frame.image, geometry)
        return masks_from_labels(labels, self.min_area, self.max_masks)

    def labels(self, image: np.ndarray, geometry: Optional[FrameGeometry] = None) -> np.ndarray:
        """HxWx3 uint8 (+ geometry) -> HxW int32 segment ids (0 = invalid or boundary pixel)."""
        height, width = image.shape[:2]
        step = max(1, math.ceil(max(height, width) / self.params.work_long_side))
        if geometry is None:
            return _color_segments(image, step)
        points = np.asarray(geometry.points_cam[::step, ::step], np.float32)
        valid = np.asarray(geometry.valid[::step, ::step], bool) & np.isfinite(points).all(axis=2) & (points[..., 2] > 0)
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
    planes = plane_ids(points, normals, normal_ok, valid, params)
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
    return labels


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
    n = np.cross(du, dv)
    n *= ok[..., None]
    norm = np.linalg.norm(n, axis=2, keepdims=True)
    n = n / np.maximum(norm, 1e-12)
    n = cv2.blur(n, (5, 5))
    norm = np.linalg.norm(n, axis=2, keepdims=True)
    ok &= norm[..., 0] > 0.3
    n = n / np.maximum(norm, 1e-12)
    flip = (n * p).sum(axis=2) > 0  # facing the camera: n . x < 0
    n[flip] *= -1
    return n.astype(np.float32), ok


def plane_ids(points: np.ndarray, normals: np.ndarray, normal_ok: np.ndarray, valid: np.ndarray,
              params: RgbdSegmentParams) -> np.ndarray:
    """-> hxw int16 plane index per pixel (-1 = on no plane); planes by RANSAC on a point sample."""
    import open3d as o3d

    h, w = valid.shape
    ids = np.full((h, w), -1, np.int16)
    usable = valid & normal_ok
    count = int(usable.sum())
    if count < 100 or params.max_planes <= 0:
        return ids
    stride = max(1, int(math.sqrt(count / 6000)))
    sample = points[::stride, ::stride][usable[::stride, ::stride]].astype(np.float64)
    scale = float(np.median(points[..., 2][valid]))
    threshold = params.plane_distance * scale
    cos_limit = math.cos(math.radians(params.plane_normal_degrees))
    flat = points.reshape(-1, 3)
    flat_n = normals.reshape(-1, 3)
    free = usable.reshape(-1).copy()
    remaining = sample
    for k in range(params.max_planes):
        if len(remaining) < max(50, params.plane_min_fraction * len(sample)):
            break
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(remaining))
        o3d.utility.random.seed(params.seed + k)
        model, inliers = cloud.segment_plane(threshold, 3, 200)
        if len(inliers) < params.plane_min_fraction * len(sample):
            break
        normal = np.asarray(model[:3], np.float64)
        norm = np.linalg.norm(normal)
        normal, offset = normal / norm, float(model[3]) / norm
        distance = np.abs(flat @ normal + offset)
        agree = np.abs(flat_n @ normal) >= cos_limit
        member = free & (distance < threshold) & agree
        ids.reshape(-1)[member] = k
        free &= ~member
        keep = np.ones(len(remaining), bool)
        keep[inliers] = False
        remaining = remaining[keep]
    return ids


def _edges(axis: int, depth: np.ndarray, valid: np.ndarray, normals: np.ndarray, normal_ok: np.ndarray,
           planes: np.ndarray, lab: np.ndarray, points: np.ndarray, params: RgbdSegmentParams) -> np.ndarray:
    """Kept edges between each pixel and its right (axis 1) or lower (axis 0) neighbour: h x (w-1) / (h-1) x w."""
    a, b = _pair(axis, 0)
    za, zb = depth[a], depth[b]
    keep = valid[a] & valid[b]
    keep &= np.abs(za - zb) <= params.depth_threshold * np.maximum(np.minimum(za, zb), 1e-6)
    keep &= planes[a] == planes[b]
    angle_cos, concave = _crease(axis, normals, normal_ok, points, params.crease_step)
    off_plane = (planes[a] < 0) & (planes[b] < 0)
    keep &= ~(off_plane & concave & (angle_cos < math.cos(math.radians(params.concave_degrees))))
    color_step = np.linalg.norm(lab[a] - lab[b], axis=2)
    color_cut = off_plane & (color_step > params.color_threshold) & concave
    color_cut &= angle_cos < math.cos(math.radians(params.color_crease_degrees))
    keep &= ~color_cut
    return keep


def _pair(axis: int, reach: int) -> tuple[tuple, tuple]:
    """Index pairs (pixel - reach, neighbour + reach) of the edges along `axis`, aligned to the edge grid."""
    if axis == 1:
        return (np.s_[:, :-1], np.s_[:, 1:]) if reach == 0 else (None, None)
    return (np.s_[:-1], np.s_[1:]) if reach == 0 else (None, None)


def _crease(axis: int, normals: np.ndarray, normal_ok: np.ndarray, points: np.ndarray, step: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Per edge: (cosine between the normals `step` pixels before and after it, concave?).

    Edges whose stencil leaves the grid or meets undefined normals read as flat (cosine 1, not concave)."""
    shift = step - 1
    n_pad = _shifted(normals, axis, shift)
    ok_pad = _shifted(normal_ok, axis, shift)
    p_pad = _shifted(points, axis, shift)
    before_n, after_n = n_pad
    before_ok, after_ok = ok_pad
    before_p, after_p = p_pad
    both = before_ok & after_ok
    cos = np.where(both, (before_n * after_n).sum(axis=2), 1.0)
    concave = both & (((after_n - before_n) * (after_p - before_p)).sum(axis=2) < 0)
    return cos, concave


def _shifted(array: np.ndarray, axis: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Values `shift` pixels before the edge's first pixel and after its second, on the edge grid (edge-padded)."""
    pad = [(0, 0)] * array.ndim
    pad[axis] = (shift, shift)
    padded = np.pad(array, pad, mode="edge") if shift else array
    length = array.shape[axis] - 1
    before = np.take(padded, np.arange(0, length), axis=axis)
    after = np.take(padded, np.arange(2 * shift + 1, 2 * shift + 1 + length), axis=axis)
    if shift:
        # the padded copies repeat border values: mark them as such via the caller's ok mask (edge-padded False)
        pass
    return before, after


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


def _color_segments(image: np.ndarray, step: int) -> np.ndarray:
    """No geometry: felzenszwalb segments of the colour image (working grid, nearest back to HxW)."""
    from skimage.segmentation import felzenszwalb

    height, width = image.shape[:2]
    small = _work_image(image, (math.ceil(height / step), math.ceil(width / step)))
    labels = felzenszwalb(small, scale=200, sigma=0.8, min_size=50).astype(np.int32) + 1
    return resize_nearest(labels, height, width) if step > 1 else labels

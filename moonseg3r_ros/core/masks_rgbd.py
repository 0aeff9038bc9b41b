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
from moonseg3r_ros.core.masks_rgbd_cuts import kept_edges, lab_image
from moonseg3r_ros.core.masks_rgbd_joins import absorb_fragments, join_support_parts, segment_contacts
from moonseg3r_ros.core.masks_rgbd_surfaces import camera_normals, plane_ids
from moonseg3r_ros.core.preload import preload
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
        preload("cv2", "open3d", "scipy.sparse.csgraph", "scipy.ndimage")

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
# the working-grid segmentation (its steps: masks_rgbd_surfaces, masks_rgbd_cuts, masks_rgbd_joins)


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
    lab = lab_image(image)
    index = np.arange(h * w).reshape(h, w)
    src, dst = [], []
    for axis in (1, 0):
        keep = kept_edges(axis, depth, valid, normals, normal_ok, planes, lab, points, params)
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
    return join_support_parts(labels, planes, behind, segment_contacts(labels, depth, valid, params), points, params)


def _work_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    if image.shape[:2] == shape:
        return np.ascontiguousarray(image)
    return cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def _color_segments(image: np.ndarray) -> np.ndarray:
    """No geometry: the colour-edge components of the older weight-free source (HxW int32)."""
    from moonseg3r_ros.core.masks import WeightFreeMasks

    return WeightFreeMasks().labels(image)

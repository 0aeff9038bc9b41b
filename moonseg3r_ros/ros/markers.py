"""RViz helpers: instance boxes + id labels (visualization_msgs/MarkerArray) and the debug mask overlay."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from moonseg3r_ros.core.instance_map import InstanceRecord
from moonseg3r_ros.core.map_cloud import instance_colors

BOX_NAMESPACE = "instance_boxes"
LABEL_NAMESPACE = "instance_labels"
# The 12 edges of a box as pairs of corner indices; corner k has bit 0/1/2 selecting max x/y/z.
BOX_EDGES = ((0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7))


def box_corners(bbox_min: Sequence[float], bbox_max: Sequence[float]) -> np.ndarray:
    """8x3 corners of an axis-aligned box (corner k takes max on axis i when bit i of k is set)."""
    lo, hi = np.asarray(bbox_min, dtype=np.float64), np.asarray(bbox_max, dtype=np.float64)
    return np.array([[hi[0] if k & 1 else lo[0], hi[1] if k & 2 else lo[1], hi[2] if k & 4 else lo[2]]
                     for k in range(8)])


def record_color(record: InstanceRecord) -> tuple[float, float, float]:
    r, g, b = (float(c) for c in list(record.color)[:3])
    return r, g, b


def instance_markers(records: Sequence[InstanceRecord], frame_id: str, stamp: Any, line_width: float = 0.01,
                     text_height: float = 0.1):
    """InstanceRecords -> MarkerArray: DELETEALL, then per instance a LINE_LIST box and a text label.

    Marker ids equal instance ids in both namespaces, so RViz keeps one box and one label per instance.
    """
    from geometry_msgs.msg import Point
    from visualization_msgs.msg import Marker, MarkerArray

    out = MarkerArray()
    clear = Marker()
    clear.header.frame_id = frame_id
    clear.header.stamp = stamp
    clear.action = Marker.DELETEALL
    out.markers.append(clear)
    for r in sorted(records, key=lambda r: int(r.id)):
        r_, g_, b_ = record_color(r)
        box = Marker()
        box.header.frame_id = frame_id
        box.header.stamp = stamp
        box.ns, box.id = BOX_NAMESPACE, int(r.id)
        box.type, box.action = Marker.LINE_LIST, Marker.ADD
        box.pose.orientation.w = 1.0
        box.scale.x = line_width
        box.color.r, box.color.g, box.color.b, box.color.a = r_, g_, b_, 1.0
        corners = box_corners(r.bbox_min, r.bbox_max)
        box.points = [Point(x=float(c[0]), y=float(c[1]), z=float(c[2]))
                      for edge in BOX_EDGES for c in (corners[edge[0]], corners[edge[1]])]
        out.markers.append(box)

        label = Marker()
        label.header.frame_id = frame_id
        label.header.stamp = stamp
        label.ns, label.id = LABEL_NAMESPACE, int(r.id)
        label.type, label.action = Marker.TEXT_VIEW_FACING, Marker.ADD
        label.pose.position.x = float((r.bbox_min[0] + r.bbox_max[0]) / 2)
        label.pose.position.y = float((r.bbox_min[1] + r.bbox_max[1]) / 2)
        label.pose.position.z = float(r.bbox_max[2]) + text_height
        label.pose.orientation.w = 1.0
        label.scale.z = text_height
        label.color.r, label.color.g, label.color.b, label.color.a = r_, g_, b_, 1.0
        label.text = f"{int(r.id)} ({float(r.confidence):.2f})"
        out.markers.append(label)
    return out


def mask_overlay(rgb: np.ndarray, ids_2d: np.ndarray, color_of: dict[int, Sequence[float]],
                 alpha: float = 0.5) -> np.ndarray:
    """Blend instance colours over the image where ids_2d > 0 (HxWx3 uint8 out)."""
    if ids_2d.shape != rgb.shape[:2]:
        raise ValueError(f"id image {ids_2d.shape} does not match the image {rgb.shape[:2]}")
    flat_ids = ids_2d.reshape(-1)
    colors = instance_colors(flat_ids, color_of).reshape(rgb.shape).astype(np.float32)
    out = rgb.astype(np.float32)
    mask = (ids_2d > 0)[..., None]
    out = np.where(mask, (1 - alpha) * out + alpha * colors, out)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)

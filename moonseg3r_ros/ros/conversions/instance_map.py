"""core InstanceRecords -> moonseg3r_msgs/InstanceMap."""
from __future__ import annotations

import array
from typing import Any, Sequence

import numpy as np

from moonseg3r_ros.core.instance_map import InstanceRecord
from moonseg3r_ros.ros.conversions.stamps import seconds_to_stamp


def instance_map_msg(records: Sequence[InstanceRecord], frame_id: str, stamp: Any, frame_index: int,
                     keyframe_count: int, point_count: int, cloud_topic: str):
    """InstanceRecords (see core/instance_map.py) -> moonseg3r_msgs/InstanceMap, ordered by id."""
    from moonseg3r_msgs.msg import InstanceMap

    msg = InstanceMap()
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = stamp
    msg.cloud_topic = cloud_topic
    msg.frame_index = max(int(frame_index), 0)
    msg.keyframe_count = max(int(keyframe_count), 0)
    msg.point_count = max(int(point_count), 0)
    msg.instances = [instance_msg(r) for r in sorted(records, key=lambda r: int(r.id))]
    return msg


def instance_msg(record: InstanceRecord):
    """One InstanceRecord -> moonseg3r_msgs/Instance (colour alpha 1; an empty descriptor stays empty)."""
    from moonseg3r_msgs.msg import Instance

    inst = Instance()
    inst.id = int(record.id)
    inst.confidence = float(record.confidence)
    inst.point_count = int(record.point_count)
    _set_point(inst.centroid, record.centroid)
    _set_point(inst.bbox_min, record.bbox_min)
    _set_point(inst.bbox_max, record.bbox_max)
    inst.color.r, inst.color.g, inst.color.b = (float(c) for c in list(record.color)[:3])
    inst.color.a = 1.0
    inst.first_seen = seconds_to_stamp(record.first_seen)
    inst.last_seen = seconds_to_stamp(record.last_seen)
    if len(record.descriptor):
        desc = array.array("f")
        desc.frombytes(np.ascontiguousarray(record.descriptor, dtype=np.float32).tobytes())
        inst.descriptor = desc
    return inst


def _set_point(point: Any, values: Sequence[float]) -> None:
    point.x, point.y, point.z = (float(v) for v in list(values)[:3])

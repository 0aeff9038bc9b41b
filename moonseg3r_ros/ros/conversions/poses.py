"""CameraInfo -> K, and Pose / PoseStamped / TransformStamped / [x y z qx qy qz qw] <-> 4x4 matrices.

Quaternions are (x, y, z, w) as ROS orders them; the rotation maths is core/rotations.py.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from moonseg3r_ros.core.rotations import matrix_to_quaternion, quaternion_to_matrix
from moonseg3r_ros.ros.conversions.common import ConversionError


def camera_info_to_k(msg: Any) -> np.ndarray:
    """sensor_msgs/CameraInfo -> 3x3 float64 K (validated: fx, fy > 0)."""
    k = np.asarray(list(msg.k), dtype=np.float64)
    if k.size != 9:
        raise ConversionError(f"camera_info.k must have 9 entries, got {k.size}")
    k = k.reshape(3, 3)
    if not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ConversionError(f"camera_info.k is not a valid pinhole matrix (fx={k[0, 0]}, fy={k[1, 1]})")
    return k


def _matrix(translation: Sequence[float], quaternion: Sequence[float]) -> np.ndarray:
    """Translation (3,) + quaternion (x, y, z, w) -> 4x4 float64; ConversionError for a bad quaternion."""
    t = np.eye(4)
    try:
        t[:3, :3] = quaternion_to_matrix(quaternion)
    except ValueError as err:
        raise ConversionError(str(err)) from None
    t[:3, 3] = translation
    return t


def pose_msg_to_matrix(msg: Any) -> np.ndarray:
    """geometry_msgs/PoseStamped or Pose -> 4x4 float64 (the pose of the child in the header frame)."""
    pose = getattr(msg, "pose", msg)  # PoseStamped and Pose both accepted
    p, o = pose.position, pose.orientation
    t = _matrix((p.x, p.y, p.z), (o.x, o.y, o.z, o.w))
    if not np.all(np.isfinite(t)):
        raise ConversionError("pose contains non-finite values")
    return t


def xyz_quat_to_matrix(values: Sequence[float]) -> np.ndarray:
    """[x, y, z, qx, qy, qz, qw] -> 4x4 float64."""
    if len(values) != 7:
        raise ConversionError(f"a transform needs 7 numbers [x, y, z, qx, qy, qz, qw], got {len(values)}")
    return _matrix(values[:3], values[3:7])


def matrix_to_pose_msg(t: np.ndarray):
    """4x4 -> geometry_msgs/Pose."""
    from geometry_msgs.msg import Pose

    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in t[:3, 3])
    q = matrix_to_quaternion(t[:3, :3])
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in q)
    return pose


def matrix_to_transform_msg(t: np.ndarray, parent: str, child: str, stamp: Any):
    """4x4 pose of `child` in `parent` -> geometry_msgs/TransformStamped."""
    from geometry_msgs.msg import TransformStamped

    msg = TransformStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = parent
    msg.child_frame_id = child
    tr = msg.transform.translation
    tr.x, tr.y, tr.z = (float(v) for v in t[:3, 3])
    q = matrix_to_quaternion(t[:3, :3])
    ro = msg.transform.rotation
    ro.x, ro.y, ro.z, ro.w = (float(v) for v in q)
    return msg


def transform_msg_to_matrix(msg: Any) -> np.ndarray:
    """geometry_msgs/TransformStamped or Transform -> 4x4."""
    tf = getattr(msg, "transform", msg)  # TransformStamped and Transform both accepted
    r, tr = tf.rotation, tf.translation
    return _matrix((tr.x, tr.y, tr.z), (r.x, r.y, r.z, r.w))


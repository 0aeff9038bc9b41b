"""The TF the node publishes for a camera pose (pure functions of the frame names and the mounting).

Chains (REP 105):
    frames.base empty          map -> camera                     (the pose itself)
    frames.base, no odom       map -> base, base -> camera       (base -> camera is static: camera_to_base)
    frames.base and frames.odom map -> odom (identity), odom -> base, base -> camera
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from moonseg3r_ros.ros import conversions as conv
from moonseg3r_ros.ros.node_config import FramesConfig


def pose_transforms(pose_c2w: np.ndarray, frames: FramesConfig, camera_to_base: Sequence[float],
                    stamp: Any) -> list:
    """4x4 camera-to-map pose -> the TransformStamped list of the per-frame chain, stamped `stamp`."""
    if not frames.base:
        return [conv.matrix_to_transform_msg(pose_c2w, frames.map, frames.camera, stamp)]
    map_to_base = pose_c2w @ np.linalg.inv(conv.xyz_quat_to_matrix(camera_to_base))
    if frames.odom:
        return [conv.matrix_to_transform_msg(np.eye(4), frames.map, frames.odom, stamp),
                conv.matrix_to_transform_msg(map_to_base, frames.odom, frames.base, stamp)]
    return [conv.matrix_to_transform_msg(map_to_base, frames.map, frames.base, stamp)]


def static_transforms(frames: FramesConfig, camera_to_base: Sequence[float], stamp: Any) -> list:
    """The static base -> camera TransformStamped (empty without frames.base)."""
    if not frames.base:
        return []
    return [conv.matrix_to_transform_msg(conv.xyz_quat_to_matrix(camera_to_base), frames.base, frames.camera, stamp)]


def tf_message_type():
    """tf2_msgs/TFMessage (imported when first needed)."""
    from tf2_msgs.msg import TFMessage

    return TFMessage


def tf_message(transforms: list):
    """TransformStamped list -> tf2_msgs/TFMessage."""
    return tf_message_type()(transforms=transforms)

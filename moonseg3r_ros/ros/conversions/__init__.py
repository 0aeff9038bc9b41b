"""Conversions between ROS messages and numpy (our own cv_bridge replacement; no ROS 1 code).

One module per concept; this package re-exports them so callers write `conversions.stamp_to_ns`:
    common        ConversionError, message byte data <-> buffers
    stamps        builtin_interfaces/Time <-> integer nanoseconds / float seconds
    images        Image / CompressedImage -> RGB, depth (metres), instance ids; arrays -> Image / CompressedImage
    poses         CameraInfo -> K; Pose / PoseStamped / TransformStamped / [x y z qx qy qz qw] <-> 4x4
    cloud         PointCloud2 (x y z rgb instance_id) pack / read
    instance_map  InstanceRecords -> moonseg3r_msgs/InstanceMap

The readers take any message-like object with the standard fields (a real `sensor_msgs/Image`, or a
`types.SimpleNamespace` in tests), so they are testable without the middleware. The builders import the
message classes lazily.

Errors: every reader raises `ConversionError` (a ValueError) with a message that names the problem
(unsupported encoding, zero size, data length not matching step * height, ...). The node logs and counts
these; it never crashes on bad input.

Frames and units follow REP 103: optical frames (x right, y down, z forward), metres, float seconds in
the core and `builtin_interfaces/Time` (sec, nanosec) on the wire; stamps are carried as integer
nanoseconds in between so that pairing by stamp is exact.
"""
from moonseg3r_ros.core.image_buffers import IMAGE_ENCODINGS
from moonseg3r_ros.ros.conversions.cloud import (CLOUD_DTYPE, CLOUD_FIELDS, CLOUD_POINT_STEP, FLOAT32,
                                                 POINTFIELD_DTYPES, UINT32, make_cloud_msg, pack_cloud_bytes,
                                                 pack_rgb, read_cloud, unpack_rgb)
from moonseg3r_ros.ros.conversions.common import ConversionError
from moonseg3r_ros.ros.conversions.images import (COLOR_ENCODINGS, DEPTH_ENCODINGS, INSTANCE_ID_ENCODINGS,
                                                  array_to_image_msg, compressed_msg_to_rgb, depth_msg_to_metres,
                                                  image_msg_to_array, image_msg_to_rgb, instance_ids_msg_to_array,
                                                  pixels_to_rgb, rgb_to_compressed_msg)
from moonseg3r_ros.ros.conversions.instance_map import instance_map_msg
from moonseg3r_ros.ros.conversions.poses import (camera_info_to_k, matrix_to_pose_msg, matrix_to_transform_msg,
                                                 pose_msg_to_matrix, transform_msg_to_matrix, xyz_quat_to_matrix)
from moonseg3r_ros.ros.conversions.stamps import ns_to_seconds, ns_to_stamp, seconds_to_stamp, stamp_to_ns

__all__ = [
    "ConversionError",
    "ns_to_seconds", "ns_to_stamp", "seconds_to_stamp", "stamp_to_ns",
    "IMAGE_ENCODINGS", "COLOR_ENCODINGS", "DEPTH_ENCODINGS", "INSTANCE_ID_ENCODINGS", "array_to_image_msg",
    "compressed_msg_to_rgb", "depth_msg_to_metres", "image_msg_to_array", "image_msg_to_rgb",
    "instance_ids_msg_to_array", "pixels_to_rgb", "rgb_to_compressed_msg",
    "camera_info_to_k", "matrix_to_pose_msg", "matrix_to_transform_msg", "pose_msg_to_matrix",
    "transform_msg_to_matrix", "xyz_quat_to_matrix",
    "CLOUD_DTYPE", "CLOUD_FIELDS", "CLOUD_POINT_STEP", "FLOAT32", "POINTFIELD_DTYPES", "UINT32", "make_cloud_msg",
    "pack_cloud_bytes", "pack_rgb", "read_cloud", "unpack_rgb",
    "instance_map_msg",
]

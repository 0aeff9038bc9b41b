"""Publishing core `Frame`s as the node's inputs, the way a camera driver or `moonseg3r to-bag` does.

One implementation for the tests, `moonseg3r replay` / `demo` and `moonseg3r bench node`: side inputs
first (camera_info, depth, pose, instance ids; all stamped like the image), then the image.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from moonseg3r_ros.ros import conversions as conv

OPTICAL_FRAME = "camera_optical"
# Input streams and the topics `moonseg3r to-bag` writes (relative: under the publisher's namespace).
CAMERA_TOPICS = {
    "image": "camera/image_raw",
    "camera_info": "camera/camera_info",
    "depth": "camera/depth/image_raw",
    "pose": "camera/pose",
    "instance_ids": "camera/instance_ids",
}
RECORDED_STREAMS = ("camera_info", "depth", "pose")


class MissingInput(ValueError):
    """A frame lacks data that one of the publisher's streams needs (e.g. depth for recorded geometry)."""


def camera_info_msg(K: np.ndarray, height: int, width: int, stamp):
    """sensor_msgs/CameraInfo for a pinhole camera without distortion (K 3x3)."""
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo()
    msg.header.stamp, msg.header.frame_id = stamp, OPTICAL_FRAME
    msg.height, msg.width = int(height), int(width)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    K = np.asarray(K, np.float64).reshape(3, 3)
    msg.k = [float(v) for v in K.reshape(-1)]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [float(K[0, 0]), 0.0, float(K[0, 2]), 0.0, 0.0, float(K[1, 1]), float(K[1, 2]), 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def pose_stamped_msg(pose_c2w: np.ndarray, stamp, frame_id: str = "map"):
    """geometry_msgs/PoseStamped of a 4x4 camera-to-map pose."""
    from geometry_msgs.msg import PoseStamped

    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.pose = conv.matrix_to_pose_msg(np.asarray(pose_c2w, np.float64))
    return msg


def depth_msg(depth: np.ndarray, stamp):
    """32FC1 depth image in metres (HxW)."""
    return conv.array_to_image_msg(np.asarray(depth, np.float32), "32FC1", stamp, OPTICAL_FRAME)


def instance_ids_msg(ids: np.ndarray, stamp):
    """32SC1 ground-truth instance-id image (HxW)."""
    return conv.array_to_image_msg(np.asarray(ids, np.int32), "32SC1", stamp, OPTICAL_FRAME)


def image_msg(rgb: np.ndarray, stamp, encoding: str = "rgb8"):
    """Image of an HxWx3 uint8 RGB array as rgb8 or bgr8."""
    pixels = rgb if encoding == "rgb8" else np.ascontiguousarray(np.asarray(rgb)[..., ::-1])
    return conv.array_to_image_msg(pixels, encoding, stamp, OPTICAL_FRAME)


def streams_for(recorded: bool, ground_truth: bool) -> list[str]:
    """The input streams a node needs: image, plus recorded geometry's and ground-truth masks' inputs."""
    return ["image"] + (list(RECORDED_STREAMS) if recorded else []) + (["instance_ids"] if ground_truth else [])


class FramePublisher:
    """Publishers for the node's input streams on one rclpy node (reliable, KEEP_LAST `depth`)."""

    def __init__(self, node, streams: list[str], topics: Optional[dict[str, str]] = None, depth: int = 100,
                 map_frame: str = "map"):
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        self.node = node
        self.map_frame = map_frame
        self.topics = {**CAMERA_TOPICS, **(topics or {})}
        self._qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                               durability=DurabilityPolicy.VOLATILE)
        types = {"image": Image, "camera_info": CameraInfo, "depth": Image, "pose": PoseStamped,
                 "instance_ids": Image}
        self.pubs: dict[str, Any] = {}
        for stream in streams:
            self.add(stream, types[stream], self.topics[stream])

    def add(self, key: str, msg_type, topic: str):
        """Another publisher (e.g. 'compressed' for CompressedImage); returns it."""
        if key not in self.pubs:
            self.pubs[key] = self.node.create_publisher(msg_type, topic, self._qos)
        return self.pubs[key]

    def __getitem__(self, key: str):
        return self.pubs[key]

    def subscribed(self, count: int = 1) -> bool:
        """True when every stream has at least `count` subscribers."""
        return all(pub.get_subscription_count() >= count for pub in self.pubs.values())

    def unsubscribed(self) -> list[str]:
        return [key for key, pub in self.pubs.items() if pub.get_subscription_count() == 0]

    def publish(self, frame, stamp=None, encoding: str = "rgb8", image=None, image_key: str = "image") -> None:
        """Publish a core `Frame` at `stamp` (default: the frame's own): side inputs first, then the image
        (`image`: a prepared image message, e.g. a CompressedImage on `image_key`). MissingInput when the
        frame lacks what a stream needs."""
        stamp = stamp if stamp is not None else conv.seconds_to_stamp(float(frame.stamp))
        if "camera_info" in self.pubs or "depth" in self.pubs or "pose" in self.pubs:
            if frame.depth is None or frame.intrinsics is None or frame.pose_c2w is None:
                raise MissingInput(f"frame {frame.frame_index} has no depth/intrinsics/pose, which recorded "
                                   "geometry needs (use --geometry cut3r)")
        if "camera_info" in self.pubs:
            self.pubs["camera_info"].publish(camera_info_msg(frame.intrinsics, frame.height, frame.width, stamp))
        if "depth" in self.pubs:
            self.pubs["depth"].publish(depth_msg(frame.depth, stamp))
        if "pose" in self.pubs:
            self.pubs["pose"].publish(pose_stamped_msg(frame.pose_c2w, stamp, self.map_frame))
        if "instance_ids" in self.pubs:
            if frame.instance_ids is None:
                raise MissingInput(f"frame {frame.frame_index} has no instance ids, which ground-truth masks need")
            self.pubs["instance_ids"].publish(instance_ids_msg(frame.instance_ids, stamp))
        self.pubs[image_key].publish(image if image is not None else image_msg(frame.image, stamp, encoding))

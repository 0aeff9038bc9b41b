"""Sequences <-> ROS 2 bags (rosbag2, sqlite3 or mcap storage) with the `rosbags` library (no rclpy).

Topics written by `write_bag` (all headers stamped with the frame's stamp, frame_id camera_optical_frame):
    /camera/image_raw        sensor_msgs/msg/Image, rgb8
    /camera/camera_info      sensor_msgs/msg/CameraInfo (K, P = [K|0], plumb_bob with zero distortion)
    /camera/depth/image_raw  sensor_msgs/msg/Image, 32FC1 metres            (depth=True and frame has depth)
    /camera/instance_ids     sensor_msgs/msg/Image, 16UC1 instance ids      (gt=True and frame has ids)
    /camera/pose             geometry_msgs/msg/PoseStamped, frame_id map    (frame has a pose)
    /tf                      tf2_msgs/msg/TFMessage map -> camera_optical_frame (frame has a pose)
The bag record time of every message is its header stamp. Messages are serialised with the
ROS 2 Kilted typestore (the distribution of our ROS wheels; the message definitions match Jazzy).

`read_bag(path)` yields `Frame`s: one per image on /camera/image_raw, paired by header stamp with the
camera info, depth, instance ids and pose (PoseStamped, else /tf) of the same stamp.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from moonseg3r_ros.core.geometry import depth_to_metres
from moonseg3r_ros.core.image_buffers import decode_image_buffer
from moonseg3r_ros.core.images import ImageError, to_rgb8
from moonseg3r_ros.core.rotations import matrix_to_quaternion, quaternion_to_matrix
from moonseg3r_ros.core.types import Frame

log = logging.getLogger(__name__)

IMAGE_TOPIC = "/camera/image_raw"
INFO_TOPIC = "/camera/camera_info"
DEPTH_TOPIC = "/camera/depth/image_raw"
IDS_TOPIC = "/camera/instance_ids"
POSE_TOPIC = "/camera/pose"
TF_TOPIC = "/tf"
CAMERA_FRAME = "camera_optical_frame"
WORLD_FRAME = "map"
PAIRING_WINDOW_NS = 500_000_000  # side messages may arrive up to 0.5 s after their image


class BagError(RuntimeError):
    """A bag that is missing, corrupt, or lacks the topics needed."""


def typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def stamp_to_sec_nsec(stamp: float) -> tuple[int, int]:
    """Float seconds -> (sec, nanosec) with 0 <= nanosec < 1e9 (rounded to the nearest ns)."""
    if not math.isfinite(stamp) or stamp < 0:
        raise BagError(f"stamp must be a finite non-negative number of seconds, got {stamp}")
    sec = math.floor(stamp)
    nsec = int(round((stamp - sec) * 1e9))  # stamp - sec is exact in floating point
    return (sec + 1, 0) if nsec >= 1_000_000_000 else (sec, nsec)


# ----------------------------------------------------------------------------------------------------
# Writing


class _MessageFactory:
    """Builds rosbags message objects for one typestore."""

    def __init__(self, store):
        self.t = store.types

    def header(self, stamp: float, frame_id: str):
        sec, nsec = stamp_to_sec_nsec(stamp)
        return self.t["std_msgs/msg/Header"](stamp=self.t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                            frame_id=frame_id)

    def image(self, stamp: float, array: np.ndarray, encoding: str):
        """HxW or HxWxC contiguous array -> sensor_msgs/Image (little-endian, step = row bytes)."""
        array = np.ascontiguousarray(array)
        height, width = array.shape[:2]
        return self.t["sensor_msgs/msg/Image"](
            header=self.header(stamp, CAMERA_FRAME), height=height, width=width, encoding=encoding,
            is_bigendian=0, step=int(array.strides[0]), data=array.view(np.uint8).reshape(-1))

    def camera_info(self, stamp: float, K: np.ndarray, height: int, width: int):
        P = np.zeros((3, 4))
        P[:, :3] = K
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                         do_rectify=False)
        return self.t["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp, CAMERA_FRAME), height=height, width=width, distortion_model="plumb_bob",
            d=np.zeros(5), k=np.asarray(K, np.float64).reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1),
            binning_x=0, binning_y=0, roi=roi)

    def _quaternion(self, rotation: np.ndarray):
        x, y, z, w = matrix_to_quaternion(rotation)
        return self.t["geometry_msgs/msg/Quaternion"](x=float(x), y=float(y), z=float(z), w=float(w))

    def pose_stamped(self, stamp: float, pose: np.ndarray):
        p = self.t["geometry_msgs/msg/Point"](x=float(pose[0, 3]), y=float(pose[1, 3]), z=float(pose[2, 3]))
        return self.t["geometry_msgs/msg/PoseStamped"](
            header=self.header(stamp, WORLD_FRAME),
            pose=self.t["geometry_msgs/msg/Pose"](position=p, orientation=self._quaternion(pose[:3, :3])))

    def tf(self, stamp: float, pose: np.ndarray):
        v = self.t["geometry_msgs/msg/Vector3"](x=float(pose[0, 3]), y=float(pose[1, 3]), z=float(pose[2, 3]))
        transform = self.t["geometry_msgs/msg/Transform"](translation=v, rotation=self._quaternion(pose[:3, :3]))
        stamped = self.t["geometry_msgs/msg/TransformStamped"](
            header=self.header(stamp, WORLD_FRAME), child_frame_id=CAMERA_FRAME, transform=transform)
        return self.t["tf2_msgs/msg/TFMessage"](transforms=[stamped])


TOPIC_TYPES = {
    IMAGE_TOPIC: "sensor_msgs/msg/Image", INFO_TOPIC: "sensor_msgs/msg/CameraInfo",
    DEPTH_TOPIC: "sensor_msgs/msg/Image", IDS_TOPIC: "sensor_msgs/msg/Image",
    POSE_TOPIC: "geometry_msgs/msg/PoseStamped", TF_TOPIC: "tf2_msgs/msg/TFMessage",
}


def frame_messages(make: _MessageFactory, frame: Frame, depth: bool, gt: bool) -> list[tuple[str, object]]:
    """[(topic, message)] for one frame."""
    if frame.image.ndim != 3 or frame.image.shape[2] != 3 or frame.image.dtype != np.uint8:
        raise BagError(f"frame {frame.frame_index}: image must be HxWx3 uint8 RGB, got "
                       f"{frame.image.shape} {frame.image.dtype}")
    h, w = frame.image.shape[:2]
    out = [(IMAGE_TOPIC, make.image(frame.stamp, frame.image, "rgb8"))]
    if frame.intrinsics is not None:
        out.append((INFO_TOPIC, make.camera_info(frame.stamp, frame.intrinsics, h, w)))
    if depth and frame.depth is not None:
        out.append((DEPTH_TOPIC, make.image(frame.stamp, frame.depth.astype(np.float32), "32FC1")))
    if gt and frame.instance_ids is not None:
        ids = frame.instance_ids
        if ids.min(initial=0) < 0 or ids.max(initial=0) > 65535:
            raise BagError(f"frame {frame.frame_index}: instance ids must fit in 16 bits for 16UC1")
        out.append((IDS_TOPIC, make.image(frame.stamp, ids.astype(np.uint16), "16UC1")))
    if frame.pose_c2w is not None:
        out.append((POSE_TOPIC, make.pose_stamped(frame.stamp, frame.pose_c2w)))
        out.append((TF_TOPIC, make.tf(frame.stamp, frame.pose_c2w)))
    return out


def write_bag(frames: Iterable[Frame], out, storage: str = "sqlite3", depth: bool = True, gt: bool = True,
              progress: bool = False, total: Optional[int] = None) -> Path:
    """Write `frames` to a new rosbag2 folder `out` (must not exist); returns its path."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugins = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
    if storage not in plugins:
        raise BagError(f"storage must be one of {sorted(plugins)}, got {storage!r}")
    out = Path(out)
    if out.exists():
        raise BagError(f"output bag already exists: {out}")
    store = typestore()
    make = _MessageFactory(store)
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, total=total, desc=f"writing {out.name}", unit="frame")
    with Writer(out, version=9, storage_plugin=plugins[storage]) as writer:
        connections: dict[str, object] = {}
        for frame in frames:
            sec, nsec = stamp_to_sec_nsec(frame.stamp)
            for topic, msg in frame_messages(make, frame, depth, gt):
                if topic not in connections:
                    connections[topic] = writer.add_connection(topic, TOPIC_TYPES[topic], typestore=store)
                writer.write(connections[topic], sec * 1_000_000_000 + nsec,
                             store.serialize_cdr(msg, TOPIC_TYPES[topic]))
    return out


# ----------------------------------------------------------------------------------------------------
# Reading


def image_to_array(msg) -> np.ndarray:
    """sensor_msgs/Image -> the encoding's array (image_buffers.decode_image_buffer): HxWxC uint8, HxW float32 (32FC1),
    HxW uint16 (16UC1/mono16), HxW int32 (32SC1) or HxW uint8 (mono8/8UC1)."""
    try:
        return decode_image_buffer(np.asarray(msg.data, np.uint8), int(msg.height), int(msg.width), int(msg.step),
                                   str(msg.encoding), bool(msg.is_bigendian))
    except ImageError as err:
        raise BagError(str(err)) from None


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image of a colour or mono encoding -> HxWx3 uint8 RGB (images.to_rgb8)."""
    try:
        return to_rgb8(image_to_array(msg), msg.encoding)
    except ImageError as err:
        raise BagError(str(err)) from None


def pose_from_msg(position, orientation) -> np.ndarray:
    """geometry_msgs Point/Vector3 + Quaternion -> 4x4 float64 pose (rotations.quaternion_to_matrix)."""
    pose = np.eye(4)
    pose[:3, :3] = quaternion_to_matrix([orientation.x, orientation.y, orientation.z, orientation.w])
    pose[:3, 3] = [position.x, position.y, position.z]
    return pose


@dataclass
class _Pending:
    image: Optional[np.ndarray] = None
    extras: dict = field(default_factory=dict)


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _open_reader(path: Path):
    from rosbags.rosbag2 import Reader

    if not path.exists():
        raise BagError(f"bag not found: {path}")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as e:  # rosbags raises several types for corrupt metadata / storage
        raise BagError(f"cannot open bag {path}: {e}") from e
    return reader


def _decode(topic: str, msg) -> tuple[int, str, object]:
    """-> (stamp ns, key, value) for pairing."""
    if topic == TF_TOPIC:
        for t in msg.transforms:
            if t.child_frame_id == CAMERA_FRAME:
                return _stamp_ns(t.header), "tf_pose", pose_from_msg(t.transform.translation, t.transform.rotation)
        return -1, "", None
    stamp = _stamp_ns(msg.header)
    if topic == IMAGE_TOPIC:
        return stamp, "image", image_to_rgb(msg)
    if topic == INFO_TOPIC:
        return stamp, "intrinsics", np.asarray(msg.k, np.float64).reshape(3, 3).copy()
    if topic == DEPTH_TOPIC:
        depth = image_to_array(msg)  # 32FC1 metres or 16UC1 millimetres
        return stamp, "depth", depth_to_metres(depth, *depth.shape)
    if topic == IDS_TOPIC:
        return stamp, "instance_ids", image_to_array(msg).astype(np.int32)
    return stamp, "pose", pose_from_msg(msg.pose.position, msg.pose.orientation)


def _to_frame(stamp_ns: int, pending: _Pending, index: int) -> Frame:
    e = pending.extras
    pose = e.get("pose", e.get("tf_pose"))
    return Frame(image=pending.image, stamp=stamp_ns / 1e9, depth=e.get("depth"), intrinsics=e.get("intrinsics"),
                 pose_c2w=pose, instance_ids=e.get("instance_ids"), frame_index=index)


class _Pairing:
    """Messages waiting for their stamp to complete; emits the completed stamps as numbered Frames."""

    def __init__(self) -> None:
        self.pending: dict[int, _Pending] = {}
        self.index = 0  # frame_index of the next emitted Frame
        self.dropped = 0  # stamps emitted without an image

    def add(self, stamp: int, key: str, value) -> None:
        entry = self.pending.setdefault(stamp, _Pending())
        if key == "image":
            entry.image = value
        else:
            entry.extras[key] = value

    def emit(self, stamps: Iterable[int]) -> Iterator[Frame]:
        """Remove `stamps` from pending in stamp order; yield a Frame for each one with an image."""
        for stamp in sorted(stamps):
            done = self.pending.pop(stamp)
            if done.image is None:
                self.dropped += 1
                continue
            yield _to_frame(stamp, done, self.index)
            self.index += 1


def read_bag(path) -> Iterator[Frame]:
    """Yield Frames from a rosbag2 folder (or its .db3/.mcap file), pairing topics by header stamp.

    Raises BagError when the bag is missing, corrupt or has no /camera/image_raw. Side messages without
    an image of the same stamp are dropped (counted in a warning).
    """
    path = Path(path)
    if path.is_file() and path.suffix in (".db3", ".mcap"):
        path = path.parent
    reader = _open_reader(path)
    store = typestore()
    try:
        connections = [c for c in reader.connections if c.topic in TOPIC_TYPES]
        if not any(c.topic == IMAGE_TOPIC for c in connections):
            raise BagError(f"{path}: no {IMAGE_TOPIC} topic (topics: {sorted(c.topic for c in reader.connections)})")
        pairing = _Pairing()
        try:
            for conn, _t, raw in reader.messages(connections=connections):
                msg = store.deserialize_cdr(raw, conn.msgtype)
                stamp, key, value = _decode(conn.topic, msg)
                if value is None:
                    continue
                pairing.add(stamp, key, value)
                yield from pairing.emit(s for s in pairing.pending if s < stamp - PAIRING_WINDOW_NS)
        except BagError:
            raise
        except Exception as e:
            raise BagError(f"corrupt bag {path}: {e}") from e
        yield from pairing.emit(pairing.pending)
        if pairing.dropped:
            log.warning("%s: dropped %d stamp(s) with side messages but no image", path, pairing.dropped)
    finally:
        reader.close()

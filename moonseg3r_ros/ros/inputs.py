"""The node's inputs: subscriptions, message conversion, pairing by stamp, the CameraInfo K cache.

Subscription callbacks only convert and hand frames on: an image (paired with depth, pose and ids by
exact stamp when the configuration needs them) becomes a `FrameInput` in the worker's queue. Bad messages
are counted and logged (throttled per kind of problem), never raised. `InputsMixin` is part of
MoonSeg3RNode (node.py) and uses its config, queue, pairing, counters and `_active`.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from moonseg3r_ros.core.config import PipelineConfig
from moonseg3r_ros.ros import conversions as conv

INPUT_STREAMS = 5  # image, depth, camera_info, pose, instance_ids


@dataclass
class FrameInput:
    """One image (plus its paired side inputs) on its way to the worker."""

    stamp: Time
    stamp_ns: int
    rgb: np.ndarray
    received: float  # time.monotonic() when the image callback ran
    depth: Optional[np.ndarray] = None
    intrinsics: Optional[np.ndarray] = None
    pose_c2w: Optional[np.ndarray] = None
    instance_ids: Optional[np.ndarray] = None
    frame_id: str = ""  # the image header's frame (the camera frame unless frames.camera names one)
    accounted: bool = False  # set once the image ended in frames_processed or an images_dropped.* counter


def input_qos(reliability: str, depth: int = 5) -> QoSProfile:
    """Sensor-data QoS (keep last `depth`, volatile) with the configured reliability."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, durability=DurabilityPolicy.VOLATILE,
                      reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable"
                      else ReliabilityPolicy.BEST_EFFORT)


def side_inputs(config: PipelineConfig) -> list[str]:
    """The streams paired with each image: depth + pose for recorded geometry, ids for ground-truth masks."""
    needs = []
    if config.geometry.source == "recorded":
        needs += ["depth", "pose"]
    if config.masks.source == "ground_truth":
        needs.append("instance_ids")
    return needs


class IntrinsicsCache:
    """K by stamp for the last `capacity` CameraInfo messages, and the latest K (thread-safe); frames paired
    before the first CameraInfo came wait here (a camera driver's image and camera_info arrive in either order)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_stamp: "collections.OrderedDict[int, np.ndarray]" = collections.OrderedDict()
        self._latest: Optional[np.ndarray] = None
        self._waiting: "collections.deque[Any]" = collections.deque()

    def add(self, stamp_ns: int, k: np.ndarray, capacity: int) -> list:
        """Store K; returns the frames that waited for a first K (oldest first), now to be processed."""
        with self._lock:
            self._by_stamp[stamp_ns] = k
            while len(self._by_stamp) > max(capacity, 1):
                self._by_stamp.popitem(last=False)
            self._latest = k
            waiting, self._waiting = list(self._waiting), collections.deque()
            return waiting

    def get(self, stamp_ns: int) -> Optional[np.ndarray]:
        """3x3 K sent with this stamp (image_transport camera publishers stamp it like the image), else the latest."""
        with self._lock:
            return self._by_stamp.get(stamp_ns, self._latest)

    def get_or_hold(self, stamp_ns: int, frame: Any, capacity: int) -> tuple[Optional[np.ndarray], Optional[Any]]:
        """(K, None) when a K is known; else (None, evicted): the frame waits for the first K and `evicted` is
        the oldest waiting frame when more than `capacity` wait (None otherwise)."""
        with self._lock:
            k = self._by_stamp.get(stamp_ns, self._latest)
            if k is not None:
                return k, None
            self._waiting.append(frame)
            return None, self._waiting.popleft() if len(self._waiting) > max(capacity, 1) else None

    def take_waiting(self) -> list:
        """The frames still waiting (the node stops): the caller drops them."""
        with self._lock:
            waiting, self._waiting = list(self._waiting), collections.deque()
            return waiting


def pairing_capacity(config) -> int:
    """Stamps the pairing keeps waiting: sync.buffer_size, and at least input_depth, so that a burst whose
    images still wait in their subscription's history does not evict side inputs that arrived ahead of them."""
    return max(config.sync.buffer_size, config.input_depth)


class InputsMixin:
    """Subscriptions and input callbacks of MoonSeg3RNode.

    Every received image ends in exactly one counter: `frames_processed` or one `images_dropped.<reason>`
    (`_drop_image`); images still queued or waiting for their side inputs are `images_pending`.
    """

    def _drop_image(self, reason: str, frame: Optional[FrameInput] = None) -> None:
        """Count one received image that will not be processed (once per image)."""
        if frame is not None:
            if frame.accounted:
                return
            frame.accounted = True
        self._count("images_dropped", 1)
        self._count(f"images_dropped.{reason}", 1)

    def _on_pairing_drop(self, stream: str, value: Any) -> None:
        """StampPairing's callback: an image dropped unpaired (its side inputs never came, or came too late)."""
        if stream == "image":
            self._drop_image("unpaired", value)

    def _seen(self, stream: str) -> None:
        self._input_seen[stream] = time.monotonic()

    def _log_subscriptions(self, subs: list) -> None:
        names = ", ".join(f"'{sub.topic_name}' ({sub.msg_type.__name__})" for sub in subs)
        self.get_logger().info(f"subscribed to {len(subs)} inputs: {names}")

    def _create_subscriptions(self) -> list:
        cfg, topics = self.config, self.config.topics
        qos = input_qos(cfg.input_reliability, cfg.input_depth)
        # One mutually exclusive group per input stream: streams never wait for one another (a starved
        # stream would lose messages and fail pairing), and each stream's callbacks stay in order.
        self._input_groups = [MutuallyExclusiveCallbackGroup() for _ in range(INPUT_STREAMS)]
        group = self._input_groups[0]
        subs: dict[str, Any] = {}
        if cfg.image_transport == "compressed":
            # Like image_transport: remap the base topic, then append the transport's suffix.
            base = self.resolve_topic_name(topics.image)
            subs["image"] = self.create_subscription(CompressedImage, f"{base}/compressed",
                                                     self._on_compressed_image, qos, callback_group=group)
        else:
            subs["image"] = self.create_subscription(Image, topics.image, self._on_image, qos, callback_group=group)
        needs = self._side_inputs()
        if self._pairing is not None:
            self._pairing.capacity = pairing_capacity(cfg)
        if self._queue is not None:  # queue settings may have changed while inactive
            self._queue.capacity, self._queue.drop_policy = cfg.queue_size, cfg.drop_policy
        if "depth" in needs:
            subs["depth"] = self.create_subscription(Image, topics.depth, self._on_depth, qos,
                                                     callback_group=self._input_groups[1])
            subs["camera_info"] = self.create_subscription(CameraInfo, topics.camera_info, self._on_camera_info,
                                                           qos, callback_group=self._input_groups[2])
        if "pose" in needs:  # not in localization mode: the pose comes from TF there
            subs["pose"] = self.create_subscription(PoseStamped, topics.pose, self._on_pose, qos,
                                                    callback_group=self._input_groups[3])
        if "instance_ids" in needs:
            subs["instance_ids"] = self.create_subscription(Image, topics.instance_ids, self._on_instance_ids, qos,
                                                            callback_group=self._input_groups[4])
        self._input_seen.clear()
        self._input_topics = {stream: sub.topic_name for stream, sub in subs.items()}
        subscriptions = list(subs.values())
        self._log_subscriptions(subscriptions)
        return subscriptions

    def _on_image(self, msg: Image) -> None:
        self._accept_image(msg.header.stamp, lambda: conv.image_msg_to_rgb(msg), msg.header.frame_id)

    def _on_compressed_image(self, msg: CompressedImage) -> None:
        self._accept_image(msg.header.stamp,
                           lambda: conv.compressed_msg_to_rgb(msg, self.pipeline_config.max_image_pixels),
                           msg.header.frame_id)

    def _accept_image(self, stamp: Time, convert: Callable[[], np.ndarray], frame_id: str = "") -> None:
        received = time.monotonic()
        self._count("images_received", 1)
        self._seen("image")
        if not self._active:
            self._drop_image("inactive")
            return
        try:
            rgb = convert()
        except conv.ConversionError as err:
            self._bad_input("image", err)
            self._drop_image("bad_image")
            return
        frame = FrameInput(stamp=stamp, stamp_ns=conv.stamp_to_ns(stamp), rgb=rgb, received=received,
                           frame_id=frame_id)
        if not self._stamp_follows(frame.stamp_ns):
            self._drop_image("stamp_order", frame)
            return
        if self._pairing is None:
            self._submit(frame)
        else:
            self._pair("image", frame.stamp_ns, frame)

    def _on_depth(self, msg: Image) -> None:
        self._side_input("depth", msg.header.stamp, lambda: conv.depth_msg_to_metres(msg))

    def _on_pose(self, msg: PoseStamped) -> None:
        if msg.header.frame_id and msg.header.frame_id != self.config.frames.map:
            self._bad_input("pose", conv.ConversionError(
                f"pose is in frame '{msg.header.frame_id}', expected '{self.config.frames.map}'"))
            return
        self._side_input("pose", msg.header.stamp, lambda: conv.pose_msg_to_matrix(msg))

    def _on_instance_ids(self, msg: Image) -> None:
        self._side_input("instance_ids", msg.header.stamp, lambda: conv.instance_ids_msg_to_array(msg))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._count("received.camera_info")
        self._seen("camera_info")
        try:
            k = conv.camera_info_to_k(msg)
        except conv.ConversionError as err:
            self._bad_input("camera_info", err)
            return
        for frame in self._intrinsics.add(conv.stamp_to_ns(msg.header.stamp), k, self.config.sync.buffer_size):
            frame.intrinsics = self._intrinsics.get(frame.stamp_ns)
            self._frame_complete(frame)

    def _side_input(self, stream: str, stamp: Time, convert: Callable[[], np.ndarray]) -> None:
        self._count(f"received.{stream}", 1)
        self._seen(stream)
        if not self._active or self._pairing is None:
            return
        try:
            value = convert()
        except conv.ConversionError as err:
            self._bad_input(stream, err)
            return
        self._pair(stream, conv.stamp_to_ns(stamp), value)

    def _pair(self, stream: str, stamp_ns: int, value: Any) -> None:
        entry = self._pairing.add(stream, stamp_ns, value)
        if entry is None:
            return
        frame: FrameInput = entry["image"]
        frame.depth = entry.get("depth")
        frame.pose_c2w = entry.get("pose")
        frame.instance_ids = entry.get("instance_ids")
        if "depth" in entry:
            frame.intrinsics, evicted = self._intrinsics.get_or_hold(frame.stamp_ns, frame,
                                                                     pairing_capacity(self.config))
            if frame.intrinsics is None:
                self.get_logger().warning(
                    f"waiting for the first camera_info on '{self.resolve_topic_name(self.config.topics.camera_info)}'"
                    " (paired frames are kept until it comes)", throttle_duration_sec=2.0)
                if evicted is not None:
                    self._drop_image("no_camera_info", evicted)
                return
        self._frame_complete(frame)

    def _frame_complete(self, frame: FrameInput) -> None:
        """A paired frame with its K (when depth is used): size checks, then to the worker."""
        shapes = {k: v.shape[:2] for k, v in (("depth", frame.depth), ("instance_ids", frame.instance_ids))
                  if v is not None}
        for name, shape in shapes.items():
            if shape != frame.rgb.shape[:2]:
                self._bad_input(name, conv.ConversionError(
                    f"{name} image is {shape[1]}x{shape[0]} but the camera image is "
                    f"{frame.rgb.shape[1]}x{frame.rgb.shape[0]}"))
                self._drop_image("side_input_size", frame)
                return
        self._submit(frame)

    def _stamp_follows(self, stamp_ns: int) -> bool:
        """False (counted, logged) when the stamp is not newer than the last frame handed to the worker."""
        last = self._last_stamp_ns
        if last is None or stamp_ns > last:
            return True
        self._count("stamps_not_increasing", 1)
        self.get_logger().warning(
            f"dropped a frame whose stamp {stamp_ns / 1e9:.6f} s does not follow the previous one "
            f"({last / 1e9:.6f} s); call ~/reset_map when a new sequence starts", throttle_duration_sec=2.0)
        return False

    def _submit(self, frame: FrameInput) -> None:
        with self._submit_lock:
            if not self._stamp_follows(frame.stamp_ns):
                self._drop_image("stamp_order", frame)
                return
            self._last_stamp_ns = frame.stamp_ns
            queue = self._queue
            if queue is None:
                self._drop_image("inactive", frame)
                return
            dropped = queue.put(frame)
            if dropped is not None:
                self._count("queue_drops", 1)
                self._drop_image("queue", dropped)

    def _bad_input(self, stream: str, err: Exception) -> None:
        self._count("bad_input", 1)
        self._count(f"bad_input.{stream}", 1)
        # Throttled per kind of problem (its first words), so that different problems are all reported.
        key = (stream, " ".join(str(err).split()[:3]))
        now = time.monotonic()
        if now - self._last_error_log.get(key, -1e9) >= 2.0:
            self._last_error_log[key] = now
            self.get_logger().error(f"dropped {stream} message: {err}")

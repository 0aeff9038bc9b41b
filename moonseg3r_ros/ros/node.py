"""The MoonSeg3R lifecycle node: camera images in; TF, a PointCloud2, an InstanceMap, markers out.

Lifecycle (REP 2005 / managed nodes):
    configure   read + validate parameters, build the pipeline (models); a bad value or a missing
                checkpoint logs a clear error and returns FAILURE (the node goes back to `unconfigured`).
                Creates the save_map / load_map / reset_map services and the worker thread (paused).
    activate    create publishers and subscriptions, start the worker.
    deactivate  remove subscriptions and publishers, finish the frame in progress, discard queued
                frames (counted); the map is kept.
    cleanup     stop the worker, free the pipeline (models, GPU memory), remove the services.
    shutdown    save the map when `map_save_path` is set, then clean up.

Threads: subscription callbacks (one mutually exclusive group) only convert messages and enqueue them;
the worker thread runs the pipeline and publishes the per-frame outputs; timers (cloud, diagnostics) and
services run in a second group of a MultiThreadedExecutor, so they never hold up the input callbacks.
The pipeline is touched under one lock. Every output carries the header stamp of the input image it
comes from.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from lifecycle_msgs.msg import State as StateMsg
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from moonseg3r_ros.core.config import PipelineConfig
from moonseg3r_ros.ros import conversions as conv
from moonseg3r_ros.ros import params
from moonseg3r_ros.ros.markers import instance_markers, mask_overlay
from moonseg3r_ros.ros.node_config import NodeConfig
from moonseg3r_ros.ros.worker import FrameQueue, FrameWorker, StampPairing

NODE_NAME = "moonseg3r"
DIAGNOSTIC_NAME = "moonseg3r: pipeline"
STATS_WINDOW_S = 5.0


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


def input_qos(reliability: str, depth: int = 5) -> QoSProfile:
    """Sensor-data QoS (keep last `depth`, volatile) with the configured reliability."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, durability=DurabilityPolicy.VOLATILE,
                      reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable"
                      else ReliabilityPolicy.BEST_EFFORT)


LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
TF_STATIC_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)


class MoonSeg3RNode(LifecycleNode):
    """rclpy LifecycleNode wrapping `MoonSeg3RPipeline` (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        params.declare_all(self)
        self.pipeline_config: PipelineConfig = PipelineConfig()
        self.config: NodeConfig = NodeConfig()
        try:
            self.pipeline_config, self.config = params.split_values(params.read_all(self))
        except (KeyError, ValueError) as err:  # reported again (and refused) by on_configure
            self.get_logger().error(f"invalid parameters: {err}")
        self._pipeline = None
        self._lock = threading.RLock()  # guards the pipeline and its map
        self._pub_lock = threading.RLock()  # guards the publisher set
        self._active = False
        self._queue: Optional[FrameQueue] = None
        self._worker: Optional[FrameWorker] = None
        self._pairing: Optional[StampPairing] = None
        self._map_services: list = []
        self._subs: list = []
        self._pubs: dict[str, Any] = {}
        self._output_timers: list = []
        self._input_groups: list = []
        self._submit_lock = threading.Lock()  # input streams call _submit from several executor threads
        self._k_lock = threading.Lock()
        self._k_by_stamp: "collections.OrderedDict[int, np.ndarray]" = collections.OrderedDict()
        self._latest_k: Optional[np.ndarray] = None
        self._output_group = MutuallyExclusiveCallbackGroup()
        self._last_stamp_ns: Optional[int] = None
        self._cloud_dirty: Optional[Time] = None  # stamp of the newest map state not yet sent as a cloud
        self._last_map_stamp: Optional[Time] = None
        self._last_frame_index = -1
        self._instance_count = 0
        self.counters: dict[str, int] = collections.defaultdict(int)
        self._last_error_log: dict[tuple, float] = {}
        self._counter_lock = threading.Lock()
        self._recent: collections.deque = collections.deque(maxlen=10_000)  # (done time, latency s, age s)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ---------------------------------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        try:
            self.pipeline_config, self.config = params.split_values(params.read_all(self))
        except (KeyError, ValueError) as err:
            log.error(f"configure failed: invalid parameter: {err}")
            return TransitionCallbackReturn.FAILURE
        missing = missing_model_files(self.pipeline_config)
        if missing:
            log.error(f"configure failed: {missing}")
            return TransitionCallbackReturn.FAILURE
        try:
            from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline

            pipeline = MoonSeg3RPipeline(self.pipeline_config)
        except Exception as err:  # a checkpoint that does not load, an unavailable device, ...
            log.error(f"configure failed: could not build the pipeline: {type(err).__name__}: {err}")
            return TransitionCallbackReturn.FAILURE
        with self._lock:
            self._pipeline = pipeline
        self._queue = FrameQueue(self.config.queue_size, self.config.drop_policy)
        self._worker = FrameWorker(self._queue, self._process_frame, self._on_worker_error)
        self._worker.pause()
        self._worker.start()
        needs = self._needs()
        self._pairing = StampPairing(["image"] + needs, self.config.sync.buffer_size) if needs else None
        self._map_services = [
            self.create_service(_save_srv(), "~/save_map", self._on_save_map, callback_group=self._output_group),
            self.create_service(_load_srv(), "~/load_map", self._on_load_map, callback_group=self._output_group),
            self.create_service(Trigger, "~/reset_map", self._on_reset_map, callback_group=self._output_group),
        ]
        log.info(f"configured: geometry '{self.pipeline_config.geometry.source}', masks "
                 f"'{self.pipeline_config.masks.source}', queue {self.config.queue_size} "
                 f"({self.config.drop_policy})")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        cfg = self.config
        topics = cfg.topics
        try:
            with self._pub_lock:
                self._pubs = {
                    "tf": self.create_publisher(_tf_type(), "/tf", TF_QOS),
                    "tf_static": self.create_publisher(_tf_type(), "/tf_static", TF_STATIC_QOS),
                    "cloud": self.create_publisher(PointCloud2, topics.cloud, LATCHED_QOS),
                    "instance_map": self.create_publisher(_instance_map_type(), topics.instance_map, LATCHED_QOS),
                    "markers": self.create_publisher(MarkerArray, topics.markers, LATCHED_QOS),
                    "debug_image": self.create_publisher(Image, topics.debug_image, 1),
                    "diagnostics": self.create_publisher(DiagnosticArray, "/diagnostics", 10),
                }
            self._publish_static_tf()
            self._subs = self._create_subscriptions()
        except Exception as err:  # e.g. an invalid topic name
            self.get_logger().error(f"activate failed: {type(err).__name__}: {err}")
            self._destroy_io()
            return TransitionCallbackReturn.FAILURE
        self._start_timers()
        self._active = True
        self._worker.resume()
        suffix = "/compressed" if cfg.image_transport == "compressed" else ""
        self.get_logger().info(f"active: listening on '{self.resolve_topic_name(topics.image)}{suffix}'")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self.get_logger().info("inactive: processing stopped, the map is kept")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up: pipeline and models released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self.save_on_exit()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error("error during a transition: releasing everything (back to unconfigured)")
        self._stop_processing()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def lifecycle_state(self) -> str:
        return self._state_machine.current_state[1]

    def _stop_processing(self) -> None:
        self._active = False
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._worker is not None:
            self._worker.pause()
        if self._queue is not None:
            self._count("discarded_on_deactivate", self._queue.clear())
        if self._pairing is not None:
            self._pairing.clear()
        self._destroy_io()

    def _destroy_io(self) -> None:
        for timer in self._output_timers:
            self.destroy_timer(timer)
        self._output_timers = []
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        with self._pub_lock:
            pubs, self._pubs = self._pubs, {}
        for pub in pubs.values():
            self.destroy_publisher(pub)

    def _release(self) -> None:
        if self._worker is not None:
            self._worker.stop(timeout=60.0)
        self._worker, self._queue, self._pairing = None, None, None
        for srv in self._map_services:
            self.destroy_service(srv)
        self._map_services = []
        with self._lock:
            pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            close = getattr(pipeline, "close", None)
            if close is not None:
                close()
            del pipeline
        free_accelerator_memory()
        self._last_stamp_ns = None
        self._instance_count = 0

    def save_on_exit(self) -> None:
        """Save the map to `map_save_path` (when set and a pipeline exists); called on shutdown."""
        path = self.config.map_save_path
        if path and self._pipeline is not None:
            ok, message = self.save_map(path)
            self._log_outcome(ok, f"shutdown: {message}")

    # ---------------------------------------------------------------------------------------- inputs
    def _needs(self) -> list[str]:
        needs = []
        if self.pipeline_config.geometry.source == "recorded":
            needs += ["depth", "pose"]
        if self.pipeline_config.masks.source == "ground_truth":
            needs.append("instance_ids")
        return needs

    def _create_subscriptions(self) -> list:
        cfg, topics = self.config, self.config.topics
        qos = input_qos(cfg.input_reliability, cfg.input_depth)
        # One mutually exclusive group per input stream: streams never wait for one another (a starved
        # stream would lose messages and fail pairing), and each stream's callbacks stay in order.
        self._input_groups = [MutuallyExclusiveCallbackGroup() for _ in range(5)]
        group = self._input_groups[0]
        subs = []
        if cfg.image_transport == "compressed":
            # Like image_transport: remap the base topic, then append the transport's suffix.
            base = self.resolve_topic_name(topics.image)
            subs.append(self.create_subscription(CompressedImage, f"{base}/compressed",
                                                 self._on_compressed_image, qos, callback_group=group))
        else:
            subs.append(self.create_subscription(Image, topics.image, self._on_image, qos, callback_group=group))
        needs = self._needs()
        if self._pairing is not None:
            self._pairing.capacity = cfg.sync.buffer_size
        if self._queue is not None:  # queue settings may have changed while inactive
            self._queue.capacity, self._queue.drop_policy = cfg.queue_size, cfg.drop_policy
        if "depth" in needs:
            subs.append(self.create_subscription(Image, topics.depth, self._on_depth, qos,
                                                 callback_group=self._input_groups[1]))
            subs.append(self.create_subscription(CameraInfo, topics.camera_info, self._on_camera_info, qos,
                                                 callback_group=self._input_groups[2]))
            subs.append(self.create_subscription(PoseStamped, topics.pose, self._on_pose, qos,
                                                 callback_group=self._input_groups[3]))
        if "instance_ids" in needs:
            subs.append(self.create_subscription(Image, topics.instance_ids, self._on_instance_ids, qos,
                                                 callback_group=self._input_groups[4]))
        return subs

    def _on_image(self, msg: Image) -> None:
        self._accept_image(msg.header.stamp, lambda: conv.image_msg_to_rgb(msg))

    def _on_compressed_image(self, msg: CompressedImage) -> None:
        self._accept_image(msg.header.stamp, lambda: conv.compressed_msg_to_rgb(msg))

    def _accept_image(self, stamp: Time, convert) -> None:
        received = time.monotonic()
        self._count("images_received", 1)
        if not self._active:
            return
        try:
            rgb = convert()
        except conv.ConversionError as err:
            self._bad_input("image", err)
            return
        frame = FrameInput(stamp=stamp, stamp_ns=conv.stamp_to_ns(stamp), rgb=rgb, received=received)
        if not self._stamp_follows(frame.stamp_ns):
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
        """K by stamp (image_transport camera publishers stamp it like the image), else the latest K."""
        self._count("received.camera_info")
        try:
            k = conv.camera_info_to_k(msg)
        except conv.ConversionError as err:
            self._bad_input("camera_info", err)
            return
        with self._k_lock:
            self._k_by_stamp[conv.stamp_to_ns(msg.header.stamp)] = k
            while len(self._k_by_stamp) > max(self.config.sync.buffer_size, 1):
                self._k_by_stamp.popitem(last=False)
            self._latest_k = k

    def _intrinsics_for(self, stamp_ns: int) -> Optional[np.ndarray]:
        with self._k_lock:
            return self._k_by_stamp.get(stamp_ns, self._latest_k)

    def _side_input(self, stream: str, stamp: Time, convert) -> None:
        self._count(f"received.{stream}", 1)
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
            frame.intrinsics = self._intrinsics_for(frame.stamp_ns)
            if frame.intrinsics is None:
                self._bad_input("camera_info", conv.ConversionError(
                    f"no camera_info received on '{self.resolve_topic_name(self.config.topics.camera_info)}' yet"))
                return
        shapes = {k: v.shape[:2] for k, v in (("depth", frame.depth), ("instance_ids", frame.instance_ids))
                  if v is not None}
        for name, shape in shapes.items():
            if shape != frame.rgb.shape[:2]:
                self._bad_input(name, conv.ConversionError(
                    f"{name} image is {shape[1]}x{shape[0]} but the camera image is "
                    f"{frame.rgb.shape[1]}x{frame.rgb.shape[0]}"))
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
                return
            self._last_stamp_ns = frame.stamp_ns
            queue = self._queue
            if queue is None:
                return
            if queue.put(frame) is not None:
                self._count("queue_drops", 1)

    def _count(self, key: str, n: int = 1) -> None:
        """Add to a diagnostics counter (callbacks of several threads count)."""
        with self._counter_lock:
            self.counters[key] += n

    def _bad_input(self, stream: str, err: Exception) -> None:
        self._count("bad_input", 1)
        self._count(f"bad_input.{stream}", 1)
        # Throttled per kind of problem (its first words), so that different problems are all reported.
        key = (stream, " ".join(str(err).split()[:3]))
        now = time.monotonic()
        if now - self._last_error_log.get(key, -1e9) >= 2.0:
            self._last_error_log[key] = now
            self.get_logger().error(f"dropped {stream} message: {err}")

    # ---------------------------------------------------------------------------------------- worker
    def _process_frame(self, frame: FrameInput) -> None:
        with self._lock:
            pipeline = self._pipeline
            if pipeline is None:
                return
            result = pipeline.step(frame.rgb, frame.stamp_ns / 1e9, depth=frame.depth, intrinsics=frame.intrinsics,
                                   pose_c2w=frame.pose_c2w, instance_ids=frame.instance_ids)
            if result.skipped:
                self._count("skipped", 1)
                self.get_logger().warning(f"frame {frame.stamp_ns / 1e9:.6f} s skipped: {result.skipped_reason}",
                                          throttle_duration_sec=2.0)
                return
            self._last_frame_index = int(result.frame_index)
            keyframe_msgs = self._keyframe_messages(pipeline, frame, result) if result.is_keyframe else None
        self._count("frames_processed", 1)
        if result.pose_c2w is not None:
            self._publish("tf", self._tf_message(result.pose_c2w, frame.stamp))
        if keyframe_msgs is not None:
            self._count("keyframes", 1)
            instance_map_msg, markers, colors = keyframe_msgs
            self._publish("instance_map", instance_map_msg)
            if self.config.publish_markers:
                self._publish("markers", markers)
            self._publish_debug_image(frame, result, colors)
            self._cloud_dirty = frame.stamp
            self._last_map_stamp = frame.stamp
            if self.config.cloud.rate <= 0:
                self.publish_cloud()
        done = time.monotonic()
        self._recent.append((done, done - frame.received, time.time() - frame.stamp_ns / 1e9))

    def _map_messages(self, pipeline, stamp: Time, frame_index: int, keyframes: int):
        """(InstanceMap msg, markers or None when off, records) of the pipeline's map, stamped `stamp`."""
        records = pipeline.instance_map.instances()
        self._instance_count = len(records)
        msg = conv.instance_map_msg(records, self.config.frames.map, stamp, frame_index, keyframes,
                                    len(pipeline.instance_map), self.resolve_topic_name(self.config.topics.cloud))
        markers = instance_markers(records, self.config.frames.map, stamp) if self.config.publish_markers \
            else None
        return msg, markers, records

    def _keyframe_messages(self, pipeline, frame: FrameInput, result):
        stats = getattr(pipeline, "stats", {}) or {}
        keyframes = int(stats.get("keyframes", self.counters["keyframes"] + 1))
        msg, markers, records = self._map_messages(pipeline, frame.stamp, result.frame_index, keyframes)
        return msg, markers, {int(r.id): r.color for r in records}

    def _publish_debug_image(self, frame: FrameInput, result, colors) -> None:
        pub = self._pubs.get("debug_image")
        if not self.config.publish_debug_image or pub is None or result.instance_ids_2d is None:
            return
        if pub.get_subscription_count() == 0:
            return
        overlay = mask_overlay(frame.rgb, result.instance_ids_2d, colors)
        self._publish("debug_image", conv.array_to_image_msg(overlay, "rgb8", frame.stamp, self.config.frames.camera))
        self._count("debug_images_published")

    def _on_worker_error(self, frame: FrameInput, err: BaseException) -> None:
        self._count("processing_errors", 1)
        self.get_logger().error(f"processing the frame at {frame.stamp_ns / 1e9:.6f} s failed: "
                                f"{type(err).__name__}: {err}", throttle_duration_sec=2.0)

    def _publish(self, name: str, msg: Any) -> None:
        with self._pub_lock:
            pub = self._pubs.get(name)
            if pub is not None:
                pub.publish(msg)

    # ---------------------------------------------------------------------------------------- TF
    def _tf_message(self, pose_c2w: np.ndarray, stamp: Time):
        frames = self.config.frames
        transforms = []
        if frames.base:
            base_to_camera = conv.xyz_quat_to_matrix(self.config.camera_to_base)
            map_to_base = pose_c2w @ np.linalg.inv(base_to_camera)
            if frames.odom:
                transforms.append(conv.matrix_to_transform_msg(np.eye(4), frames.map, frames.odom, stamp))
                transforms.append(conv.matrix_to_transform_msg(map_to_base, frames.odom, frames.base, stamp))
            else:
                transforms.append(conv.matrix_to_transform_msg(map_to_base, frames.map, frames.base, stamp))
        else:
            transforms.append(conv.matrix_to_transform_msg(pose_c2w, frames.map, frames.camera, stamp))
        return _tf_type()(transforms=transforms)

    def _publish_static_tf(self) -> None:
        frames = self.config.frames
        if not frames.base:
            return
        base_to_camera = conv.xyz_quat_to_matrix(self.config.camera_to_base)
        stamp = self.get_clock().now().to_msg()
        self._publish("tf_static", _tf_type()(transforms=[
            conv.matrix_to_transform_msg(base_to_camera, frames.base, frames.camera, stamp)]))

    # ---------------------------------------------------------------------------------------- timers
    def _start_timers(self) -> None:
        self._output_timers = [self.create_timer(1.0 / self.config.diagnostics_rate, self.publish_diagnostics,
                                          callback_group=self._output_group)]
        if self.config.cloud.rate > 0:
            self._output_timers.append(self.create_timer(1.0 / self.config.cloud.rate, self._cloud_tick,
                                                  callback_group=self._output_group))

    def _cloud_tick(self) -> None:
        if self._cloud_dirty is not None:
            self.publish_cloud()

    def cloud_snapshot(self, color_by: Optional[str] = None, voxel: Optional[float] = None):
        """(xyz, rgb, ids) of the map as it would be published (colours and downsampling applied)."""
        with self._lock:
            if self._pipeline is None:
                return None
            instance_map = self._pipeline.instance_map
            xyz, rgb, ids = (np.array(a, copy=True) for a in instance_map.points())
            colors = {int(r.id): r.color for r in instance_map.instances()} \
                if (color_by or self.config.cloud.color_by) == "instance" else None
        xyz, rgb, ids = conv.voxel_downsample(xyz, rgb, ids, self.config.cloud.voxel_size if voxel is None else voxel)
        if colors is not None:
            rgb = conv.instance_colors(ids, colors)
        return xyz.astype(np.float32, copy=False), rgb.astype(np.uint8, copy=False), ids

    def publish_cloud(self) -> None:
        stamp = self._cloud_dirty or self._last_map_stamp or self.get_clock().now().to_msg()
        self._cloud_dirty = None
        snapshot = self.cloud_snapshot()
        if snapshot is None:
            return
        xyz, rgb, ids = snapshot
        self._publish("cloud", conv.make_cloud_msg(xyz, rgb, ids, self.config.frames.map, stamp))
        self._count("clouds_published", 1)

    def diagnostics_values(self) -> dict[str, Any]:
        now = time.monotonic()
        recent = [r for r in list(self._recent) if now - r[0] <= STATS_WINDOW_S]
        span = (recent[-1][0] - recent[0][0]) if len(recent) > 1 else 0.0
        fps = (len(recent) - 1) / span if span > 0 else 0.0
        latencies = [r[1] for r in recent]
        with self._lock:
            pipeline = self._pipeline
            instances = self._instance_count if pipeline is not None else 0  # as of the latest keyframe
            points = len(pipeline.instance_map) if pipeline is not None else 0
            pipeline_stats = dict(getattr(pipeline, "stats", {}) or {}) if pipeline is not None else {}
        values: dict[str, Any] = {
            "state": self.lifecycle_state(),
            "fps": round(fps, 3),
            "latency_mean_ms": round(1000 * float(np.mean(latencies)), 2) if latencies else 0.0,
            "latency_max_ms": round(1000 * float(np.max(latencies)), 2) if latencies else 0.0,
            "queue_length": len(self._queue) if self._queue is not None else 0,
            "queue_drops": self.counters["queue_drops"],
            "pairing_drops": self._pairing.stats.total_dropped if self._pairing is not None else 0,
            "instances": instances,
            "map_points": points,
            "rss_mb": round(rss_bytes() / 2**20, 1),
            "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
            "gpu_memory_mb": round(gpu_memory_bytes() / 2**20, 1),
            "gpu_peak_memory_mb": round(gpu_memory_bytes(peak=True) / 2**20, 1),
        }
        if self._pairing is not None:
            values.update({f"pairing_drops.{k}": v for k, v in self._pairing.stats.dropped.items()})
        with self._counter_lock:
            counters = dict(self.counters)
        values.update(sorted(counters.items()))
        values.update({f"pipeline.{k}": v for k, v in sorted(pipeline_stats.items())
                       if isinstance(v, (int, float))})
        return values

    def publish_diagnostics(self) -> None:
        values = self.diagnostics_values()
        status = DiagnosticStatus(name=DIAGNOSTIC_NAME, hardware_id=self.get_fully_qualified_name())
        if values.get("processing_errors"):
            status.level, status.message = DiagnosticStatus.ERROR, f"{values['processing_errors']} processing errors"
        elif values.get("bad_input") or values.get("queue_drops") or values.get("pairing_drops"):
            status.level, status.message = DiagnosticStatus.WARN, "dropping frames (see values)"
        else:
            status.level, status.message = DiagnosticStatus.OK, "ok"
        status.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._publish("diagnostics", array)

    # ---------------------------------------------------------------------------------------- services
    def save_map(self, path: str) -> tuple[bool, str]:
        target = Path(path or self.config.map_save_path).expanduser()
        if not str(path or self.config.map_save_path):
            return False, "no path given and map_save_path is empty"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            with self._lock:
                if self._pipeline is None:
                    return False, "the node is not configured"
                instance_map = self._pipeline.instance_map
                instance_map.save(partial)
                counts = f"{len(instance_map.instances())} instances, {len(instance_map)} points"
            os.replace(partial, target)
        except Exception as err:
            return False, f"saving the map to {target} failed: {type(err).__name__}: {err}"
        return True, f"saved the map to {target} ({counts})"

    def load_map(self, path: str) -> tuple[bool, str]:
        from moonseg3r_ros.core.instance_map import InstanceMap

        source = str(path or self.config.map_save_path)
        if not source:
            return False, "no path given and map_save_path is empty"
        try:
            loaded = InstanceMap.load(Path(source).expanduser())
        except Exception as err:
            return False, f"loading the map from {source} failed: {err}"
        with self._lock:
            if self._pipeline is None:
                return False, "the node is not configured"
            load = getattr(self._pipeline, "load_map", None)
            if load is not None:
                load(loaded)
            else:  # a new sequence continues from the loaded map: memory, bank and counters start empty
                self._pipeline.reset()
                if dataclasses.asdict(loaded.config) == dataclasses.asdict(self._pipeline.config.map):
                    loaded.config = self._pipeline.config.map  # runtime threshold changes keep applying
                self._pipeline.instance_map = loaded
            counts = f"{len(loaded.instances())} instances, {len(loaded)} points"
            self._last_stamp_ns = None
        self._after_map_change()
        return True, f"loaded the map from {source} ({counts})"

    def reset_map(self) -> tuple[bool, str]:
        with self._lock:
            if self._pipeline is None:
                return False, "the node is not configured"
            self._pipeline.reset()
            self._last_stamp_ns = None
            self._last_frame_index = -1
        if self._queue is not None:
            self._count("discarded_on_reset", self._queue.clear())
        if self._pairing is not None:
            self._pairing.clear()
        self._after_map_change()
        return True, "the map was reset"

    def _after_map_change(self) -> None:
        """Send the new map state at once (InstanceMap, markers, cloud), stamped now."""
        stamp = self.get_clock().now().to_msg()
        with self._lock:
            if self._pipeline is None:
                return
            stats = getattr(self._pipeline, "stats", {}) or {}
            msg, markers, _ = self._map_messages(self._pipeline, stamp, max(self._last_frame_index, 0),
                                                 int(stats.get("keyframes", 0)))
        self._publish("instance_map", msg)
        if markers is not None:
            self._publish("markers", markers)
        self._last_map_stamp = stamp
        self._cloud_dirty = stamp
        self.publish_cloud()

    def _on_save_map(self, request, response):
        return self._answer(response, lambda: self.save_map(request.path))

    def _on_load_map(self, request, response):
        return self._answer(response, lambda: self.load_map(request.path))

    def _on_reset_map(self, request, response):
        return self._answer(response, self.reset_map)

    def _answer(self, response, action: Callable[[], tuple[bool, str]]):
        """Fill a success/message service response from `action`; an error becomes a failed answer. Logged."""
        try:
            response.success, response.message = action()
        except Exception as err:  # always answer
            response.success, response.message = False, f"{type(err).__name__}: {err}"
        self._log_outcome(response.success, response.message)
        return response

    def _log_outcome(self, ok: bool, message: str) -> None:
        # rclpy fixes one severity per call site: two explicit calls.
        if ok:
            self.get_logger().info(message)
        else:
            self.get_logger().error(message)

    # ---------------------------------------------------------------------------------------- parameters
    def _on_set_parameters(self, changes) -> SetParametersResult:
        specs = params.all_specs()
        configured = self._pipeline is not None
        updates: dict[str, Any] = {}
        for p in changes:
            if p.name not in specs:
                continue
            kind = params.field_kind(p.name)
            value = list(p.value) if kind is list else p.value
            reason = params.validate_value(p.name, value, specs[p.name][1], kind)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            change = params.classify_change(p.name)
            if change == "restart_pipeline" and configured:
                return SetParametersResult(successful=False, reason=(
                    f"'{p.name}' defines the models or the map layout: change it while unconfigured "
                    f"(cleanup, set, configure)"))
            if change == "reactivate" and self._active:
                return SetParametersResult(successful=False, reason=(
                    f"'{p.name}' is used when subscriptions and publishers are created: change it while "
                    f"inactive (deactivate, set, activate)"))
            updates[p.name] = value
        if not updates:
            return SetParametersResult(successful=True)
        values = params.read_all(self)
        values.update(updates)
        try:
            pipeline_config, node_config = params.split_values(values)
        except (KeyError, ValueError) as err:
            return SetParametersResult(successful=False, reason=str(err))
        pipeline_updates = {k: v for k, v in updates.items() if specs[k][0] == "pipeline"}
        if pipeline_updates and configured:
            with self._lock:
                try:
                    apply_pipeline_tunables(self._pipeline, pipeline_config, pipeline_updates)
                except ValueError as err:
                    return SetParametersResult(successful=False, reason=str(err))
        old_rate = self.config.cloud.rate
        self.pipeline_config, self.config = pipeline_config, node_config
        if self._active and (node_config.cloud.rate != old_rate or "diagnostics_rate" in updates):
            for timer in self._output_timers:
                self.destroy_timer(timer)
            self._start_timers()
        return SetParametersResult(successful=True)


# ---------------------------------------------------------------------------------------------------- helpers

def _tf_type():
    from tf2_msgs.msg import TFMessage

    return TFMessage


def _instance_map_type():
    from moonseg3r_msgs.msg import InstanceMap

    return InstanceMap


def _save_srv():
    from moonseg3r_msgs.srv import SaveMap

    return SaveMap


def _load_srv():
    from moonseg3r_msgs.srv import LoadMap

    return LoadMap


def apply_pipeline_tunables(pipeline: Any, config: PipelineConfig, updates: dict[str, Any]) -> None:
    """Apply changed tunable thresholds to a running pipeline.

    Uses `pipeline.update_config(config)` when the pipeline offers it; otherwise sets the changed fields
    in place on `pipeline.config` (whose section objects the pipeline's parts share, so they see them).
    """
    update = getattr(pipeline, "update_config", None)
    if update is not None:
        update(config)
        return
    for name in updates:
        *parents, leaf = name.split(".")
        source, target = config, pipeline.config
        for p in parents:
            source, target = getattr(source, p), getattr(target, p)
        setattr(target, leaf, getattr(source, leaf))


def missing_model_files(config: PipelineConfig) -> str:
    """A clear message naming every model file the configuration needs but that does not exist ('' if none)."""
    needed = []
    if config.geometry.source == "cut3r":
        needed.append(("geometry.cut3r_checkpoint", config.geometry.cut3r_checkpoint))
    if config.masks.source == "sam":
        needed.append(("masks.sam_checkpoint", config.masks.sam_checkpoint))
    if config.masks.source == "precomputed":
        needed.append(("masks.precomputed_dir", config.masks.precomputed_dir))
    if config.features.backbone == "dino":
        needed.append(("features.weights", config.features.weights))
    if config.refinement.weights:
        needed.append(("refinement.weights", config.refinement.weights))
    problems = []
    for name, path in needed:
        if not path:
            problems.append(f"'{name}' is empty but required by this configuration")
        elif not Path(path).expanduser().exists():
            problems.append(f"'{name}' = '{path}' does not exist")
    return "; ".join(problems)


def free_accelerator_memory() -> None:
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return 0


def peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # kilobytes on Linux


def gpu_memory_bytes(peak: bool = False) -> int:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return 0
    return int(torch.cuda.max_memory_allocated() if peak else torch.cuda.memory_allocated())


# ---------------------------------------------------------------------------------------------------- main

def main(args: Optional[list[str]] = None) -> int:
    """Run the node until SIGINT/SIGTERM; the map is saved on the way out when map_save_path is set."""
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    node = MoonSeg3RNode()
    executor = MultiThreadedExecutor(num_threads=8)  # 5 input streams, outputs, services
    executor.add_node(node)
    spinner = threading.Thread(target=_spin, args=(executor, stop), name="moonseg3r-executor", daemon=True)
    spinner.start()
    if node.config.autostart:
        if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()
    try:
        while not stop.wait(0.2):
            pass
    finally:
        executor.shutdown(timeout_sec=5.0)
        spinner.join(timeout=5.0)
        state_id = node._state_machine.current_state[0]
        if state_id != StateMsg.PRIMARY_STATE_FINALIZED:
            node.trigger_shutdown()  # saves the map when map_save_path is set
        node.destroy_node()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        rclpy.try_shutdown()
    return 0


def _spin(executor, stop: threading.Event) -> None:
    """Spin until shutdown; an exception escaping a callback is reported and spinning goes on."""
    try:
        while not stop.is_set():
            try:
                executor.spin()
                break
            except ExternalShutdownException:
                break
            except Exception as err:
                if stop.is_set():
                    break
                print(f"moonseg3r node: callback failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
    finally:
        stop.set()


if __name__ == "__main__":
    raise SystemExit(main())

"""A node in the caller's process that drives `moonseg3r` (lifecycle, parameters, services), feeds it frames
and collects its outputs. One client for the tests (test/ros), `moonseg3r replay` / `demo` and
`moonseg3r bench node`. The caller spins it (spin_until / spin_for): nothing runs behind its back.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from moonseg3r_ros.ros.frame_publisher import CAMERA_TOPICS, FramePublisher, streams_for

# lifecycle_msgs/Transition ids
CONFIGURE, CLEANUP, ACTIVATE, DEACTIVATE = 1, 2, 3, 4
SHUTDOWN_FROM_UNCONFIGURED, SHUTDOWN_FROM_INACTIVE, SHUTDOWN_FROM_ACTIVE = 5, 6, 7
DIAGNOSTIC_PREFIX = "moonseg3r"
# Diagnostics counters of what went wrong with the inputs, by kind. Counts of messages, not of images:
# bad_input and pairing_drops count camera_info / depth / pose messages too, so one lost image can show in
# two of them. Whole images are counted by images_dropped (see finished_frames).
LOST_COUNTERS = ("queue_drops", "pairing_drops", "bad_input", "stamps_not_increasing")


class Collector:
    """Keeps the messages of one subscription (thread-safe); with `keep`, only the newest `keep`, but
    `count` counts them all."""

    def __init__(self, keep: Optional[int] = None):
        self.messages: list = []
        self.receive_times: list[float] = []
        self.count = 0
        self.keep = keep
        self._lock = threading.Lock()

    def __call__(self, msg) -> None:
        with self._lock:
            self.count += 1
            self.messages.append(msg)
            self.receive_times.append(time.time())
            if self.keep is not None and len(self.messages) > self.keep:
                del self.messages[:-self.keep], self.receive_times[:-self.keep]

    def __len__(self) -> int:
        with self._lock:
            return len(self.messages)

    def last(self):
        with self._lock:
            return self.messages[-1] if self.messages else None

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self.receive_times.clear()


def counter_value(values: dict[str, str], name: str) -> int:
    """An integer diagnostics value (0 when absent or not a number)."""
    try:
        return int(float(values.get(name, 0)))
    except ValueError:
        return 0


def finished_frames(values: dict[str, str]) -> int:
    """Images the node is done with (from its diagnostics values): every received image ends in exactly one
    of frames_processed and images_dropped (skipped, failed and every kind of drop are images_dropped.*)."""
    return counter_value(values, "frames_processed") + counter_value(values, "images_dropped")


def dropped_frames(values: dict[str, str]) -> int:
    """Received images the node dropped instead of processing (not skipped by the pipeline, not failed)."""
    return counter_value(values, "images_dropped") - counter_value(values, "images_dropped.skipped") \
        - counter_value(values, "images_dropped.processing_error")


class NodeClient:
    """Drives the node `target` (its name, or /NS/NAME) from a node of its own in `context`.

    Topic names given to it are resolved in its `namespace`, like the node's relative names in the same one.
    """

    __test__ = False  # not a pytest class

    def __init__(self, context, name: str = "moonseg3r_client", target: str = "moonseg3r", namespace: str = ""):
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.context = context
        self.node = Node(name, namespace=f"/{namespace.strip('/')}" if namespace else None, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.target = target if target.startswith("/") else f"/{target}"
        self.collectors: dict[str, Collector] = {}
        self.inputs = FramePublisher(self.node, [])
        self.diagnostics_count = 0
        self._diagnostics: dict[str, str] = {}

    # ------------------------------------------------------------------------------------------ spinning
    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.05, max(end - time.monotonic(), 0.0)))

    def spin_until(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        """Spin until `predicate()` holds; False when `timeout` passed first (a bound, not a measurement)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def call(self, srv_type, name: str, request, timeout: float = 60.0):
        """Call a service (absolute name, or relative to the client's namespace); TimeoutError when none
        answers within `timeout`."""
        client = self.node.create_client(srv_type, name)
        try:
            if not self.spin_until(client.service_is_ready, timeout):
                raise TimeoutError(f"service {name} not available within {timeout} s")
            future = client.call_async(request)
            if not self.spin_until(future.done, timeout):
                raise TimeoutError(f"service {name} did not answer within {timeout} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    # ------------------------------------------------------------------------------------------ lifecycle
    def change_state(self, transition: int, timeout: float = 120.0) -> bool:
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request()
        request.transition.id = transition
        return bool(self.call(ChangeState, f"{self.target}/change_state", request, timeout).success)

    def get_state(self, timeout: float = 60.0) -> str:
        from lifecycle_msgs.srv import GetState

        return self.call(GetState, f"{self.target}/get_state", GetState.Request(), timeout).current_state.label

    def set_parameters(self, values: dict[str, Any], timeout: float = 60.0) -> list:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request()
        request.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        return list(self.call(SetParameters, f"{self.target}/set_parameters", request, timeout).results)

    def get_parameters(self, names: list[str], timeout: float = 60.0) -> list:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        request = GetParameters.Request(names=names)
        return [parameter_value_to_python(v) for v in
                self.call(GetParameters, f"{self.target}/get_parameters", request, timeout).values]

    def save_map(self, path: Path | str, timeout: float = 60.0) -> tuple[bool, str]:
        """The node's ~/save_map service: (success, message)."""
        from moonseg3r_msgs.srv import SaveMap

        try:
            result = self.call(SaveMap, f"{self.target}/save_map", SaveMap.Request(path=str(path)), timeout)
        except TimeoutError as err:
            return False, str(err)
        return bool(result.success), str(result.message)

    # ------------------------------------------------------------------------------------------ outputs
    def subscribe_outputs(self, cloud: Optional[str] = None, instance_map: Optional[str] = None,
                          markers: Optional[str] = None, debug_image: Optional[str] = None,
                          only: Optional[tuple[str, ...]] = None, keep: Optional[dict[str, int]] = None) -> None:
        """Collect /tf, /tf_static, the cloud, the instance map, markers, /diagnostics (and the debug image
        if named); `only` names the ones to collect, `keep` bounds what a collector keeps (key -> count).
        The outputs default to the target's private names (TARGET/cloud, TARGET/instance_map, ...)."""
        cloud = cloud or f"{self.target}/cloud"
        instance_map = instance_map or f"{self.target}/instance_map"
        markers = markers or f"{self.target}/markers"
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, PointCloud2
        from tf2_msgs.msg import TFMessage
        from visualization_msgs.msg import MarkerArray

        from moonseg3r_msgs.msg import InstanceMap

        latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        topics = [("tf", TFMessage, "/tf", QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)),
                  ("tf_static", TFMessage, "/tf_static", latched),
                  ("cloud", PointCloud2, cloud, latched),
                  ("instance_map", InstanceMap, instance_map, QoSProfile(
                      depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)),
                  ("markers", MarkerArray, markers, latched),
                  ("diagnostics", DiagnosticArray, "/diagnostics", QoSProfile(depth=100))]
        if debug_image:
            topics.append(("debug_image", Image, debug_image, QoSProfile(depth=10)))
        keep = keep or {}
        for key, msg_type, topic, qos in topics:
            if only is not None and key not in only:
                continue
            self.collectors[key] = collector = Collector(keep.get(key))
            callback = self._on_diagnostics if key == "diagnostics" else collector
            self.node.create_subscription(msg_type, topic, callback, qos)

    def _on_diagnostics(self, msg) -> None:
        self.collectors["diagnostics"](msg)
        for status in msg.status:
            if status.hardware_id == self.target or (not status.hardware_id and
                                                     status.name.startswith(DIAGNOSTIC_PREFIX)):
                self._diagnostics = {kv.key: kv.value for kv in status.values}
                self.diagnostics_count += 1

    def __getitem__(self, key: str) -> Collector:
        return self.collectors[key]

    def diagnostics(self) -> dict[str, str]:
        """Values of the target's latest diagnostic status ({} before the first)."""
        return dict(self._diagnostics)

    def counter(self, name: str) -> int:
        return counter_value(self._diagnostics, name)

    def finished(self) -> int:
        """Images the node is done with (processed, skipped, failed or dropped), from its diagnostics."""
        return finished_frames(self._diagnostics)

    def camera_poses(self, parent: str = "map", child: str = "camera_optical") -> dict[int, np.ndarray]:
        """stamp ns -> 4x4 `child`-to-`parent` transform from the collected /tf messages."""
        from moonseg3r_ros.ros import conversions as conv

        poses = {}
        for msg in list(self.collectors["tf"].messages):
            for t in msg.transforms:
                if t.child_frame_id == child and t.header.frame_id == parent:
                    poses[conv.stamp_to_ns(t.header.stamp)] = conv.transform_msg_to_matrix(t)
        return poses

    # ------------------------------------------------------------------------------------------ inputs
    def publisher(self, key: str, msg_type, topic: str):
        """A reliable publisher of the client's own (created once per key)."""
        return self.inputs.add(key, msg_type, topic)

    def wait_for_subscribers(self, key: str, count: int = 1, timeout: float = 30.0) -> bool:
        pub = self.inputs[key]
        return self.spin_until(lambda: pub.get_subscription_count() >= count, timeout)

    def wait_inputs_matched(self, timeout: float = 15.0, silent_after: float = 3.0) -> bool:
        """The other half of the handshake: the node's diagnostics say each of its input subscriptions has
        matched a publisher (our publishers seeing the node is not enough: its side may match later and drop
        the first camera_info). Gives up after `silent_after` s when the node sends no diagnostics at all."""
        if "diagnostics" not in self.collectors:
            return False

        def matched() -> bool:
            values = self._diagnostics
            return counter_value(values, "inputs") > 0 and \
                counter_value(values, "inputs_matched") == counter_value(values, "inputs")

        if not self.spin_until(lambda: matched() or self.diagnostics_count > 0, silent_after):
            return False
        return self.spin_until(matched, timeout)

    def make_input_publishers(self, ground_truth: bool = True, recorded: bool = True,
                              topics: Optional[dict[str, str]] = None) -> None:
        """Publishers for the camera streams (the `moonseg3r to-bag` topics unless `topics` names others)."""
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import CameraInfo, Image

        types = {"image": Image, "camera_info": CameraInfo, "depth": Image, "pose": PoseStamped,
                 "instance_ids": Image}
        names = {**CAMERA_TOPICS, **(topics or {})}
        for stream in streams_for(recorded, ground_truth):
            self.inputs.add(stream, types[stream], names[stream] if topics else f"/{names[stream]}")

    def publish_frame(self, frame, stamp=None, encoding: str = "rgb8", image_msg=None,
                      image_key: str = "image") -> None:
        """Publish a core `Frame` on the input publishers (see FramePublisher.publish)."""
        self.inputs.publish(frame, stamp, encoding, image_msg, image_key)

    def feed(self, frames, start_stamp: float, period: float = 0.1, ground_truth: bool = True) -> None:
        """Publish frames (with all side inputs) at stamps start_stamp + i * period, once subscribed."""
        from moonseg3r_ros.ros import conversions as conv

        self.make_input_publishers(ground_truth=ground_truth)
        for key in self.inputs.pubs:
            if not self.wait_for_subscribers(key):
                raise TimeoutError(f"nobody subscribed to the {key} input")
        self.wait_inputs_matched()
        for i, frame in enumerate(frames):
            self.publish_frame(frame, conv.seconds_to_stamp(start_stamp + period * i))
            self.spin_for(0.02)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()

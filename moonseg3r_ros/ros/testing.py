"""Helpers to drive the node from another process: start it, change its lifecycle state, feed frames,
collect its outputs. Used by test/ros and by the node benchmark (tools/bench_node.py).

Every process started here inherits the caller's environment, so ROS_AUTOMATIC_DISCOVERY_RANGE and
ROS_DOMAIN_ID chosen by the caller (test/conftest.py, bench_node) apply to the node too.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import yaml

from moonseg3r_ros.ros.process import stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALLED_NODE = REPO_ROOT / "install" / "moonseg3r_ros" / "lib" / "moonseg3r_ros" / "moonseg3r_node"

# Remappings from the node's default input names to the synthetic bag writer's topics.
CAMERA_REMAPS = {"image": "/camera/image_raw", "depth": "/camera/depth/image_raw", "camera_info": "/camera/camera_info",
                 "pose": "/camera/pose", "instance_ids": "/camera/instance_ids"}

# Node parameters for fast runs on synthetic frames: ground-truth masks, reliable inputs, nothing dropped.
GROUND_TRUTH_PARAMS = {"masks.source": "ground_truth", "keyframe_interval": 2, "input_reliability": "reliable",
                       "cloud.rate": 0.0, "queue_size": 100, "drop_policy": "oldest", "input_depth": 50}

# lifecycle_msgs/Transition ids
CONFIGURE, CLEANUP, ACTIVATE, DEACTIVATE = 1, 2, 3, 4
SHUTDOWN_FROM_UNCONFIGURED, SHUTDOWN_FROM_INACTIVE, SHUTDOWN_FROM_ACTIVE = 5, 6, 7


def node_command() -> list[str]:
    """The installed `moonseg3r_node` executable when present, else `python -m moonseg3r_ros.ros.node`."""
    if INSTALLED_NODE.exists() and os.access(INSTALLED_NODE, os.X_OK):
        return [str(INSTALLED_NODE)]
    on_path = shutil.which("moonseg3r_node")
    return [on_path] if on_path else [sys.executable, "-m", "moonseg3r_ros.ros.node"]


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    """{'a.b': 1} -> {'a': {'b': 1}} (ROS parameter files are nested)."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        target = out
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = value
    return out


class NodeProcess:
    """The node in its own process: `--ros-args -r __node:=NAME --params-file FILE -r from:=to ...`."""

    def __init__(self, name: str = "moonseg3r", params: Optional[dict[str, Any]] = None,
                 remaps: Optional[dict[str, str]] = None, log_dir: Optional[Path] = None,
                 extra_env: Optional[dict[str, str]] = None):
        self.name = name
        self.params = dict(params or {})
        self.remaps = dict(remaps or {})
        self.log_dir = Path(log_dir or ".")
        self.extra_env = extra_env or {}
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.log_dir / f"{name}.log"

    def command(self) -> list[str]:
        params_file = self.log_dir / f"{self.name}.params.yaml"
        params_file.write_text(yaml.safe_dump({self.name: {"ros__parameters": nested(self.params)}}))
        cmd = node_command() + ["--ros-args", "-r", f"__node:={self.name}", "--params-file", str(params_file)]
        for source, target in self.remaps.items():
            cmd += ["-r", f"{source}:={target}"]
        return cmd

    def start(self) -> "NodeProcess":
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO_ROOT), env.get("PYTHONPATH", "")] if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "0")
        env.update(self.extra_env)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command(), env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=str(self.log_dir))
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> Optional[int]:
        """Signal the node and wait; SIGKILL if it does not end in `timeout`. Returns the exit code."""
        if self.proc is None:
            return None
        code = stop_process(self.proc, sig, timeout)
        self._log.close()
        return code

    def peak_rss_bytes(self) -> int:
        """Peak resident memory of the process so far (VmHWM from /proc)."""
        if not self.alive():
            return 0
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0


class Collector:
    """Keeps the messages of one subscription (thread-safe)."""

    def __init__(self):
        self.messages: list = []
        self.receive_times: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, msg) -> None:
        with self._lock:
            self.messages.append(msg)
            self.receive_times.append(time.time())

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


class TestClient:
    """A node in the caller's process that drives `moonseg3r` through services and topics."""

    __test__ = False  # not a pytest class

    def __init__(self, context, name: str = "moonseg3r_test_client", target: str = "moonseg3r",
                 camera_prefix: str = "/camera"):
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.context = context
        self.node = Node(name, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.target = target
        self.camera_prefix = camera_prefix
        self.collectors: dict[str, Collector] = {}
        self._publishers: dict[str, Any] = {}

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
        return bool(self.call(ChangeState, f"/{self.target}/change_state", request, timeout).success)

    def get_state(self, timeout: float = 60.0) -> str:
        from lifecycle_msgs.srv import GetState

        return self.call(GetState, f"/{self.target}/get_state", GetState.Request(), timeout).current_state.label

    def set_parameters(self, values: dict[str, Any], timeout: float = 60.0) -> list:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request()
        request.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        return list(self.call(SetParameters, f"/{self.target}/set_parameters", request, timeout).results)

    def get_parameters(self, names: list[str], timeout: float = 60.0) -> list:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        request = GetParameters.Request(names=names)
        return [parameter_value_to_python(v) for v in
                self.call(GetParameters, f"/{self.target}/get_parameters", request, timeout).values]

    # ------------------------------------------------------------------------------------------ outputs
    def subscribe_outputs(self, cloud: str = "/cloud", instance_map: str = "/instance_map",
                          markers: str = "/markers", debug_image: Optional[str] = None) -> None:
        """Collect /tf, the cloud, the instance map, markers, /diagnostics (and the debug image if named)."""
        from diagnostic_msgs.msg import DiagnosticArray
        from moonseg3r_msgs.msg import InstanceMap
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, PointCloud2
        from tf2_msgs.msg import TFMessage
        from visualization_msgs.msg import MarkerArray

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
        for key, msg_type, topic, qos in topics:
            self.collectors[key] = collector = Collector()
            self.node.create_subscription(msg_type, topic, collector, qos)

    def __getitem__(self, key: str) -> Collector:
        return self.collectors[key]

    def diagnostics(self) -> dict[str, str]:
        """Values of the latest moonseg3r diagnostic status ({} before the first)."""
        for array in reversed(list(self.collectors["diagnostics"].messages)):
            for status in array.status:
                if status.name.startswith("moonseg3r"):
                    return {kv.key: kv.value for kv in status.values}
        return {}

    # ------------------------------------------------------------------------------------------ inputs
    def publisher(self, key: str, msg_type, topic: str, depth: int = 100):
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        if key not in self._publishers:
            self._publishers[key] = self.node.create_publisher(
                msg_type, topic, QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE))
        return self._publishers[key]

    def wait_for_subscribers(self, topic_key: str, count: int = 1, timeout: float = 30.0) -> bool:
        pub = self._publishers[topic_key]
        return self.spin_until(lambda: pub.get_subscription_count() >= count, timeout)

    def make_input_publishers(self, ground_truth: bool = True, recorded: bool = True) -> None:
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import CameraInfo, Image

        p = self.camera_prefix
        self.publisher("image", Image, f"{p}/image_raw")
        if recorded:
            self.publisher("depth", Image, f"{p}/depth/image_raw")
            self.publisher("camera_info", CameraInfo, f"{p}/camera_info")
            self.publisher("pose", PoseStamped, f"{p}/pose")
        if ground_truth:
            self.publisher("instance_ids", Image, f"{p}/instance_ids")

    def publish_frame(self, frame, stamp=None, encoding: str = "rgb8", map_frame: str = "map",
                      image_msg=None, image_key: str = "image") -> None:
        """Publish a core `Frame` as the synthetic bag writer does: side inputs first, then the image."""
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import CameraInfo

        from moonseg3r_ros.ros import conversions as conv

        stamp = stamp if stamp is not None else conv.seconds_to_stamp(frame.stamp)
        if "depth" in self._publishers and frame.depth is not None:
            self._publishers["depth"].publish(conv.array_to_image_msg(frame.depth.astype(np.float32), "32FC1", stamp))
        if "camera_info" in self._publishers and frame.intrinsics is not None:
            info = CameraInfo()
            info.header.stamp, info.header.frame_id = stamp, "camera_optical"
            info.height, info.width = frame.height, frame.width
            info.k = [float(v) for v in np.asarray(frame.intrinsics).reshape(-1)]
            self._publishers["camera_info"].publish(info)
        if "pose" in self._publishers and frame.pose_c2w is not None:
            pose = PoseStamped()
            pose.header.stamp, pose.header.frame_id = stamp, map_frame
            pose.pose = conv.matrix_to_pose_msg(frame.pose_c2w)
            self._publishers["pose"].publish(pose)
        if "instance_ids" in self._publishers and frame.instance_ids is not None:
            self._publishers["instance_ids"].publish(
                conv.array_to_image_msg(frame.instance_ids.astype(np.uint16), "mono16", stamp))
        if image_msg is None:
            pixels = frame.image if encoding == "rgb8" else np.ascontiguousarray(frame.image[..., ::-1])
            image_msg = conv.array_to_image_msg(pixels, encoding, stamp, "camera_optical")
        self._publishers[image_key].publish(image_msg)

    def feed(self, frames, start_stamp: float, period: float = 0.1, ground_truth: bool = True) -> None:
        """Publish frames (with all side inputs) at stamps start_stamp + i * period, once subscribed."""
        from moonseg3r_ros.ros import conversions as conv

        self.make_input_publishers(ground_truth=ground_truth)
        for key in self._publishers:
            if not self.wait_for_subscribers(key):
                raise TimeoutError(f"nobody subscribed to the {key} input")
        for i, frame in enumerate(frames):
            self.publish_frame(frame, conv.seconds_to_stamp(start_stamp + period * i))
            self.spin_for(0.02)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()

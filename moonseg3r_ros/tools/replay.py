"""`moonseg3r replay`: feed a bag or a dataset folder through the real moonseg3r node and keep its map.

    moonseg3r replay BAG_OR_SEQUENCE --out OUT [--geometry recorded|cut3r] [--masks weight_free|ground_truth|sam|precomputed]
                     [--cut3r-checkpoint P] [--sam-checkpoint P] [--keyframe-interval N] [--params-file YAML]
                     [--rate HZ] [--vertices PLY] [--gt GT.txt] [--scene NAME] [--timeout S]

What happens:
1. The input is opened: a rosbag2 (folder with metadata.yaml, or its .db3/.mcap file; read with
   moonseg3r_ros.data.bag) or a ScanNet/SceneNN-style folder (moonseg3r_ros.data.datasets.open_sequence).
   A missing or corrupt input is a one-line error and exit code 1.
2. The node runs as a child process (`python -m moonseg3r_ros.ros.node`) in a namespace of its own, with
   autostart, `drop_policy:=oldest`, a queue longer than the sequence and reliable input QoS. Its log goes
   to OUT/node.log. A configure failure (missing checkpoint, bad parameter) is reported back (exit 1).
3. This process publishes every frame (image; camera_info, depth and pose for recorded geometry; instance
   ids for ground-truth masks) on the topics the node is told to subscribe to, stamped with the frame's
   stamp. `--rate 0` (default) sends a frame only while fewer than `--window` frames are unfinished in the
   node (flow control on the node's /diagnostics counters): the node works as fast as it can and nothing
   is dropped. `--rate HZ` sends at that rate (the node's queue absorbs bursts).
4. Every frame is accounted for from the node's diagnostics (received, processed, skipped, dropped);
   the result is written to OUT/replay.json. Drops are reported, never hidden.
5. The node's `~/save_map` service writes OUT/map.npz (the InstanceMap's own format); this tool exports
   OUT/map.ply (coloured by instance) and, when the scene's mesh vertices are known (a dataset folder with
   a mesh, or --vertices), the ScanNet benchmark prediction files OUT/pred/<scene>.txt + pred_mask/.
   With ground truth (the folder's <scene>.txt, or --gt) the AP table is printed and written to
   OUT/metrics.json.

DDS stays on this machine: ROS_AUTOMATIC_DISCOVERY_RANGE defaults to LOCALHOST and an unset ROS_DOMAIN_ID
is chosen at random; Fast DDS uses moonseg3r_ros/ros/fastdds_profile.xml unless FASTDDS_DEFAULT_PROFILES_FILE
is set (see that file: it keeps large frames from stalling replays). All are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from moonseg3r_ros.eval.scannet_ap import json_safe
from moonseg3r_ros.ros.dds import confine_dds
from moonseg3r_ros.ros.dds import describe as describe_dds
from moonseg3r_ros.ros.process import stop_process

NODE_NAME = "moonseg3r"
# Input topics (relative to the node's namespace): the same names `moonseg3r to-bag` writes.
TOPICS = {
    "image": "camera/image_raw",
    "camera_info": "camera/camera_info",
    "depth": "camera/depth/image_raw",
    "pose": "camera/pose",
    "instance_ids": "camera/instance_ids",
}
GEOMETRY_SOURCES = ("recorded", "cut3r")
MASK_SOURCES = ("weight_free", "ground_truth", "sam", "precomputed")
DIAGNOSTICS_RATE_HZ = 20.0
LOST_COUNTERS = ("queue_drops", "pairing_drops", "bad_input", "stamps_not_increasing")


class ReplayError(RuntimeError):
    """A user-facing failure (bad input, node failure); the command prints it and exits 1."""


# ----------------------------------------------------------------------------------------------------
# Environment


def ensure_ros_environment(quiet: bool = False) -> tuple[str, str]:
    """Keep DDS on this machine: LOCALHOST discovery, a domain id and the Fast DDS profile when unset."""
    chosen = confine_dds()
    rng, domain = os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"], os.environ["ROS_DOMAIN_ID"]
    if not quiet:
        how = f" (chosen: {', '.join(chosen)})" if chosen else " (from the environment)"
        print(f"ROS 2: {describe_dds()}{how}", flush=True)
    return rng, domain


# ----------------------------------------------------------------------------------------------------
# Inputs


@dataclass
class ReplayInput:
    """Frames to replay plus what is known about the scene."""

    frames: Iterable[Any]  # iterable of core.types.Frame (may be a generator)
    total: Optional[int]
    scene: str
    vertices: Optional[np.ndarray] = None  # Vx3 mesh vertices for the ScanNet export
    gt_labels: Optional[np.ndarray] = None  # V per-vertex GT (label*1000+instance)
    gt_poses: Optional[dict] = None  # stamp ns -> 4x4 GT camera-to-world (aligns monocular maps)


def is_bag(path: Path) -> bool:
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or path.suffix in (".db3", ".mcap")


def bag_image_count(path: Path) -> int:
    """Number of images in a bag from its metadata (BagError when missing/corrupt or without images)."""
    from moonseg3r_ros.data.bag import IMAGE_TOPIC, BagError, _open_reader

    if path.is_file() and path.suffix in (".db3", ".mcap"):
        path = path.parent
    reader = _open_reader(path)
    try:
        counts = {c.topic: c.msgcount for c in reader.connections}
    finally:
        reader.close()
    if not counts.get(IMAGE_TOPIC):
        raise BagError(f"{path}: no messages on {IMAGE_TOPIC} (topics: {sorted(counts)})")
    return int(counts[IMAGE_TOPIC])


def open_input(path, scene: Optional[str] = None) -> ReplayInput:
    """Open a bag or a dataset folder; ReplayError (one line) when missing or unreadable."""
    from moonseg3r_ros.data.bag import BagError, read_bag
    from moonseg3r_ros.data.datasets import DatasetError, open_sequence

    path = Path(path)
    if not path.exists():
        raise ReplayError(f"input not found: {path}")
    try:
        if is_bag(path):
            total = bag_image_count(path)
            name = scene or (path.parent.name if path.is_file() else path.name)
            return ReplayInput(read_bag(path), total, name)
        seq = open_sequence(path)
    except (BagError, DatasetError, ValueError) as err:
        raise ReplayError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    vertices = getattr(seq, "vertices", None)
    labels = getattr(seq, "vertex_labels", None)
    return ReplayInput(seq, len(seq), scene or getattr(seq, "name", path.name), vertices, labels)


# ----------------------------------------------------------------------------------------------------
# Node process


@dataclass
class ReplayOptions:
    geometry: str = "recorded"
    masks: str = "weight_free"
    cut3r_checkpoint: str = ""
    sam_checkpoint: str = ""
    keyframe_interval: Optional[int] = None
    params_file: Optional[str] = None
    extra_params: dict = field(default_factory=dict)  # name -> value (ROS parameter overrides)
    rate: float = 0.0
    window: int = 3
    timeout: float = 300.0
    progress: bool = True


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if "." in repr(value) or "e" in repr(value) else f"{value}.0"
    return str(value)


def node_parameters(opts: ReplayOptions, queue_size: int) -> dict[str, Any]:
    """ROS parameter overrides for the node of a replay."""
    values: dict[str, Any] = {
        "autostart": True,
        "drop_policy": "oldest",
        "queue_size": max(int(queue_size), 2),
        "input_reliability": "reliable",
        "diagnostics_rate": DIAGNOSTICS_RATE_HZ,
        "publish_debug_image": False,
        "geometry.source": opts.geometry,
        "masks.source": opts.masks,
        "sync.buffer_size": max(30, 4 * opts.window),
    }
    values.update({f"topics.{k}": v for k, v in TOPICS.items()})
    if opts.cut3r_checkpoint:
        values["geometry.cut3r_checkpoint"] = str(Path(opts.cut3r_checkpoint).expanduser().resolve())
    if opts.sam_checkpoint:
        values["masks.sam_checkpoint"] = str(Path(opts.sam_checkpoint).expanduser().resolve())
    if opts.keyframe_interval:
        values["keyframe_interval"] = int(opts.keyframe_interval)
    values.update(opts.extra_params)
    return values


def node_command(namespace: str, parameters: dict[str, Any], params_file: Optional[str]) -> list[str]:
    cmd = [sys.executable, "-m", "moonseg3r_ros.ros.node", "--ros-args", "-r", f"__ns:=/{namespace}",
           "-r", f"__node:={NODE_NAME}"]
    if params_file:
        cmd += ["--params-file", str(Path(params_file).expanduser().resolve())]
    for name, value in parameters.items():
        cmd += ["-p", f"{name}:={_param_text(value)}"]
    return cmd


def _log_error_line(log_path: Path) -> str:
    """The node's most telling error line ('configure failed: ...') from its log, '' if none."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for key in ("configure failed", "activate failed", "invalid parameters", "Traceback", "Error"):
        hits = [line for line in lines if key in line]
        if hits:
            line = hits[-1] if key != "Traceback" else lines[-1]
            return line.split("]: ", 1)[-1].strip()
    return ""


class NodeProcess:
    """The moonseg3r node as a child process (its output in a log file)."""

    def __init__(self, cmd: list[str], log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in [root, env.get("PYTHONPATH", "")] if p)
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def failure(self, what: str) -> ReplayError:
        detail = _log_error_line(self.log_path)
        code = self.proc.poll()
        state = f"the node exited with code {code}" if code is not None else "the node"
        return ReplayError(f"{what}: {state}{': ' + detail if detail else ''} (log: {self.log_path})")

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        code = stop_process(self.proc, signal.SIGINT, timeout)
        self._log.close()
        return code


# ----------------------------------------------------------------------------------------------------
# The ROS side of the replay (publisher node in this process)


class ReplayClient:
    """rclpy node that publishes the frames, listens to the node's outputs and calls its services."""

    def __init__(self, namespace: str, needs: list[str]):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from lifecycle_msgs.srv import GetState
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from moonseg3r_msgs.msg import InstanceMap
        from moonseg3r_msgs.srv import SaveMap

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context)
        self.node = rclpy.create_node(f"moonseg3r_replay_{os.getpid()}", namespace=f"/{namespace}",
                                      context=self.context)
        self.fqn = f"/{namespace}/{NODE_NAME}"
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        types = {"image": Image, "camera_info": CameraInfo, "depth": Image, "pose": PoseStamped,
                 "instance_ids": Image}
        streams = ["image"] + (["camera_info", "depth", "pose"] if "depth" in needs else []) + \
                  (["instance_ids"] if "instance_ids" in needs else [])
        self.pubs = {s: self.node.create_publisher(types[s], TOPICS[s], reliable) for s in streams}
        self._cond = threading.Condition()
        self.diagnostics: dict[str, str] = {}
        self.diagnostics_count = 0
        self.instance_maps = 0
        self.last_instance_map = None
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.node.create_subscription(InstanceMap, "instance_map", self._on_instance_map, latched)
        self.poses: dict[int, np.ndarray] = {}  # stamp ns -> camera-to-map pose from the node's /tf
        try:
            from tf2_msgs.msg import TFMessage

            tf_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.VOLATILE)
            self.node.create_subscription(TFMessage, "/tf", self._on_tf, tf_qos)
        except ImportError:  # no tf2_msgs: poses are only needed to align monocular maps
            pass
        self._get_state = self.node.create_client(GetState, f"{self.fqn}/get_state")
        self._save = self.node.create_client(SaveMap, f"{self.fqn}/save_map")
        self._GetState, self._SaveMap = GetState, SaveMap
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._spin, name="replay-executor", daemon=True)
        self._spinner.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # shutdown
            pass

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.hardware_id == self.fqn:
                with self._cond:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}
                    self.diagnostics_count += 1
                    self._cond.notify_all()

    def _on_instance_map(self, msg) -> None:
        with self._cond:
            self.instance_maps += 1
            self.last_instance_map = msg
            self._cond.notify_all()

    def _on_tf(self, msg) -> None:
        from moonseg3r_ros.ros import conversions as conv

        for t in msg.transforms:
            if t.child_frame_id == "camera_optical" and t.header.frame_id == "map":
                self.poses[conv.stamp_to_ns(t.header.stamp)] = conv.transform_msg_to_matrix(t)

    # ------------------------------------------------------------------------------------------ queries
    def counter(self, name: str, values: Optional[dict] = None) -> int:
        values = self.diagnostics if values is None else values
        try:
            return int(float(values.get(name, 0)))
        except ValueError:
            return 0

    def finished(self, values: Optional[dict] = None) -> int:
        """Frames the node is done with: processed, skipped, failed or dropped."""
        c = lambda n: self.counter(n, values)  # noqa: E731
        return c("frames_processed") + c("skipped") + c("processing_errors") + sum(c(n) for n in LOST_COUNTERS)

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def lifecycle_state(self, timeout: float = 2.0) -> Optional[str]:
        if not self._get_state.service_is_ready():
            return None
        future = self._get_state.call_async(self._GetState.Request())
        if not self._wait_future(future, timeout):
            return None
        return future.result().current_state.label

    def save_map(self, path: Path, timeout: float = 60.0) -> tuple[bool, str]:
        if not self._save.wait_for_service(timeout_sec=timeout):
            return False, f"service {self.fqn}/save_map is not available"
        request = self._SaveMap.Request()
        request.path = str(path)
        future = self._save.call_async(request)
        if not self._wait_future(future, timeout):
            return False, "no answer from save_map"
        result = future.result()
        return bool(result.success), str(result.message)

    @staticmethod
    def _wait_future(future, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        return future.done()

    def subscribers_ready(self) -> bool:
        return all(pub.get_subscription_count() > 0 for pub in self.pubs.values())

    # ------------------------------------------------------------------------------------------ publish
    def publish_frame(self, frame) -> None:
        from moonseg3r_ros.ros import conversions as conv

        stamp = conv.seconds_to_stamp(float(frame.stamp))
        if "camera_info" in self.pubs:
            if frame.depth is None or frame.intrinsics is None or frame.pose_c2w is None:
                raise ReplayError(f"frame {frame.frame_index} has no depth/intrinsics/pose, which recorded "
                                  "geometry needs (use --geometry cut3r)")
            self.pubs["camera_info"].publish(camera_info_msg(frame.intrinsics, frame.height, frame.width, stamp))
            self.pubs["depth"].publish(conv.array_to_image_msg(np.asarray(frame.depth, np.float32), "32FC1",
                                                               stamp, "camera_optical"))
            pose = _pose_stamped(frame.pose_c2w, stamp)
            self.pubs["pose"].publish(pose)
        if "instance_ids" in self.pubs:
            if frame.instance_ids is None:
                raise ReplayError(f"frame {frame.frame_index} has no instance ids, which ground-truth masks need")
            self.pubs["instance_ids"].publish(conv.array_to_image_msg(np.asarray(frame.instance_ids, np.int32),
                                                                      "32SC1", stamp, "camera_optical"))
        self.pubs["image"].publish(conv.array_to_image_msg(frame.image, "rgb8", stamp, "camera_optical"))

    def close(self) -> None:
        try:
            self.executor.shutdown(timeout_sec=2.0)
            self.node.destroy_node()
        finally:
            self._rclpy.try_shutdown(context=self.context)
        self._spinner.join(timeout=2.0)


def camera_info_msg(K: np.ndarray, height: int, width: int, stamp):
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo()
    msg.header.stamp, msg.header.frame_id = stamp, "camera_optical"
    msg.height, msg.width = int(height), int(width)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    K = np.asarray(K, np.float64).reshape(3, 3)
    msg.k = [float(v) for v in K.reshape(-1)]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [float(K[0, 0]), 0.0, float(K[0, 2]), 0.0, 0.0, float(K[1, 1]), float(K[1, 2]), 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def _pose_stamped(pose_c2w: np.ndarray, stamp):
    from geometry_msgs.msg import PoseStamped

    from moonseg3r_ros.ros import conversions as conv

    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = stamp, "map"
    msg.pose = conv.matrix_to_pose_msg(np.asarray(pose_c2w, np.float64))
    return msg


# ----------------------------------------------------------------------------------------------------
# The replay


@dataclass
class ReplayResult:
    out: Path
    map_path: Path
    ply_path: Path
    pred_dir: Optional[Path]
    stats: dict
    instances: int
    seconds: float
    metrics: Optional[dict] = None
    poses: dict = field(default_factory=dict)  # stamp ns -> 4x4 camera-to-map pose published by the node
    alignment: Optional[np.ndarray] = None  # 4x4 similarity map -> GT world (monocular geometry only)


def _needs(opts: ReplayOptions) -> list[str]:
    return (["depth"] if opts.geometry == "recorded" else []) + \
        (["instance_ids"] if opts.masks == "ground_truth" else [])


def _state_from_log(log_path: Path) -> Optional[str]:
    """Fallback when the get_state service does not answer: the node logs 'active: listening on ...'."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return None
    return "active" if "]: active: listening on" in text else None


def _wait_active(client: ReplayClient, node: NodeProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not node.alive():
            raise node.failure("the node did not start")
        state = client.lifecycle_state() or _state_from_log(node.log_path)
        if state == "active":
            return
        if state == "unconfigured" and _log_error_line(node.log_path):
            raise node.failure("the node could not configure")
        if state == "inactive" and "activate failed" in _log_error_line(node.log_path):
            raise node.failure("the node could not activate")
        time.sleep(0.25)
    raise node.failure(f"the node was not active after {timeout:.0f} s")


def replay(source: ReplayInput, out, opts: ReplayOptions) -> ReplayResult:
    """Run the whole replay (see the module docstring); raises ReplayError on failure."""
    from moonseg3r_ros.data.bag import BagError

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ensure_ros_environment(quiet=True)
    start = time.monotonic()
    namespace = f"replay_{os.getpid()}_{random.SystemRandom().randint(0, 99999)}"
    queue_size = (source.total or 10_000) + 16
    cmd = node_command(namespace, node_parameters(opts, queue_size), opts.params_file)
    (out / "node_command.txt").write_text(" ".join(cmd) + "\n")
    node = NodeProcess(cmd, out / "node.log")
    client = None
    try:
        client = ReplayClient(namespace, _needs(opts))
        _wait_active(client, node, opts.timeout)
        if not client.wait(lambda: client.subscribers_ready() and client.diagnostics_count > 0, 30.0):
            raise node.failure("the node's subscriptions or diagnostics did not appear")
        sent = _send_frames(client, node, source, opts)
        _wait_done(client, node, sent, opts.timeout)
        values = dict(client.diagnostics)
        stats = _stats(client, values, sent)
        map_path = out / "map.npz"
        ok, message = client.save_map(map_path)
        if not ok:
            raise ReplayError(f"saving the map failed: {message}")
        stats["instance_map_messages"] = client.instance_maps
        poses = dict(client.poses)
    except BagError as err:
        raise ReplayError(str(err).splitlines()[0]) from None
    finally:
        if client is not None:
            client.close()
        code = node.stop()
    stats["node_exit_code"] = code
    result = export_map(map_path, out, source, alignment=align_to_ground_truth(poses, source, opts))
    result.stats, result.seconds, result.poses = stats, time.monotonic() - start, poses
    (out / "replay.json").write_text(json.dumps({"scene": source.scene, "seconds": round(result.seconds, 2),
                                                 "instances": result.instances, **stats}, indent=2))
    return result


def _send_frames(client: ReplayClient, node: NodeProcess, source: ReplayInput, opts: ReplayOptions) -> int:
    from tqdm import tqdm

    bar = tqdm(total=source.total, desc=f"replay {source.scene}", unit="frame", disable=not opts.progress,
               dynamic_ncols=True)
    sent, period = 0, (1.0 / opts.rate if opts.rate > 0 else 0.0)
    next_time = time.monotonic()
    done = 0
    try:
        for frame in source.frames:
            if opts.rate > 0:
                time.sleep(max(0.0, next_time - time.monotonic()))
                next_time += period
            else:
                _wait_progress(client, node, lambda: sent - client.finished() < opts.window, opts.timeout,
                               f"the node made no progress for {opts.timeout:.0f} s")
            client.publish_frame(frame)
            sent += 1
            now_done = min(client.finished(), sent)
            bar.update(sent - bar.n)
            if now_done != done:
                done = now_done
                bar.set_postfix(done=done, instances=client.counter("instances"), refresh=False)
    finally:
        bar.close()
    return sent


def _wait_progress(client: ReplayClient, node: NodeProcess, predicate, timeout: float, message: str) -> None:
    """Wait for predicate; fail when the node dies or nothing changes for `timeout` seconds."""
    last, last_change = client.finished(), time.monotonic()
    while not client.wait(predicate, 0.5):
        if not node.alive():
            raise node.failure("the node stopped during the replay")
        now = client.finished()
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > timeout:
            raise node.failure(message)


def _wait_done(client: ReplayClient, node: NodeProcess, sent: int, timeout: float) -> None:
    _wait_progress(client, node, lambda: client.finished() >= sent, timeout,
                   f"the node did not finish the last frames within {timeout:.0f} s")
    # One more diagnostics message so that the counters include everything finished above.
    count = client.diagnostics_count
    client.wait(lambda: client.diagnostics_count > count + 1, 5.0)


def _stats(client: ReplayClient, values: dict, sent: int) -> dict:
    c = lambda n: client.counter(n, values)  # noqa: E731
    received = c("images_received")
    stats = {
        "frames_sent": sent,
        "images_received": received,
        "frames_processed": c("frames_processed"),
        "keyframes": c("keyframes"),
        "frames_skipped": c("skipped"),
        "processing_errors": c("processing_errors"),
        **{n: c(n) for n in LOST_COUNTERS},
        "not_received": max(0, sent - received) if "images_received" in values else 0,
    }
    stats["drops"] = stats["not_received"] + sum(stats[n] for n in LOST_COUNTERS)
    stats["node_fps"] = values.get("fps")
    stats["node_latency_mean_ms"] = values.get("latency_mean_ms")
    stats["node_peak_rss_mb"] = values.get("peak_rss_mb")
    stats["pipeline"] = {k[len("pipeline."):]: _number(v) for k, v in values.items() if k.startswith("pipeline.")}
    return stats


def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() else value


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """4x4 similarity S (scale s, rotation R, translation t) minimising |dst - (s R src + t)|^2."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, d, vt = np.linalg.svd(b.T @ a / len(src))
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1
    rotation = u @ sign @ vt
    var = (a ** 2).sum() / len(src)
    scale = float(np.trace(np.diag(d) @ sign) / var) if var > 0 else 1.0
    out = np.eye(4)
    out[:3, :3] = scale * rotation
    out[:3, 3] = mu_d - scale * rotation @ mu_s
    return out


def align_to_ground_truth(poses: dict, source: ReplayInput, opts: ReplayOptions) -> Optional[np.ndarray]:
    """Monocular (CUT3R) maps live in the model's own frame and scale: fit map -> GT world from the camera
    centres (the node's /tf vs the recorded poses, matched by stamp). None for recorded geometry."""
    gt = getattr(source, "gt_poses", None)
    if opts.geometry == "recorded" or not gt or not poses:
        return None
    common = sorted(set(poses) & set(gt))
    if len(common) < 3:
        return None
    return umeyama(np.array([poses[k][:3, 3] for k in common]), np.array([gt[k][:3, 3] for k in common]))


def export_map(map_path: Path, out: Path, source: ReplayInput, alignment: Optional[np.ndarray] = None
               ) -> ReplayResult:
    """OUT/map.ply and (with vertices) OUT/pred/<scene>.txt + pred_mask/; AP when GT labels are known.

    With `alignment` (map -> GT world similarity), the vertices are brought into the map frame first."""
    from moonseg3r_ros.core.instance_map import InstanceMap, MapFileError

    try:
        instance_map = InstanceMap.load(map_path)
    except MapFileError as err:
        raise ReplayError(str(err)) from None
    ply = out / "map.ply"
    instance_map.export_ply(ply, color_by="instance")
    pred_dir, metrics = None, None
    if source.vertices is not None:
        pred_dir = out / "pred"
        vertices = np.asarray(source.vertices, np.float64)
        if alignment is not None:
            vertices = (vertices - alignment[:3, 3]) @ np.linalg.inv(alignment[:3, :3]).T
        instance_map.export_scannet(vertices, pred_dir, source.scene)
        if source.gt_labels is not None:
            metrics = evaluate_labels(source.scene, source.gt_labels, pred_dir, out / "gt")
    result = ReplayResult(out, map_path, ply, pred_dir, {}, len(instance_map.instances()), 0.0, metrics)
    result.alignment = alignment
    return result


def evaluate_labels(scene: str, labels: np.ndarray, pred_dir: Path, gt_dir: Path) -> dict:
    from moonseg3r_ros.eval.scannet_ap import evaluate

    gt_dir.mkdir(parents=True, exist_ok=True)
    np.savetxt(gt_dir / f"{scene}.txt", np.asarray(labels, np.int64), fmt="%d")
    return evaluate(gt_dir, pred_dir)


# ----------------------------------------------------------------------------------------------------
# Command line


def add_node_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by replay and demo: sources, checkpoints and how the node is driven."""
    parser.add_argument("--geometry", choices=GEOMETRY_SOURCES, default=None,
                        help="geometry source (default: cut3r when --cut3r-checkpoint is given, else recorded)")
    parser.add_argument("--masks", choices=MASK_SOURCES, default=None,
                        help="mask source (default: sam when --sam-checkpoint is given, else weight_free)")
    parser.add_argument("--cut3r-checkpoint", default="", help="CUT3R checkpoint (.pth/.safetensors)")
    parser.add_argument("--sam-checkpoint", default="", help="segment-anything checkpoint (sam_vit_b_01ec64.pth, ...)")
    parser.add_argument("--keyframe-interval", type=int, default=None, help="node parameter keyframe_interval")
    parser.add_argument("--params-file", default=None, help="ROS parameter YAML for the node (overridden by the "
                        "options above)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="extra node parameter, e.g. -p map.voxel_size:=0.03 (repeatable)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="frames per second to send; 0 (default) = as fast as the node keeps up, no drops")
    parser.add_argument("--window", type=int, default=3, help="with --rate 0: frames in flight (default 3)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="fail when the node makes no progress for this many seconds (default 300)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def options_from_args(args: argparse.Namespace) -> ReplayOptions:
    extra = {}
    for item in args.param:
        if ":=" not in item:
            raise ReplayError(f"--param expects NAME:=VALUE, got {item!r}")
        name, value = item.split(":=", 1)
        extra[name.strip()] = value.strip()
    geometry = args.geometry or ("cut3r" if args.cut3r_checkpoint else "recorded")
    masks = args.masks or ("sam" if args.sam_checkpoint else "weight_free")
    for path, what in ((args.cut3r_checkpoint, "CUT3R checkpoint"), (args.sam_checkpoint, "SAM checkpoint")):
        if path and not Path(path).expanduser().is_file():
            raise ReplayError(f"{what} not found: {path}")
    if args.window < 1:
        raise ReplayError("--window must be >= 1")
    return ReplayOptions(geometry=geometry, masks=masks, cut3r_checkpoint=args.cut3r_checkpoint,
                         sam_checkpoint=args.sam_checkpoint, keyframe_interval=args.keyframe_interval,
                         params_file=args.params_file, extra_params=extra, rate=max(0.0, args.rate),
                         window=args.window, timeout=args.timeout, progress=not args.quiet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moonseg3r replay",
        description="Replay a rosbag2 or a dataset folder (ScanNet/SceneNN layout) through the moonseg3r node "
                    "and write its final map: OUT/map.npz, OUT/map.ply and ScanNet predictions OUT/pred/.")
    parser.add_argument("input", help="rosbag2 folder (or .db3/.mcap) or sequence folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--scene", default=None, help="scene name for the ScanNet export (default: the --gt file's "
                        "name, else the input's name)")
    parser.add_argument("--vertices", default=None, help="mesh PLY whose vertices the ScanNet export covers "
                        "(default: the sequence folder's <scene>_vh_clean_2.ply)")
    parser.add_argument("--gt", default=None, help="per-vertex GT <scene>.txt to evaluate against "
                        "(default: the sequence folder's <scene>.txt)")
    add_node_options(parser)
    return parser


def print_summary(result: ReplayResult, table: bool = True) -> None:
    s = result.stats
    print(f"replayed {s['frames_sent']} frames in {result.seconds:.1f} s: {s['frames_processed']} processed "
          f"({s['keyframes']} keyframes), {s['frames_skipped']} skipped, {s['drops']} dropped; "
          f"{result.instances} instances")
    print(f"map: {result.map_path}  ply: {result.ply_path}" + (f"  predictions: {result.pred_dir}"
                                                                  if result.pred_dir else ""))
    if table and result.metrics is not None:
        from moonseg3r_ros.eval.scannet_ap import format_table

        print(format_table(result.metrics))


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        opts = options_from_args(args)
        scene = args.scene or (Path(args.gt).stem if args.gt else None)
        source = open_input(args.input, scene)
        if args.vertices:
            from moonseg3r_ros.data.scannet_io import read_vertex_ply

            source.vertices = read_vertex_ply(Path(args.vertices))
        if args.gt:
            source.gt_labels = np.loadtxt(args.gt, dtype=np.int64).reshape(-1)
        if source.gt_labels is not None and source.vertices is not None \
                and len(source.gt_labels) != len(source.vertices):
            raise ReplayError(f"GT has {len(source.gt_labels)} values but the mesh {len(source.vertices)} vertices")
        ensure_ros_environment()
        result = replay(source, args.out, opts)
    except ReplayError as err:
        print(f"moonseg3r replay: error: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        print(f"moonseg3r replay: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print_summary(result)
    if result.metrics is not None:
        Path(args.out, "metrics.json").write_text(json.dumps(json_safe(result.metrics), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

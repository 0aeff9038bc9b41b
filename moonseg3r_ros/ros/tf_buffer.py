"""TF lookups: tf2_ros when it is installed, otherwise a small buffer of ours behind the same interface.

There is no tf2_ros wheel on PyPI, so `TransformBuffer` keeps what /tf and /tf_static carry (one parent
per child frame, a time-ordered history per dynamic edge, static edges valid at any time) and answers
`lookup(target, source, stamp_ns)` -> 4x4 pose of `source` in `target` (p_target = T @ p_source) by chaining
edges through their common ancestor, interpolating each dynamic edge at the stamp (linear translation,
slerp rotation). A stamp of None (or 0) asks for the latest time all edges of the chain share, as tf2's
Time() does. Errors name what is missing:
- TfLookupError: a frame was never seen;
- TfConnectivityError: both frames are known but belong to different trees;
- TfExtrapolationError: the stamp lies outside the history of an edge (past or future, with the span).
`Tf2RosBuffer` wraps tf2_ros.Buffer with the same method and errors. `make_tf_buffer(node)` picks one and
subscribes it to /tf and /tf_static. The ROS-free logic (TransformBuffer) needs no rclpy.
"""
from __future__ import annotations

import bisect
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from scipy.spatial.transform import Rotation


class TfError(Exception):
    """A transform cannot be looked up (base of the three cases below)."""


class TfLookupError(TfError):
    pass


class TfConnectivityError(TfError):
    pass


class TfExtrapolationError(TfError):
    pass


@dataclass
class _Edge:
    """The transform parent <- child over time: sorted stamps (ns), translations Nx3, quaternions Nx4 xyzw."""

    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)
    translations: list[np.ndarray] = field(default_factory=list)
    quaternions: list[np.ndarray] = field(default_factory=list)

    def insert(self, stamp_ns: int, translation: np.ndarray, quaternion: np.ndarray) -> None:
        if self.static:
            self.stamps, self.translations, self.quaternions = [stamp_ns], [translation], [quaternion]
            return
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if i < len(self.stamps) and self.stamps[i] == stamp_ns:
            self.translations[i], self.quaternions[i] = translation, quaternion
            return
        self.stamps.insert(i, stamp_ns)
        self.translations.insert(i, translation)
        self.quaternions.insert(i, quaternion)

    def prune(self, keep_after_ns: int) -> None:
        cut = bisect.bisect_left(self.stamps, keep_after_ns)
        cut = min(cut, len(self.stamps) - 1)  # always keep the latest sample
        if cut > 0:
            del self.stamps[:cut], self.translations[:cut], self.quaternions[:cut]

    def at(self, stamp_ns: int, child: str) -> np.ndarray:
        """4x4 parent <- child at the stamp (any stamp for a static edge)."""
        if self.static:
            return _matrix(self.translations[0], self.quaternions[0])
        first, last = self.stamps[0], self.stamps[-1]
        if stamp_ns < first or stamp_ns > last:
            when = "past" if stamp_ns < first else "future"
            raise TfExtrapolationError(
                f"lookup would require extrapolation into the {when}: requested {stamp_ns * 1e-9:.9f} s but "
                f"{self.parent} -> {child} has data for [{first * 1e-9:.9f}, {last * 1e-9:.9f}] s")
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if self.stamps[i] == stamp_ns:
            return _matrix(self.translations[i], self.quaternions[i])
        t0, t1 = self.stamps[i - 1], self.stamps[i]
        w = (stamp_ns - t0) / (t1 - t0)
        translation = (1 - w) * self.translations[i - 1] + w * self.translations[i]
        return _matrix(translation, slerp(self.quaternions[i - 1], self.quaternions[i], w))


def slerp(q0: np.ndarray, q1: np.ndarray, w: float) -> np.ndarray:
    """Spherical interpolation between unit quaternions (xyzw) along the shorter arc."""
    dot = float(q0 @ q1)
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + w * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(min(1.0, dot))
    return (math.sin((1 - w) * theta) * q0 + math.sin(w * theta) * q1) / math.sin(theta)


def _matrix(translation: np.ndarray, quaternion: np.ndarray) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = Rotation.from_quat(quaternion).as_matrix()
    t[:3, 3] = translation
    return t


def _quaternion(rotation: np.ndarray) -> np.ndarray:
    """3x3 rotation (re-orthonormalised) -> unit quaternion xyzw."""
    return Rotation.from_matrix(rotation).as_quat()


class TransformBuffer:
    """What /tf and /tf_static said, and chained lookups at a stamp (see module docstring)."""

    def __init__(self, cache_time_s: float = 10.0):
        self.cache_ns = int(cache_time_s * 1e9)
        self._edges: dict[str, _Edge] = {}  # child -> edge to its parent
        self._lock = threading.RLock()  # fed by subscription callbacks, read by the worker thread
        self.parent_changes = 0  # times a child frame was given another parent (REP 105: one parent per frame)

    # ------------------------------------------------------------------------------------------ input
    def set_transform(self, parent: str, child: str, matrix: np.ndarray, stamp_ns: int, static: bool = False) -> None:
        """Record 4x4 parent <- child at stamp_ns (static: valid at any time)."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child or parent == child:
            raise ValueError(f"invalid transform {parent!r} -> {child!r}")
        m = np.asarray(matrix, np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise ValueError(f"transform {parent} -> {child} is not a finite 4x4 matrix")
        with self._lock:
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                if edge is not None and edge.parent != parent:
                    self.parent_changes += 1
                edge = self._edges[child] = _Edge(parent, static)
            edge.insert(int(stamp_ns), m[:3, 3].copy(), _quaternion(m[:3, :3]))
            if not static:
                edge.prune(edge.stamps[-1] - self.cache_ns)

    def set_transform_msg(self, msg: Any, static: bool = False) -> None:
        """geometry_msgs/TransformStamped (e.g. one entry of a tf2_msgs/TFMessage)."""
        tr, ro = msg.transform.translation, msg.transform.rotation
        q = np.array([ro.x, ro.y, ro.z, ro.w], np.float64)
        if not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-9:
            raise ValueError(f"transform {msg.header.frame_id} -> {msg.child_frame_id}: "
                             f"invalid quaternion {q.tolist()}")
        m = _matrix(np.array([tr.x, tr.y, tr.z], np.float64), q / np.linalg.norm(q))
        stamp_ns = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
        self.set_transform(msg.header.frame_id, msg.child_frame_id, m, stamp_ns, static)

    # ------------------------------------------------------------------------------------------ queries
    def frames(self) -> set[str]:
        with self._lock:
            return set(self._edges) | {e.parent for e in self._edges.values()}

    def parent_of(self, child: str) -> Optional[str]:
        with self._lock:
            edge = self._edges.get(child.lstrip("/"))
            return edge.parent if edge else None

    def _chain(self, frame: str) -> list[str]:
        """frame, its parent, ..., the root (cycles are cut where they close)."""
        chain, seen = [frame], {frame}
        while frame in self._edges:
            frame = self._edges[frame].parent
            if frame in seen:
                break
            chain.append(frame)
            seen.add(frame)
        return chain

    def _path(self, target: str, source: str) -> tuple[list[str], list[str]]:
        """(source .. ancestor, target .. ancestor), each without the common ancestor itself."""
        known = self.frames()
        for frame in (target, source):
            if frame not in known:
                raise TfLookupError(f"frame '{frame}' does not exist (known: {sorted(known) or 'none'})")
        up_source, up_target = self._chain(source), self._chain(target)
        in_target = {f: i for i, f in enumerate(up_target)}
        for i, frame in enumerate(up_source):
            if frame in in_target:
                return up_source[:i], up_target[:in_target[frame]]
        raise TfConnectivityError(f"'{source}' and '{target}' are not connected: their trees have the roots "
                                  f"'{up_source[-1]}' and '{up_target[-1]}'")

    def latest_common_ns(self, target: str, source: str) -> int:
        """The latest stamp at which every dynamic edge between the frames has data (0 if all static)."""
        down, up = self._path(target, source)
        dynamic = [(f, self._edges[f]) for f in down + up if not self._edges[f].static]
        if not dynamic:
            return 0
        latest = min(e.stamps[-1] for _, e in dynamic)
        earliest_child, earliest = max(((f, e.stamps[0]) for f, e in dynamic), key=lambda item: item[1])
        if latest < earliest:
            raise TfExtrapolationError(f"no common time between '{target}' and '{source}': "
                                       f"'{earliest_child}' starts at {earliest * 1e-9:.9f} s after another edge ends")
        return latest

    def lookup(self, target: str, source: str, stamp_ns: Optional[int] = None) -> np.ndarray:
        """4x4 pose of `source` in `target` at stamp_ns (None/0: latest common time)."""
        with self._lock:
            return self._lookup(target.lstrip("/"), source.lstrip("/"), stamp_ns)

    def _lookup(self, target: str, source: str, stamp_ns: Optional[int]) -> np.ndarray:
        if target == source and target in self.frames():
            return np.eye(4)
        down, up = self._path(target, source)
        if not stamp_ns:
            stamp_ns = self.latest_common_ns(target, source)
        ancestor_from_source = np.eye(4)
        for frame in down:  # source, its parent, ... (below the ancestor)
            ancestor_from_source = self._edges[frame].at(stamp_ns, frame) @ ancestor_from_source
        ancestor_from_target = np.eye(4)
        for frame in up:
            ancestor_from_target = self._edges[frame].at(stamp_ns, frame) @ ancestor_from_target
        return np.linalg.inv(ancestor_from_target) @ ancestor_from_source


def wait_for_lookup(buffer: Any, target: str, source: str, stamp_ns: int, timeout_s: float,
                    poll_s: float = 0.005) -> np.ndarray:
    """buffer.lookup, retried while the answer may still arrive (unknown frames, future stamps) for up to
    timeout_s; the last error is raised after that. Past extrapolation and connectivity fail at once only
    when the wait is over, too: a parent edge may still be on its way."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return buffer.lookup(target, source, stamp_ns)
        except TfError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(poll_s)


class Tf2RosBuffer:
    """tf2_ros.Buffer behind TransformBuffer's lookup interface (tf2's exceptions become ours)."""

    def __init__(self, buffer: Any):
        self.buffer = buffer

    def lookup(self, target: str, source: str, stamp_ns: Optional[int] = None) -> np.ndarray:
        import tf2_ros
        from rclpy.time import Time

        try:
            msg = self.buffer.lookup_transform(target, source, Time(nanoseconds=int(stamp_ns or 0)))
        except tf2_ros.ExtrapolationException as exc:
            raise TfExtrapolationError(str(exc)) from exc
        except tf2_ros.ConnectivityException as exc:
            raise TfConnectivityError(str(exc)) from exc
        except (tf2_ros.LookupException, tf2_ros.TransformException) as exc:
            raise TfLookupError(str(exc)) from exc
        tr, ro = msg.transform.translation, msg.transform.rotation
        return _matrix(np.array([tr.x, tr.y, tr.z]), np.array([ro.x, ro.y, ro.z, ro.w]))


def tf_qos():
    """(dynamic /tf, static /tf_static) subscription QoS as tf2_ros uses them."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    dynamic = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
    static = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return dynamic, static


def make_tf_buffer(node: Any, cache_time_s: float = 10.0, use_tf2_ros: Optional[bool] = None
                   ) -> tuple[Any, Any]:
    """A buffer fed from /tf and /tf_static for `node`: tf2_ros's when importable (unless use_tf2_ros is
    False), else ours. Returns (buffer, close): close() stops the feeding (listener or subscriptions)."""
    if use_tf2_ros is not False:
        try:
            import tf2_ros
            from rclpy.duration import Duration

            buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_time_s))
            listener = tf2_ros.TransformListener(buffer, node, spin_thread=False)
            return Tf2RosBuffer(buffer), listener.unregister
        except ImportError:
            if use_tf2_ros:
                raise
    from tf2_msgs.msg import TFMessage

    buffer = TransformBuffer(cache_time_s)
    dynamic, static = tf_qos()

    def on_tf(msg, is_static: bool) -> None:
        for transform in msg.transforms:
            try:
                buffer.set_transform_msg(transform, is_static)
            except ValueError as exc:  # a malformed transform from another node: log, keep the rest
                node.get_logger().warning(f"ignored transform: {exc}", throttle_duration_sec=10.0)

    subs = [node.create_subscription(TFMessage, "/tf", lambda m: on_tf(m, False), dynamic),
            node.create_subscription(TFMessage, "/tf_static", lambda m: on_tf(m, True), static)]

    def close() -> None:
        for sub in subs:
            node.destroy_subscription(sub)

    return buffer, close

"""A frame paired (image + depth + pose) before the first camera_info arrived waits for it instead of being dropped:
a camera driver's image and camera_info come in either order. More than the pairing capacity waiting: the oldest
is dropped and counted; a frame still waiting when the node stops is counted as dropped."""
from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not importable: run `make setup`")

from sensor_msgs.msg import CameraInfo  # noqa: E402

from moonseg3r_ros.core.config import PipelineConfig  # noqa: E402
from moonseg3r_ros.ros import conversions as conv  # noqa: E402
from moonseg3r_ros.ros.inputs import FrameInput, InputsMixin, IntrinsicsCache  # noqa: E402
from moonseg3r_ros.ros.node_config import NodeConfig  # noqa: E402
from moonseg3r_ros.ros.worker import StampPairing  # noqa: E402

K = np.array([[100.0, 0, 16], [0, 100.0, 12], [0, 0, 1]])


class RclpyLikeLogger:
    """rclpy's logger takes throttle_duration_sec; this one records the messages."""

    def __init__(self):
        self.messages: list = []

    def warning(self, msg, **_):
        self.messages.append(msg)

    error = info = warning


class Host(InputsMixin):
    """The node's input side without rclpy entities: submitted frames are collected."""

    def __init__(self, input_depth: int = 2):
        self.config = NodeConfig()
        self.config.input_depth = input_depth
        self.config.sync.buffer_size = input_depth
        self.pipeline_config = PipelineConfig()
        self.counters: dict = {}
        self.submitted: list = []
        self._intrinsics = IntrinsicsCache()
        self._pairing = StampPairing(["image", "depth"], input_depth)
        self._input_seen: dict = {}
        self._active = True

    def _count(self, key, n=1):
        self.counters[key] = self.counters.get(key, 0) + n

    def _submit(self, frame):
        self.submitted.append(frame)

    def get_logger(self):
        return RclpyLikeLogger()

    def resolve_topic_name(self, name):
        return name


def paired_frame(host: Host, seconds: int) -> FrameInput:
    stamp = conv.seconds_to_stamp(float(seconds))
    frame = FrameInput(stamp=stamp, stamp_ns=conv.stamp_to_ns(stamp), rgb=np.zeros((24, 32, 3), np.uint8),
                       received=0.0)
    host._pair("image", frame.stamp_ns, frame)
    host._pair("depth", frame.stamp_ns, np.ones((24, 32), np.float32))
    return frame


def camera_info(seconds: int) -> CameraInfo:
    msg = CameraInfo(width=32, height=24)
    msg.header.stamp = conv.seconds_to_stamp(float(seconds))
    msg.k = K.reshape(-1).tolist()
    return msg


def test_frames_paired_before_the_first_camera_info_wait_for_it():
    host = Host(input_depth=2)
    first, second = paired_frame(host, 1), paired_frame(host, 2)
    assert host.submitted == [] and "images_dropped" not in host.counters
    host._on_camera_info(camera_info(2))
    assert [f.stamp_ns for f in host.submitted] == [first.stamp_ns, second.stamp_ns]
    np.testing.assert_allclose(host.submitted[1].intrinsics, K)
    np.testing.assert_allclose(host.submitted[0].intrinsics, K)  # no K of its own stamp: the latest
    third = paired_frame(host, 3)  # a K is known from now on: straight through
    assert host.submitted[-1] is third and "bad_input" not in host.counters


def test_more_waiting_frames_than_the_capacity_drop_the_oldest_counted():
    host = Host(input_depth=2)
    frames = [paired_frame(host, s) for s in (1, 2, 3)]
    assert host.counters.get("images_dropped.no_camera_info") == 1 and frames[0].accounted
    host._on_camera_info(camera_info(3))
    assert host.submitted == frames[1:]


def test_frames_still_waiting_are_handed_back_when_the_node_stops():
    host = Host()
    frame = paired_frame(host, 1)
    assert host._intrinsics.take_waiting() == [frame]
    host._on_camera_info(camera_info(1))
    assert host.submitted == []

"""ros/tf_buffer.TransformBuffer (our stand-in for tf2_ros.Buffer): chained lookups through the common
ancestor, interpolation at a stamp, static edges, latest common time, and clear errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from moonseg3r_ros.ros.tf_buffer import (TfConnectivityError, TfExtrapolationError, TfLookupError,
                                         TransformBuffer, slerp)

S = 1_000_000_000  # ns per second


def pose(x=0.0, y=0.0, z=0.0, yaw_deg=0.0, roll_deg=0.0) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = Rotation.from_euler("zyx", [yaw_deg, 0.0, roll_deg], degrees=True).as_matrix()
    t[:3, 3] = (x, y, z)
    return t


@pytest.fixture
def robot() -> TransformBuffer:
    """map -> odom (static here), odom -> base_link moving along x at 1 m/s turning 10 deg/s, base -> camera static."""
    tf = TransformBuffer(cache_time_s=10.0)
    tf.set_transform("map", "odom", pose(1.0, 2.0, yaw_deg=90.0), 0, static=True)
    for k in range(5):
        tf.set_transform("odom", "base_link", pose(x=float(k), yaw_deg=10.0 * k), k * S)
    tf.set_transform("base_link", "camera_optical_frame", pose(0.2, 0.0, 0.5, roll_deg=-90.0), 0, static=True)
    return tf


def test_chain_through_the_tree(robot):
    camera = robot.lookup("map", "camera_optical_frame", 2 * S)
    expected = pose(1.0, 2.0, yaw_deg=90.0) @ pose(x=2.0, yaw_deg=20.0) @ pose(0.2, 0.0, 0.5, roll_deg=-90.0)
    np.testing.assert_allclose(camera, expected, atol=1e-12)
    # the inverse direction and a lookup between two leaves through their common ancestor
    np.testing.assert_allclose(robot.lookup("camera_optical_frame", "map", 2 * S), np.linalg.inv(expected), atol=1e-12)
    robot.set_transform("odom", "wheel", pose(y=0.3), 0, static=True)
    np.testing.assert_allclose(robot.lookup("wheel", "base_link", 3 * S),
                               np.linalg.inv(pose(y=0.3)) @ pose(x=3.0, yaw_deg=30.0), atol=1e-12)
    np.testing.assert_allclose(robot.lookup("odom", "odom", 3 * S), np.eye(4))


def test_interpolation_between_samples(robot):
    mid = robot.lookup("odom", "base_link", int(2.25 * S))
    np.testing.assert_allclose(mid[:3, 3], [2.25, 0.0, 0.0], atol=1e-12)
    yaw = math.degrees(math.atan2(mid[1, 0], mid[0, 0]))
    assert yaw == pytest.approx(22.5, abs=1e-9)
    q = slerp(np.array([0.0, 0.0, 0.0, 1.0]), np.array([0.0, 0.0, 1.0, 0.0]), 0.5)  # 0 -> 180 deg about z
    np.testing.assert_allclose(q, [0, 0, math.sqrt(0.5), math.sqrt(0.5)], atol=1e-12)


def test_latest_common_time(robot):
    robot.set_transform("map", "beacon", pose(x=5.0), int(2.5 * S))  # a dynamic edge that ends earlier
    robot.set_transform("map", "beacon", pose(x=6.0), int(3.5 * S))
    assert robot.latest_common_ns("beacon", "base_link") == int(3.5 * S)
    np.testing.assert_allclose(robot.lookup("odom", "base_link")[:3, 3], [4.0, 0.0, 0.0])  # None = latest
    assert robot.latest_common_ns("map", "odom") == 0  # all static


def test_errors_name_what_is_missing(robot):
    future = r"future: requested 7\.0+ s but odom -> base_link has data for \[0\.0+, 4\.0+\] s"
    with pytest.raises(TfExtrapolationError, match=future):
        robot.lookup("map", "camera_optical_frame", 7 * S)
    robot.set_transform("odom", "base_link", pose(x=5.0), 15 * S)  # pushes samples older than 5 s out of the cache
    with pytest.raises(TfExtrapolationError, match="past"):
        robot.lookup("map", "base_link", 2 * S)
    with pytest.raises(TfLookupError, match="'lidar' does not exist"):
        robot.lookup("map", "lidar", 0)
    robot.set_transform("world", "other", pose(), 0, static=True)
    with pytest.raises(TfConnectivityError, match="not connected"):
        robot.lookup("map", "other", 0)
    with pytest.raises(ValueError):
        robot.set_transform("map", "map", pose(), 0)
    with pytest.raises(ValueError):
        robot.set_transform("map", "x", np.full((4, 4), np.nan), 0)


def test_a_second_parent_replaces_the_first_and_is_counted(robot):
    assert robot.parent_of("base_link") == "odom" and robot.parent_changes == 0
    robot.set_transform("map", "base_link", pose(x=9.0), 5 * S)
    assert robot.parent_of("base_link") == "map" and robot.parent_changes == 1
    np.testing.assert_allclose(robot.lookup("map", "base_link", 5 * S)[:3, 3], [9.0, 0.0, 0.0])


def test_messages_feed_the_buffer():
    geometry_msgs = pytest.importorskip("geometry_msgs.msg")
    msg = geometry_msgs.TransformStamped()
    msg.header.frame_id, msg.child_frame_id = "/map", "odom"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 3, 500_000_000
    msg.transform.translation.x = 1.5
    msg.transform.rotation.z, msg.transform.rotation.w = math.sqrt(0.5), math.sqrt(0.5)
    tf = TransformBuffer()
    tf.set_transform_msg(msg)
    np.testing.assert_allclose(tf.lookup("map", "odom", int(3.5 * S)), pose(1.5, yaw_deg=90.0), atol=1e-12)
    with pytest.raises(TfExtrapolationError):
        tf.lookup("map", "odom", 3 * S)

"""ros/robot_frames.RobotFrames: what each nav.tf_mode publishes and where the camera pose comes from,
against a robot's TF tree held in our TransformBuffer (ROS-free)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from moonseg3r_ros.ros.robot_frames import RobotFrames
from moonseg3r_ros.ros.tf_buffer import TfError, TransformBuffer

S = 1_000_000_000
T0 = 100 * S  # stamps start later than 0, which TF reads as "the latest"


def rigid(rotvec, translation) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    out[:3, 3] = translation
    return out


MAP_FROM_ODOM = rigid([0, 0, 0.4], [0.5, -0.3, 0.0])  # the robot's localization correction
BASE_FROM_CAMERA = rigid([-np.pi / 2, 0, 0], [0.1, 0.0, 0.5])


def camera_in_map(k: int) -> np.ndarray:
    return rigid([0.0, 0.0, 0.1 * k], [0.2 * k, 0.05 * k * k, 0.5]) @ BASE_FROM_CAMERA


def robot_tf(with_map: bool) -> TransformBuffer:
    """A fake robot: odom -> base_link from its odometry at stamps T0 + 0..9 s, base_link -> camera static."""
    tf = TransformBuffer()
    tf.set_transform("base_link", "camera", BASE_FROM_CAMERA, 0, static=True)
    for k in range(10):
        base_in_odom = np.linalg.inv(MAP_FROM_ODOM) @ camera_in_map(k) @ np.linalg.inv(BASE_FROM_CAMERA)
        tf.set_transform("odom", "base_link", base_in_odom, T0 + k * S)
    if with_map:
        tf.set_transform("map", "odom", MAP_FROM_ODOM, 0, static=True)
    return tf


def test_standalone_keeps_the_nodes_chain():
    frames = RobotFrames("standalone", "map", "", "camera", monocular=False)
    assert frames.transforms(camera_in_map(1), T0) is None and frames.input_pose(T0) is None
    np.testing.assert_array_equal(frames.output_transform(), np.eye(4))


def test_odometry_publishes_only_the_map_to_odom_correction():
    frames = RobotFrames("odometry", "map", "odom", "camera", monocular=False, buffer=robot_tf(False), wait_s=0.0)
    for k in (2, 5):
        (parent, child, t), = frames.transforms(camera_in_map(k), T0 + k * S)
        assert (parent, child) == ("map", "odom")
        np.testing.assert_allclose(t, MAP_FROM_ODOM, atol=1e-9)
    assert frames.input_pose(T0 + 2 * S) is None and frames.needs_pose_topic(recorded=True)


def test_localization_takes_the_pose_from_tf_and_publishes_nothing():
    frames = RobotFrames("localization", "map", "odom", "camera", monocular=False, buffer=robot_tf(True), wait_s=0.0)
    np.testing.assert_allclose(frames.input_pose(T0 + 3 * S), camera_in_map(3), atol=1e-9)
    assert frames.transforms(camera_in_map(3), T0 + 3 * S) == [] and not frames.needs_pose_topic(recorded=True)
    with pytest.raises(TfError, match="future"):
        frames.input_pose(T0 + 12 * S)


@pytest.mark.parametrize("mode,reference", [("localization", "map"), ("odometry", "odom")])
def test_monocular_world_is_aligned_to_the_robot_frame(mode, reference):
    tf = robot_tf(mode == "localization")
    world_from_map = np.eye(4)
    world_from_map[:3, :3] = 0.4 * Rotation.from_rotvec([0.3, -0.2, 1.0]).as_matrix()  # CUT3R: other axes and scale
    world_from_map[:3, 3] = [2.0, 1.0, -1.0]
    ref_from_map = np.eye(4) if reference == "map" else np.linalg.inv(MAP_FROM_ODOM)

    def pose_world(k):
        p = camera_in_map(k)
        out = np.eye(4)
        out[:3, :3] = world_from_map[:3, :3] / 0.4 @ p[:3, :3]
        out[:3, 3] = world_from_map[:3, :3] @ p[:3, 3] + world_from_map[:3, 3]
        return out

    frames = RobotFrames(mode, "map", "odom", "camera", monocular=True, buffer=tf, wait_s=0.0,
                         align_min_pairs=4, align_min_spread=0.1)
    for k in range(3):
        frames.observe(pose_world(k), T0 + k * S)
        assert frames.output_transform() is None and frames.transforms(pose_world(k), T0 + k * S) in ([], None)
    for k in range(3, 8):
        frames.observe(pose_world(k), T0 + k * S)
    expected = ref_from_map @ np.linalg.inv(world_from_map)
    np.testing.assert_allclose(frames.output_transform(), expected, atol=1e-6)
    np.testing.assert_allclose(frames.camera_in_map(pose_world(5)), ref_from_map @ camera_in_map(5), atol=1e-6)
    published = frames.transforms(pose_world(6), T0 + 6 * S)
    assert frames.input_pose(T0 + 6 * S) is None, "monocular geometry makes its own pose"
    if mode == "localization":
        assert published == []
    else:  # the map starts as odom: the correction is the identity for drift-free odometry
        (parent, child, t), = published
        assert (parent, child) == ("map", "odom")
        np.testing.assert_allclose(t, np.eye(4), atol=1e-6)


def test_invalid_setups_are_rejected():
    with pytest.raises(ValueError, match="needs a TF buffer"):
        RobotFrames("odometry", "map", "odom", "camera", monocular=False)
    with pytest.raises(ValueError, match="frames.odom"):
        RobotFrames("odometry", "map", "", "camera", monocular=False, buffer=TransformBuffer())
    with pytest.raises(ValueError, match="unknown"):
        RobotFrames("auto", "map", "odom", "camera", monocular=False)

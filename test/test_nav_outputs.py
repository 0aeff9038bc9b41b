"""ros/nav_outputs message builders: Detection3DArray, OccupancyGrid, InstanceGrid, the xyz cloud, the map view
in another frame, the keyframe's obstacle points and the query request (no node needed)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="message packages need `make setup`")

from builtin_interfaces.msg import Time  # noqa: E402
from moonseg3r_msgs.srv import QueryInstances  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from moonseg3r_ros.core.config import OccupancyConfig  # noqa: E402
from moonseg3r_ros.core.instance_map import InstanceRecord, instance_color  # noqa: E402
from moonseg3r_ros.core.occupancy import build_occupancy  # noqa: E402
from moonseg3r_ros.ros.nav_outputs import (detection_array_msg, frame_obstacles, instance_grid_msg,  # noqa: E402
                                           map_view_in, occupancy_grid_msg, query_from_request, xyz_cloud_msg)

STAMP = Time(sec=7, nanosec=5)


def record(i, lo, hi, confidence=0.5):
    lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
    return InstanceRecord(i, confidence, 3, (lo + hi) / 2.0, lo, hi, instance_color(i), 0.0, 1.0,
                          np.ones(4, np.float32))


def test_detections_carry_boxes_ids_and_scores():
    msg = detection_array_msg([record(9, [1, 2, 0], [2, 2.5, 1], 0.75), record(3, [0, 0, 0], [0.5, 0.5, 0.5])],
                              "map", STAMP)
    assert msg.header.frame_id == "map" and msg.header.stamp == STAMP
    assert [d.id for d in msg.detections] == ["3", "9"]
    det = msg.detections[1]
    c, s = det.bbox.center, det.bbox.size
    assert (c.position.x, c.position.y, c.position.z, c.orientation.w) == (1.5, 2.25, 0.5, 1.0)
    assert (s.x, s.y, s.z) == (1.0, 0.5, 1.0)
    assert det.results[0].hypothesis.class_id == "instance" and det.results[0].hypothesis.score == 0.75
    assert det.results[0].pose.pose == det.bbox.center and det.header == msg.header


def test_grid_messages_have_the_grids_layout():
    points = np.array([[0.12, -0.31, 0.0], [0.52, 0.07, 0.3]])
    grid = build_occupancy(points, np.array([0, 4]), OccupancyConfig(resolution=0.1, margin=0.0))
    msg = occupancy_grid_msg(grid, "map", STAMP)
    assert (msg.info.width, msg.info.height, msg.info.resolution) == (5, 5, pytest.approx(0.1))
    assert (msg.info.origin.position.x, msg.info.origin.position.y) == (pytest.approx(0.1), pytest.approx(-0.4))
    assert msg.info.origin.orientation.w == 1.0
    data = np.array(msg.data, np.int8).reshape(5, 5)
    np.testing.assert_array_equal(data, grid.data)
    assert data[0, 0] == 0 and data[4, 4] == 100 and (data == -1).sum() == 23
    ids = instance_grid_msg(grid, "map", STAMP)
    assert ids.info == msg.info and np.array(ids.data).reshape(5, 5)[4, 4] == 4 and sum(ids.data) == 4


def test_xyz_cloud():
    msg = xyz_cloud_msg(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), "camera", STAMP)
    assert (msg.width, msg.height, msg.point_step, [f.name for f in msg.fields]) == (2, 1, 12, ["x", "y", "z"])
    np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), "<f4").reshape(2, 3), [[1, 2, 3], [4, 5, 6]])


def test_map_view_in_another_frame_recomputes_boxes():
    points = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    ids = np.array([2, 2, 0])
    records = [record(2, [0, 0, 0], [1, 0, 0])]
    same = map_view_in(points, ids, records, np.eye(4))
    assert same.records == records
    transform = np.eye(4)
    transform[:3, :3] = 2.0 * Rotation.from_euler("z", 90, degrees=True).as_matrix()
    transform[:3, 3] = [1.0, 0.0, 0.0]
    view = map_view_in(points, ids, records, transform)
    np.testing.assert_allclose(view.points[1], [1.0, 2.0, 0.0], atol=1e-12)
    (moved,) = view.records
    np.testing.assert_allclose(moved.bbox_min, [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(moved.bbox_max, [1, 2, 0], atol=1e-6)
    np.testing.assert_allclose(moved.centroid, [1, 1, 0], atol=1e-12)
    assert moved.id == 2 and moved.confidence == records[0].confidence


def test_frame_obstacles_use_the_latest_grid():
    config = OccupancyConfig(resolution=0.1)
    grid = build_occupancy(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.3]]), np.array([0, 9]), config)
    camera_to_map = np.eye(4)
    camera_to_map[2, 3] = 1.0  # the camera 1 m above the floor, axes as the map's
    points = np.array([[0.0, 0.0, -1.0], [0.2, 0.0, -0.6], [0.0, 0.0, 1.0]])  # floor, an obstacle, above the band
    kept = frame_obstacles(points, np.array([0, 5, 0]), camera_to_map, config, grid)
    np.testing.assert_allclose(kept, [[0.2, 0.0, -0.6]])
    assert frame_obstacles(points, np.zeros(3), camera_to_map, config, None).shape == (0, 3)


def test_query_from_request():
    req = QueryInstances.Request(ids=[3, 4], radius=1.5, min_size=0.2, max_size=2.0, min_confidence=0.1,
                                 max_results=3, include_descriptors=False)
    req.center.x, req.center.y, req.center.z = 1.0, 2.0, 3.0
    q = query_from_request(req)
    assert (q.ids, q.center, q.radius, q.max_results, q.include_descriptors) == ((3, 4), (1.0, 2.0, 3.0), 1.5, 3, False)
    assert (q.min_size, q.max_size) == (pytest.approx(0.2), 2.0) and q.min_confidence == pytest.approx(0.1)

"""ros/nav_bridge.NavBridge on a plain rclpy node (in this process): activation creates the publishers and the
service, a keyframe publishes detections + grid + instance grid + obstacle cloud, QueryInstances answers from
the map, deactivation removes everything; the camera frame comes from the image header unless configured."""
from __future__ import annotations

import types

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not importable: run `make setup`")

from moonseg3r_ros.core.config import MapConfig, PipelineConfig  # noqa: E402
from moonseg3r_ros.core.instance_map import InstanceMap  # noqa: E402
from moonseg3r_ros.ros.nav_bridge import NavBridge, camera_frame_of  # noqa: E402
from moonseg3r_ros.ros.nav_config import NavConfig  # noqa: E402


def test_camera_frame_of():
    assert camera_frame_of("", "cam_hdr") == "cam_hdr"
    assert camera_frame_of("mine", "cam_hdr") == "mine"
    assert camera_frame_of("", "") == "camera_optical_frame"


@pytest.fixture
def world():
    """A map with a 0.4 m box (id 3) on a 2 x 2 m floor (id 0)."""
    rng = np.random.default_rng(0)
    floor = np.c_[rng.uniform(0, 2, (3000, 2)), np.zeros(3000)]
    box = np.c_[rng.uniform(0.8, 1.2, (800, 2)), rng.uniform(0.0, 0.4, 800)]
    fused = InstanceMap(MapConfig(voxel_size=0.02))
    points = np.vstack([floor, box]).astype(np.float32)
    ids = np.r_[np.zeros(3000), np.full(800, 3)].astype(np.int32)
    fused.integrate(points, np.zeros_like(points, np.uint8), ids, 1.0)
    return fused


def test_bridge_publishes_and_answers(world):
    from moonseg3r_msgs.msg import InstanceGrid
    from moonseg3r_msgs.srv import QueryInstances
    from nav_msgs.msg import OccupancyGrid
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from vision_msgs.msg import Detection3DArray

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bridge_host", context=context)
    listener = rclpy.create_node("bridge_listener", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(listener)
    try:
        pipeline_config = PipelineConfig()
        pipeline_config.occupancy.rate = 0.0
        node_config = types.SimpleNamespace(nav=NavConfig(obstacle_cloud=True),
                                            frames=types.SimpleNamespace(map="map", camera="", odom="", base=""))
        node.config, node.pipeline_config = node_config, pipeline_config
        counts = {}
        bridge = NavBridge(node, lambda records=True: (*world.positions(), world.instances() if records else []),
                           lambda k, n: counts.__setitem__(k, counts.get(k, 0) + n))
        bridge.activate()
        got = {"det": [], "grid": [], "ids": [], "cloud": []}
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        listener.create_subscription(Detection3DArray, "/bridge_host/detections", got["det"].append, 10)
        listener.create_subscription(OccupancyGrid, "/bridge_host/occupancy_grid", got["grid"].append, latched)
        listener.create_subscription(InstanceGrid, "/bridge_host/instance_grid", got["ids"].append, latched)
        listener.create_subscription(PointCloud2, "/bridge_host/obstacle_cloud", got["cloud"].append, 10)
        for _ in range(50):
            executor.spin_once(timeout_sec=0.05)
        stamp = rclpy.time.Time(seconds=5).to_msg()
        frame = types.SimpleNamespace(stamp=stamp, stamp_ns=5_000_000_000, frame_id="cam_hdr")
        pose = np.eye(4)
        pose[:3, 3] = [1.0, 1.0, 1.0]  # camera 1 m above the floor, axes as the map's
        points_cam = np.array([[[0.0, 0.0, -1.0], [0.0, 0.0, -0.8]]], np.float32)  # a floor point, an obstacle
        result = types.SimpleNamespace(points_cam=points_cam, valid=np.ones((1, 2), bool), pose_c2w=pose,
                                       instance_ids_2d=np.array([[0, 3]], np.int32))
        assert bridge.transforms(frame, pose) is None, "standalone: the node's own chain"
        records = world.instances()
        bridge.on_keyframe(frame, result, records)  # occupancy.rate 0: the grid first, then the obstacle rule uses it
        bridge.on_keyframe(frame, result, records)
        for _ in range(100):
            executor.spin_once(timeout_sec=0.05)
            if got["det"] and got["grid"] and got["ids"] and len(got["cloud"]) == 2:
                break
        (det,) = got["det"][-1].detections
        assert det.id == "3" and got["det"][-1].header.frame_id == "map"
        assert (det.bbox.size.x, det.bbox.size.z) == (pytest.approx(0.4, abs=0.03), pytest.approx(0.4, abs=0.03))
        grid = got["grid"][-1]
        data = np.array(grid.data).reshape(grid.info.height, grid.info.width)
        ids = np.array(got["ids"][-1].data).reshape(grid.info.height, grid.info.width)
        assert set(np.unique(data).tolist()) == {-1, 0, 100} and set(np.unique(ids[data == 100]).tolist()) == {3}
        assert (got["cloud"][0].width, got["cloud"][1].width) == (1, 1) and got["cloud"][1].header.frame_id == "cam_hdr"
        assert np.frombuffer(bytes(got["cloud"][1].data), "<f4").tolist() == pytest.approx([0.0, 0.0, -0.8])
        assert counts["nav.grids_published"] == 2 and counts["nav.detections_published"] == 2

        client = listener.create_client(QueryInstances, "/bridge_host/query_instances")
        request = QueryInstances.Request(min_size=0.3)
        future = client.call_async(request)
        for _ in range(100):
            executor.spin_once(timeout_sec=0.05)
            if future.done():
                break
        response = future.result()
        assert response.success and [i.id for i in response.instances] == [3] and response.header.stamp == stamp
        bridge.deactivate()
        assert node.count_publishers("/bridge_host/occupancy_grid") == 0
    finally:
        executor.shutdown()
        node.destroy_node()
        listener.destroy_node()
        rclpy.shutdown(context=context)


def test_map_outputs_follow_the_monocular_alignment(world):
    """InstanceMap records and cloud points go out in frames.map: unchanged without an alignment, moved by it
    (boxes recomputed), withheld while it is pending."""
    from moonseg3r_ros.ros.nav_node import NavMixin

    class Host(NavMixin):
        def __init__(self, transform):
            bridge = types.SimpleNamespace(output_transform=lambda: transform)
            self._nav = None if isinstance(transform, str) else bridge
            self.counts = {}

        def _count(self, key, n=1):
            self.counts[key] = self.counts.get(key, 0) + n

    pipeline = types.SimpleNamespace(instance_map=world)
    records = world.instances()
    xyz = world.points()[0]
    plain = Host("none")
    assert plain._records_for_output(pipeline, records) is records and plain._points_for_output(xyz) is xyz
    pending = Host(None)
    assert pending._records_for_output(pipeline, records) is None and pending._points_for_output(xyz) is None
    assert pending.counts == {"nav.waiting_for_alignment": 1}
    similarity = np.diag([2.0, 2.0, 2.0, 1.0])
    similarity[:3, 3] = [1.0, 0.0, 0.0]
    moved = Host(similarity)
    (box,) = moved._records_for_output(pipeline, records)
    assert box.id == 3 and box.bbox_max[2] == pytest.approx(2 * records[0].bbox_max[2], abs=1e-5)
    assert box.bbox_min[0] == pytest.approx(2 * records[0].bbox_min[0] + 1.0, abs=1e-5)
    np.testing.assert_allclose(moved._points_for_output(xyz), 2.0 * xyz + [1.0, 0.0, 0.0], atol=1e-5)

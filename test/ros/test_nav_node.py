"""The node's navigation outputs over the real middleware, in separate processes: the node, a consumer that
knows only standard messages (test/nav_consumer.py), and this process feeding a generated scene and acting
as a fake robot (odom -> base_link at every image stamp, base_link -> camera static, map -> odom static in
localization mode). Checked: the OccupancyGrid cell by cell and the Detection3DArray boxes against the
generator's ground truth, QueryInstances, and that TF has exactly one parent per frame in each tf mode."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.spatial.transform import Rotation

from moonseg3r_ros.core.config import OccupancyConfig
from moonseg3r_ros.core.occupancy import FREE, OCCUPIED, UNKNOWN, GridInfo, plane_from_normal
from moonseg3r_ros.data.synthetic import SceneSpec, generate_scene
from moonseg3r_ros.ros import conversions as conv
from moonseg3r_ros.ros.frame_publisher import OPTICAL_FRAME, FramePublisher
from moonseg3r_ros.ros.nav_config import NavTopicsConfig
from moonseg3r_ros.ros.testing import ACTIVATE, CAMERA_REMAPS, CONFIGURE, NodeProcess, TestClient

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test"))
from test_occupancy import eroded, footprint_truth  # noqa: E402

NODE = "moonseg3r"
PARAMS = {"geometry.source": "recorded", "masks.source": "ground_truth", "keyframe_interval": 2,
          "integrate_stride": 1, "input_reliability": "reliable", "input_depth": 50, "cloud.rate": 0.0,
          "queue_size": 100, "drop_policy": "oldest", "occupancy.rate": 0.0, "frames.odom": "odom"}
STAMP0 = 1000.0
MAP_FROM_ODOM = np.eye(4)
MAP_FROM_ODOM[:3, :3] = Rotation.from_euler("z", 25, degrees=True).as_matrix()
MAP_FROM_ODOM[:3, 3] = [0.6, -0.4, 0.0]
BASE_FROM_CAMERA = np.eye(4)
BASE_FROM_CAMERA[:3, :3] = Rotation.from_quat([-0.5, 0.5, -0.5, 0.5]).as_matrix()  # optical frame, forward-looking
BASE_FROM_CAMERA[:3, 3] = [0.1, 0.0, 0.4]


@pytest.fixture(scope="module")
def scene():
    return generate_scene(SceneSpec(seed=3, num_frames=24, width=160, height=120, num_objects=5))


class Run:
    """One node + consumer run in a tf mode; `result` is the consumer's JSON after the frames went through."""

    def __init__(self, ros_context, log_dir: Path, mode: str, frames, name: str, node_name: str = NODE):
        self.mode, self.frames, self.log_dir, self.name = mode, frames, log_dir, node_name
        self.node = NodeProcess(node_name, {**PARAMS, "nav.tf_mode": mode}, CAMERA_REMAPS, log_dir).start()
        self.out = log_dir / "consumer.json"
        self.consumer = subprocess.Popen([sys.executable, str(REPO / "test" / "nav_consumer.py"), str(self.out),
                                          f"/{node_name}/occupancy_grid", f"/{node_name}/detections"],
                                         stdout=open(log_dir / "consumer.log", "wb"), stderr=subprocess.STDOUT)
        self.client = TestClient(ros_context, name, target=node_name)

    def feed_as_robot(self) -> None:
        from tf2_msgs.msg import TFMessage
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        client = self.client
        streams = ["image", "camera_info", "depth", "instance_ids"] + (["pose"] if self.mode != "localization" else [])
        inputs = self.inputs = FramePublisher(client.node, streams,
                                              topics={s: t.lstrip("/") for s, t in CAMERA_REMAPS.items()})
        tf_pub = client.node.create_publisher(TFMessage, "/tf",
                                              QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        static_pub = client.node.create_publisher(TFMessage, "/tf_static", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        robot = self.mode != "standalone"
        if robot:
            stamp = conv.seconds_to_stamp(STAMP0)
            statics = [conv.matrix_to_transform_msg(BASE_FROM_CAMERA, "base_link", OPTICAL_FRAME, stamp)]
            if self.mode == "localization":
                statics.append(conv.matrix_to_transform_msg(MAP_FROM_ODOM, "map", "odom", stamp))
            static_pub.publish(TFMessage(transforms=statics))
        assert client.change_state(CONFIGURE), self.node.log()
        assert client.change_state(ACTIVATE), self.node.log()
        assert client.spin_until(inputs.subscribed, 60), f"unsubscribed: {inputs.unsubscribed()}\n{self.node.log()}"
        self.wait(lambda r: min(r.get("publishers", {"": 0}).values()) >= 1, 60)  # the consumer hears the node
        for frame in self.frames:
            stamp = conv.seconds_to_stamp(STAMP0 + frame.stamp)
            if robot:
                base_in_odom = np.linalg.inv(MAP_FROM_ODOM) @ frame.pose_c2w @ np.linalg.inv(BASE_FROM_CAMERA)
                tf_pub.publish(TFMessage(transforms=[conv.matrix_to_transform_msg(base_in_odom, "odom", "base_link",
                                                                                  stamp)]))
            inputs.publish(frame, stamp)
            client.spin_for(0.03)

    def wait(self, predicate, timeout: float = 180.0) -> dict:
        end = time.monotonic() + timeout
        result: dict = {}
        while time.monotonic() < end:
            self.client.spin_for(0.2)
            if self.out.exists():
                try:
                    result = json.loads(self.out.read_text())
                except json.JSONDecodeError:
                    continue
                if predicate(result):
                    return result
        raise AssertionError(f"consumer did not see the expected outputs: {str(result)[:400]}\n"
                             f"{self.node.log()[-3000:]}")

    def tf_publishers(self) -> set[str]:
        return {info.node_name for info in self.client.node.get_publishers_info_by_topic("/tf")}

    def close(self) -> None:
        self.consumer.terminate()
        self.consumer.wait(20)
        self.node.stop()
        self.client.close()


@pytest.fixture(scope="module")
def standalone(ros_context, tmp_path_factory, scene):
    frames = [scene.frames[i] for i in range(scene.spec.num_frames)]
    run = Run(ros_context, tmp_path_factory.mktemp("nav_standalone"), "standalone", frames, "nav_standalone_client")
    try:
        run.feed_as_robot()
        keyframes = len(frames) // 2
        run.result = run.wait(lambda r: r["detection_messages"] >= keyframes and r["grids"] >= keyframes)
        yield run
    finally:
        run.close()


def grid_info_of(result: dict) -> GridInfo:
    g = result["grid"]
    assert g["origin"][3:] == [0.0, 0.0, 0.0, 1.0], "a z-up map frame gives an axis-aligned grid"
    return GridInfo(g["resolution"], g["width"], g["height"], np.array(g["origin"][:2]),
                    plane_from_normal(np.array([0.0, 0.0, 1.0]), 0.0))


def test_grid_matches_the_generated_scene(standalone, scene):
    result = standalone.result
    info = grid_info_of(result)
    data = np.array(result["grid"]["data"], np.int8).reshape(info.height, info.width)
    assert result["grid"]["frame"] == "map" and info.resolution == pytest.approx(OccupancyConfig().resolution)
    truth = footprint_truth(scene, info)
    known = data != UNKNOWN
    for obj in scene.objects:
        core = eroded(truth == obj.instance_id)
        assert known[core].mean() >= 0.9, f"object {obj.instance_id}: footprint unseen"
        assert (data[core & known] == OCCUPIED).mean() >= 0.95, f"object {obj.instance_id} footprint not occupied"
    sx, sy = scene.spec.room_size[0] / 2, scene.spec.room_size[1] / 2
    centres = info.cell_centers()
    inside = (np.abs(centres[..., 0]) < sx - 0.1) & (np.abs(centres[..., 1]) < sy - 0.1)
    open_floor = eroded((truth == 0) & inside) & known
    assert open_floor.sum() > 1000 and (data[open_floor] == FREE).mean() >= 0.97
    beyond = (np.abs(centres[..., 0]) > sx + 0.1) | (np.abs(centres[..., 1]) > sy + 0.1)
    assert np.all(data[beyond] == UNKNOWN)


def test_detections_match_the_scene_objects(standalone, scene):
    result = standalone.result
    assert result["detections_frame"] == "map"
    detections = {d["id"]: d for d in result["detections"]}
    assert set(detections) == {str(i) for i in scene.object_ids}, "one detection per object, the instance id as id"
    for obj in scene.objects:
        lo, hi = np.asarray(obj.mesh.get_min_bound()), np.asarray(obj.mesh.get_max_bound())
        det = detections[str(obj.instance_id)]
        np.testing.assert_allclose(det["center"], (lo + hi) / 2, atol=0.05, err_msg=f"object {obj.instance_id}")
        np.testing.assert_allclose(det["size"], hi - lo, atol=0.08, err_msg=f"object {obj.instance_id}")
        assert det["class_id"] == "instance" and 0.0 < det["score"] <= 1.0


def test_standalone_tf_has_one_parent_per_frame(standalone):
    assert standalone.result["tf_parents"] == {OPTICAL_FRAME: ["map"]}
    assert NODE in standalone.tf_publishers()


def test_grid_parameters_change_at_run_time(standalone, scene):
    results = standalone.client.set_parameters({"occupancy.resolution": 0.1})
    assert all(r.successful for r in results), [r.reason for r in results]
    grids = standalone.result["grids"]
    frame = scene.frames[0]
    for k in range(2):  # two more frames, one a keyframe (interval 2): the map changed, a new grid is built
        standalone.inputs.publish(frame, conv.seconds_to_stamp(STAMP0 + 100.0 + k))
        standalone.client.spin_for(0.05)
    result = standalone.wait(lambda r: r["grids"] > grids and abs(r["grid"]["resolution"] - 0.1) < 1e-6)
    assert abs(result["grid"]["width"] - standalone.result["grid"]["width"] / 2) <= 2  # cells twice as large
    standalone.client.set_parameters({"occupancy.resolution": 0.05})


def test_query_service(standalone, scene):
    from moonseg3r_msgs.srv import QueryInstances

    target = scene.objects[0]
    x, y = (float(v) for v in target.center_xy)
    request = QueryInstances.Request(radius=0.05, include_descriptors=False)
    request.center.x, request.center.y, request.center.z = x, y, 0.1
    response = standalone.client.call(QueryInstances, f"/{NODE}/query_instances", request)
    assert response.success, response.message
    assert [i.id for i in response.instances] == [target.instance_id] and response.header.frame_id == "map"
    everything = standalone.client.call(QueryInstances, f"/{NODE}/query_instances", QueryInstances.Request(ids=[]))
    assert sorted(i.id for i in everything.instances) == sorted(scene.object_ids)
    bad = QueryInstances.Request(radius=float("nan"))
    assert not standalone.client.call(QueryInstances, f"/{NODE}/query_instances", bad).success


@pytest.mark.parametrize("mode", ["odometry", "localization"])
def test_robot_modes_one_parent_per_frame(ros_context, tmp_path_factory, scene, mode):
    frames = [scene.frames[i] for i in range(0, scene.spec.num_frames, 3)]
    # its own node name: the standalone run's node (module fixture) is still up on the same graph
    run = Run(ros_context, tmp_path_factory.mktemp(f"nav_{mode}"), mode, frames, f"nav_{mode}_client",
              node_name=f"moonseg3r_{mode}")
    try:
        run.feed_as_robot()
        result = run.wait(lambda r: r["detection_messages"] >= 4 and "map odom" in r["tf_edges"])
        run.client.spin_for(1.0)
        result = json.loads(run.out.read_text())
        assert result["tf_parents"] == {OPTICAL_FRAME: ["base_link"], "base_link": ["odom"], "odom": ["map"]}
        x, y, z, *quat = result["tf_edges"]["map odom"]
        np.testing.assert_allclose([x, y, z], MAP_FROM_ODOM[:3, 3], atol=1e-4)
        np.testing.assert_allclose(Rotation.from_quat(quat).as_matrix(), MAP_FROM_ODOM[:3, :3], atol=1e-4)
        publishers = run.tf_publishers()
        if mode == "odometry":
            assert run.name in publishers, "the node publishes the map -> odom correction"
        else:
            assert run.name not in publishers, "with the robot's localization the node publishes no TF"
        # the map is in the map frame either way: the objects are where the generator put them
        detections = {d["id"]: d for d in result["detections"]}
        for obj in scene.objects:
            if str(obj.instance_id) in detections:
                centre = (np.asarray(obj.mesh.get_min_bound()) + np.asarray(obj.mesh.get_max_bound())) / 2
                np.testing.assert_allclose(detections[str(obj.instance_id)]["center"][:2], centre[:2], atol=0.1)
        assert len(detections) >= 3
    finally:
        run.close()


def test_rviz_shows_the_default_grid_topic():
    rviz = yaml.safe_load((REPO / "rviz" / "moonseg3r.rviz").read_text())
    maps = [d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"]
            if d["Class"] == "rviz_default_plugins/Map"]
    assert maps == [f"/{NODE}/" + NavTopicsConfig().occupancy_grid.removeprefix("~/")]

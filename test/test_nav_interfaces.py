"""Navigation interfaces: vision_msgs (real, or our minimal fallback with the upstream 4.x layout),
nav_msgs/OccupancyGrid and moonseg3r_msgs/QueryInstances have the fields their consumers expect, and
cross the real middleware between this process and a peer subprocess.

Run as `python test/test_nav_interfaces.py peer` this file is the peer: it publishes a sample
Detection3DArray and serves QueryInstances until it is terminated.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from peer_processes import node_in_own_context, peer_process, spin_peer, spin_until

rclpy = pytest.importorskip("rclpy", reason="rclpy not importable: run `make setup` (or source ROS 2)")

from geometry_msgs.msg import Point  # noqa: E402
from moonseg3r_msgs.msg import Instance, InstanceGrid  # noqa: E402
from moonseg3r_msgs.srv import QueryInstances  # noqa: E402
from nav_msgs.msg import OccupancyGrid  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import (BoundingBox3D, Detection3D, Detection3DArray, ObjectHypothesis,  # noqa: E402
                             ObjectHypothesisWithPose)

NS = "/moonseg3r_nav_interfaces_test"

# The upstream vision_msgs 4.x layouts (ros-perception/vision_msgs, ros2 branch); a consumer built
# against the real package deserialises our messages only if names, types and order all match.
UPSTREAM_LAYOUTS = {
    ObjectHypothesis: [("class_id", "string"), ("score", "double")],
    ObjectHypothesisWithPose: [("hypothesis", "vision_msgs/ObjectHypothesis"),
                               ("pose", "geometry_msgs/PoseWithCovariance")],
    BoundingBox3D: [("center", "geometry_msgs/Pose"), ("size", "geometry_msgs/Vector3")],
    Detection3D: [("header", "std_msgs/Header"), ("results", "sequence<vision_msgs/ObjectHypothesisWithPose>"),
                  ("bbox", "vision_msgs/BoundingBox3D"), ("id", "string")],
    Detection3DArray: [("header", "std_msgs/Header"), ("detections", "sequence<vision_msgs/Detection3D>")],
}


def sample_detections() -> Detection3DArray:
    out = Detection3DArray(header=Header(frame_id="map"))
    out.header.stamp.sec = 12
    for i in (3, 7):
        det = Detection3D(header=out.header, id=str(i))
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = "instance", 0.125 * i
        hyp.pose.pose.position.x = float(i)
        det.results.append(hyp)
        det.bbox.center.position.x, det.bbox.center.orientation.w = float(i), 1.0
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = 0.5, 0.25 * i, 1.0
        out.detections.append(det)
    return out


def answer(request: QueryInstances.Request) -> QueryInstances.Response:
    """The peer's stand-in for the map: one instance per requested id, at x = id."""
    resp = QueryInstances.Response(success=True, message=f"{len(request.ids)} of 10")
    resp.header.frame_id = "map"
    for i in request.ids:
        resp.instances.append(Instance(id=i, centroid=Point(x=float(i)),
                                       descriptor=[1.0, 2.0] if request.include_descriptors else []))
    return resp


def peer_main() -> None:
    rclpy.init()
    node = rclpy.create_node("nav_peer", namespace=NS)
    pub = node.create_publisher(Detection3DArray, "detections", 10)
    node.create_service(QueryInstances, "query_instances", lambda req, _resp: answer(req))
    node.create_timer(0.1, lambda: pub.publish(sample_detections()))
    spin_peer(node)


def test_vision_msgs_have_the_upstream_layout():
    for msg_type, layout in UPSTREAM_LAYOUTS.items():
        assert list(msg_type.get_fields_and_field_types().items()) == layout, msg_type.__name__


def test_the_fallback_is_used_only_without_a_real_vision_msgs():
    """setup.sh builds third_party/vision_msgs only when the environment has none: if ours is the one
    imported, nothing else provides vision_msgs (without our overlay it does not import)."""
    import vision_msgs

    repo = Path(__file__).resolve().parents[1]
    if not Path(vision_msgs.__file__).resolve().is_relative_to(repo / "install"):
        pytest.skip(f"a real vision_msgs is installed ({vision_msgs.__file__}): the fallback is not built")
    env = {**os.environ, "MOONSEG3R_NO_OVERLAY": "1", "AMENT_PREFIX_PATH": "", "PYTHONPATH": ""}
    probe = subprocess.run([sys.executable, "-c", "import vision_msgs.msg"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0, "a real vision_msgs exists but the fallback was built over it"
    assert (repo / "third_party" / "vision_msgs" / "package.xml").is_file()


def test_occupancy_grid_instance_grid_and_query_service_fields():
    grid = OccupancyGrid.get_fields_and_field_types()
    assert grid == {"header": "std_msgs/Header", "info": "nav_msgs/MapMetaData", "data": "sequence<int8>"}
    req = QueryInstances.Request.get_fields_and_field_types()
    assert req == {"ids": "sequence<uint32>", "center": "geometry_msgs/Point", "radius": "float",
                   "min_size": "float", "max_size": "float", "min_confidence": "float",
                   "max_results": "uint32", "include_descriptors": "boolean"}
    assert InstanceGrid.get_fields_and_field_types() == {"header": "std_msgs/Header", "info": "nav_msgs/MapMetaData",
                                                         "data": "sequence<uint32>"}
    resp = QueryInstances.Response.get_fields_and_field_types()
    assert resp == {"success": "boolean", "message": "string", "header": "std_msgs/Header",
                    "instances": "sequence<moonseg3r_msgs/Instance>"}


@pytest.fixture(scope="module")
def peer():
    yield from peer_process(__file__)


@pytest.fixture
def local_node():
    yield from node_in_own_context("nav_test", NS)


def test_detections_and_query_cross_processes(peer, local_node):
    node, executor = local_node
    received = []
    node.create_subscription(Detection3DArray, "detections", received.append, 10)
    spin_until(executor, lambda: bool(received), peer)
    assert received and received[0] == sample_detections()
    assert [d.results[0].hypothesis.score for d in received[0].detections] == [0.375, 0.875]

    client = node.create_client(QueryInstances, "query_instances")
    spin_until(executor, client.service_is_ready, peer)
    future = client.call_async(QueryInstances.Request(ids=[4, 9], include_descriptors=False))
    spin_until(executor, future.done, peer)
    resp = future.result()
    assert resp is not None and resp.success and resp.message == "2 of 10"
    got = [(inst.id, inst.centroid.x, list(inst.descriptor)) for inst in resp.instances]
    assert got == [(4, 4.0, []), (9, 9.0, [])]


if __name__ == "__main__" and sys.argv[1:] == ["peer"]:
    peer_main()

"""moonseg3r_msgs (and tf2_msgs/TFMessage): the generated Python types import, have the documented
fields, and every message and service crosses the real middleware between rclpy nodes living in separate
processes: the messages between this test process and a peer subprocess started with the same
environment; the services (SaveMap, LoadMap, std_srvs/Trigger) against the real moonseg3r node process,
whose own ~/save_map, ~/load_map and ~/reset_map handlers answer.

Run as `python test/test_msgs.py peer` this file is the peer: it publishes the sample messages
repeatedly until it is terminated.
"""
from __future__ import annotations

import sys

import pytest
from peer_processes import DEADLINE_S, node_in_own_context, peer_process, spin_peer, spin_until

rclpy = pytest.importorskip("rclpy", reason="rclpy not importable: run `make setup` (or source ROS 2)")

from builtin_interfaces.msg import Time  # noqa: E402
from geometry_msgs.msg import Point, TransformStamped  # noqa: E402
from moonseg3r_msgs.msg import Instance, InstanceMap  # noqa: E402
from moonseg3r_msgs.srv import LoadMap, SaveMap  # noqa: E402
from std_msgs.msg import ColorRGBA, Header  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

NS = "/moonseg3r_msgs_test"


# --- sample content, built identically in both processes ---------------------------------------------
def sample_instance(i: int) -> Instance:
    return Instance(
        id=i,
        confidence=0.25 * i,
        point_count=100 * i,
        centroid=Point(x=1.0 * i, y=-2.0, z=0.5),
        bbox_min=Point(x=1.0 * i - 0.5, y=-2.5, z=0.0),
        bbox_max=Point(x=1.0 * i + 0.5, y=-1.5, z=1.0),
        color=ColorRGBA(r=0.5, g=0.25, b=1.0, a=1.0),
        first_seen=Time(sec=10, nanosec=500),
        last_seen=Time(sec=12 + i, nanosec=250_000_000),
        descriptor=[0.5 * k - 1.0 for k in range(8)],
    )


def sample_map() -> InstanceMap:
    return InstanceMap(
        header=Header(stamp=Time(sec=12, nanosec=250_000_000), frame_id="map"),
        instances=[sample_instance(1), sample_instance(2), sample_instance(3)],
        cloud_topic="/moonseg3r/cloud",
        frame_index=41,
        keyframe_count=9,
        point_count=600,
    )


def sample_tf() -> TFMessage:
    t = TransformStamped()
    t.header.stamp = Time(sec=12, nanosec=250_000_000)
    t.header.frame_id = "map"
    t.child_frame_id = "camera_optical_frame"
    t.transform.translation.x = 0.5
    t.transform.rotation.w = 1.0
    return TFMessage(transforms=[t])


# --- the peer process --------------------------------------------------------------------------------
def peer_main() -> None:
    rclpy.init()
    node = rclpy.create_node("msgs_peer", namespace=NS)
    pubs = [
        (node.create_publisher(Instance, "instance", 10), sample_instance(7)),
        (node.create_publisher(InstanceMap, "instance_map", 10), sample_map()),
        (node.create_publisher(TFMessage, "tf", 10), sample_tf()),
    ]

    node.create_timer(0.1, lambda: [pub.publish(msg) for pub, msg in pubs])
    spin_peer(node)


# --- tests -------------------------------------------------------------------------------------------
def test_generated_types_have_documented_fields():
    fields = Instance.get_fields_and_field_types()
    assert fields == {
        "id": "uint32",
        "confidence": "float",
        "point_count": "uint32",
        "centroid": "geometry_msgs/Point",
        "bbox_min": "geometry_msgs/Point",
        "bbox_max": "geometry_msgs/Point",
        "color": "std_msgs/ColorRGBA",
        "first_seen": "builtin_interfaces/Time",
        "last_seen": "builtin_interfaces/Time",
        "descriptor": "sequence<float>",
    }
    map_fields = InstanceMap.get_fields_and_field_types()
    assert map_fields["header"] == "std_msgs/Header"
    assert map_fields["instances"] == "sequence<moonseg3r_msgs/Instance>"
    assert {"cloud_topic", "frame_index", "keyframe_count", "point_count"} <= set(map_fields)
    assert InstanceMap.CLOUD_INSTANCE_FIELD == "instance_id"
    for srv in (SaveMap, LoadMap):
        assert srv.Request.get_fields_and_field_types() == {"path": "string"}
        assert srv.Response.get_fields_and_field_types() == {"success": "boolean", "message": "string"}
    assert TFMessage.get_fields_and_field_types() == {"transforms": "sequence<geometry_msgs/TransformStamped>"}


def test_serialization_round_trip_in_process():
    from rclpy.serialization import deserialize_message, serialize_message

    original = sample_map()
    data = serialize_message(original)
    assert isinstance(data, bytes) and len(data) > 0
    assert deserialize_message(data, InstanceMap) == original


@pytest.fixture(scope="module")
def peer():
    yield from peer_process(__file__)


@pytest.fixture
def local_node():
    yield from node_in_own_context("msgs_test", NS)


@pytest.mark.parametrize(
    "topic,msg_type,expected",
    [("instance", Instance, sample_instance(7)), ("instance_map", InstanceMap, sample_map()),
     ("tf", TFMessage, sample_tf())],
    ids=["Instance", "InstanceMap", "TFMessage"],
)
def test_message_crosses_processes(peer, local_node, topic, msg_type, expected):
    node, executor = local_node
    received = []
    node.create_subscription(msg_type, topic, received.append, 10)
    spin_until(executor, lambda: bool(received), peer)
    assert received, f"no {msg_type.__name__} from the peer process on {NS}/{topic}"
    assert received[0] == expected
    # The publisher really is another process: the graph names it (graph updates arrive asynchronously).
    spin_until(executor, lambda: "msgs_peer" in node.get_node_names(), peer)
    assert "msgs_peer" in node.get_node_names()
    assert "msgs_peer" not in [n.get_name() for n in executor.get_nodes()]


# --- services: the moonseg3r node's own handlers, in the node's process --------------------------------------
@pytest.fixture(scope="module")
def map_node(tmp_path_factory):
    """The moonseg3r node (recorded geometry, ground-truth masks) in its own process under NS, fed four frames
    of a generated scene, and a client in this process; yields (client, node process, folder)."""
    from moonseg3r_ros.data.synthetic import SceneSpec, generate_scene
    from moonseg3r_ros.ros.conversions import seconds_to_stamp
    from moonseg3r_ros.ros.frame_publisher import CAMERA_TOPICS
    from moonseg3r_ros.ros.testing import ACTIVATE, CONFIGURE, GROUND_TRUTH_PARAMS, NodeClient, NodeProcess

    folder = tmp_path_factory.mktemp("map_services")
    scene = generate_scene(SceneSpec(seed=5, num_frames=4, width=128, height=96, num_objects=4))
    remaps = dict(CAMERA_TOPICS)  # relative: the camera topics under NS
    proc = NodeProcess("moonseg3r", GROUND_TRUTH_PARAMS, remaps, folder, namespace=NS).start()
    context = rclpy.Context()
    rclpy.init(context=context)
    client = NodeClient(context, "map_services_client", f"{NS}/moonseg3r", NS)
    try:
        client.subscribe_outputs(only=("instance_map",))  # the node's private ~/instance_map
        assert client.change_state(CONFIGURE) and client.change_state(ACTIVATE), proc.log()
        client.make_input_publishers(topics=CAMERA_TOPICS)
        assert client.spin_until(client.inputs.subscribed, DEADLINE_S), proc.log()
        for i in range(4):
            client.publish_frame(scene.frames[i], seconds_to_stamp(30.0 + 0.1 * i))
        assert client.spin_until(lambda: len(client["instance_map"]) >= 2 and
                                 len(client["instance_map"].last().instances) >= 2, 120), proc.log()
        yield client, proc, folder
    finally:
        client.close()
        rclpy.shutdown(context=context)
        proc.stop()


def _ids(msg) -> list[int]:
    return sorted(i.id for i in msg.instances)


def _next_map(client, count_before: int):
    assert client.spin_until(lambda: client["instance_map"].count > count_before, DEADLINE_S)
    return client["instance_map"].last()


def test_map_services_cross_processes(map_node):
    """save -> reset -> load through the node's services: the file holds the node's map, reset empties it,
    load brings it back; each change is announced on instance_map."""
    from moonseg3r_ros.core.instance_map import InstanceMap

    client, proc, folder = map_node
    published = client["instance_map"].last()
    path = folder / "saved" / "map.npz"
    saved = client.call(SaveMap, f"{NS}/moonseg3r/save_map", SaveMap.Request(path=str(path)))
    assert saved.success, saved.message
    assert saved.message.startswith(f"saved the map to {path} ({len(published.instances)} instances")
    on_disk = InstanceMap.load(path)
    assert sorted(r.id for r in on_disk.instances()) == _ids(published)
    assert len(on_disk) == published.point_count > 0

    count = client["instance_map"].count
    reset = client.call(Trigger, f"{NS}/moonseg3r/reset_map", Trigger.Request())
    assert (reset.success, reset.message) == (True, "the map was reset")
    emptied = _next_map(client, count)
    assert emptied.instances == [] and emptied.point_count == 0

    count = client["instance_map"].count
    loaded = client.call(LoadMap, f"{NS}/moonseg3r/load_map", LoadMap.Request(path=str(path)))
    assert loaded.success, loaded.message
    assert loaded.message == f"loaded the map from {path} ({len(published.instances)} instances, {len(on_disk)} points)"
    restored = _next_map(client, count)
    assert _ids(restored) == _ids(published) and restored.point_count == published.point_count
    assert proc.alive()


def test_map_services_refuse_bad_requests(map_node):
    """The node's handlers answer failures as success=false with the reason (no map_save_path configured)."""
    client, proc, folder = map_node
    for srv_type, name in ((SaveMap, "save_map"), (LoadMap, "load_map")):
        response = client.call(srv_type, f"{NS}/moonseg3r/{name}", srv_type.Request(path=""))
        assert (response.success, response.message) == (False, "no path given and map_save_path is empty")
    missing = folder / "no_such_map.npz"
    response = client.call(LoadMap, f"{NS}/moonseg3r/load_map", LoadMap.Request(path=str(missing)))
    assert not response.success and response.message.startswith(f"loading the map from {missing} failed")
    assert proc.alive()


if __name__ == "__main__" and sys.argv[1:] == ["peer"]:
    peer_main()

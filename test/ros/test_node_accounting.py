"""What the node tells about its inputs and what happens to every image (issue 13), against the node process:

- the README's RGB-D command with only `image` remapped: diagnostics WARN naming depth, pose and camera_info,
  a log line saying so, and activate logs every subscribed topic;
- a depth / instance_ids image of another size than its camera image: the camera image ends in exactly one
  counter, and received == processed + dropped holds;
- a side input the node rejects (a pose in another frame): its image is dropped unpaired and counted once,
  so NodeClient.finished() equals the images received (bad_input and pairing_drops count messages);
- deactivate/activate: a subscriber arriving after re-activation gets the map at once (latched outputs sent
  again: InstanceMap, cloud, OccupancyGrid and InstanceGrid); reset_map / load_map send new grids at once;
- the shutdown transition ends the process.
"""
import dataclasses

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import Image

from moonseg3r_ros.ros import conversions as conv
from moonseg3r_ros.ros.frame_publisher import image_msg
from moonseg3r_ros.ros.testing import (ACTIVATE, CAMERA_REMAPS, CONFIGURE, DEACTIVATE, GROUND_TRUTH_PARAMS,
                                       SHUTDOWN_FROM_ACTIVE, SHUTDOWN_FROM_INACTIVE, SHUTDOWN_FROM_UNCONFIGURED,
                                       Collector, TestClient)


def node_status(client) -> DiagnosticStatus | None:
    msg = client["diagnostics"].last()
    for status in (msg.status if msg is not None else []):
        if status.hardware_id == client.target:
            return status
    return None


def identity_holds(client) -> bool:
    """received == processed + dropped and nothing pending, on the latest diagnostics."""
    d = client.diagnostics()
    if not d:
        return False
    received, processed = client.counter("images_received"), client.counter("frames_processed")
    return d.get("images_pending") == "0" and received == processed + client.counter("images_dropped")


def test_missing_side_inputs_are_named_in_diagnostics_and_log(node_process, client, small_frames):
    proc = node_process("moonseg3r", {"diagnostics_rate": 5.0, "input_reliability": "reliable"},
                        {"image": "/camera/image_raw"})  # default RGB-D mode, only the image remapped
    client.subscribe_outputs(only=("diagnostics",))
    assert client.change_state(CONFIGURE) and client.change_state(ACTIVATE), proc.log()
    log = proc.log()
    assert "subscribed to 4 inputs: '/camera/image_raw' (Image), '/depth' (Image), '/camera_info' (CameraInfo), " \
           "'/pose' (PoseStamped)" in log, log
    client.publisher("image", Image, "/camera/image_raw")
    assert client.wait_for_subscribers("image")
    for i, frame in enumerate(small_frames):
        client.inputs["image"].publish(conv.array_to_image_msg(frame.image, "rgb8", conv.seconds_to_stamp(1 + i), "c"))
    assert client.spin_until(lambda: client.counter("images_received") == len(small_frames), 60), proc.log()
    count = client.diagnostics_count
    assert client.spin_until(lambda: client.diagnostics_count >= count + 2, 30)
    status = node_status(client)
    assert status.level == DiagnosticStatus.WARN
    assert status.message == "waiting for inputs: depth '/depth', camera_info '/camera_info', pose '/pose'"
    assert client.counter("frames_processed") == 0
    assert client.spin_until(lambda: "waiting for inputs: depth '/depth'" in proc.log(), 30)
    assert "4 images received, 0 processed" in proc.log()


def mismatched(frame, stream: str):
    """The frame with its depth or instance ids cut to half size."""
    value = getattr(frame, stream)
    return dataclasses.replace(frame, **{stream: np.ascontiguousarray(value[::2, ::2])})


def test_side_input_of_another_size_ends_its_image_in_one_counter(node_process, client, small_frames):
    proc = node_process("moonseg3r", {**GROUND_TRUTH_PARAMS, "diagnostics_rate": 5.0}, CAMERA_REMAPS)
    client.subscribe_outputs()
    assert client.change_state(CONFIGURE) and client.change_state(ACTIVATE), proc.log()
    frames = [small_frames[0], mismatched(small_frames[1], "depth"), mismatched(small_frames[2], "instance_ids"),
              small_frames[3]]
    client.feed(frames, 10.0)
    assert client.spin_until(lambda: identity_holds(client) and client.counter("images_received") == 4, 60), \
        (client.diagnostics(), proc.log())
    assert client.counter("frames_processed") == 2
    assert client.counter("images_dropped") == 2
    assert client.counter("images_dropped.side_input_size") == 2
    assert client.counter("bad_input.depth") == 1 and client.counter("bad_input.instance_ids") == 1
    assert status_ok_or_dropping(client)
    log = proc.log()
    assert "depth image is 64x48 but the camera image is 128x96" in log
    assert "instance_ids image is 64x48 but the camera image is 128x96" in log


def status_ok_or_dropping(client) -> bool:
    status = node_status(client)
    return status is not None and status.message == "dropping frames (see values)"


def test_a_rejected_side_input_loses_its_image_once(node_process, client, small_frames):
    proc = node_process("moonseg3r", {**GROUND_TRUTH_PARAMS, "diagnostics_rate": 5.0}, CAMERA_REMAPS)
    client.subscribe_outputs(only=("diagnostics",))
    assert client.change_state(CONFIGURE) and client.change_state(ACTIVATE), proc.log()
    client.make_input_publishers()
    assert client.spin_until(client.inputs.subscribed, 30) and client.wait_inputs_matched(), proc.log()
    for i, frame in enumerate(small_frames):
        client.inputs.map_frame = "odom" if i == 1 else "map"  # frame 1's pose is refused: not in frames.map
        client.publish_frame(frame, conv.seconds_to_stamp(30.0 + 0.1 * i))
        client.spin_for(0.05)
    assert client.spin_until(lambda: identity_holds(client) and client.counter("images_received") == 4, 60), \
        (client.diagnostics(), proc.log())
    assert client.counter("bad_input.pose") == 1
    assert client.counter("frames_processed") == 3
    assert client.counter("images_dropped") == client.counter("images_dropped.unpaired") == 1
    assert client.counter("pairing_drops") >= 2  # image 1 and its depth / ids: messages, not images
    assert client.finished() == 4


def test_pairing_rebuilt_for_another_tf_mode_still_accounts_every_image(node_process, client, small_frames):
    """Deactivate, nav.tf_mode localization (the pose now comes from TF), activate: the pairing of the new
    stream set must report its evicted images like the first one did, or they stay pending forever."""
    proc = node_process("moonseg3r", {**GROUND_TRUTH_PARAMS, "diagnostics_rate": 5.0, "nav.tf_wait": 0.1},
                        CAMERA_REMAPS)
    client.subscribe_outputs(only=("diagnostics",))
    assert client.change_state(CONFIGURE) and client.change_state(ACTIVATE) and client.change_state(DEACTIVATE)
    assert client.set_parameters({"nav.tf_mode": "localization"})[0].successful
    assert client.change_state(ACTIVATE), proc.log()
    client.make_input_publishers()
    for key in ("image", "depth", "camera_info", "instance_ids"):  # no pose subscription any more
        assert client.wait_for_subscribers(key), proc.log()
    assert client.wait_inputs_matched(), (client.diagnostics(), proc.log())
    client.inputs["image"].publish(image_msg(small_frames[0].image, conv.seconds_to_stamp(40.0)))  # alone
    client.spin_for(0.2)
    client.publish_frame(small_frames[1], conv.seconds_to_stamp(40.1))  # pairs; evicts the lone image
    assert client.spin_until(lambda: identity_holds(client) and client.counter("images_received") == 2, 60), \
        (client.diagnostics(), proc.log())
    assert client.counter("images_dropped.unpaired") == 1
    assert client.counter("images_dropped.no_robot_pose") == 1  # nobody publishes the robot's TF here
    assert client.finished() == 2
    assert client.inputs["pose"].get_subscription_count() == 0, "the pose topic is not subscribed"
    assert client.diagnostics()["missing_inputs"] == "", "nothing is missing: the pose is not a topic here"


def latched_grids(node: TestClient, target: str = "moonseg3r") -> None:
    """Collect the node's OccupancyGrid and InstanceGrid (transient local, like a map server)."""
    from nav_msgs.msg import OccupancyGrid
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from moonseg3r_msgs.msg import InstanceGrid

    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    for key, msg_type, topic in (("grid", OccupancyGrid, "occupancy_grid"), ("instance_grid", InstanceGrid,
                                                                             "instance_grid")):
        node.collectors[key] = collector = Collector()
        node.node.create_subscription(msg_type, f"/{target}/{topic}", collector, qos)


def test_reactivation_sends_the_latched_map_again_for_late_subscribers(node_process, client, ros_context,
                                                                       small_frames):
    proc = node_process("moonseg3r", {**GROUND_TRUTH_PARAMS, "occupancy.rate": 0.0}, CAMERA_REMAPS)
    client.subscribe_outputs(only=("instance_map",))
    latched_grids(client)
    assert client.change_state(CONFIGURE) and client.change_state(ACTIVATE), proc.log()
    client.feed(small_frames, 20.0)
    assert client.spin_until(lambda: all(len(client[k]) >= 2 for k in ("instance_map", "grid", "instance_grid")),
                             60), proc.log()  # the 2 keyframes
    ids = {i.id for i in client["instance_map"].last().instances}
    grid, instance_grid = client["grid"].last(), client["instance_grid"].last()
    assert client.change_state(DEACTIVATE) and client.change_state(ACTIVATE)
    late = TestClient(ros_context, "late_subscriber")
    try:
        late.subscribe_outputs(only=("instance_map", "cloud"))
        latched_grids(late)
        assert late.spin_until(lambda: all(len(late[k]) >= 1 for k in ("instance_map", "cloud", "grid",
                                                                         "instance_grid")), 30), proc.log()
        assert {i.id for i in late["instance_map"].last().instances} == ids
        assert late["cloud"].last().width > 0
        # The grids of the same map state: same cells, same stamp (the last keyframe's image).
        for before, again in ((grid, late["grid"].last()), (instance_grid, late["instance_grid"].last())):
            assert again.header.stamp == before.header.stamp
            assert (again.info.width, again.info.height) == (before.info.width, before.info.height)
            assert list(again.data) == list(before.data) and any(v > 0 for v in again.data)
    finally:
        late.close()


def occupied_cells(grid) -> int:
    return sum(1 for v in grid.data if v > 50)


def test_reset_and_load_map_send_new_grids(node_process, client, small_frames, tmp_path):
    """A navigation stack must not keep the obstacles of a map that was reset or replaced."""
    from std_srvs.srv import Trigger

    from moonseg3r_msgs.srv import LoadMap

    proc = node_process("moonseg3r", {**GROUND_TRUTH_PARAMS, "occupancy.rate": 0.0}, CAMERA_REMAPS)
    latched_grids(client)
    assert client.change_state(CONFIGURE) and client.change_state(ACTIVATE), proc.log()
    client.feed(small_frames, 50.0)
    assert client.spin_until(lambda: len(client["grid"]) >= 2, 60), proc.log()
    before = occupied_cells(client["grid"].last())
    assert before > 0
    assert client.save_map(tmp_path / "map.npz")[0]
    assert client.call(Trigger, "/moonseg3r/reset_map", Trigger.Request()).success
    assert client.spin_until(lambda: len(client["grid"]) >= 3 and len(client["instance_grid"]) >= 3, 30), proc.log()
    assert occupied_cells(client["grid"].last()) == 0 and not any(client["instance_grid"].last().data)
    assert client.call(LoadMap, "/moonseg3r/load_map", LoadMap.Request(path=str(tmp_path / "map.npz"))).success
    assert client.spin_until(lambda: len(client["grid"]) >= 4, 30), proc.log()
    assert occupied_cells(client["grid"].last()) == before


@pytest.mark.parametrize("state", ["unconfigured", "inactive", "active"])
def test_the_process_exits_after_reaching_finalized(node_process, client, state):
    proc = node_process("moonseg3r", GROUND_TRUTH_PARAMS, CAMERA_REMAPS)
    steps = {"unconfigured": [], "inactive": [CONFIGURE], "active": [CONFIGURE, ACTIVATE]}[state]
    assert all(client.change_state(step) for step in steps) and client.get_state() == state, proc.log()
    shutdown = {"unconfigured": SHUTDOWN_FROM_UNCONFIGURED, "inactive": SHUTDOWN_FROM_INACTIVE,
                "active": SHUTDOWN_FROM_ACTIVE}[state]
    assert client.change_state(shutdown)
    assert client.spin_until(lambda: not proc.alive(), 30), proc.log()
    assert proc.exit_code() == 0
    assert "finalized: exiting" in proc.log()

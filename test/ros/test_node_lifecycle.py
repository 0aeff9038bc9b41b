"""Lifecycle of the node process driven through its change_state service: a missing checkpoint at
configure, many configure/cleanup cycles, runtime parameter rules. Each test starts its own node (none
relies on the state another test left)."""
from moonseg3r_ros.ros.testing import ACTIVATE, CAMERA_REMAPS, CLEANUP, CONFIGURE, DEACTIVATE, GROUND_TRUTH_PARAMS


def test_missing_or_broken_checkpoint_fails_configure_cleanly(node_process, client, tmp_path):
    params = {**GROUND_TRUTH_PARAMS, "geometry.source": "cut3r",
              "geometry.cut3r_checkpoint": "/nonexistent/cut3r_512_dpt_4_64.pth"}
    proc = node_process("moonseg3r", params, CAMERA_REMAPS)
    assert client.change_state(CONFIGURE) is False
    assert client.get_state() == "unconfigured"
    assert proc.alive()
    assert "'geometry.cut3r_checkpoint' = '/nonexistent/cut3r_512_dpt_4_64.pth' does not exist" in proc.log()
    # A file that exists but is no checkpoint: the loader's error is reported, the node survives.
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"this is not a checkpoint")
    assert client.set_parameters({"geometry.cut3r_checkpoint": str(broken)})[0].successful
    assert client.change_state(CONFIGURE) is False
    assert client.get_state() == "unconfigured" and proc.alive()
    assert "could not build the pipeline" in proc.log()
    # Fixing the parameter while unconfigured is allowed, and configure then succeeds.
    assert client.set_parameters({"geometry.source": "recorded"})[0].successful
    assert client.change_state(CONFIGURE) is True
    assert client.get_state() == "inactive"


def test_many_configure_cleanup_cycles_keep_the_node_working(node_process, client, small_frames):
    proc = node_process("moonseg3r", GROUND_TRUTH_PARAMS, CAMERA_REMAPS)
    client.subscribe_outputs()
    assert client.change_state(CONFIGURE) and client.get_state() == "inactive", proc.log()
    for _ in range(6):
        assert client.change_state(ACTIVATE)
        assert client.change_state(DEACTIVATE)
        assert client.change_state(CLEANUP)
        assert client.get_state() == "unconfigured"
        assert client.change_state(CONFIGURE)
    assert client.change_state(ACTIVATE) and proc.alive()
    client.feed(small_frames, 50.0)
    assert client.spin_until(lambda: len(client["tf"]) >= len(small_frames) and len(client["instance_map"]) >= 2,
                             120), proc.log()
    assert len(client["instance_map"].last().instances) >= 2


def test_runtime_parameter_rules(node_process, client):
    proc = node_process("moonseg3r", GROUND_TRUTH_PARAMS, CAMERA_REMAPS)
    assert client.change_state(CONFIGURE) and client.change_state(ACTIVATE), proc.log()
    assert client.get_state() == "active"
    ok = client.set_parameters({"association.match_threshold": 1.5, "cloud.color_by": "rgb"})
    assert all(r.successful for r in ok)
    assert client.get_parameters(["association.match_threshold", "cloud.color_by"]) == [1.5, "rgb"]
    structural = client.set_parameters({"geometry.source": "cut3r"})[0]
    assert not structural.successful and "while unconfigured" in structural.reason
    topic = client.set_parameters({"topics.image": "other"})[0]
    assert not topic.successful and "while inactive" in topic.reason
    choice = client.set_parameters({"drop_policy": "block"})[0]
    assert not choice.successful and "must be one of" in choice.reason
    out_of_range = client.set_parameters({"association.match_threshold": 9.0})[0]
    assert not out_of_range.successful
    assert client.get_parameters(["association.match_threshold", "geometry.source"]) == [1.5, "recorded"]
    # Node parameters used at activation may change while inactive.
    assert client.change_state(DEACTIVATE)
    assert client.set_parameters({"queue_size": 5})[0].successful
    assert client.change_state(ACTIVATE) and proc.alive()

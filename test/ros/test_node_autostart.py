"""Autostart (no change_state calls), the map -> odom -> base_link -> camera TF chain from a static
camera-to-base transform, and the map saved to map_save_path when the process gets SIGINT.

A module of its own: no other node named `moonseg3r` may be alive on the domain meanwhile."""
import signal

import numpy as np

from moonseg3r_ros.core.instance_map import InstanceMap
from moonseg3r_ros.ros import conversions as conv
from moonseg3r_ros.ros.testing import CAMERA_REMAPS, GROUND_TRUTH_PARAMS, NodeProcess, TestClient


def test_autostart_base_chain_and_map_saved_on_sigint(ros_context, tmp_path, small_frames):
    map_path = tmp_path / "saved" / "map.npz"
    camera_to_base = [0.1, 0.0, 0.5, -0.5, 0.5, -0.5, 0.5]  # optical frame of a forward-looking camera
    params = {**GROUND_TRUTH_PARAMS, "autostart": True, "map_save_path": str(map_path), "frames.base": "base_link",
              "frames.odom": "odom", "camera_to_base": camera_to_base}
    proc = NodeProcess("moonseg3r", params, CAMERA_REMAPS, tmp_path).start()
    client = TestClient(ros_context, "autostart_client")
    try:
        client.subscribe_outputs()
        assert client.spin_until(lambda: "moonseg3r" in client.node.get_node_names(), 60)
        assert client.spin_until(lambda: client.get_state() == "active", 120), proc.log()
        client.feed(small_frames, 10.0)
        def done() -> bool:
            return len(client["tf"]) >= len(small_frames) and len(client["instance_map"]) >= 2
        assert client.spin_until(done, 120)
        static = client["tf_static"].last().transforms[0]
        assert (static.header.frame_id, static.child_frame_id) == ("base_link", "camera_optical")
        base_to_camera = conv.xyz_quat_to_matrix(camera_to_base)
        np.testing.assert_allclose(conv.transform_msg_to_matrix(static), base_to_camera, atol=1e-9)
        for frame, msg in zip(small_frames, client["tf"].messages):
            map_odom, odom_base = msg.transforms
            assert (map_odom.header.frame_id, map_odom.child_frame_id) == ("map", "odom")
            assert (odom_base.header.frame_id, odom_base.child_frame_id) == ("odom", "base_link")
            np.testing.assert_allclose(conv.transform_msg_to_matrix(map_odom), np.eye(4), atol=1e-12)
            chained = conv.transform_msg_to_matrix(odom_base) @ base_to_camera  # map -> camera
            np.testing.assert_allclose(chained, frame.pose_c2w, atol=1e-9)
        last = client["instance_map"].last()
        assert proc.stop(signal.SIGINT) == 0
        saved = InstanceMap.load(map_path)
        assert [(r.id, r.point_count) for r in saved.instances()] == [(i.id, i.point_count) for i in last.instances]
        assert "saved the map to" in proc.log()
    finally:
        client.close()
        proc.stop()

"""CompressedImage input (image_transport 'compressed': '<image>/compressed'), the cloud published by its
rate timer, coloured by RGB and voxel-downsampled for transport, checked against the saved map."""
import numpy as np
from sensor_msgs.msg import CompressedImage

from moonseg3r_ros.core.instance_map import InstanceMap
from moonseg3r_ros.data.synthetic import SceneSpec, generate_scene
from moonseg3r_ros.ros import conversions as conv
from moonseg3r_ros.ros.testing import ACTIVATE, CAMERA_REMAPS, CONFIGURE, NodeProcess, TestClient

PARAMS = {"masks.source": "ground_truth", "keyframe_interval": 2, "input_reliability": "reliable", "input_depth": 50,
          "queue_size": 100, "drop_policy": "oldest", "image_transport": "compressed",
          "cloud.rate": 2.0, "cloud.color_by": "rgb", "cloud.voxel_size": 0.05}
NUM_FRAMES = 4


def test_compressed_input_and_rate_limited_rgb_cloud(ros_context, tmp_path):
    from moonseg3r_msgs.srv import SaveMap

    scene = generate_scene(SceneSpec(seed=11, num_frames=NUM_FRAMES, width=128, height=96, num_objects=4))
    frames = [scene.frames[i] for i in range(NUM_FRAMES)]
    proc = NodeProcess("moonseg3r", PARAMS, CAMERA_REMAPS, tmp_path).start()
    client = TestClient(ros_context, "compressed_client")
    try:
        client.subscribe_outputs()
        assert client.change_state(CONFIGURE) and client.change_state(ACTIVATE), proc.log()
        client.make_input_publishers()
        client.publisher("compressed", CompressedImage, "/camera/image_raw/compressed")
        for key in ("compressed", "depth", "camera_info", "pose", "instance_ids"):
            assert client.wait_for_subscribers(key), key
        stamps = [conv.seconds_to_stamp(20.0 + 0.1 * i) for i in range(NUM_FRAMES)]
        for frame, stamp in zip(frames, stamps):
            client.publish_frame(frame, stamp, image_msg=conv.rgb_to_compressed_msg(frame.image, "png", stamp),
                                 image_key="compressed")
            client.spin_for(0.02)
        assert client.spin_until(lambda: len(client["tf"]) == NUM_FRAMES, 120), proc.log()
        last_keyframe = conv.stamp_to_ns(stamps[2])
        assert client.spin_until(lambda: client["cloud"].last() is not None and
                                 conv.stamp_to_ns(client["cloud"].last().header.stamp) == last_keyframe, 60)
        # PNG is lossless: the node saw exactly the rendered frames, so its poses are the inputs'.
        for frame, msg in zip(frames, client["tf"].messages):
            np.testing.assert_allclose(conv.transform_msg_to_matrix(msg.transforms[0]), frame.pose_c2w, atol=1e-9)
        path = tmp_path / "map.npz"
        assert client.call(SaveMap, "/moonseg3r/save_map", SaveMap.Request(path=str(path))).success
        xyz, rgb, ids = InstanceMap.load(path).points()
        want_xyz, want_rgb, want_ids = conv.voxel_downsample(xyz, rgb, ids, 0.05)
        assert len(want_xyz) < len(xyz)  # downsampling did something
        fields = conv.read_cloud(client["cloud"].last())
        np.testing.assert_array_equal(np.stack([fields["x"], fields["y"], fields["z"]], axis=1), want_xyz)
        np.testing.assert_array_equal(conv.unpack_rgb(fields["rgb"]), want_rgb)  # coloured by RGB
        np.testing.assert_array_equal(fields["instance_id"], want_ids)
        assert proc.alive()
    finally:
        client.close()
        proc.stop()

"""CompressedImage input (image_transport 'compressed': '<image>/compressed'), the cloud published by its
rate timer, coloured by RGB and voxel-downsampled for transport, checked against the saved map with a
downsampling of the test's own, and its colours against the rendered pixels (which a decoding error, e.g.
swapped channels, would break; the poses come from the recorded pose input and cannot show it)."""
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
        keep = first_point_per_voxel(xyz, PARAMS["cloud.voxel_size"])
        assert 0 < len(keep) < len(xyz)  # downsampling did something
        fields = conv.read_cloud(client["cloud"].last())
        cloud_xyz = np.stack([fields["x"], fields["y"], fields["z"]], axis=1)
        cloud_rgb = conv.unpack_rgb(fields["rgb"])
        np.testing.assert_array_equal(cloud_xyz, xyz[keep])
        np.testing.assert_array_equal(cloud_rgb, rgb[keep])  # coloured by RGB
        np.testing.assert_array_equal(fields["instance_id"], ids[keep])
        # The colours are the rendered pixels': the points seen in frame 0 have that frame's colours.
        error, swapped = colour_error(cloud_xyz, cloud_rgb, frames[0])
        assert error < 12.0 and swapped > 3 * error + 20, (error, swapped)
        assert proc.alive()
    finally:
        client.close()
        proc.stop()


def first_point_per_voxel(xyz: np.ndarray, voxel: float) -> list[int]:
    """Indices of the first point (input order) in each `voxel` cell, cell = floor(x / voxel) in float32
    (the transport downsampling's rule, written here as a plain loop)."""
    size = np.float32(voxel)
    seen, keep = set(), []
    for i, point in enumerate(np.asarray(xyz, np.float32)):
        cell = tuple(int(np.floor(c / size)) for c in point)
        if cell not in seen:
            seen.add(cell)
            keep.append(i)
    return keep


def colour_error(xyz: np.ndarray, rgb: np.ndarray, frame) -> tuple[float, float]:
    """Median |point colour - pixel colour| over the points that project onto frame's valid depth within 2 cm,
    and the same with the pixel's channels reversed (what a BGR/RGB mix-up would give)."""
    world_to_camera = np.linalg.inv(frame.pose_c2w)
    cam = xyz.astype(np.float64) @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
    front = cam[:, 2] > 1e-3
    uvw = cam[front] @ np.asarray(frame.intrinsics).T
    u = np.round(uvw[:, 0] / uvw[:, 2]).astype(int)
    v = np.round(uvw[:, 1] / uvw[:, 2]).astype(int)
    inside = (u >= 0) & (u < frame.width) & (v >= 0) & (v < frame.height)
    z = cam[front][inside, 2]
    depth = frame.depth[v[inside], u[inside]]
    seen = np.abs(depth - z) < 0.02
    assert seen.sum() > 100, "too few cloud points seen in frame 0"
    pixels = frame.image[v[inside][seen], u[inside][seen]].astype(float)
    colours = rgb[front][inside][seen].astype(float)
    error = float(np.median(np.abs(colours - pixels).mean(axis=1)))
    swapped = float(np.median(np.abs(colours - pixels[:, ::-1]).mean(axis=1)))
    return error, swapped

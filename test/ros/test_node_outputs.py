"""The node in its own process, fed a generated scene (recorded geometry + ground-truth masks) by this
process: TF, PointCloud2 (decoded field by field), InstanceMap, markers, debug image, diagnostics and the
map services, all checked against the same pipeline run in-process on the same frames."""

import numpy as np
import pytest

from moonseg3r_ros.core.config import from_flat
from moonseg3r_ros.core.instance_map import InstanceMap
from moonseg3r_ros.data.synthetic import SceneSpec, generate_scene
from moonseg3r_ros.ros import conversions as conv
from moonseg3r_ros.ros.testing import ACTIVATE, CAMERA_REMAPS, CONFIGURE, NodeProcess, TestClient

PIPELINE_PARAMS = {"geometry.source": "recorded", "masks.source": "ground_truth", "keyframe_interval": 2}
NODE_PARAMS = {**PIPELINE_PARAMS, "input_reliability": "reliable", "input_depth": 50, "cloud.rate": 0.0,
               "queue_size": 100, "drop_policy": "oldest", "frames.camera": "camera_optical"}
NUM_FRAMES = 8
STAMP_OFFSET = 1000.0


@pytest.fixture(scope="module")
def scene():
    return generate_scene(SceneSpec(seed=3, num_frames=NUM_FRAMES, width=160, height=120, num_objects=4))


@pytest.fixture(scope="module")
def frames(scene):
    return [scene.frames[i] for i in range(NUM_FRAMES)]


@pytest.fixture(scope="module")
def reference(frames):
    """The same pipeline run in this process: what the node must publish."""
    from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline

    pipeline = MoonSeg3RPipeline(from_flat(PIPELINE_PARAMS))
    results = [pipeline.step(f.image, f.stamp + STAMP_OFFSET, depth=f.depth, intrinsics=f.intrinsics,
                             pose_c2w=f.pose_c2w, instance_ids=f.instance_ids) for f in frames]
    return pipeline, results


@pytest.fixture(scope="module")
def running(ros_context, tmp_path_factory, frames):
    """(client, node process) after all frames went through the node."""
    log_dir = tmp_path_factory.mktemp("node_outputs")
    proc = NodeProcess("moonseg3r", NODE_PARAMS, CAMERA_REMAPS, log_dir).start()
    client = TestClient(ros_context, "outputs_client")
    try:
        client.subscribe_outputs(debug_image="/moonseg3r/debug_image")
        assert client.change_state(CONFIGURE), proc.log()
        assert client.change_state(ACTIVATE), proc.log()
        client.make_input_publishers()
        for key in ("image", "depth", "camera_info", "pose", "instance_ids"):
            assert client.wait_for_subscribers(key), f"node did not subscribe to {key}\n{proc.log()}"
        assert client.spin_until(lambda: client.node.count_publishers("/moonseg3r/debug_image") > 0)
        for frame in frames:
            client.publish_frame(frame, conv.seconds_to_stamp(frame.stamp + STAMP_OFFSET))
            client.spin_for(0.02)
        done = client.spin_until(lambda: len(client["tf"]) >= NUM_FRAMES and len(client["instance_map"]) >= 4, 120)
        assert done, f"tf {len(client['tf'])}, maps {len(client['instance_map'])}\n{proc.log()}"
        client.spin_until(lambda: int(client.diagnostics().get("frames_processed", 0)) >= NUM_FRAMES, 30)
        yield client, proc
    finally:
        client.close()
        proc.stop()


def test_tf_is_the_input_pose_at_the_input_stamp(running, frames):
    client, _ = running
    transforms = [t for msg in client["tf"].messages for t in msg.transforms]
    assert len(transforms) == NUM_FRAMES
    for frame, tf in zip(frames, transforms):
        assert (tf.header.frame_id, tf.child_frame_id) == ("map", "camera_optical")
        assert conv.stamp_to_ns(tf.header.stamp) == conv.stamp_to_ns(conv.seconds_to_stamp(frame.stamp + STAMP_OFFSET))
        np.testing.assert_allclose(conv.transform_msg_to_matrix(tf), frame.pose_c2w, atol=1e-9)


def test_instance_map_after_every_keyframe_matches_the_in_process_pipeline(running, reference, frames):
    client, _ = running
    pipeline, results = reference
    keyframe_stamps = [conv.stamp_to_ns(conv.seconds_to_stamp(r.stamp)) for r in results if r.is_keyframe]
    maps = client["instance_map"].messages
    assert [conv.stamp_to_ns(m.header.stamp) for m in maps] == keyframe_stamps  # one per keyframe, its stamp
    final = maps[-1]
    expected = pipeline.instance_map.instances()
    assert len(expected) >= 3  # the scene's objects were found
    assert [i.id for i in final.instances] == [r.id for r in expected]
    for got, want in zip(final.instances, expected):
        assert got.point_count == want.point_count
        np.testing.assert_allclose([got.bbox_min.x, got.bbox_min.y, got.bbox_min.z], want.bbox_min, atol=1e-5)
        np.testing.assert_allclose([got.bbox_max.x, got.bbox_max.y, got.bbox_max.z], want.bbox_max, atol=1e-5)
        np.testing.assert_allclose([got.centroid.x, got.centroid.y, got.centroid.z], want.centroid, atol=1e-5)
        np.testing.assert_allclose([got.color.r, got.color.g, got.color.b], want.color, atol=1e-6)
        assert conv.stamp_to_ns(got.last_seen) == conv.stamp_to_ns(conv.seconds_to_stamp(want.last_seen))
    assert final.header.frame_id == "map"
    assert (final.frame_index, final.keyframe_count) == (NUM_FRAMES - 2, len(keyframe_stamps))
    assert final.point_count == len(pipeline.instance_map)
    assert final.cloud_topic == "/moonseg3r/cloud"


def test_instances_sit_on_the_ground_truth_objects(running, scene):
    """Every instance's centroid lies inside one generated object's box (expanded by 5 cm)."""
    client, _ = running
    boxes = []
    for obj in scene.objects:
        box = obj.mesh.get_axis_aligned_bounding_box()
        boxes.append((np.asarray(box.min_bound) - 0.05, np.asarray(box.max_bound) + 0.05))
    final = client["instance_map"].last()
    for inst in final.instances:
        c = np.array([inst.centroid.x, inst.centroid.y, inst.centroid.z])
        assert any(np.all(c >= lo) and np.all(c <= hi) for lo, hi in boxes), f"instance {inst.id} at {c}"


def test_point_cloud_decoded_field_by_field(running, reference):
    client, _ = running
    pipeline, results = reference
    cloud = client["cloud"].last()
    assert cloud.header.frame_id == "map"
    last_keyframe = [r for r in results if r.is_keyframe][-1]
    assert conv.stamp_to_ns(cloud.header.stamp) == conv.stamp_to_ns(conv.seconds_to_stamp(last_keyframe.stamp))
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb", "instance_id"]
    fields = conv.read_cloud(cloud)
    xyz_ref, _, ids_ref = pipeline.instance_map.points()
    xyz = np.stack([fields["x"], fields["y"], fields["z"]], axis=1)
    assert cloud.width == len(xyz_ref) == client["instance_map"].last().point_count
    np.testing.assert_array_equal(xyz, xyz_ref.astype(np.float32))
    np.testing.assert_array_equal(fields["instance_id"], ids_ref)
    # Coloured by instance: every point of an instance has the instance's colour; id 0 is grey.
    rgb = conv.unpack_rgb(fields["rgb"])
    for inst in client["instance_map"].last().instances:
        mask = fields["instance_id"] == inst.id
        assert mask.sum() == inst.point_count
        expected = np.round(np.array([inst.color.r, inst.color.g, inst.color.b]) * 255)
        assert np.abs(rgb[mask].astype(int) - expected).max() <= 1
        inside = (xyz[mask] >= [inst.bbox_min.x - 1e-5, inst.bbox_min.y - 1e-5, inst.bbox_min.z - 1e-5]) & \
                 (xyz[mask] <= [inst.bbox_max.x + 1e-5, inst.bbox_max.y + 1e-5, inst.bbox_max.z + 1e-5])
        assert inside.all()
    assert (rgb[fields["instance_id"] == 0] == 128).all()


def test_markers_and_debug_image(running, reference):
    client, _ = running
    pipeline, results = reference
    markers = client["markers"].last().markers
    ids = [r.id for r in pipeline.instance_map.instances()]
    assert markers[0].action == 3  # DELETEALL first
    boxes = [m for m in markers if m.ns == "instance_boxes"]
    labels = [m for m in markers if m.ns == "instance_labels"]
    assert [m.id for m in boxes] == ids and [m.id for m in labels] == ids
    assert all(len(m.points) == 24 for m in boxes)
    assert all(m.header.frame_id == "map" for m in markers)
    images = client["debug_image"].messages
    keyframe_stamps = {conv.stamp_to_ns(conv.seconds_to_stamp(r.stamp)) for r in results if r.is_keyframe}
    assert images and {conv.stamp_to_ns(m.header.stamp) for m in images} <= keyframe_stamps
    overlay = conv.image_msg_to_rgb(images[-1])
    assert overlay.shape == (120, 160, 3)
    assert client.spin_until(lambda: client.diagnostics().get("debug_images_published") == str(len(images)), 30)


def test_diagnostics_count_every_frame(running):
    client, _ = running
    values = client.diagnostics()
    assert values["images_received"] == str(NUM_FRAMES)
    assert values["frames_processed"] == str(NUM_FRAMES)
    assert values["keyframes"] == str(NUM_FRAMES // 2)
    assert values["queue_drops"] == "0" and values["pairing_drops"] == "0"
    assert int(values["instances"]) == len(client["instance_map"].last().instances)
    assert float(values["peak_rss_mb"]) > 0


def test_save_reset_load_round_trip(running, tmp_path):
    from moonseg3r_msgs.srv import LoadMap, SaveMap
    from std_srvs.srv import Trigger

    client, proc = running
    before = client["instance_map"].last()
    path = tmp_path / "maps" / "scene.npz"
    response = client.call(SaveMap, "/moonseg3r/save_map", SaveMap.Request(path=str(path)))
    assert response.success, response.message
    assert path.exists() and f"{len(before.instances)} instances" in response.message
    assert len(InstanceMap.load(path).instances()) == len(before.instances)

    n_maps = len(client["instance_map"])
    response = client.call(Trigger, "/moonseg3r/reset_map", Trigger.Request())
    assert response.success
    assert client.spin_until(lambda: len(client["instance_map"]) > n_maps)
    assert len(client["instance_map"].last().instances) == 0
    assert client.spin_until(lambda: client["cloud"].last().width == 0)

    bad = client.call(LoadMap, "/moonseg3r/load_map", LoadMap.Request(path=str(tmp_path / "missing.npz")))
    assert not bad.success and "not found" in bad.message
    n_maps = len(client["instance_map"])
    response = client.call(LoadMap, "/moonseg3r/load_map", LoadMap.Request(path=str(path)))
    assert response.success, response.message
    assert client.spin_until(lambda: len(client["instance_map"]) > n_maps)
    after = client["instance_map"].last()
    assert [(i.id, i.point_count) for i in after.instances] == [(i.id, i.point_count) for i in before.instances]
    assert client.spin_until(lambda: client["cloud"].last().width == before.point_count)
    assert proc.alive()

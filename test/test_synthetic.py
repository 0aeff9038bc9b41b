"""Synthetic scene generator: determinism, ground truth consistency, ScanNet-style folder."""
import numpy as np
import pytest

from moonseg3r_ros.data.synthetic import SceneSpec, generate_scene, look_at


@pytest.fixture(scope="module")
def scene():
    return generate_scene(SceneSpec(seed=3, num_frames=12, width=80, height=60, num_objects=5))


def test_frames_have_contract_types_and_shapes(scene):
    assert len(scene.frames) == 12
    f = scene.frames[4]
    assert f.image.shape == (60, 80, 3) and f.image.dtype == np.uint8
    assert f.depth.shape == (60, 80) and f.depth.dtype == np.float32
    assert f.instance_ids.shape == (60, 80) and f.instance_ids.dtype == np.int32
    assert f.intrinsics.shape == (3, 3) and f.pose_c2w.shape == (4, 4)
    assert f.frame_index == 4 and f.stamp == pytest.approx(0.4)
    assert f.intrinsics[0, 0] == pytest.approx(0.8 * 80)
    assert f.intrinsics[0, 2] == pytest.approx(39.5)


def test_deterministic_in_seed():
    a = generate_scene(SceneSpec(seed=1, num_frames=3, width=40, height=30, num_objects=4))
    b = generate_scene(SceneSpec(seed=1, num_frames=3, width=40, height=30, num_objects=4))
    c = generate_scene(SceneSpec(seed=2, num_frames=3, width=40, height=30, num_objects=4))
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.vertex_labels, b.vertex_labels)
    assert np.array_equal(a.frames[2].image, b.frames[2].image)
    assert not np.array_equal(a.vertices[:100], c.vertices[:100]) or len(a.vertices) != len(c.vertices)


def test_vertex_labels_encode_label_and_instance(scene):
    labels = scene.vertex_labels
    assert labels.dtype == np.int64 and len(labels) == len(scene.vertices)
    assert scene.object_ids == [1, 2, 3, 4, 5]
    inst = np.unique(labels[labels > 0])
    assert sorted(int(v % 1000) for v in inst) == [1, 2, 3, 4, 5]
    assert set(int(v // 1000) for v in inst) == {1, 2, 3}  # first three shapes are box, cylinder, sphere
    assert (labels == 0).sum() > 1000  # room is unannotated
    for obj in scene.objects:
        assert (labels == obj.label_id * 1000 + obj.instance_id).sum() >= 200


def test_objects_rest_on_floor_without_overlap(scene):
    for obj in scene.objects:
        pts = scene.vertices[scene.vertex_labels % 1000 == obj.instance_id]
        assert pts[:, 2].min() == pytest.approx(0.0, abs=0.02)
    for i, a in enumerate(scene.objects):
        for b in scene.objects[i + 1:]:
            assert np.linalg.norm(a.center_xy - b.center_xy) > a.footprint_radius + b.footprint_radius


def test_depth_and_ids_agree_with_vertices(scene):
    from scipy.spatial import cKDTree

    f = scene.frames[6]
    K, pose = f.intrinsics, f.pose_c2w
    v, u = np.nonzero(f.instance_ids > 0)
    assert len(v) > 100
    z = f.depth[v, u]
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)
    world = cam @ pose[:3, :3].T + pose[:3, 3]
    dist, idx = cKDTree(scene.vertices).query(world)
    assert np.median(dist) < 0.03
    assert np.mean(scene.vertex_labels[idx] % 1000 == f.instance_ids[v, u]) > 0.97


def test_look_at_is_optical_frame():
    pose = look_at(np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 1.0]))
    assert np.allclose(pose[:3, 2], [1, 0, 0])  # z forward
    assert np.allclose(pose[:3, 0], [0, -1, 0])  # x right (world -y when facing +x)
    assert np.allclose(pose[:3, 1], [0, 0, -1])  # y down
    assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3))


def test_every_object_visible_somewhere(scene):
    seen = set()
    for f in scene.frames:
        seen |= set(np.unique(f.instance_ids).tolist())
    assert seen == {0, 1, 2, 3, 4, 5}


def test_invalid_spec_raises():
    with pytest.raises(ValueError, match="num_frames"):
        generate_scene(SceneSpec(num_frames=0))
    with pytest.raises(ValueError, match="num_objects"):
        generate_scene(SceneSpec(num_objects=40))


def test_save_writes_scannet_folder(scene, tmp_path):
    import cv2
    from moonseg3r_ros.data.scannet_io import read_labels, read_matrix, read_vertex_ply

    out = scene.save(tmp_path / scene.name, image_format="png")
    name = scene.name
    assert len(list((out / "color").glob("*.png"))) == 12
    assert np.array_equal(read_labels(out / f"{name}.txt"), scene.vertex_labels)
    assert np.array_equal(read_vertex_ply(out / f"{name}_vh_clean_2.ply"), scene.vertices)
    f = scene.frames[3]
    color = cv2.imread(str(out / "color" / "3.png"))[..., ::-1]
    assert np.array_equal(color, f.image)
    depth_mm = cv2.imread(str(out / "depth" / "3.png"), cv2.IMREAD_UNCHANGED)
    assert depth_mm.dtype == np.uint16
    assert np.abs(depth_mm / 1000.0 - f.depth).max() <= 0.0005 + 1e-6
    ids = cv2.imread(str(out / "instance" / "3.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(ids.astype(np.int32), f.instance_ids)
    assert np.allclose(read_matrix(out / "pose" / "3.txt"), f.pose_c2w, atol=1e-8)
    assert np.allclose(read_matrix(out / "intrinsic" / "intrinsic_color.txt")[:3, :3], f.intrinsics)

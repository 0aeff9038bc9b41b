"""ScanNet / SceneNN readers: round trip of a saved synthetic scene, resizing, invalid poses, errors."""
import cv2
import numpy as np
import pytest

from moonseg3r_ros.data.datasets import (DatasetError, ScanNetSequence, SceneNNSequence, open_sequence,
                                         read_trajectory_log)
from moonseg3r_ros.data.synthetic import SceneSpec, generate_scene


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    scene = generate_scene(SceneSpec(seed=5, num_frames=4, width=64, height=48, num_objects=4))
    root = scene.save(tmp_path_factory.mktemp("scans") / scene.name, image_format="png")
    return scene, root


def test_scannet_round_trip(saved):
    scene, root = saved
    seq = open_sequence(root)
    assert isinstance(seq, ScanNetSequence) and len(seq) == 4 and seq.name == scene.name
    for got, want in zip(seq, scene.frames):
        assert np.array_equal(got.image, want.image)
        assert np.array_equal(got.instance_ids, want.instance_ids) and got.instance_ids.dtype == np.int32
        assert np.abs(got.depth - want.depth).max() <= 0.0005 + 1e-6 and got.depth.dtype == np.float32
        assert np.allclose(got.pose_c2w, want.pose_c2w, atol=1e-8)
        assert np.allclose(got.intrinsics, want.intrinsics)
        assert got.frame_index == want.frame_index and got.stamp == pytest.approx(want.stamp)
    assert np.array_equal(seq.vertices, scene.vertices)
    assert np.array_equal(seq.vertex_labels, scene.vertex_labels)
    assert seq[-1].frame_index == 3 and len(seq[1:3]) == 2


def test_depth_resized_to_color_size_nearest(tmp_path):
    root = tmp_path / "scene0001_00"
    for sub in ("color", "depth", "pose", "intrinsic"):
        (root / sub).mkdir(parents=True)
    cv2.imwrite(str(root / "color" / "0.jpg"), np.zeros((8, 12, 3), np.uint8))
    depth = np.array([[1000, 2000, 3000], [4000, 5000, 6000]], np.uint16)  # 2x3 -> 8x12 (x4)
    cv2.imwrite(str(root / "depth" / "0.png"), depth)
    np.savetxt(root / "pose" / "0.txt", np.eye(4))
    np.savetxt(root / "intrinsic" / "intrinsic_color.txt", np.eye(4))
    frame = ScanNetSequence(root)[0]
    assert frame.depth.shape == (8, 12)
    assert frame.depth[0, 0] == 1.0 and frame.depth[7, 11] == 6.0 and frame.depth[5, 5] == 5.0
    assert set(np.unique(frame.depth)) == {1.0, 2.0, 3.0, 4.0, 5.0, 6.0}  # no interpolated values


def test_invalid_poses_are_skipped_and_counted(saved, tmp_path):
    import shutil

    _, root = saved
    copy = tmp_path / root.name
    shutil.copytree(root, copy)
    pose = np.full((4, 4), -np.inf)
    np.savetxt(copy / "pose" / "2.txt", pose)
    seq = ScanNetSequence(copy)
    assert len(seq) == 3 and seq.skipped_invalid_pose == 1
    assert [f.frame_index for f in seq] == [0, 1, 3]


def test_missing_parts_raise_clear_errors(saved, tmp_path):
    import shutil

    _, root = saved
    with pytest.raises(DatasetError, match="sequence not found"):
        open_sequence(tmp_path / "nothing")
    copy = tmp_path / "c"
    shutil.copytree(root, copy)
    (copy / "depth" / "1.png").unlink()
    with pytest.raises(DatasetError, match="1.png"):
        ScanNetSequence(copy)
    shutil.rmtree(copy / "pose")
    with pytest.raises(DatasetError, match="pose folder not found"):
        ScanNetSequence(copy)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a ScanNet folder"):
        open_sequence(tmp_path / "empty")


def write_scenenn(root, poses, size=(6, 8)):
    (root / "image").mkdir(parents=True)
    (root / "depth").mkdir()
    lines = []
    for k, pose in enumerate(poses):
        n = k + 1
        rgb = np.full((*size, 3), 10 * n, np.uint8)
        cv2.imwrite(str(root / "image" / f"image{n:05d}.png"), rgb)
        cv2.imwrite(str(root / "depth" / f"depth{n:05d}.png"), np.full(size, 1500 + n, np.uint16))
        lines.append(f"{k} {k} {n}")
        lines += [" ".join(f"{v:.6f}" for v in row) for row in pose]
    (root / "trajectory.log").write_text("\n".join(lines) + "\n")


def test_scenenn_layout(tmp_path):
    poses = [np.eye(4), np.eye(4), np.eye(4)]
    poses[1][:3, 3] = [1.0, 2.0, 3.0]
    poses[2][0, 0] = np.nan
    write_scenenn(tmp_path / "011", poses)
    seq = open_sequence(tmp_path / "011")
    assert isinstance(seq, SceneNNSequence) and len(seq) == 2 and seq.skipped_invalid_pose == 1
    f = seq[1]
    assert f.frame_index == 2 and np.allclose(f.pose_c2w[:3, 3], [1, 2, 3])
    assert f.image[0, 0].tolist() == [20, 20, 20] and f.depth[0, 0] == pytest.approx(1.502)
    assert f.intrinsics[0, 0] == pytest.approx(544.47329) and f.stamp == pytest.approx(2 / 30)


def test_trajectory_log_errors(tmp_path):
    (tmp_path / "trajectory.log").write_text("0 0 1\n1 0 0 0\n0 1 0 0\n")
    with pytest.raises(DatasetError, match="blocks of 5"):
        read_trajectory_log(tmp_path / "trajectory.log")
    with pytest.raises(DatasetError, match="not found"):
        read_trajectory_log(tmp_path / "missing.log")

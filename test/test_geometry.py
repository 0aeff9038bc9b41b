import numpy as np
import pytest
import torch

from moonseg3r_ros.core.config import PipelineConfig
from moonseg3r_ros.core.geometry import (GeometryError, RecordedGeometry, backproject, block_mean,
                                         geometric_features, make_geometry_source)
from moonseg3r_ros.core.types import Frame

K = np.array([[50.0, 0, 15.5], [0, 50.0, 11.5], [0, 0, 1]])


def _pose(tx=1.0):
    pose = np.eye(4)
    pose[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]  # camera z along world x
    pose[:3, 3] = [tx, 2.0, 0.5]
    return pose


def _frame(depth, pose=None, k=K):
    h, w = depth.shape
    return Frame(np.zeros((h, w, 3), np.uint8), 0.0, depth=depth, intrinsics=k,
                 pose_c2w=_pose() if pose is None else pose)


def test_backprojection_and_world_points():
    depth = np.full((24, 32), 2.0, np.float32)
    geo = RecordedGeometry(max_depth=10.0).compute(_frame(depth))
    assert geo.points_cam.shape == (24, 32, 3) and geo.valid.all()
    # pixel (row 11.5, col 15.5) would be the optical axis; pixel (0, 0) is up-left of it
    np.testing.assert_allclose(geo.points_cam[0, 0], [2 * (0 - 15.5) / 50, 2 * (0 - 11.5) / 50, 2.0], rtol=1e-6)
    # camera z maps to world +x: every world x = 1 + depth
    np.testing.assert_allclose(geo.points_world[..., 0], 3.0, rtol=1e-6)
    np.testing.assert_allclose(geo.points_world[0, 0, 1], 2.0 - geo.points_cam[0, 0, 0], rtol=1e-6)
    assert geo.state_attention is None and geo.features_3d is None
    np.testing.assert_array_equal(geo.intrinsics, K)


def test_invalid_depth_is_masked_and_zeroed():
    depth = np.full((24, 32), 2.0, np.float32)
    depth[0, :4] = [np.nan, np.inf, 0.0, 50.0]
    geo = RecordedGeometry(max_depth=10.0).compute(_frame(depth))
    assert not geo.valid[0, :4].any() and geo.valid[0, 4]
    assert np.isfinite(geo.points_world).all() and np.isfinite(geo.points_cam).all()
    assert (geo.confidence[0, :4] == 0).all() and geo.confidence[0, 4] == 1


def test_uint16_millimetres_and_resized_depth():
    depth_mm = np.full((12, 16), 1500, np.uint16)
    geo = RecordedGeometry().compute(_frame(np.zeros((24, 32), np.float32)).__class__(
        np.zeros((24, 32, 3), np.uint8), 0.0, depth=depth_mm, intrinsics=K, pose_c2w=_pose()))
    assert geo.points_cam.shape == (24, 32, 3)
    np.testing.assert_allclose(geo.points_cam[..., 2], 1.5)


@pytest.mark.parametrize("change, message", [
    (dict(pose=np.full((4, 4), np.nan)), "NaN"),
    (dict(pose=np.eye(3)), "4x4"),
    (dict(pose=np.diag([2.0, 1, 1, 1])), "rigid"),
    (dict(k=np.zeros((3, 3))), "focal"),
])
def test_bad_pose_or_intrinsics_raise(change, message):
    frame = _frame(np.ones((24, 32), np.float32), pose=change.get("pose"), k=change.get("k", K))
    with pytest.raises(GeometryError, match=message):
        RecordedGeometry().compute(frame)


def test_missing_depth_raises():
    frame = Frame(np.zeros((4, 4, 3), np.uint8), 0.0, intrinsics=K, pose_c2w=_pose())
    with pytest.raises(GeometryError, match="depth"):
        RecordedGeometry().compute(frame)


def test_geometric_features_of_a_plane():
    depth = np.full((32, 32), 2.0, np.float32)
    points = backproject(depth, K)
    f3d = geometric_features(points, points, np.ones((32, 32), bool), patch=16)
    assert isinstance(f3d, torch.Tensor) and f3d.shape == (4, 2, 2)
    # a fronto-parallel plane: normal along -/+ z of the camera, log depth = log 2
    np.testing.assert_allclose(torch.abs(f3d[2]).numpy(), 1.0, atol=0.1)
    np.testing.assert_allclose(f3d[3].numpy(), np.log(2.0), atol=1e-5)


def test_block_mean_weights():
    values = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    weight = np.zeros((4, 4), bool)
    weight[0, 0] = weight[3, 3] = True
    out = block_mean(values, 2, weight)
    assert out.shape == (2, 2, 1)
    assert out[0, 0, 0] == 0 and out[1, 1, 0] == 15 and out[0, 1, 0] == 0


def test_cut3r_source_without_checkpoint_is_a_clear_error(tmp_path):
    config = PipelineConfig()
    config.geometry.source = "cut3r"
    with pytest.raises(GeometryError, match="cut3r_checkpoint is empty"):
        make_geometry_source(config, torch.device("cpu"))
    config.geometry.cut3r_checkpoint = str(tmp_path / "missing.pth")
    with pytest.raises(GeometryError, match="does not exist"):
        make_geometry_source(config, torch.device("cpu"))
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    config.geometry.cut3r_checkpoint = str(broken)
    with pytest.raises(GeometryError, match="could not be loaded"):
        make_geometry_source(config, torch.device("cpu"))


def test_factory_recorded():
    config = PipelineConfig()
    config.geometry.recorded_features = True
    source = make_geometry_source(config, torch.device("cpu"))
    assert isinstance(source, RecordedGeometry) and source.with_features and not source.has_state_attention

"""Camera math: look_at poses, pinhole K, projection <-> back-projection, Umeyama similarity."""
import numpy as np
import pytest

from moonseg3r_ros.core.camera import backproject, look_at, pinhole, project_points, to_world, umeyama


def test_look_at_is_an_optical_frame_looking_at_the_target():
    eye, target = np.array([1.0, -2.0, 1.5]), np.array([0.5, 1.0, 0.2])
    pose = look_at(eye, target)
    rot = pose[:3, :3]
    assert np.allclose(rot.T @ rot, np.eye(3)) and np.linalg.det(rot) == pytest.approx(1.0)
    assert np.array_equal(pose[:3, 3], eye)
    forward = (target - eye) / np.linalg.norm(target - eye)
    assert np.allclose(rot[:, 2], forward)
    assert rot[2, 1] < 0  # image y (down) points against world up (z)


def test_projection_inverts_back_projection():
    k = pinhole(120.0, 40, 30)
    assert k.tolist() == [[120.0, 0.0, 19.5], [0.0, 120.0, 14.5], [0.0, 0.0, 1.0]]
    depth = np.random.default_rng(0).uniform(0.5, 4.0, (30, 40)).astype(np.float32)
    pose = look_at(np.array([0.0, -3.0, 1.0]), np.zeros(3))
    world = to_world(backproject(depth, k), pose).reshape(-1, 3)
    u, v, z = project_points(world, pose, k)
    rows, cols = np.mgrid[0:30, 0:40]
    assert np.allclose(u, cols.ravel(), atol=1e-3) and np.allclose(v, rows.ravel(), atol=1e-3)
    assert np.allclose(z, depth.ravel(), atol=1e-5)


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(50, 3))
    angle = 0.7
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    dst = 2.5 * src @ rot.T + np.array([1.0, -2.0, 0.5])
    s = umeyama(src, dst)
    assert np.allclose(s[:3, :3], 2.5 * rot) and np.allclose(s[:3, 3], [1.0, -2.0, 0.5])
    assert np.allclose(s[3], [0, 0, 0, 1])

"""core/frame_alignment.Sim3Alignment: recovers scale, rotation and translation between the pipeline's
world and a robot frame from pose pairs, also on a straight path; not ready before enough spread."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from moonseg3r_ros.core.frame_alignment import Sim3Alignment


def similarity(scale: float, rotvec, translation) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = scale * Rotation.from_rotvec(rotvec).as_matrix()
    out[:3, 3] = translation
    return out


def rigid(rotvec, translation) -> np.ndarray:
    return similarity(1.0, rotvec, translation)


TRUE = similarity(2.5, [0.1, -0.4, 1.2], [1.0, -2.0, 0.3])  # robot <- world


def robot_pose(world_pose: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = TRUE[:3, :3] / 2.5 @ world_pose[:3, :3]
    out[:3, 3] = TRUE[:3, :3] @ world_pose[:3, 3] + TRUE[:3, 3]
    return out


@pytest.mark.parametrize("path", ["curve", "straight"])
def test_recovers_the_similarity(path):
    rng = np.random.default_rng(0)
    align = Sim3Alignment(min_pairs=5, min_spread=0.2)
    for k in range(12):
        if path == "curve":
            world = rigid([0.0, 0.2 * k, 0.0], [0.1 * k, 0.02 * k * k, 0.05 * np.sin(k)])
        else:  # driving straight ahead: positions on one line (Umeyama's rotation is undetermined here)
            world = rigid([0.0, 0.0, 0.0], [0.0, 0.0, 0.1 * k])
        noisy = robot_pose(world)
        noisy[:3, 3] += rng.normal(0, 0.002, 3)
        align.add(world, noisy)
    assert align.ready
    np.testing.assert_allclose(align.scale, 2.5, rtol=0.01)
    np.testing.assert_allclose(align.transform(), TRUE, atol=0.02)
    assert align.residual_rms < 0.01
    world_pose = rigid([0.3, 0.0, 0.1], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(align.pose(world_pose), robot_pose(world_pose), atol=0.02)
    np.testing.assert_allclose(align.points(np.array([[0.5, 0.5, 0.5]]))[0], robot_pose(world_pose)[:3, 3], atol=0.02)


def test_not_ready_without_enough_pairs_or_spread():
    align = Sim3Alignment(min_pairs=3, min_spread=0.5)
    for k in range(2):
        align.add(rigid([0, 0, 0], [0.1 * k, 0, 0]), robot_pose(rigid([0, 0, 0], [0.1 * k, 0, 0])))
    assert not align.ready
    with pytest.raises(RuntimeError, match="2 of 3"):
        align.transform()
    align.add(rigid([0, 0, 0], [0.15, 0, 0]), robot_pose(rigid([0, 0, 0], [0.15, 0, 0])))
    assert not align.ready, "spread 0.15 m in the robot frame is below 0.5"
    align.add(rigid([0, 0, 0], [0.6, 0, 0]), robot_pose(rigid([0, 0, 0], [0.6, 0, 0])))
    assert align.ready and align.scale == pytest.approx(2.5)
    align.reset()
    assert not align.ready and len(align) == 0
    with pytest.raises(ValueError):
        align.add(np.full((4, 4), np.nan), np.eye(4))

"""Online similarity alignment of the pipeline's world to a robot's metric frame.

Monocular geometry (CUT3R) lives in its own world frame with its own, unknown scale. When the robot
localises itself (TF gives the camera's pose in `map`), pairs of camera poses at the same stamp -
(pose in the pipeline's world, pose in the robot's frame) - determine the similarity S = (s, R, t) with
p_robot = s R p_world + t. Estimated from all pairs (the latest `max_pairs`) every time a pair is added:
- R: the rotation closest to sum_i R_robot_i R_world_i^T (chordal mean of the pairs' relative rotations);
  unlike the positions-only Umeyama fit, it is determined on a straight or stationary path, which is how
  robots often start;
- s, t: least squares of the positions given R (s = sum a_i.(R b_i) / sum |b_i|^2 over centred positions).
`ready` once `min_pairs` pairs span at least `min_spread` (RMS distance from their mean, robot units).
"""
from __future__ import annotations

import collections
from typing import Optional

import numpy as np


class Sim3Alignment:
    """Accumulates pose pairs and keeps the current similarity estimate (see module docstring)."""

    def __init__(self, min_pairs: int = 5, min_spread: float = 0.1, max_pairs: int = 1000):
        if min_pairs < 2:
            raise ValueError(f"min_pairs must be >= 2, got {min_pairs}")
        self.min_pairs, self.min_spread = min_pairs, min_spread
        self._pairs: collections.deque = collections.deque(maxlen=max_pairs)
        self._transform: Optional[np.ndarray] = None
        self.scale = float("nan")
        self.residual_rms = float("nan")

    def reset(self) -> None:
        self._pairs.clear()
        self._transform, self.scale, self.residual_rms = None, float("nan"), float("nan")

    def __len__(self) -> int:
        return len(self._pairs)

    @property
    def ready(self) -> bool:
        return self._transform is not None

    def add(self, pose_world: np.ndarray, pose_robot: np.ndarray) -> None:
        """One pair of 4x4 camera-to-frame poses at the same stamp; re-estimates the similarity."""
        a, b = np.asarray(pose_world, np.float64), np.asarray(pose_robot, np.float64)
        if a.shape != (4, 4) or b.shape != (4, 4) or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise ValueError("pose pairs must be finite 4x4 matrices")
        self._pairs.append((a, b))
        self._estimate()

    def _estimate(self) -> None:
        if len(self._pairs) < self.min_pairs:
            return
        world = np.stack([p[0] for p in self._pairs])
        robot = np.stack([p[1] for p in self._pairs])
        pw, pr = world[:, :3, 3], robot[:, :3, 3]
        cw, cr = pw - pw.mean(0), pr - pr.mean(0)
        if np.sqrt((cr ** 2).sum(1).mean()) < self.min_spread or not np.any(cw):
            return
        u, _, vt = np.linalg.svd(np.einsum("nij,nkj->ik", robot[:, :3, :3], world[:, :3, :3]))
        rotation = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
        rotated = cw @ rotation.T
        scale = float((cr * rotated).sum() / (rotated ** 2).sum())
        if scale <= 0:
            return
        out = np.eye(4)
        out[:3, :3] = scale * rotation
        out[:3, 3] = pr.mean(0) - scale * rotation @ pw.mean(0)
        self._transform, self.scale = out, scale
        self.residual_rms = float(np.sqrt(((pw @ out[:3, :3].T + out[:3, 3] - pr) ** 2).sum(1).mean()))

    def transform(self) -> np.ndarray:
        """4x4 similarity robot <- world (the top-left block is s R). Raises when not ready."""
        if self._transform is None:
            raise RuntimeError(f"alignment not ready: {len(self._pairs)} of {self.min_pairs} pose pairs "
                               f"(or their spread is below {self.min_spread})")
        return self._transform.copy()

    def points(self, points_world: np.ndarray) -> np.ndarray:
        """Nx3 world points -> Nx3 robot-frame points."""
        s = self.transform()
        return np.asarray(points_world, np.float64) @ s[:3, :3].T + s[:3, 3]

    def pose(self, pose_world: np.ndarray) -> np.ndarray:
        """4x4 camera-to-world pose -> rigid 4x4 camera-to-robot-frame pose (scale moves into the translation)."""
        s = self.transform()
        out = np.eye(4)
        out[:3, :3] = (s[:3, :3] / self.scale) @ np.asarray(pose_world)[:3, :3]
        out[:3, 3] = s[:3, :3] @ np.asarray(pose_world)[:3, 3] + s[:3, 3]
        return out

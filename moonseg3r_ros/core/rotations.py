"""Rotations: unit quaternions (x, y, z, w, the order ROS messages use) <-> 3x3 matrices (scipy underneath)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.spatial.transform import Rotation


def quaternion_to_matrix(q: Sequence[float]) -> np.ndarray:
    """(x, y, z, w) -> 3x3 float64 rotation; normalised first. ValueError for a zero or non-finite quaternion."""
    xyzw = np.asarray(q, dtype=np.float64)
    norm = float(np.linalg.norm(xyzw))
    if xyzw.shape != (4,) or not math.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"invalid quaternion {xyzw.tolist()}")
    return Rotation.from_quat(xyzw).as_matrix()  # scipy normalises (a second division changes the last bit)


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """3x3 rotation -> unit quaternion (4,) float64 (x, y, z, w) with w >= 0."""
    q = Rotation.from_matrix(np.asarray(rotation, dtype=np.float64)).as_quat()
    return -q if q[3] < 0 else q

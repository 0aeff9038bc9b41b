"""Per-frame TF logic of the three `nav.tf_mode`s (see nav_config.py), ROS-free: TF lookups go through
any object with `lookup(target, source, stamp_ns) -> 4x4` (tf_buffer.TransformBuffer or Tf2RosBuffer).

For each processed frame the worker asks, in this order:
1. `input_pose(stamp_ns)`: the camera pose to feed the pipeline (localization with recorded geometry: from
   TF, map <- camera; otherwise None = the pose topic / the geometry's own);
2. `observe(pose_world, stamp_ns)`: monocular geometry with a robot feeds the similarity alignment;
3. `output_transform()`: 4x4 similarity map <- pipeline world for every output (identity, or None while the
   monocular alignment is not ready: outputs wait);
4. `transforms(pose_world, stamp_ns)`: what to publish on /tf as (parent, child, 4x4) - standalone: None (the
   node's own chain, unchanged); odometry: only map -> odom; localization: nothing.
TF errors (tf_buffer.TfError) propagate: the caller drops and counts the frame.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from moonseg3r_ros.core.frame_alignment import Sim3Alignment
from moonseg3r_ros.ros.tf_buffer import wait_for_lookup


class RobotFrames:
    def __init__(self, mode: str, map_frame: str, odom_frame: str, camera_frame: str, monocular: bool,
                 buffer: Any = None, wait_s: float = 0.5, align_min_pairs: int = 5, align_min_spread: float = 0.3):
        if mode not in ("standalone", "odometry", "localization"):
            raise ValueError(f"unknown tf mode '{mode}'")
        if mode != "standalone" and buffer is None:
            raise ValueError(f"tf mode '{mode}' needs a TF buffer")
        if mode == "odometry" and not odom_frame:
            raise ValueError("tf mode 'odometry' needs frames.odom")
        self.mode, self.map_frame, self.odom_frame = mode, map_frame, odom_frame
        self.camera_frame, self.monocular = camera_frame, monocular
        self.buffer, self.wait_s = buffer, wait_s
        aligned = monocular and mode != "standalone"
        self.alignment = Sim3Alignment(align_min_pairs, align_min_spread) if aligned else None

    @property
    def reference_frame(self) -> str:
        """The robot frame the monocular world is aligned to: odom (odometry) or map (localization)."""
        return self.odom_frame if self.mode == "odometry" else self.map_frame

    def _lookup(self, target: str, stamp_ns: int) -> np.ndarray:
        return wait_for_lookup(self.buffer, target, self.camera_frame, stamp_ns, self.wait_s)

    def reset(self) -> None:
        if self.alignment is not None:
            self.alignment.reset()

    def input_pose(self, stamp_ns: int) -> Optional[np.ndarray]:
        """4x4 map <- camera from TF for recorded geometry in localization mode, else None."""
        if self.mode == "localization" and not self.monocular:
            return self._lookup(self.map_frame, stamp_ns)
        return None

    def needs_pose_topic(self, recorded: bool) -> bool:
        """Whether recorded geometry still pairs the pose topic (not when TF gives the pose)."""
        return recorded and self.mode != "localization"

    def observe(self, pose_world: np.ndarray, stamp_ns: int) -> None:
        """Monocular + robot: one (world, robot) camera pose pair for the alignment."""
        if self.alignment is not None:
            self.alignment.add(pose_world, self._lookup(self.reference_frame, stamp_ns))

    def output_transform(self) -> Optional[np.ndarray]:
        """4x4 similarity map <- world applied to every output; None while the alignment is not ready."""
        if self.alignment is None:
            return np.eye(4)
        if not self.alignment.ready:
            return None
        return self.alignment.transform()  # aligned to odom in odometry mode: map starts as odom

    def camera_in_map(self, pose_world: np.ndarray) -> Optional[np.ndarray]:
        """Rigid 4x4 map <- camera of a world pose (through the alignment when there is one)."""
        if self.alignment is None:
            return np.asarray(pose_world, np.float64)
        return self.alignment.pose(pose_world) if self.alignment.ready else None

    def transforms(self, pose_world: np.ndarray, stamp_ns: int) -> Optional[list[tuple[str, str, np.ndarray]]]:
        """(parent, child, 4x4) to publish on /tf for this frame; None = the standalone chain."""
        if self.mode == "standalone":
            return None
        if self.mode == "localization":
            return []
        camera_in_map = self.camera_in_map(pose_world)
        if camera_in_map is None:
            return []
        odom_from_camera = self._lookup(self.odom_frame, stamp_ns)
        return [(self.map_frame, self.odom_frame, camera_in_map @ np.linalg.inv(odom_from_camera))]

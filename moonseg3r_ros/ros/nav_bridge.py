"""Glue between the node and its navigation side: the TF modes (robot_frames.RobotFrames over a TF buffer)
and the navigation outputs (nav_outputs.NavOutputs). The node calls four hooks and nothing else:

    activate()                      on_activate: TF buffer (robot modes), publishers, service, grid timer
    deactivate()                    on_deactivate / cleanup: all of it destroyed
    input_pose(frame)               worker, before pipeline.step: the pose from TF (localization + RGB-D)
    transforms(frame, pose)         worker, after pipeline.step: TF for this frame (None = the node's own
                                    standalone chain)
    on_keyframe(frame, result, records)  worker, after a keyframe's InstanceMap: detections from the same
                                    records, the grid (occupancy.rate 0) and the obstacle cloud

`frame` is the node's FrameInput (stamp, stamp_ns, frame_id); tf_buffer.TfError raised by a hook means the
robot's transforms for that stamp did not arrive in nav.tf_wait: the caller drops and counts the frame.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from moonseg3r_ros.ros.nav_outputs import MapView, NavOutputs, map_view_in
from moonseg3r_ros.ros.robot_frames import RobotFrames
from moonseg3r_ros.ros.tf_buffer import make_tf_buffer

DEFAULT_CAMERA_FRAME = "camera_optical_frame"


def camera_frame_of(configured: str, header_frame: str) -> str:
    """frames.camera when set, else the input image's header frame, else camera_optical_frame."""
    return configured or header_frame or DEFAULT_CAMERA_FRAME


class NavBridge:
    """See the module docstring. `snapshot(records=True)` returns (points Nx3, ids N, records; [] when not
    asked for) of the pipeline's map taken under the node's lock, or None without a pipeline; `count(key, n)`
    adds to the node's diagnostics."""

    def __init__(self, node: Any, snapshot: Callable[[], Optional[tuple]], count: Callable[[str, int], None],
                 callback_group: Any = None):
        self.node, self.snapshot, self.count, self.group = node, snapshot, count, callback_group
        self.frames: Optional[RobotFrames] = None
        self.outputs: Optional[NavOutputs] = None
        self._close_tf: Optional[Callable[[], None]] = None
        self._camera_frame = ""

    # ------------------------------------------------------------------------------------------ lifecycle
    def activate(self) -> None:
        node_config, pipeline_config = self.node.config, self.node.pipeline_config
        nav, frames = node_config.nav, node_config.frames
        buffer = None
        if nav.tf_mode != "standalone":
            buffer, self._close_tf = make_tf_buffer(self.node, nav.tf_cache)
        self._camera_frame = frames.camera
        self.frames = RobotFrames(nav.tf_mode, frames.map, frames.odom, frames.camera or DEFAULT_CAMERA_FRAME,
                                  monocular=pipeline_config.geometry.source == "cut3r", buffer=buffer,
                                  wait_s=nav.tf_wait, align_min_pairs=nav.align_min_pairs,
                                  align_min_spread=nav.align_min_spread)
        self.outputs = NavOutputs(self.node, nav, lambda: self.node.pipeline_config.occupancy, self.map_view,
                                  frames.map, self.count, self.group)
        self.outputs.create()

    def deactivate(self) -> None:
        if self.outputs is not None:
            self.outputs.destroy()
        if self._close_tf is not None:
            self._close_tf()
        self._close_tf, self.outputs = None, None

    def reset(self) -> None:
        """The map was reset or replaced: a monocular alignment starts over with the new world."""
        if self.frames is not None:
            self.frames.reset()

    def needs_pose_topic(self) -> bool:
        return self.node.config.nav.tf_mode != "localization"

    # ------------------------------------------------------------------------------------------ per frame
    def _frame_for(self, frame: Any) -> RobotFrames:
        self.frames.camera_frame = camera_frame_of(self._camera_frame, getattr(frame, "frame_id", ""))
        return self.frames

    def camera_frame(self, frame: Any) -> str:
        return camera_frame_of(self._camera_frame, getattr(frame, "frame_id", ""))

    def input_pose(self, frame: Any) -> Optional[np.ndarray]:
        if self.frames is None:
            return None
        return self._frame_for(frame).input_pose(frame.stamp_ns)

    def transforms(self, frame: Any, pose_world: np.ndarray) -> Optional[list]:
        """(parent, child, 4x4) for /tf of this frame; None = the node's standalone chain."""
        frames = self._frame_for(frame)
        frames.observe(pose_world, frame.stamp_ns)
        return frames.transforms(pose_world, frame.stamp_ns)

    def output_transform(self) -> Optional[np.ndarray]:
        """4x4 map <- pipeline world of every output (None while a monocular alignment is pending)."""
        return self.frames.output_transform() if self.frames is not None else np.eye(4)

    def map_view(self, records: bool = True) -> Optional[MapView]:
        """The map in the output frame (records only when asked for: the grid needs points and ids)."""
        transform = self.frames.output_transform() if self.frames is not None else np.eye(4)
        snap = self.snapshot(records)
        if transform is None or snap is None:
            return None
        points, ids, records = snap
        return map_view_in(points, ids, records, transform)

    def on_keyframe(self, frame: Any, result: Any, records: Optional[list]) -> None:
        """Detections and the grid (and the obstacle cloud) after a keyframe went into the map. `records`: the
        map's records in the output frame the node's InstanceMap was made of (None while a monocular alignment
        is pending), so one keyframe computes them once."""
        if self.outputs is None:
            return
        self.outputs.on_keyframe(records, frame.stamp)
        if result.points_cam is None or result.valid is None or not self.outputs.publishes_obstacles:
            return
        camera_to_map = self.frames.camera_in_map(result.pose_c2w) if self.frames is not None else result.pose_c2w
        if camera_to_map is None:
            return
        valid = result.valid
        ids = result.instance_ids_2d[valid] if result.instance_ids_2d is not None else np.zeros(int(valid.sum()))
        points = result.points_cam[valid]
        if self.frames is not None and self.frames.alignment is not None:
            points = points * self.frames.alignment.scale  # the camera frame in metres, like the map
        self.outputs.publish_obstacles(points, ids, camera_to_map, self.camera_frame(frame), frame.stamp)

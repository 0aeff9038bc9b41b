"""The navigation part of MoonSeg3RNode (a mixin like inputs.py / outputs.py): TF modes and navigation
outputs through nav_bridge.NavBridge, and the camera frame taken from the input image's header.

Hooks used by the rest of the node:
    _nav_activate() / _nav_deactivate()   from on_activate / _stop_processing
    _side_inputs()                         the streams paired with each image (no pose topic when TF gives it)
    _nav_prepare(frame) -> bool            worker, before pipeline.step: pose from TF; False = drop the frame
    _frame_transforms(frame, pose)         worker: the TransformStamped list for /tf of this frame
    _nav_keyframe(frame, result, records)  worker, after a keyframe's messages: detections (from the records the
                                           InstanceMap message was made of), grid, obstacles
    _camera_frame(frame)                   frames.camera, else the image header's frame
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from moonseg3r_ros.core.occupancy import check_config, rotate
from moonseg3r_ros.ros import conversions as conv
from moonseg3r_ros.ros import tf_chain
from moonseg3r_ros.ros.inputs import side_inputs
from moonseg3r_ros.ros.nav_bridge import NavBridge, camera_frame_of
from moonseg3r_ros.ros.nav_outputs import map_view_in
from moonseg3r_ros.ros.tf_buffer import TfError
from moonseg3r_ros.ros.worker import StampPairing


class NavMixin:
    """TF modes and navigation outputs of MoonSeg3RNode (see the module docstring)."""

    _nav: Optional[NavBridge] = None
    _static_camera: Optional[str] = None  # camera frame the static base -> camera was published for

    # ------------------------------------------------------------------------------------------ lifecycle
    def _nav_activate(self) -> None:
        check_config(self.pipeline_config.occupancy)  # combinations the per-field ranges miss: activate fails
        needs = self._side_inputs()
        if self._pairing is not None and sorted(self._pairing.streams) != sorted(["image"] + needs):
            self._pairing = StampPairing(["image"] + needs, self.config.sync.buffer_size,  # tf_mode changed
                                         self._on_pairing_drop)  # evicted images are counted, as in configure
        self._nav = NavBridge(self, self._nav_snapshot, self._count, self._output_group)
        self._nav.activate()
        self._static_camera = self.config.frames.camera or None  # on_activate sent it when named
        mode = self.config.nav.tf_mode
        unused = {"standalone": (), "odometry": ("tf_static",), "localization": ("tf", "tf_static")}[mode]
        with self._pub_lock:  # a robot owns these frames: not even a publisher on its TF topics
            pubs = [self._pubs.pop(key) for key in unused if key in self._pubs]
        for pub in pubs:
            self.destroy_publisher(pub)

    def _nav_deactivate(self) -> None:
        if self._nav is not None:
            self._nav.deactivate()

    def _side_inputs(self) -> list[str]:
        needs = side_inputs(self.pipeline_config)
        if self.config.nav.tf_mode == "localization":
            needs = [n for n in needs if n != "pose"]  # the camera pose comes from TF
        return needs

    def _nav_snapshot(self, records: bool = True) -> Optional[tuple]:
        """(points Nx3, ids N, records, [] unless `records`) of the map, copied under the pipeline lock (None
        without a pipeline)."""
        with self._lock:
            if self._pipeline is None:
                return None
            instance_map = self._pipeline.instance_map
            xyz, ids = instance_map.positions()
            return xyz, ids, instance_map.instances() if records else []

    # ------------------------------------------------------------------------------------------ per frame
    def _camera_frame(self, frame: Any) -> str:
        return camera_frame_of(self.config.frames.camera, getattr(frame, "frame_id", ""))

    def _nav_tf_error(self, frame: Any, err: TfError, what: str) -> None:
        self._count("nav.tf_errors", 1)
        self.get_logger().error(f"frame {frame.stamp_ns / 1e9:.6f} s: no robot TF for {what} within "
                                f"nav.tf_wait: {err}", throttle_duration_sec=2.0)

    def _nav_prepare(self, frame: Any) -> bool:
        """The pose from TF (localization with recorded geometry); False when it does not arrive."""
        if self._nav is None:
            return True
        try:
            pose = self._nav.input_pose(frame)
        except TfError as err:
            self._nav_tf_error(frame, err, "the camera pose")
            return False
        if pose is not None:
            frame.pose_c2w = pose
        return True

    def _frame_transforms(self, frame: Any, pose_c2w: np.ndarray) -> list:
        """TransformStamped list for /tf: the standalone chain, map -> odom, or nothing (see nav_config)."""
        camera = self._camera_frame(frame)
        try:
            robot = self._nav.transforms(frame, pose_c2w) if self._nav is not None else None
        except TfError as err:
            self._nav_tf_error(frame, err, "map -> odom")
            return []
        if robot is not None:
            return [conv.matrix_to_transform_msg(t, parent, child, frame.stamp) for parent, child, t in robot]
        frames = dataclasses.replace(self.config.frames, camera=camera)
        if frames.base and self._static_camera != camera:  # base -> camera, once the camera frame is known
            self._static_camera = camera
            statics = tf_chain.static_transforms(frames, self.config.camera_to_base, frame.stamp)
            self._publish("tf_static", tf_chain.tf_message(statics))
        return tf_chain.pose_transforms(pose_c2w, frames, self.config.camera_to_base, frame.stamp)

    def _output_transform(self) -> Optional[np.ndarray]:
        return self._nav.output_transform() if self._nav is not None else np.eye(4)

    def _records_for_output(self, pipeline: Any, records: list) -> Optional[list]:
        """The map's records in frames.map: as they are, moved by the monocular alignment (boxes recomputed
        from the moved points), or None while that alignment is pending (counted)."""
        transform = self._output_transform()
        if transform is None:
            self._count("nav.waiting_for_alignment", 1)
            return None
        if np.array_equal(transform, np.eye(4)):
            return records
        xyz, ids = pipeline.instance_map.positions()
        return map_view_in(xyz, ids, records, transform).records

    def _points_for_output(self, xyz: np.ndarray) -> Optional[np.ndarray]:
        """Nx3 map points in frames.map (None while a monocular alignment is pending)."""
        transform = self._output_transform()
        if transform is None or np.array_equal(transform, np.eye(4)):
            return None if transform is None else xyz
        return (rotate(xyz, transform[:3, :3]) + transform[:3, 3]).astype(np.float32)

    def _nav_keyframe(self, frame: Any, result: Any, records: Optional[list]) -> None:
        if self._nav is not None:
            self._nav.on_keyframe(frame, result, records)

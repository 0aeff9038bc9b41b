"""The node's outputs: publishers, the worker's per-frame results -> TF, InstanceMap, markers, debug image,
and the map cloud (on keyframes or at `cloud.rate`).

Every output carries the header stamp of the input image it comes from. `OutputsMixin` is part of
MoonSeg3RNode (node.py) and uses its pipeline (under `_lock`), config, counters and publisher set.
"""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from moonseg3r_ros.core import map_cloud
from moonseg3r_ros.core.colors import instance_color
from moonseg3r_ros.ros import conversions as conv
from moonseg3r_ros.ros import tf_chain
from moonseg3r_ros.ros.inputs import FrameInput
from moonseg3r_ros.ros.markers import instance_markers, mask_overlay

LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
TF_STATIC_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)


def instance_map_type():
    """moonseg3r_msgs/InstanceMap (imported when first needed)."""
    from moonseg3r_msgs.msg import InstanceMap

    return InstanceMap


def map_changing_results(result: Any, asynchronous: bool) -> list:
    """The keyframe results that went into the map during the step that returned `result`, in frame order:
    the keyframes committed there (masks.asynchronous), or `result` itself when it is a keyframe whose masks
    ran inline."""
    changed = [r for r in result.committed if not r.skipped]  # a keyframe without masks left the map as it was
    if result.is_keyframe and not asynchronous and not result.skipped:
        changed.append(result)
    return changed


class OutputsMixin:
    """Publishers, per-frame publishing and the cloud of MoonSeg3RNode."""

    def _create_publishers(self) -> None:
        topics = self.config.topics
        tf_type = tf_chain.tf_message_type()
        with self._pub_lock:
            self._pubs = {
                "tf": self.create_publisher(tf_type, "/tf", TF_QOS),
                "tf_static": self.create_publisher(tf_type, "/tf_static", TF_STATIC_QOS),
                "cloud": self.create_publisher(PointCloud2, topics.cloud, LATCHED_QOS),
                "instance_map": self.create_publisher(instance_map_type(), topics.instance_map, LATCHED_QOS),
                "markers": self.create_publisher(MarkerArray, topics.markers, LATCHED_QOS),
                "debug_image": self.create_publisher(Image, topics.debug_image, 1),
                "diagnostics": self.create_publisher(DiagnosticArray, "/diagnostics", 10),
            }

    def _publish(self, name: str, msg: Any) -> None:
        with self._pub_lock:
            pub = self._pubs.get(name)
            if pub is not None:
                pub.publish(msg)

    # ------------------------------------------------------------------------------------------ worker
    def _process_frame(self, frame: FrameInput) -> None:
        if not self._nav_prepare(frame):  # a robot pose from TF that did not arrive (counted)
            self._drop_image("no_robot_pose", frame)
            return
        with self._lock:
            pipeline = self._pipeline
            if pipeline is None:
                self._drop_image("inactive", frame)
                return
            result = pipeline.step(frame.rgb, frame.stamp_ns / 1e9, depth=frame.depth, intrinsics=frame.intrinsics,
                                   pose_c2w=frame.pose_c2w, instance_ids=frame.instance_ids)
            changed = map_changing_results(result, pipeline.config.masks.asynchronous)
            keyframe_msgs = self._keyframe_messages(pipeline, frame, result) if changed else None
            if keyframe_msgs is not None:
                # Set with the map state it names, under the same lock: a cloud never pairs this content
                # with an older stamp.
                self._cloud_dirty = frame.stamp
                self._last_map_stamp = frame.stamp
            if not result.skipped:
                self._last_frame_index, self._last_frame = int(result.frame_index), frame
        if result.skipped:
            self._count("skipped", 1)
            self._drop_image("skipped", frame)
            self.get_logger().warning(f"frame {frame.stamp_ns / 1e9:.6f} s skipped: {result.skipped_reason}",
                                      throttle_duration_sec=2.0)
        else:
            frame.accounted = True
            self._count("frames_processed", 1)
            if result.pose_c2w is not None:
                transforms = self._frame_transforms(frame, result.pose_c2w)
                if transforms:
                    self._publish("tf", tf_chain.tf_message(transforms))
        if keyframe_msgs is not None:
            self._publish_map_change(frame, result, changed, keyframe_msgs)
        done = time.monotonic()
        self._recent.append((done, done - frame.received, time.time() - frame.stamp_ns / 1e9))

    def _publish_map_change(self, frame: FrameInput, result, changed: list, keyframe_msgs) -> None:
        """The map after the keyframes `changed` went into it, stamped with `frame` (the newest input the map
        state includes). The debug image only for a keyframe committed in its own step: with asynchronous masks
        the image of a keyframe committed later is gone."""
        self._count("keyframes", len(changed))
        instance_map_msg, markers, records = keyframe_msgs
        self._publish("instance_map", instance_map_msg)
        if self.config.publish_markers:
            self._publish("markers", markers)
        if any(r is result for r in changed):
            self._publish_debug_image(frame, result, records)
        if self.config.cloud.rate <= 0:
            self.publish_cloud()
        for committed in changed:
            self._nav_keyframe(frame, committed, records)

    def flush_pending_keyframes(self) -> int:
        """masks.asynchronous: commit the keyframes still waiting for their masks (before a map save) and
        publish the map they make, stamped with the newest processed input. Returns how many were committed."""
        with self._lock:
            pipeline, frame = self._pipeline, self._last_frame
            if pipeline is None or frame is None:
                return 0
            changed = [r for r in pipeline.flush() if not r.skipped]
            if not changed:
                return 0
            keyframe_msgs = self._keyframe_messages(pipeline, frame, changed[-1])
            self._cloud_dirty = self._last_map_stamp = frame.stamp
        self._publish_map_change(frame, None, changed, keyframe_msgs)
        return len(changed)

    def _on_worker_error(self, frame: FrameInput, err: BaseException) -> None:
        self._count("processing_errors", 1)
        self._drop_image("processing_error", frame)
        self.get_logger().error(f"processing the frame at {frame.stamp_ns / 1e9:.6f} s failed: "
                                f"{type(err).__name__}: {err}", throttle_duration_sec=2.0)

    def _map_messages(self, pipeline, stamp: Time, frame_index: int, keyframes: int):
        """(InstanceMap msg, markers or None when off, records in frames.map or None while a monocular
        alignment is pending (the messages then carry no instances)) of the pipeline's map, stamped `stamp`.
        The records are computed once per map state and shared with the navigation outputs."""
        records = self._records_for_output(pipeline, pipeline.instance_map.instances())
        published = records if records is not None else []
        self._instance_count = len(published)
        msg = conv.instance_map_msg(published, self.config.frames.map, stamp, frame_index, keyframes,
                                    len(pipeline.instance_map), self.resolve_topic_name(self.config.topics.cloud))
        markers = instance_markers(published, self.config.frames.map, stamp) if self.config.publish_markers \
            else None
        return msg, markers, records

    def _keyframe_messages(self, pipeline, frame: FrameInput, result):
        keyframes = int(pipeline.stats.get("keyframes", self.counters["keyframes"] + 1))
        return self._map_messages(pipeline, frame.stamp, result.frame_index, keyframes)

    def _publish_debug_image(self, frame: FrameInput, result, records: Optional[list]) -> None:
        pub = self._pubs.get("debug_image")
        if not self.config.publish_debug_image or pub is None or result.instance_ids_2d is None:
            return
        if pub.get_subscription_count() == 0:
            return
        overlay = mask_overlay(frame.rgb, result.instance_ids_2d, {int(r.id): r.color for r in records or []})
        self._publish("debug_image", conv.array_to_image_msg(overlay, "rgb8", frame.stamp, self._camera_frame(frame)))
        self._count("debug_images_published")

    def _publish_static_tf(self) -> None:
        transforms = tf_chain.static_transforms(self.config.frames, self.config.camera_to_base,
                                                self.get_clock().now().to_msg())
        if transforms:
            self._publish("tf_static", tf_chain.tf_message(transforms))

    # ------------------------------------------------------------------------------------------ timers
    def _start_timers(self) -> None:
        self._output_timers = [self.create_timer(1.0 / self.config.diagnostics_rate, self.publish_diagnostics,
                                                 callback_group=self._output_group)]
        if self.config.cloud.rate > 0:
            self._output_timers.append(self.create_timer(1.0 / self.config.cloud.rate, self._cloud_tick,
                                                         callback_group=self._output_group))

    def _cloud_tick(self) -> None:
        if self._cloud_dirty is not None:
            self.publish_cloud()

    def cloud_snapshot(self, color_by: Optional[str] = None, voxel: Optional[float] = None):
        """(xyz Nx3 float32, rgb Nx3 uint8, ids N) of the map as published (colours and downsampling applied)."""
        snapshot = self._map_snapshot(color_by, voxel, consume=False)
        return None if snapshot is None else snapshot[1:]

    def _map_snapshot(self, color_by: Optional[str] = None, voxel: Optional[float] = None, consume: bool = True):
        """(stamp of the map state, xyz, rgb, ids): stamp and points read under one lock, so they agree;
        `consume` marks that state as sent."""
        with self._lock:
            if self._pipeline is None:
                return None
            stamp = self._cloud_dirty or self._last_map_stamp
            if consume:
                self._cloud_dirty = None
            instance_map = self._pipeline.instance_map
            xyz, rgb, ids = instance_map.points()  # copies
        colors = {int(i): instance_color(int(i)) for i in np.flatnonzero(np.bincount(ids)) if i > 0} \
            if (color_by or self.config.cloud.color_by) == "instance" else None
        xyz, rgb, ids = map_cloud.voxel_downsample(xyz, rgb, ids,
                                                   self.config.cloud.voxel_size if voxel is None else voxel)
        xyz = self._points_for_output(xyz)  # in frames.map (None: a monocular alignment is pending)
        if xyz is None:
            return None
        if colors is not None:
            rgb = map_cloud.instance_colors(ids, colors)
        return stamp, xyz.astype(np.float32, copy=False), rgb.astype(np.uint8, copy=False), ids

    def publish_cloud(self) -> None:
        snapshot = self._map_snapshot()
        if snapshot is None:
            return
        stamp, xyz, rgb, ids = snapshot
        stamp = stamp or self.get_clock().now().to_msg()
        self._publish("cloud", conv.make_cloud_msg(xyz, rgb, ids, self.config.frames.map, stamp))
        self._count("clouds_published", 1)

    def _republish_latched(self) -> None:
        """Send the map again on (re)activation: the latched outputs' history (InstanceMap, markers, cloud,
        OccupancyGrid and InstanceGrid) went with their publishers, and a subscriber arriving now must not wait
        for the next keyframe."""
        if self.send_map_state():
            self._count("latched_republished", 1)

    def send_map_state(self, stamp: Optional[Time] = None) -> bool:
        """Publish the current map (InstanceMap, markers, cloud, grids) stamped `stamp`; None = the stamp of the
        newest map state (nothing is sent while there is none and the map is empty). Stamp and content are read
        under one lock, so they name the same map state. False when nothing was sent."""
        with self._lock:
            pipeline = self._pipeline
            if pipeline is None or (stamp is None and self._last_map_stamp is None and len(pipeline.instance_map) == 0):
                return False
            stamp = stamp or self._last_map_stamp or self.get_clock().now().to_msg()
            msg, markers, _ = self._map_messages(pipeline, stamp, max(self._last_frame_index, 0),
                                                 int(pipeline.stats.get("keyframes", 0)))
            self._last_map_stamp = self._cloud_dirty = stamp
        self._publish("instance_map", msg)
        if markers is not None:
            self._publish("markers", markers)
        self.publish_cloud()
        self._republish_grids(stamp)
        return True

    def _republish_grids(self, stamp: Time) -> None:
        """The navigation grids of the current map, stamped like the map state they show."""
        outputs = self._nav.outputs if self._nav is not None else None
        if outputs is None or not self.config.nav.occupancy_grid:
            return
        outputs.mark_dirty(stamp)
        outputs.publish_grid()

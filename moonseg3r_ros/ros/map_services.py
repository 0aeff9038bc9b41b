"""The node's map services: ~/save_map, ~/load_map (moonseg3r_msgs/srv) and ~/reset_map (std_srvs/Trigger).

Each answers success + message, logs it, and never raises. After a load or reset the new map state
(InstanceMap, markers, cloud, navigation grids) is published at once, stamped now. `MapServicesMixin` is part of
MoonSeg3RNode (node.py).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from std_srvs.srv import Trigger

from moonseg3r_ros.core.atomic_files import replaced_atomically
from moonseg3r_ros.ros.map_config_sync import follow_loaded_map


def save_map_type():
    from moonseg3r_msgs.srv import SaveMap

    return SaveMap


def load_map_type():
    from moonseg3r_msgs.srv import LoadMap

    return LoadMap


class MapServicesMixin:
    """save / load / reset of the map, as services and as methods, for MoonSeg3RNode."""

    def _create_map_services(self) -> list:
        group = self._output_group
        return [
            self.create_service(save_map_type(), "~/save_map", self._on_save_map, callback_group=group),
            self.create_service(load_map_type(), "~/load_map", self._on_load_map, callback_group=group),
            self.create_service(Trigger, "~/reset_map", self._on_reset_map, callback_group=group),
        ]

    def save_map(self, path: str) -> tuple[bool, str]:
        """Write the map to `path` (or map_save_path) via a temporary file renamed into place
        (core/atomic_files.py: removed when anything fails, and the old file, if any, stays as it was)."""
        given = str(path or self.config.map_save_path)
        if not given:
            return False, "no path given and map_save_path is empty"
        target = Path(given)
        try:
            target = target.expanduser()
            if target.is_dir():
                return False, f"saving the map to {target} failed: it is a directory (give a file path)"
            folder = next((p for p in target.parents if p.exists()), None)
            if folder is not None and not folder.is_dir():
                return False, f"saving the map to {target} failed: {folder} is a file, not a folder"
            flushed = self.flush_pending_keyframes()  # masks.asynchronous: the saved map has every keyframe
            if flushed:
                self.get_logger().info(f"committed {flushed} keyframe(s) still waiting for masks before saving")
            with self._lock:
                if self._pipeline is None:
                    return False, "the node is not configured"
                instance_map = self._pipeline.instance_map
                with replaced_atomically(target) as partial:
                    instance_map.save(partial)
                counts = f"{len(instance_map.instances())} instances, {len(instance_map)} points"
        except Exception as err:
            return False, f"saving the map to {target} failed: {type(err).__name__}: {err}"
        return True, f"saved the map to {target} ({counts})"

    def load_map(self, path: str) -> tuple[bool, str]:
        """Continue from the map at `path` (or map_save_path): see MoonSeg3RPipeline.load_map."""
        source = str(path or self.config.map_save_path)
        if not source:
            return False, "no path given and map_save_path is empty"
        with self._lock:
            if self._pipeline is None:
                return False, "the node is not configured"
            before = dataclasses.replace(self._pipeline.config.map)
            try:
                loaded = self._pipeline.load_map(source)  # validated in full first: on error nothing changed
            except Exception as err:
                return False, f"loading the map from {source} failed: {err}"
            counts = f"{len(loaded.instances())} instances, {len(loaded)} points"
            self._last_stamp_ns = None
        adopted = follow_loaded_map(self, before, loaded.config)
        self._after_map_change()
        note = f"; it was saved with other map settings, now in effect and in the parameters: {adopted}" \
            if adopted else ""
        return True, f"loaded the map from {source} ({counts}){note}"

    def reset_map(self) -> tuple[bool, str]:
        with self._lock:
            if self._pipeline is None:
                return False, "the node is not configured"
            self._pipeline.reset()
            self._last_stamp_ns = None
            self._last_frame_index = -1
        if self._queue is not None:
            self._count("discarded_on_reset", self._queue.clear_each(lambda f: self._drop_image("reset", f)))
        if self._pairing is not None:
            self._pairing.clear()
        self._after_map_change()
        return True, "the map was reset"

    def _after_map_change(self) -> None:
        """Send the new map state at once (InstanceMap, markers, cloud, grids), stamped now: a navigation stack must
        not keep the obstacles of the map that was reset or replaced."""
        stamp = self.get_clock().now().to_msg()
        if self._nav is not None:
            self._nav.reset()  # a monocular alignment starts over with the new world
        self.send_map_state(stamp)

    def _on_save_map(self, request, response):
        return self._answer(response, lambda: self.save_map(request.path))

    def _on_load_map(self, request, response):
        return self._answer(response, lambda: self.load_map(request.path))

    def _on_reset_map(self, request, response):
        return self._answer(response, self.reset_map)

    def _answer(self, response, action: Callable[[], tuple[bool, str]]):
        """Fill a success/message service response from `action`; an error becomes a failed answer. Logged."""
        try:
            response.success, response.message = action()
        except Exception as err:  # always answer
            response.success, response.message = False, f"{type(err).__name__}: {err}"
        self._log_outcome(response.success, response.message)
        return response

    def _log_outcome(self, ok: bool, message: str) -> None:
        # rclpy fixes one severity per call site: two explicit calls.
        if ok:
            self.get_logger().info(message)
        else:
            self.get_logger().error(message)

"""The MoonSeg3R lifecycle node: camera images in; TF, a PointCloud2, an InstanceMap, markers out.

Lifecycle (REP 2005 / managed nodes):
    configure   read + validate parameters, build the pipeline (models); a bad value or a missing
                checkpoint logs a clear error and returns FAILURE (the node goes back to `unconfigured`).
                Creates the save_map / load_map / reset_map services and the worker thread (paused).
    activate    create publishers and subscriptions, start the worker.
    deactivate  remove subscriptions and publishers, finish the frame in progress, discard queued
                frames (counted); the map is kept.
    cleanup     stop the worker, free the pipeline (models, GPU memory), remove the services.
    shutdown    save the map when `map_save_path` is set, then clean up.

Threads: subscription callbacks (one mutually exclusive group) only convert messages and enqueue them;
the worker thread runs the pipeline and publishes the per-frame outputs; timers (cloud, diagnostics) and
services run in a second group of a MultiThreadedExecutor, so they never hold up the input callbacks.
The pipeline is touched under one lock. Every output carries the header stamp of the input image it
comes from.

This file holds the lifecycle; the node's other parts are mixins, one concept per file: inputs.py
(subscriptions, pairing, K cache), outputs.py (publishing), tf_chain.py, diagnostics.py,
map_services.py, runtime_params.py; main.py runs it in a process.
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Optional

from builtin_interfaces.msg import Time
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from moonseg3r_ros.core.config import PipelineConfig
from moonseg3r_ros.core.model_files import missing_files
from moonseg3r_ros.ros import params
from moonseg3r_ros.ros.diagnostics import DiagnosticsMixin, free_accelerator_memory
from moonseg3r_ros.ros.inputs import FrameInput, InputsMixin, IntrinsicsCache
from moonseg3r_ros.ros.map_services import MapServicesMixin
from moonseg3r_ros.ros.nav_node import NavMixin
from moonseg3r_ros.ros.node_config import NodeConfig
from moonseg3r_ros.ros.outputs import OutputsMixin
from moonseg3r_ros.ros.runtime_params import RuntimeParamsMixin
from moonseg3r_ros.ros.worker import FrameQueue, FrameWorker, StampPairing

NODE_NAME = "moonseg3r"


class MoonSeg3RNode(InputsMixin, OutputsMixin, NavMixin, MapServicesMixin, RuntimeParamsMixin, DiagnosticsMixin,
                    LifecycleNode):
    """rclpy LifecycleNode wrapping `MoonSeg3RPipeline` (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        params.declare_all(self)
        self.pipeline_config: PipelineConfig = PipelineConfig()
        self.config: NodeConfig = NodeConfig()
        try:
            self.pipeline_config, self.config = params.split_values(params.read_all(self))
        except (KeyError, ValueError) as err:  # reported again (and refused) by on_configure
            self.get_logger().error(f"invalid parameters: {err}")
        self._pipeline = None
        self._lock = threading.RLock()  # guards the pipeline and its map
        self._pub_lock = threading.RLock()  # guards the publisher set
        self._active = False
        self._queue: Optional[FrameQueue] = None
        self._worker: Optional[FrameWorker] = None
        self._pairing: Optional[StampPairing] = None
        self._map_services: list = []
        self._subs: list = []
        self._pubs: dict[str, Any] = {}
        self._output_timers: list = []
        self._input_groups: list = []
        self._submit_lock = threading.Lock()  # input streams call _submit from several executor threads
        self._intrinsics = IntrinsicsCache()
        self._input_seen: dict[str, float] = {}  # stream -> time.monotonic() of its last message
        self._input_topics: dict[str, str] = {}  # stream -> resolved topic of its subscription
        self._output_group = MutuallyExclusiveCallbackGroup()
        self._last_stamp_ns: Optional[int] = None
        self._cloud_dirty: Optional[Time] = None  # stamp of the newest map state not yet sent as a cloud
        self._last_map_stamp: Optional[Time] = None
        self._last_frame_index = -1
        self._last_frame: Optional[FrameInput] = None  # newest processed input (asynchronous masks: flush)
        self._instance_count = 0
        self.counters: dict[str, int] = collections.defaultdict(int)
        self._last_error_log: dict[tuple, float] = {}
        self._counter_lock = threading.Lock()
        self._recent: collections.deque = collections.deque(maxlen=10_000)  # (done time, latency s, age s)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ---------------------------------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        try:
            self.pipeline_config, self.config = params.split_values(params.read_all(self))
        except (KeyError, ValueError) as err:
            log.error(f"configure failed: invalid parameter: {err}")
            return TransitionCallbackReturn.FAILURE
        missing = missing_files(self.pipeline_config)
        if missing:
            log.error(f"configure failed: {missing}")
            return TransitionCallbackReturn.FAILURE
        try:
            from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline

            pipeline = MoonSeg3RPipeline(self.pipeline_config)
        except Exception as err:  # a checkpoint that does not load, an unavailable device, ...
            log.error(f"configure failed: could not build the pipeline: {type(err).__name__}: {err}")
            return TransitionCallbackReturn.FAILURE
        with self._lock:
            self._pipeline = pipeline
        self._queue = FrameQueue(self.config.queue_size, self.config.drop_policy)
        self._worker = FrameWorker(self._queue, self._process_frame, self._on_worker_error)
        self._worker.pause()
        self._worker.start()
        needs = self._side_inputs()
        self._pairing = StampPairing(["image"] + needs, self.config.sync.buffer_size,
                                     self._on_pairing_drop) if needs else None
        self._map_services = self._create_map_services()
        log.info(f"configured: geometry '{self.pipeline_config.geometry.source}', masks "
                 f"'{self.pipeline_config.masks.source}', queue {self.config.queue_size} "
                 f"({self.config.drop_policy})")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._create_publishers()
            self._nav_activate()  # drops the TF publishers a robot's frames make unused
            if self.config.frames.camera:  # else published with the first image's header frame
                self._publish_static_tf()
            self._subs = self._create_subscriptions()
        except Exception as err:  # e.g. an invalid topic name
            self.get_logger().error(f"activate failed: {type(err).__name__}: {err}")
            self._destroy_io()
            return TransitionCallbackReturn.FAILURE
        self._start_timers()
        self._active = True
        self._worker.resume()
        self._republish_latched()
        suffix = "/compressed" if self.config.image_transport == "compressed" else ""
        self.get_logger().info(f"active: listening on '{self.resolve_topic_name(self.config.topics.image)}{suffix}'")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self.get_logger().info("inactive: processing stopped, the map is kept")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up: pipeline and models released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self.save_on_exit()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error("error during a transition: releasing everything (back to unconfigured)")
        self._stop_processing()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def lifecycle_state(self) -> str:
        return self._state_machine.current_state[1]

    def _stop_processing(self) -> None:
        self._active = False
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._worker is not None:
            self._worker.pause()
        if self._queue is not None:
            self._count("discarded_on_deactivate",
                        self._queue.clear_each(lambda f: self._drop_image("deactivate", f)))
        if self._pairing is not None:
            self._pairing.clear()
        self._nav_deactivate()
        self._destroy_io()

    def _destroy_io(self) -> None:
        for timer in self._output_timers:
            self.destroy_timer(timer)
        self._output_timers = []
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        with self._pub_lock:
            pubs, self._pubs = self._pubs, {}
        for pub in pubs.values():
            self.destroy_publisher(pub)

    def _release(self) -> None:
        if self._worker is not None:
            self._worker.stop(timeout=60.0)
        self._worker, self._queue, self._pairing = None, None, None
        for frame in self._intrinsics.take_waiting():  # paired, still waiting for a first camera_info
            self._drop_image("inactive", frame)
        for srv in self._map_services:
            self.destroy_service(srv)
        self._map_services = []
        with self._lock:
            pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.close()
            del pipeline
        free_accelerator_memory()
        self._last_stamp_ns = None
        self._instance_count = 0

    def save_on_exit(self) -> None:
        """Save the map to `map_save_path` (when set and a pipeline exists); called on shutdown."""
        path = self.config.map_save_path
        if path and self._pipeline is not None:
            ok, message = self.save_map(path)
            self._log_outcome(ok, f"shutdown: {message}")


def main(args: Optional[list[str]] = None) -> int:
    """The `moonseg3r_node` entry point (setup.py): see main.py."""
    from moonseg3r_ros.ros.main import main as run

    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""Running a replay: the node as a child process (moonseg3r_ros.ros.node_process), driven and fed from this
process (moonseg3r_ros.ros.node_client), every frame accounted for from the node's diagnostics."""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from moonseg3r_ros.ros.dds import confine_dds
from moonseg3r_ros.ros.dds import describe as describe_dds
from moonseg3r_ros.ros.frame_publisher import CAMERA_TOPICS, MissingInput, streams_for
from moonseg3r_ros.ros.node_client import LOST_COUNTERS, NodeClient, counter_value, dropped_frames
from moonseg3r_ros.ros.node_process import NodeProcess
from moonseg3r_ros.tools.replay.choices import GEOMETRY_SOURCES, MASK_SOURCES  # noqa: F401 (re-exported)
from moonseg3r_ros.tools.replay.export import ReplayResult, align_to_ground_truth, export_map
from moonseg3r_ros.tools.replay.inputs import ReplayError, ReplayInput

NODE_NAME = "moonseg3r"
TOPICS = CAMERA_TOPICS  # input topics, relative to the node's namespace: the ones `moonseg3r to-bag` writes
DIAGNOSTICS_RATE_HZ = 20.0


@dataclass
class ReplayOptions:
    geometry: str = "recorded"
    masks: str = "rgbd"
    cut3r_checkpoint: str = ""
    sam_checkpoint: str = ""
    keyframe_interval: Optional[int] = None
    params_file: Optional[str] = None
    extra_params: dict = field(default_factory=dict)  # name -> text (ROS parameter overrides, as typed)
    rate: float = 0.0
    window: int = 3
    timeout: float = 300.0
    progress: bool = True


def ensure_ros_environment(quiet: bool = False) -> tuple[str, str]:
    """Keep DDS on this machine: LOCALHOST discovery, a domain id and the Fast DDS profile when unset."""
    chosen = confine_dds()
    rng, domain = os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"], os.environ["ROS_DOMAIN_ID"]
    if not quiet:
        how = f" (chosen: {', '.join(chosen)})" if chosen else " (from the environment)"
        print(f"ROS 2: {describe_dds()}{how}", flush=True)
    return rng, domain


def node_parameters(opts: ReplayOptions, queue_size: int) -> dict[str, Any]:
    """Typed ROS parameters of the node of a replay (opts.extra_params come on top, as -p overrides)."""
    values: dict[str, Any] = {
        "autostart": True,
        "drop_policy": "oldest",
        "queue_size": max(int(queue_size), 2),
        "input_reliability": "reliable",
        "diagnostics_rate": DIAGNOSTICS_RATE_HZ,
        "publish_debug_image": False,
        "geometry.source": opts.geometry,
        "masks.source": opts.masks,
        "sync.buffer_size": max(30, 4 * opts.window),
    }
    values.update({f"topics.{k}": v for k, v in TOPICS.items()})
    if opts.cut3r_checkpoint:
        values["geometry.cut3r_checkpoint"] = str(Path(opts.cut3r_checkpoint).expanduser().resolve())
    if opts.sam_checkpoint:
        values["masks.sam_checkpoint"] = str(Path(opts.sam_checkpoint).expanduser().resolve())
    if opts.keyframe_interval:
        values["keyframe_interval"] = int(opts.keyframe_interval)
    return values


def _streams(opts: ReplayOptions) -> list[str]:
    return streams_for(recorded=opts.geometry == "recorded", ground_truth=opts.masks == "ground_truth")


class _Replay:
    """One replay's node process and client (see `replay`)."""

    def __init__(self, node: NodeProcess, client: NodeClient, opts: ReplayOptions):
        self.node, self.client, self.opts = node, client, opts

    def failure(self, what: str) -> ReplayError:
        detail = self.node.failure_line()
        code = self.node.exit_code()
        state = f"the node exited with code {code}" if code is not None else "the node"
        return ReplayError(f"{what}: {state}{': ' + detail if detail else ''} (log: {self.node.log_path})")

    def lifecycle_state(self) -> Optional[str]:
        try:
            return self.client.get_state(timeout=2.0)
        except TimeoutError:
            return None

    def state_from_log(self) -> Optional[str]:
        """Fallback when the get_state service does not answer: the node logs 'active: listening on ...'."""
        return "active" if "]: active: listening on" in self.node.log() else None

    def wait_active(self) -> None:
        deadline = time.monotonic() + self.opts.timeout
        while time.monotonic() < deadline:
            if not self.node.alive():
                raise self.failure("the node did not start")
            state = self.lifecycle_state() or self.state_from_log()
            if state == "active":
                return
            if state == "unconfigured" and self.node.failure_line():
                raise self.failure("the node could not configure")
            if state == "inactive" and "activate failed" in self.node.failure_line():
                raise self.failure("the node could not activate")
            self.client.spin_for(0.25)
        raise self.failure(f"the node was not active after {self.opts.timeout:.0f} s")

    def wait_progress(self, predicate: Callable[[], bool], message: str) -> None:
        """Wait for predicate; fail when the node dies or nothing changes for `opts.timeout` seconds."""
        client = self.client
        last, last_change = client.finished(), time.monotonic()
        while not client.spin_until(predicate, 0.5):
            if not self.node.alive():
                raise self.failure("the node stopped during the replay")
            now = client.finished()
            if now != last:
                last, last_change = now, time.monotonic()
            elif time.monotonic() - last_change > self.opts.timeout:
                raise self.failure(message)

    def send_frames(self, source: ReplayInput) -> int:
        from tqdm import tqdm

        client, opts = self.client, self.opts
        bar = tqdm(total=source.total, desc=f"replay {source.scene}", unit="frame", disable=not opts.progress,
                   dynamic_ncols=True)
        sent, period = 0, (1.0 / opts.rate if opts.rate > 0 else 0.0)
        next_time = time.monotonic()
        done = 0
        try:
            for frame in source.frames:
                if opts.rate > 0:
                    client.spin_for(max(0.0, next_time - time.monotonic()))
                    next_time += period
                else:
                    self.wait_progress(lambda sent=sent: sent - client.finished() < opts.window,
                                       f"the node made no progress for {opts.timeout:.0f} s")
                try:
                    client.publish_frame(frame)
                except MissingInput as err:
                    raise ReplayError(str(err)) from None
                sent += 1
                now_done = min(client.finished(), sent)
                bar.update(sent - bar.n)
                if now_done != done:
                    done = now_done
                    bar.set_postfix(done=done, instances=client.counter("instances"), refresh=False)
        finally:
            bar.close()
        return sent

    def wait_done(self, sent: int) -> None:
        self.wait_progress(lambda: self.client.finished() >= sent,
                           f"the node did not finish the last frames within {self.opts.timeout:.0f} s")
        # One more diagnostics message so that the counters include everything finished above.
        count = self.client.diagnostics_count
        self.client.spin_until(lambda: self.client.diagnostics_count > count + 1, 5.0)


def replay(source: ReplayInput, out, opts: ReplayOptions) -> ReplayResult:
    """Run the whole replay (see the package docstring); raises ReplayError on failure."""
    import rclpy

    from moonseg3r_ros.data.bag import BagError

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ensure_ros_environment(quiet=True)
    start = time.monotonic()
    namespace = f"replay_{os.getpid()}_{random.SystemRandom().randint(0, 99999)}"
    queue_size = (source.total or 10_000) + 16
    node = NodeProcess(NODE_NAME, node_parameters(opts, queue_size), log_dir=out, namespace=namespace,
                       params_file=opts.params_file, overrides=opts.extra_params, log_name="node.log")
    (out / "node_command.txt").write_text(" ".join(node.command()) + "\n")
    print(f"starting node (log: {out / 'node.log'})", flush=True)
    node.start()
    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    client = None
    try:
        client = NodeClient(context, f"moonseg3r_replay_{os.getpid()}", node.fqn, namespace)
        client.subscribe_outputs(only=("tf", "instance_map", "diagnostics"),
                                 keep={"instance_map": 1, "diagnostics": 1})
        client.make_input_publishers(recorded=opts.geometry == "recorded", ground_truth=opts.masks == "ground_truth",
                                     topics=TOPICS)
        run = _Replay(node, client, opts)
        run.wait_active()
        # Handshake both ways before the first frame (the node is active): our publishers see the node's
        # subscriptions, and the node's diagnostics report that its subscriptions see ours.
        if not (client.spin_until(client.inputs.subscribed, 30.0)
                and client.wait_inputs_matched(timeout=30.0, silent_after=30.0)):
            raise run.failure("the node's subscriptions or diagnostics did not appear")
        sent = run.send_frames(source)
        run.wait_done(sent)
        stats = _stats(client.diagnostics(), sent)
        map_path = out / "map.npz"
        print(f"saving map to {map_path}", flush=True)
        ok, message = client.save_map(map_path)
        if not ok:
            raise ReplayError(f"saving the map failed: {message}")
        stats["instance_map_messages"] = client["instance_map"].count
        poses = client.camera_poses()
    except BagError as err:
        raise ReplayError(str(err).splitlines()[0]) from None
    finally:
        if client is not None:
            client.close()
        rclpy.try_shutdown(context=context)
        code = node.stop()
    stats["node_exit_code"] = code
    result = export_map(map_path, out, source, alignment=align_to_ground_truth(poses, source, opts.geometry))
    result.stats, result.seconds, result.poses = stats, time.monotonic() - start, poses
    (out / "replay.json").write_text(json.dumps({"scene": source.scene, "seconds": round(result.seconds, 2),
                                                 "instances": result.instances, **stats}, indent=2))
    return result


def _stats(values: dict, sent: int) -> dict:
    def c(name: str) -> int:
        return counter_value(values, name)

    received = c("images_received")
    stats = {
        "frames_sent": sent,
        "images_received": received,
        "frames_processed": c("frames_processed"),
        "keyframes": c("keyframes"),
        "frames_skipped": c("skipped"),
        "processing_errors": c("processing_errors"),
        **{n: c(n) for n in LOST_COUNTERS},
        "not_received": max(0, sent - received) if "images_received" in values else 0,
    }
    stats["drops"] = stats["not_received"] + dropped_frames(values)  # images; LOST_COUNTERS count messages
    stats["node_fps"] = _number(values.get("fps", "nan"))  # numbers as numbers in metrics.json
    stats["node_latency_mean_ms"] = _number(values.get("latency_mean_ms", "nan"))
    stats["node_peak_rss_mb"] = _number(values.get("peak_rss_mb", "nan"))
    stats["pipeline"] = {k[len("pipeline."):]: _number(v) for k, v in values.items() if k.startswith("pipeline.")}
    return stats


def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() else value

"""`moonseg3r bench burst`: what a burst of frames costs the node — where each image of the burst ended.

Starts the node (ground-truth masks, recorded geometry, `queue_size` 2 / `drop_policy` latest like a live
camera), publishes `--frames` frames (with depth, pose, camera_info, ids) as fast as this process can, and
prints, once the node is idle, how many images were received, processed, and dropped by reason
(images_dropped.<reason>: queue = latest wins, unpaired = a side input never came), plus what DDS lost
before the node (sent - received), for each `--input-depth` given.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence


def burst(input_depth: int, frames: int, log_dir: Path) -> dict[str, int]:
    import rclpy

    from moonseg3r_ros.data.synthetic import SceneSpec, generate_scene
    from moonseg3r_ros.ros import conversions as conv
    from moonseg3r_ros.ros.testing import ACTIVATE, CAMERA_REMAPS, CONFIGURE, NodeClient, NodeProcess

    params = {"masks.source": "ground_truth", "keyframe_interval": 1, "input_reliability": "reliable",
              "cloud.rate": 0.0, "queue_size": 2, "drop_policy": "latest", "input_depth": input_depth,
              "diagnostics_rate": 5.0}
    scene = generate_scene(SceneSpec(seed=7, num_frames=6, width=128, height=96, num_objects=4))
    proc = NodeProcess("moonseg3r", params, CAMERA_REMAPS, log_dir).start()
    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    client = NodeClient(context, f"burst_client_{input_depth}")
    try:
        client.subscribe_outputs(only=("diagnostics",))
        if not (client.change_state(CONFIGURE) and client.change_state(ACTIVATE)):
            raise RuntimeError(f"the node did not start: {proc.failure_line()}")
        client.feed(scene.frames[:1], 1.0)  # subscriptions matched, models warm
        client.spin_until(lambda: client.counter("frames_processed") == 1, 120)
        start = time.monotonic()
        for i in range(frames):
            client.publish_frame(scene.frames[i % 6], conv.seconds_to_stamp(10.0 + 0.01 * i))
        published_s = time.monotonic() - start
        client.spin_until(lambda: client.counter("images_received") > 1, 60)
        idle = lambda: client.diagnostics().get("images_pending") == "0"  # noqa: E731
        client.spin_until(idle, 300)
        count = client.diagnostics_count
        client.spin_until(lambda: client.diagnostics_count >= count + 2, 30)
        d = client.diagnostics()
        figures = {"sent": frames, "publish_ms": round(1000 * published_s),
                   **{k: int(float(v)) - (1 if k in ("images_received", "frames_processed") else 0)
                      for k, v in d.items() if k in ("images_received", "frames_processed", "images_dropped")
                      or k.startswith("images_dropped.") or k.startswith("pairing_drops.")}}
        figures["lost_before_node"] = frames - figures["images_received"]
        return figures
    finally:
        client.close()
        rclpy.try_shutdown(context=context)
        proc.stop()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="moonseg3r bench burst", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100, help="frames in the burst (default 100)")
    parser.add_argument("--input-depth", type=int, nargs="+", default=[5, 100],
                        help="input_depth values to measure (default 5 100)")
    args = parser.parse_args(argv)
    from moonseg3r_ros.ros.dds import confine_dds

    confine_dds()
    with tempfile.TemporaryDirectory(prefix="moonseg3r_burst_") as tmp:
        for depth in args.input_depth:
            figures = burst(depth, args.frames, Path(tmp))
            print(f"input_depth {depth}: " + ", ".join(f"{k} {v}" for k, v in figures.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

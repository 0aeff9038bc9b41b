"""Benchmark of the running moonseg3r node over the real middleware, plus the ROS layer's own overhead.

1. End to end: starts `moonseg3r_node` in its own process (recorded geometry + ground-truth masks on a
   generated scene by default, so no model weights are needed), publishes N frames at a given rate with
   wall-clock stamps, and reports the latency from image stamp to the InstanceMap that frame produced
   (received here), the throughput, the drops the node counted and the node's peak resident memory.
2. ROS-layer overhead, separately: packing a 1M-point map into a PointCloud2, serialising and
   deserialising it, decoding it again field by field, and converting camera images to RGB arrays.

    python -m moonseg3r_ros.tools.bench_node [--frames 60] [--rate 10] [--width 320 --height 240]
                                             [--keyframe-interval 1] [--queue-size 2] [--drop-policy latest]
                                             [--runs 5] [-p NAME:=VALUE ...]
                                             [--cloud-points 1000000] [--skip-node] [--json out.json]

A single run's p95 varies up to 2x on a shared 2-core machine: `--runs N` starts N fresh node processes one
after another and prints the median and the spread (min-max) of each run's mean / p50 / p95 and the load
average before each run; compare code versions on those, not on one run.

DDS stays on this machine: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a ROS_DOMAIN_ID of its own are set
when not already set (moonseg3r_ros.ros.dds; the node process inherits them). The node is driven by the
same NodeProcess / NodeClient as the tests and `moonseg3r replay`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from moonseg3r_ros.ros.dds import confine_dds
from moonseg3r_ros.ros.node_process import parse_overrides


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def ros_overhead(num_points: int, repeats: int = 5) -> dict[str, float]:
    """Seconds (median) of each ROS-layer step for a cloud of `num_points` and a 640x480 image."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image, PointCloud2

    from moonseg3r_ros.core import map_cloud
    from moonseg3r_ros.core.colors import instance_color
    from moonseg3r_ros.ros import conversions as conv

    rng = np.random.default_rng(0)
    xyz = rng.uniform(-5, 5, size=(num_points, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(num_points, 3), dtype=np.uint8)
    ids = rng.integers(0, 500, size=num_points).astype(np.int32)
    colors = {i: instance_color(i) for i in range(1, 500)}
    stamp = conv.ns_to_stamp(1)
    out: dict[str, float] = {"cloud_points": float(num_points)}
    out["cloud_color_by_instance_s"], _ = _median_time(lambda: map_cloud.instance_colors(ids, colors), repeats)
    out["cloud_pack_s"], msg = _median_time(lambda: conv.make_cloud_msg(xyz, rgb, ids, "map", stamp), repeats)
    out["cloud_serialize_s"], data = _median_time(lambda: serialize_message(msg), repeats)
    out["cloud_bytes"] = float(len(data))
    out["cloud_deserialize_s"], back = _median_time(lambda: deserialize_message(data, PointCloud2), repeats)
    out["cloud_read_fields_s"], fields = _median_time(lambda: conv.read_cloud(back), repeats)
    assert np.array_equal(fields["instance_id"], ids)
    out["cloud_voxel_downsample_5cm_s"], _ = _median_time(lambda: map_cloud.voxel_downsample(xyz, rgb, ids, 0.05),
                                                          repeats)
    image = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    for encoding in ("rgb8", "bgr8", "mono16"):
        pixels = image[..., 0].astype(np.uint16) * 257 if encoding == "mono16" else image
        image_msg = conv.array_to_image_msg(pixels, encoding, stamp)
        image_bytes = serialize_message(image_msg)
        out[f"image_640x480_{encoding}_deserialize_s"], received = _median_time(
            lambda data=image_bytes: deserialize_message(data, Image), repeats)
        out[f"image_640x480_{encoding}_to_rgb_s"], _ = _median_time(
            lambda msg=received: conv.image_msg_to_rgb(msg), repeats)
    return out


def run_node(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Publish args.frames frames at args.rate into a node process; latency, throughput, drops, memory."""
    import rclpy

    from moonseg3r_ros.data.synthetic import SceneSpec, generate_scene
    from moonseg3r_ros.ros import conversions as conv
    from moonseg3r_ros.ros.node_client import ACTIVATE, CONFIGURE, NodeClient
    from moonseg3r_ros.ros.node_process import NodeProcess
    from moonseg3r_ros.ros.testing import CAMERA_REMAPS

    params = {"geometry.source": "recorded", "masks.source": args.masks, "keyframe_interval": args.keyframe_interval,
              "queue_size": args.queue_size, "drop_policy": args.drop_policy, "input_reliability": "reliable",
              "cloud.rate": args.cloud_rate, "diagnostics_rate": 2.0, "publish_debug_image": False,
              "input_depth": args.input_depth}
    scene = generate_scene(SceneSpec(seed=args.seed, num_frames=args.frames, width=args.width, height=args.height,
                                     num_objects=6))
    frames = [scene.frames[i] for i in range(args.frames)]
    context = rclpy.context.Context()
    rclpy.init(context=context)
    proc = NodeProcess("moonseg3r", params, CAMERA_REMAPS, log_dir, overrides=args.overrides).start()
    client = NodeClient(context, "bench_node_client")
    result: dict[str, Any] = {"params": params, "overrides": args.overrides, "frames": args.frames,
                              "rate_hz": args.rate,
                              "image": f"{args.width}x{args.height}"}
    try:
        client.subscribe_outputs()
        if not (client.change_state(CONFIGURE) and client.change_state(ACTIVATE)):
            raise RuntimeError(f"the node did not start:\n{proc.log()}")
        client.make_input_publishers(ground_truth=args.masks == "ground_truth")  # ids only for GT masks
        for key in client.inputs.pubs:
            if not client.wait_for_subscribers(key):
                raise RuntimeError(f"the node did not subscribe to {key}")
        if not client.wait_inputs_matched(timeout=30.0, silent_after=30.0):
            raise RuntimeError(f"the node's diagnostics did not report its inputs matched:\n{proc.log()}")
        published: dict[int, float] = {}
        period = 1.0 / args.rate
        start = time.monotonic()
        for i, frame in enumerate(frames):
            target = start + i * period
            while time.monotonic() < target:
                client.executor.spin_once(timeout_sec=max(0.0, min(0.005, target - time.monotonic())))
            now = time.time()
            stamp = conv.seconds_to_stamp(now)
            published[conv.stamp_to_ns(stamp)] = now
            client.publish_frame(frame, stamp)
        publish_seconds = time.monotonic() - start

        def settled() -> bool:
            d = client.diagnostics()
            lost = sum(int(d.get(k, 0)) for k in ("queue_drops", "pairing_drops.image", "bad_input",
                                                   "stamps_not_increasing", "skipped", "processing_errors"))
            return bool(d) and d.get("queue_length") == "0" and \
                int(d.get("frames_processed", 0)) + lost >= int(d.get("images_received", 0)) > 0

        client.spin_for(1.0)
        client.spin_until(settled, args.timeout)
        client.spin_for(1.0)  # one more diagnostics message
        maps = client["instance_map"]
        latencies = [recv - published[conv.stamp_to_ns(m.header.stamp)]
                     for m, recv in zip(maps.messages, maps.receive_times)
                     if conv.stamp_to_ns(m.header.stamp) in published]
        d = client.diagnostics()
        processed = int(d.get("frames_processed", 0))
        last_output = max(client["tf"].receive_times) if client["tf"].receive_times else time.time()
        first_publish = min(published.values())
        result.update({
            "publish_seconds": round(publish_seconds, 3),
            "images_received": int(d.get("images_received", 0)),
            "frames_processed": processed,
            "keyframes": int(d.get("keyframes", 0)),
            "instance_maps_received": len(maps),
            "queue_drops": int(d.get("queue_drops", 0)),
            "pairing_drops": int(d.get("pairing_drops", 0)),
            "bad_input": int(d.get("bad_input", 0)),
            "skipped": int(d.get("skipped", 0)),
            "stamps_not_increasing": int(d.get("stamps_not_increasing", 0)),
            "lost_in_transport": args.frames - int(d.get("images_received", 0)),
            "throughput_fps": round(processed / max(last_output - first_publish, 1e-9), 2),
            "latency_ms": _stats_ms(latencies),
            "latency_series_ms": [round(1000 * v, 1) for v in latencies],  # in publishing order
            "node_peak_rss_mb": round(proc.peak_rss_bytes() / 2**20, 1),
            "node_reported_peak_rss_mb": float(d.get("peak_rss_mb", 0.0)),
            "node_gpu_peak_mb": float(d.get("gpu_peak_memory_mb", 0.0)),
            "instances": int(d.get("instances", 0)),
            "map_points": int(d.get("map_points", 0)),
            "node_diagnostics": d,
        })
    finally:
        client.close()
        proc.stop()
        rclpy.shutdown(context=context)
    return result


def _stats_ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    a = np.asarray(values) * 1000.0
    return {"count": int(a.size), "mean": round(float(a.mean()), 1), "p50": round(float(np.percentile(a, 50)), 1),
            "p95": round(float(np.percentile(a, 95)), 1), "max": round(float(a.max()), 1)}


def _print_run(e: dict[str, Any]) -> None:
    lat = e["latency_ms"]
    print(f"end to end ({e['image']}, {e['frames']} frames at {e['rate_hz']} Hz, "
          f"masks {e['params']['masks.source']}, keyframe every {e['params']['keyframe_interval']}, "
          f"queue {e['params']['queue_size']} {e['params']['drop_policy']}; load average {e['load_average']}):")
    print(f"  latency image stamp -> InstanceMap [ms]: mean {lat.get('mean')} p50 {lat.get('p50')} "
          f"p95 {lat.get('p95')} max {lat.get('max')} (n={lat.get('count')})")
    print(f"  throughput {e['throughput_fps']} frames/s; received {e['images_received']}, processed "
          f"{e['frames_processed']}, queue drops {e['queue_drops']}, pairing drops {e['pairing_drops']}, "
          f"bad input {e['bad_input']}, skipped {e['skipped']}, "
          f"stamps not increasing {e['stamps_not_increasing']}, "
          f"lost in transport {e['lost_in_transport']}")
    print(f"  node peak RSS {e['node_peak_rss_mb']} MiB (GPU peak {e['node_gpu_peak_mb']} MiB); "
          f"{e['instances']} instances, {e['map_points']} map points")


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and min-max over runs of each run's latency mean / p50 / p95, its drops and its throughput."""
    def spread(values: list[float]) -> dict[str, float]:
        return {"median": round(float(np.median(values)), 1), "min": round(min(values), 1),
                "max": round(max(values), 1)}

    summary = {f"latency_{k}_ms": spread([r["latency_ms"][k] for r in runs if r["latency_ms"]])
               for k in ("mean", "p50", "p95")}
    summary["queue_drops"] = spread([float(r["queue_drops"]) for r in runs])
    summary["throughput_fps"] = spread([float(r["throughput_fps"]) for r in runs])
    summary["load_average"] = [r["load_average"] for r in runs]
    summary["runs"] = len(runs)
    return summary


def _run_once(args: argparse.Namespace) -> dict[str, Any]:
    load = round(os.getloadavg()[0], 2)
    if args.log_dir:
        Path(args.log_dir).mkdir(parents=True, exist_ok=True)
        result = run_node(args, Path(args.log_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="bench_node_") as tmp:
            result = run_node(args, Path(tmp))
    return {**result, "load_average": load}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--rate", type=float, default=10.0, help="publishing rate (Hz)")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--keyframe-interval", type=int, default=1,
                        help="1 = every frame yields an InstanceMap (latency measured on every frame)")
    parser.add_argument("--masks", default="ground_truth", choices=("ground_truth", "rgbd", "weight_free"),
                        help="mask source of the node (default ground_truth; rgbd is the node's own default)")
    parser.add_argument("--queue-size", type=int, default=2)
    parser.add_argument("--drop-policy", default="latest", choices=("latest", "oldest"))
    parser.add_argument("--input-depth", type=int, default=5, help="the node's input QoS history depth")
    parser.add_argument("--cloud-rate", type=float, default=1.0)
    parser.add_argument("--cloud-points", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=1, help="fresh node runs; median and spread over them")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="extra node parameter (wins over the benchmark's own), e.g. -p occupancy.rate:=0.1")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on waiting for the node to finish")
    parser.add_argument("--skip-node", action="store_true", help="only measure the ROS-layer overhead")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--log-dir", help="keep the node's log and parameter file here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    try:
        args.overrides = parse_overrides(args.param)
    except ValueError as err:
        parser.error(str(err))
    confine_dds()
    figures: dict[str, Any] = {"domain_id": os.environ["ROS_DOMAIN_ID"], "cpu_threads": os.cpu_count()}
    if not args.skip_node:
        runs = []
        for _ in range(args.runs):
            runs.append(_run_once(args))
            _print_run(runs[-1])
        figures["end_to_end"] = runs[-1] if args.runs == 1 else {"summary": summarize_runs(runs), "runs": runs}
        if args.runs > 1:
            summary = figures["end_to_end"]["summary"]
            print(f"over {args.runs} runs (median, min-max):")
            for key in ("latency_mean_ms", "latency_p50_ms", "latency_p95_ms", "queue_drops", "throughput_fps"):
                v = summary[key]
                print(f"  {key:<18} {v['median']:8.1f}   ({v['min']} - {v['max']})")
            print(f"  load averages before each run: {summary['load_average']}")
    overhead = ros_overhead(args.cloud_points)
    figures["ros_overhead"] = overhead
    n = int(overhead["cloud_points"])
    print(f"ROS layer overhead (median of 5), {n:,}-point cloud ({overhead['cloud_bytes'] / 2**20:.1f} MiB):")
    for key, value in overhead.items():
        if key.endswith("_s"):
            print(f"  {key[:-2]:<40} {value * 1000:9.2f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end benchmark of the monocular pipeline: CUT3R + a mask network + the decoder, the real `step()`.

Builds CUT3R (random weights; `--size full` the released 512 DPT model, `small` the reference test
configuration), the chosen mask source (a network at its released size with random weights, written as a
checkpoint and loaded by the pipeline's own factory: see bench_e2e_models.py; or a weight-free source), the
weight-free F2d and the untrained 3-layer query decoder (run, not the identity), then feeds `--frames` frames
of a synthetic scene at `--width`x`--height` through MoonSeg3RPipeline.step for every keyframe interval in
`--intervals` (and with masks.asynchronous off/on). CUT3R runs on every frame, but the scene's recorded
pointmaps, pose and K stand in for its random ones (bench_e2e_models.Cut3rWithSceneGeometry), so masks,
association and the map work on real geometry. Prints per stage median / p95 ms, frames per second,
peak GPU memory (CUDA) or RSS (CPU) in the first and second half of the stream (flat in N: growth ~0).

    moonseg3r bench e2e --device cuda --masks fastsam --dtype bf16 --frames 200
    moonseg3r bench e2e --device cpu --size small --masks rgbd --frames 30 --intervals 10 --async both
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

MASKS = ("fastsam", "sam2", "sam", "weight_free", "rgbd")
DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
          "fp16": "float16", "float16": "float16"}
STAGES = ("input", "geometry", "masks", "features", "lifting", "memory", "refinement", "association",
          "map_update", "total")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="moonseg3r bench e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cuda, cuda:1, cpu or auto (CUDA when available)")
    parser.add_argument("--masks", choices=MASKS, default="fastsam", help="mask source (default fastsam)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="CUT3R autocast dtype")
    parser.add_argument("--size", choices=("full", "small", "tiny"), default="full",
                        help="full: released CUT3R and mask-network sizes; small: test-sized networks; tiny: "
                             "small with narrow CUT3R heads (CI)")
    parser.add_argument("--frames", type=int, default=60, help="frames per run after the warm-up (default 60)")
    parser.add_argument("--warmup", type=int, default=2, help="frames run first and not measured (default 2)")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--intervals", default="1,10", help="keyframe intervals, comma-separated (default 1,10)")
    parser.add_argument("--async", dest="asynchronous", choices=("off", "on", "both"), default="off",
                        help="masks.asynchronous for the runs (both: each interval twice)")
    parser.add_argument("--max-pending", type=int, default=2, help="masks.max_pending with --async on")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.width % 16 or args.height % 16 or min(args.width, args.height) < 32:
        parser.error("--width and --height must be multiples of 16, at least 32")
    if args.frames < 2 or args.warmup < 0:
        parser.error("--frames must be >= 2 and --warmup >= 0")
    try:
        args.intervals = [int(v) for v in args.intervals.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--intervals must be comma-separated integers, got {args.intervals!r}")
    if not args.intervals or min(args.intervals) < 1:
        parser.error("--intervals needs keyframe intervals >= 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from moonseg3r_ros.tools.bench_e2e_models import MissingPackage

    try:
        report = run(args)
    except MissingPackage as err:
        print(f"moonseg3r bench e2e: {err}", file=sys.stderr)
        return 2
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------------- running
class _Shared:
    """A model part shared by the runs: every attribute but close() (the last run's pipeline must not free it)."""

    def __init__(self, inner: Any):
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def close(self) -> None:
        pass


def run(args: argparse.Namespace) -> dict:
    """Build the parts once, run every (interval, async) case; the report dict (see `print_report`)."""
    import torch

    from moonseg3r_ros.core.devices import resolve_device
    from moonseg3r_ros.core.geometry import Cut3rGeometry, RecordedGeometry
    from moonseg3r_ros.core.masks import make_mask_source
    from moonseg3r_ros.tools.bench_e2e_models import (NETWORK_MASKS, Cut3rWithSceneGeometry, configure_mask_network,
                                                      random_cut3r)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    frames = scene_frames(args.width, args.height, views=min(12, args.frames + args.warmup))
    config = base_config(args, device)
    with tempfile.TemporaryDirectory(prefix="moonseg3r_e2e_") as scratch:
        model = None
        if args.masks in NETWORK_MASKS:
            model = configure_mask_network(config, args.masks, args.size, Path(scratch))
        else:
            config.masks.source = args.masks
        if model is not None:  # sam small: no file format for it, the wrapper takes the model
            from moonseg3r_ros.core.masks import SamMasks

            mask_source = SamMasks(config.masks, device, model=model.to(device))
        else:
            mask_source = make_mask_source(config, device)
    cut3r = random_cut3r(args.size, device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    geometry = Cut3rWithSceneGeometry(Cut3rGeometry(config.geometry, device, dtype[config.geometry.cut3r_dtype],
                                                    model=cut3r), RecordedGeometry(config.geometry.max_depth))
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.asynchronous]
    runs = []
    for interval in args.intervals:
        for asynchronous in modes:
            config.keyframe_interval, config.masks.asynchronous = interval, asynchronous
            runs.append(run_case(config, _Shared(geometry), _Shared(mask_source), frames, args))
    params = sum(p.numel() for p in cut3r.parameters())
    return {"device": device_name(device), "cut3r": f"{args.size} ({params / 1e6:.1f} M params, "
            f"{config.geometry.cut3r_dtype})", "masks": args.masks, "size": args.size,
            "image": f"{args.width}x{args.height}", "frames": args.frames, "warmup": args.warmup,
            "load_average": [round(v, 2) for v in os.getloadavg()], "runs": runs}


def base_config(args: argparse.Namespace, device: Any):
    from moonseg3r_ros.core.config import PipelineConfig

    config = PipelineConfig()
    config.device = str(device)
    config.geometry.source = "cut3r"
    config.geometry.image_long_side = max(args.width, args.height)
    config.geometry.cut3r_dtype = DTYPES[args.dtype]
    config.refinement.run_untrained = True  # the decoder's cost is part of the pipeline's
    config.masks.max_pending = args.max_pending
    config.masks.min_mask_area = max(10, round(100 * args.width * args.height / (512 * 384)))
    return config


def run_case(config: Any, geometry: Any, mask_source: Any, frames: list, args: argparse.Namespace) -> dict:
    """One stream of warm-up + `args.frames` frames through a fresh pipeline; its figures."""
    import numpy as np

    from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline

    geometry.reset()
    pipe = MoonSeg3RPipeline(config, geometry_source=geometry, mask_source=mask_source)
    device = pipe.device
    results, memory = [], []
    total = args.warmup + args.frames
    half = args.warmup + args.frames // 2
    start = 0.0
    for k in range(total):
        if k == args.warmup:
            _sync(device)
            memory_mark(device, reset=True)
            start = time.perf_counter()
        frame = frames[k % len(frames)]
        result = pipe.step(frame.image, 0.1 * (k + 1), depth=frame.depth, intrinsics=frame.intrinsics,
                           pose_c2w=frame.pose_c2w)
        if k >= args.warmup:
            results.append(result)
        if k + 1 in (half, total):
            memory.append(memory_mark(device, reset=True))
    pipe.flush()
    _sync(device)
    elapsed = time.perf_counter() - start
    stats = dict(pipe.stats)
    pipe.close()
    keyframes = [r for r in results if r.is_keyframe]
    masks = [r.num_masks for r in keyframes if r.instance_ids_2d is not None]
    return {"interval": config.keyframe_interval, "asynchronous": config.masks.asynchronous,
            "frames": len(results), "keyframes": len(keyframes), "fps": len(results) / elapsed,
            "masks_per_keyframe": float(np.mean(masks)) if masks else 0.0,
            "skipped": sum(r.skipped for r in results), "dropped_pending": stats["keyframes_dropped_pending"],
            "instances": stats["instances_new"], "stages": stage_figures(results),
            "keyframe_step_ms": _figures([1e3 * r.timings["total"] for r in keyframes]),
            "memory": {"kind": memory_kind(device), "first_half_mib": memory[0], "second_half_mib": memory[-1],
                       "growth_mib": memory[-1] - memory[0], "peak_mib": peak_memory(device, memory)}}


def stage_figures(results: list) -> dict:
    """{stage: {median_ms, p95_ms, count}} over the steps (and keyframes) in which each stage ran."""
    values: dict[str, list[float]] = {name: [] for name in STAGES}
    for result in results:
        for name, seconds in result.timings.items():
            if name in values:
                values[name].append(1e3 * seconds)
    return {name: _figures(v) for name, v in values.items() if v}


def _figures(values_ms: list[float]) -> dict:
    import numpy as np

    if not values_ms:
        return {"median_ms": float("nan"), "p95_ms": float("nan"), "count": 0}
    return {"median_ms": float(np.median(values_ms)), "p95_ms": float(np.percentile(values_ms, 95)),
            "count": len(values_ms)}


# ---------------------------------------------------------------------------------------------------- helpers
def scene_frames(width: int, height: int, views: int) -> list:
    """`views` frames (HxWx3 uint8 image, depth, K, pose) of a synthetic room of coloured primitives seen over a
    short orbit, replayed in a loop."""
    from moonseg3r_ros.data.synthetic import SceneSpec, generate_scene

    scene = generate_scene(SceneSpec(seed=0, num_frames=views, width=width, height=height, num_objects=6,
                                     orbit_degrees=30))
    return list(scene.frames)


def memory_mark(device: Any, reset: bool = False) -> float:
    """Peak CUDA memory allocated since the last mark (MiB), or the process RSS (MiB) on CPU."""
    import torch

    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 20
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
        return peak
    import psutil

    return psutil.Process().memory_info().rss / 2 ** 20


def peak_memory(device: Any, marks: list[float]) -> float:
    """Peak CUDA memory allocated over the measured frames, or the process's peak RSS so far (MiB)."""
    if device.type == "cuda":
        return max(marks)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def memory_kind(device: Any) -> str:
    return "peak CUDA allocated" if device.type == "cuda" else "process RSS"


def device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    return f"cpu ({torch.get_num_threads()} torch threads, {os.cpu_count()} cores)"


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def print_report(report: dict) -> None:
    load = " ".join(f"{v:.2f}" for v in report["load_average"])
    print(f"bench e2e: {report['device']}; CUT3R {report['cut3r']}; masks {report['masks']} ({report['size']}); "
          f"{report['frames']} frames at {report['image']} (+{report['warmup']} warm-up); load average {load}")
    for case in report["runs"]:
        mem = case["memory"]
        print(f"keyframe interval {case['interval']}, masks {'asynchronous' if case['asynchronous'] else 'inline'}: "
              f"{case['fps']:.2f} FPS, {case['keyframes']} keyframes ({case['masks_per_keyframe']:.1f} masks each, "
              f"{case['dropped_pending']} dropped pending, {case['skipped']} frames skipped), "
              f"{case['instances']} instances")
        print(f"  {'stage':<12s} {'median ms':>10s} {'p95 ms':>10s} {'count':>6s}")
        for name, fig in case["stages"].items():
            print(f"  {name:<12s} {fig['median_ms']:10.1f} {fig['p95_ms']:10.1f} {fig['count']:6d}")
        fig = case["keyframe_step_ms"]
        print(f"  {'keyframe step':<12s} {fig['median_ms']:10.1f} {fig['p95_ms']:10.1f} {fig['count']:6d}")
        print(f"  {mem['kind']}: first half {mem['first_half_mib']:.0f} MiB, second half "
              f"{mem['second_half_mib']:.0f} MiB ({mem['growth_mib']:+.0f} MiB); peak {mem['peak_mib']:.0f} MiB")


if __name__ == "__main__":
    raise SystemExit(main())

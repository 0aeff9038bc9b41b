"""Per-stage latency and memory of MoonSeg3RPipeline.step (the non-network stages).

Keyframe benchmark (the issue's scale): a 640x480 keyframe with 100 masks, a map pre-filled with the
scene of `bench_map` (500 instances, about 1M fused points, its memory cells and bank), recorded geometry,
masks given (ground-truth ids: the mask network is excluded), weight-free colour features (the backbone
network is excluded and reported apart), identity refinement (plus the untrained decoder's cost, apart).
Prints median / p95 per stage: masks, features, lifting, memory, refinement, association, map_update, and
the sum of the non-network stages; then how they grow with the number of instances / map points.

Stream benchmark: `--frames` frames (default 5000) of a bounded scene (a pre-rendered orbit of 60 views
replayed with increasing stamps), keyframe every 10; prints RSS at intervals (must stay flat).

    python -m moonseg3r_ros.tools.bench_pipeline [--repeats 10] [--frames 5000] [--threads 1]
"""
from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Optional

import numpy as np

from moonseg3r_ros.core.camera import look_at
from moonseg3r_ros.core.config import PipelineConfig
from moonseg3r_ros.tools.bench_map import K, make_scene, masks_from_ids, peak_rss_mib, render, rss_mib

if TYPE_CHECKING:  # the pipeline loads torch: imported where it is built, after parsing (`--help` stays fast)
    from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline

STAGES = ("input", "geometry", "masks", "features", "lifting", "memory", "refinement", "association", "map_update")
NON_NETWORK = ("masks", "lifting", "memory", "refinement", "association", "map_update")


def _config(run_untrained: bool = False, keyframe_interval: int = 1) -> PipelineConfig:
    config = PipelineConfig()
    config.device = "cpu"
    config.masks.source = "ground_truth"
    config.masks.max_masks = 100
    config.masks.min_mask_area = 1
    config.masks.min_valid_points = 1
    config.keyframe_interval = keyframe_interval
    config.refinement.run_untrained = run_untrained
    config.prune_interval = 0
    return config


def _prefill(pipe: MoonSeg3RPipeline, scene, rng: np.random.Generator) -> None:
    """Integrate the whole scene into the map and memory; one bank entry per instance."""
    pipe.instance_map.integrate(scene.points, scene.colors, scene.ids, 0.0)
    pipe.memory.update(scene.points, scene.ids)
    records = pipe.instance_map.instances()
    ids = [r.id for r in records]
    boxes = np.stack([[r.bbox_min, r.bbox_max] for r in records])
    pipe.bank.upsert(ids, rng.normal(size=(len(ids), pipe.config.features.dim)), boxes)


def _keyframe_inputs(scene, rng: np.random.Generator, num_masks: int = 100):
    pose = look_at(np.array([5.0, -1.0, 2.0]), np.array([5.0, 4.0, 0.0]))
    _, depth, id_map = render(scene.points, scene.ids, pose)
    masks, _ = masks_from_ids(id_map, num_masks, rng)
    labels = np.zeros(id_map.shape, np.int32)  # 100 non-overlapping masks as an id image
    for k, m in enumerate(masks):
        labels[m & (labels == 0)] = k + 1
    image = scene.colors[0][None, None].repeat(depth.shape[0], 0).repeat(depth.shape[1], 1)
    return dict(image=image, depth=depth, intrinsics=K, pose_c2w=pose, instance_ids=labels)


def _run_keyframes(scene, rng, repeats: int, run_untrained: bool = False) -> dict[str, np.ndarray]:
    from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline

    pipe = MoonSeg3RPipeline(_config(run_untrained))
    _prefill(pipe, scene, rng)
    inputs = _keyframe_inputs(scene, rng)
    image = inputs.pop("image")
    timings: dict[str, list[float]] = {name: [] for name in STAGES + ("total",)}
    for k in range(repeats + 1):
        result = pipe.step(image, float(k), **inputs)
        if result.skipped:
            raise RuntimeError(f"benchmark keyframe skipped: {result.skipped_reason}")
        if k == 0:
            continue  # warm-up (lifter construction, caches)
        for name in timings:
            timings[name].append(result.timings.get(name, 0.0) * 1e3)
    info = (f"{len(pipe.instance_map):,} map points, {len(pipe.bank)} instances, {result.num_masks} masks, "
            f"refinement '{pipe.refinement_mode}'")
    pipe.close()
    out = {name: np.asarray(v) for name, v in timings.items()}
    out["_info"] = info  # type: ignore[assignment]
    out["_points"], out["_instances"] = len(pipe.instance_map), len(pipe.bank)  # type: ignore[assignment]
    return out


def _print_stages(title: str, timings: dict) -> float:
    print(f"{title}: {timings['_info']}")
    for name in STAGES + ("total",):
        ms = timings[name]
        note = "" if name in NON_NETWORK or name == "total" else "   (not in the target sum)"
        print(f"  {name:<12s} median {np.median(ms):8.2f} ms   p95 {np.percentile(ms, 95):8.2f} ms{note}")
    non_network = sum(float(np.median(timings[n])) for n in NON_NETWORK)
    print(f"  non-network keyframe stages (masks+lifting+memory+refinement+association+map_update): "
          f"{non_network:.1f} ms   peak RSS {peak_rss_mib():.0f} MiB")
    return non_network


def keyframe_benchmark(repeats: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scene = make_scene(rng)
    _print_stages("keyframe 640x480, identity refinement", _run_keyframes(scene, rng, repeats))
    untrained = _run_keyframes(scene, rng, repeats, run_untrained=True)
    print(f"  untrained 3-layer decoder (network, for reference): median "
          f"{np.median(untrained['refinement']):.1f} ms")


def scene_for(num_objects: int, map_points: int, rng: np.random.Generator, voxel: float = 0.02,
              side: float = 0.3):
    """A bench_map scene whose fused map has about `map_points` voxels (floor + num_objects cubes)."""
    per_object = 6 * int(round(side / voxel)) ** 2  # surface voxels of one cube
    floor = max(map_points - num_objects * per_object, 10_000)
    room = max(float(np.sqrt(floor)) * voxel, 2 * side + 0.5)
    return make_scene(rng, num_objects=num_objects, room=room, side=side)


def growth_benchmark(repeats: int, seed: int) -> None:
    """Two sweeps: instances 50/200/500 at ~1M map points, map points 100k/500k/1M at 50 instances."""
    print("growth (median ms per stage; 100 masks each):")
    header = "  ".join(f"{n:>11s}" for n in NON_NETWORK)
    print(f"  {'instances':>9s} {'map points':>10s}  {header}  {'sum':>6s}")
    for num_objects, map_points in ((50, 1_000_000), (200, 1_000_000), (500, 1_000_000),
                                    (50, 100_000), (50, 500_000)):
        rng = np.random.default_rng(seed)
        t = _run_keyframes(scene_for(num_objects, map_points, rng), rng, repeats)
        stages = "  ".join(f"{np.median(t[n]):11.2f}" for n in NON_NETWORK)
        total = sum(float(np.median(t[n])) for n in NON_NETWORK)
        print(f"  {t['_instances']:9d} {t['_points']:10,d}  {stages}  {total:6.1f}")


def stream_benchmark(frames: int, seed: int, views: int = 60, report_every: int = 500) -> None:
    rng = np.random.default_rng(seed)
    scene = make_scene(rng, num_objects=200, room=5.0, spacing=0.015)
    rendered = []
    for v in range(views):
        angle = 2 * np.pi * v / views
        pose = look_at(np.array([2.5 + 3 * np.cos(angle), 2.5 + 3 * np.sin(angle), 1.5]), np.array([2.5, 2.5, 0.0]))
        _, depth, id_map = render(scene.points, scene.ids, pose)
        rendered.append((pose, depth, id_map))
    image = np.full(rendered[0][1].shape + (3,), 128, np.uint8)
    from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline

    pipe = MoonSeg3RPipeline(_config(keyframe_interval=10))
    print(f"stream: {frames} frames of a bounded scene ({views} views replayed), keyframe every 10")
    start = time.perf_counter()
    for frame in range(frames):
        pose, depth, id_map = rendered[frame % views]
        pipe.step(image, frame / 30.0, depth=depth, intrinsics=K, pose_c2w=pose, instance_ids=id_map)
        if (frame + 1) % report_every == 0 or frame == 0:
            print(f"  frame {frame + 1:5d}: RSS {rss_mib():7.1f} MiB  map {len(pipe.instance_map):8,} points  "
                  f"memory {len(pipe.memory):7,} cells  bank {len(pipe.bank):4d}  "
                  f"{(time.perf_counter() - start) / (frame + 1) * 1e3:6.2f} ms/frame")
    print(f"  stats: {pipe.stats}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="moonseg3r bench pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 avoids pool overhead on "
                                                               "the tiny products of these stages)")
    parser.add_argument("--no-growth", action="store_true")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    keyframe_benchmark(args.repeats, args.seed)
    if not args.no_growth:
        growth_benchmark(max(3, args.repeats // 2), args.seed)
    if args.frames > 0:
        stream_benchmark(args.frames, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

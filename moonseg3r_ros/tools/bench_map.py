"""Benchmark of the non-network map stages: memory retrieval/update, association, instance-map fusion.

Scale (the issue's): one 640x480 keyframe, 100 masks, 500 map instances, ~1M fused map points, CUT3R-like
state attention (768 state tokens on a 24x32 patch grid), queries of width 256. Then a long stream of a
bounded scene (re-observed from an orbit of poses) printing resident memory at intervals: memory must stay
flat because map and memory are bounded by the scene, not the number of frames.

    python -m moonseg3r_ros.tools.bench_map [--repeats 20] [--frames 5000] [--seed 0]
"""
from __future__ import annotations

import argparse
import resource
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from moonseg3r_ros.core.camera import look_at, pinhole, project_points
from moonseg3r_ros.core.config import MapConfig

HEIGHT, WIDTH = 480, 640
K = pinhole(500.0, WIDTH, HEIGHT)


@dataclass
class Scene:
    points: np.ndarray  # Nx3 float32 surface samples
    ids: np.ndarray  # N int32 (0 = floor)
    colors: np.ndarray  # Nx3 uint8


def make_scene(rng: np.random.Generator, num_objects: int = 500, room: float = 10.0, side: float = 0.3,
               spacing: float = 0.01) -> Scene:
    """A floor (room x room) with num_objects cube surfaces of the given side; samples every `spacing`."""
    g = np.arange(0.0, room, spacing)
    fx, fy = np.meshgrid(g, g, indexing="ij")
    floor = np.stack([fx.ravel(), fy.ravel(), np.zeros(fx.size)], axis=1)
    face = np.arange(0.0, side, spacing)
    a, b = [m.ravel() for m in np.meshgrid(face, face, indexing="ij")]
    zero, full = np.zeros_like(a), np.full_like(a, side)
    cube = np.concatenate([np.stack(c, 1) for c in ((a, b, zero), (a, b, full), (a, zero, b), (a, full, b),
                                                    (zero, a, b), (full, a, b))])
    origins = np.c_[rng.uniform(0.2, room - 0.2 - side, (num_objects, 2)), rng.uniform(0.0, 1.5, num_objects)]
    objects = (cube[None] + origins[:, None]).reshape(-1, 3)
    points = np.concatenate([floor, objects]).astype(np.float32)
    ids = np.r_[np.zeros(len(floor)), np.repeat(np.arange(1, num_objects + 1), len(cube))].astype(np.int32)
    palette = rng.integers(0, 256, (num_objects + 1, 3)).astype(np.uint8)
    return Scene(points, ids, palette[ids])


def render(points: np.ndarray, ids: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffer points into the 640x480 view: (pointmap HxWx3 world, depth HxW (0 = none), ids HxW)."""
    u, v, z = project_points(points, pose, K)
    front = z > 0.05
    u = np.floor(u[front] + 0.5).astype(np.int64)
    v = np.floor(v[front] + 0.5).astype(np.int64)
    idx = np.flatnonzero(front)
    inside = (u >= 0) & (u < WIDTH) & (v >= 0) & (v < HEIGHT)
    idx, pix, zz = idx[inside], (v * WIDTH + u)[inside], z[idx[inside]]
    order = np.lexsort((zz, pix))
    first = order[np.r_[True, pix[order][1:] != pix[order][:-1]]]
    depth = np.zeros(HEIGHT * WIDTH, np.float32)
    pointmap = np.zeros((HEIGHT * WIDTH, 3), np.float32)
    id_map = np.zeros(HEIGHT * WIDTH, np.int32)
    depth[pix[first]] = zz[first]
    pointmap[pix[first]] = points[idx[first]]
    id_map[pix[first]] = ids[idx[first]]
    return pointmap.reshape(HEIGHT, WIDTH, 3), depth.reshape(HEIGHT, WIDTH), id_map.reshape(HEIGHT, WIDTH)


def masks_from_ids(id_map: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """count NxHxW masks: the largest visible instances, padded with random rectangles; and their ids."""
    ids, areas = np.unique(id_map[id_map > 0], return_counts=True)
    chosen = ids[np.argsort(-areas)][:count]
    masks = np.zeros((count, HEIGHT, WIDTH), bool)
    masks[: chosen.size] = id_map[None] == chosen[:, None, None]
    for k in range(chosen.size, count):
        r, c = rng.integers(0, HEIGHT - 40), rng.integers(0, WIDTH - 40)
        masks[k, r:r + 40, c:c + 40] = True
    return masks, np.r_[chosen, np.zeros(count - chosen.size, np.int64)].astype(np.int32)


def timed(fn: Callable[[], object], repeats: int) -> np.ndarray:
    """Run fn repeats times; return the durations in ms."""
    out = np.empty(repeats)
    for k in range(repeats):
        start = time.perf_counter()
        fn()
        out[k] = (time.perf_counter() - start) * 1e3
    return out


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def report(name: str, ms: np.ndarray) -> float:
    median = float(np.median(ms))
    print(f"  {name:<44s} median {median:8.2f} ms   p95 {np.percentile(ms, 95):8.2f} ms")
    return median


def keyframe_benchmark(repeats: int, rng: np.random.Generator, dim: int = 256, num_state: int = 768) -> None:
    # the map stages load torch: imported here, after the arguments are parsed (`--help` stays fast)
    from moonseg3r_ros.core.association import match_to_map, merge_within_frame, state_distribution_tokens
    from moonseg3r_ros.core.instance_map import InstanceMap
    from moonseg3r_ros.core.query_bank import QueryBank
    from moonseg3r_ros.core.query_memory import QueryIndexMemory

    scene = make_scene(rng)
    instance_map = InstanceMap(MapConfig(voxel_size=0.02))
    instance_map.integrate(scene.points, scene.colors, scene.ids, 0.0)
    memory = QueryIndexMemory(voxel_size=0.05, occlusion_tolerance=0.1)
    memory.update(scene.points, scene.ids)
    bank = QueryBank(dim=dim, window=20)
    num_inst = int(scene.ids.max())
    inst_q = rng.normal(size=(num_inst, dim)).astype(np.float32)
    inst_t = rng.dirichlet(np.ones(num_state), num_inst).astype(np.float32)
    records = {r.id: r for r in instance_map.instances()}
    inst_boxes = np.stack([[records[i].bbox_min, records[i].bbox_max] for i in range(1, num_inst + 1)])
    bank.upsert(range(1, num_inst + 1), inst_q, inst_boxes, tokens=inst_t)
    print(f"scene: {len(instance_map):,} map voxels (2 cm), {len(memory):,} memory cells (5 cm), "
          f"{len(instance_map.instances())} instances")

    pose = look_at(np.array([5.0, -1.0, 2.0]), np.array([5.0, 4.0, 0.0]))
    pointmap, depth, id_map = render(scene.points, scene.ids, pose)
    valid = depth > 0
    masks, mask_ids = masks_from_ids(id_map, 100, rng)
    attention = rng.dirichlet(np.ones(24 * 32), num_state).astype(np.float32).reshape(num_state, 24, 32)
    frame_q = np.where(mask_ids[:, None] > 0, inst_q[np.maximum(mask_ids, 1) - 1], 0) \
        + rng.normal(0, 0.3, (100, dim)).astype(np.float32)
    frame_boxes = np.stack([[pointmap[m & valid].min(0), pointmap[m & valid].max(0)] if (m & valid).any()
                            else np.zeros((2, 3), np.float32) for m in masks])
    pixel_ids = np.zeros((HEIGHT, WIDTH), np.int32)
    for k, m in enumerate(masks):
        pixel_ids[m] = mask_ids[k]
    frame_points, frame_ids = pointmap[valid], pixel_ids[valid]
    print(f"keyframe: {HEIGHT}x{WIDTH}, {int(valid.sum()):,} valid pixels, 100 masks, "
          f"{int((mask_ids > 0).sum())} on visible instances")

    medians: dict[str, float] = {}
    view = memory.retrieve(pose, K, HEIGHT, WIDTH, depth_map=depth, max_ids=256, with_raster=True)
    print(f"  memory sees {view.ids.size} instances")
    medians["retrieve"] = report("memory.retrieve (depth test + raster)", timed(
        lambda: memory.retrieve(pose, K, HEIGHT, WIDTH, depth_map=depth, max_ids=256, with_raster=True), repeats))
    tokens = state_distribution_tokens(attention, masks)
    medians["tokens"] = report("state_distribution_tokens 100x480x640 -> 768", timed(
        lambda: state_distribution_tokens(attention, masks), repeats))
    medians["merge"] = report("merge_within_frame (100 masks)", timed(
        lambda: merge_within_frame(frame_q, frame_boxes, 0.8, 0.05), repeats))
    map_q, map_t, map_b, _ = bank.get(range(1, num_inst + 1))
    medians["bank_get"] = report("QueryBank.get (500 ids)", timed(lambda: bank.get(range(1, num_inst + 1)), repeats))
    medians["match"] = report("match_to_map 100 x 500 (Hungarian)", timed(
        lambda: match_to_map(frame_q, tokens, frame_boxes, map_q, map_t, map_b, 1.8,
                             map_ids=np.arange(1, num_inst + 1)), repeats))
    medians["memory_update"] = report(f"memory.update ({len(frame_points):,} points)", timed(
        lambda: memory.update(frame_points, frame_ids), repeats))
    colors = rng.integers(0, 256, (len(frame_points), 3)).astype(np.uint8)
    medians["map_integrate"] = report(f"map.integrate keyframe ({len(frame_points):,} points)", timed(
        lambda: instance_map.integrate(frame_points, colors, frame_ids, 1.0), repeats))
    sub = rng.choice(len(frame_points), 50_000, replace=False)
    report("map.integrate 50,000 points", timed(
        lambda: instance_map.integrate(frame_points[sub], colors[sub], frame_ids[sub], 1.0), repeats))
    full = rng.choice(len(frame_points), HEIGHT * WIDTH)
    report("map.integrate 307,200 points (every pixel)", timed(
        lambda: instance_map.integrate(frame_points[full], colors[full], frame_ids[full], 1.0), repeats))
    medians["instances"] = report("map.instances (500 records)", timed(instance_map.instances, repeats))
    print(f"  sum of keyframe stage medians: {sum(medians.values()):.1f} ms "
          f"({', '.join(medians)})")
    print(f"  map {len(instance_map):,} voxels = {instance_map.nbytes / 2**20:.1f} MiB, "
          f"memory {len(memory):,} cells = {memory.nbytes / 2**20:.1f} MiB; peak RSS {peak_rss_mib():.0f} MiB")


def stream_benchmark(frames: int, rng: np.random.Generator, keyframe_interval: int = 10,
                     report_every: int = 500, points_per_frame: int = 20_000) -> None:
    """Re-observe a bounded scene (200 objects in a 5 m room) for `frames` frames; print RSS and sizes."""
    from moonseg3r_ros.core.instance_map import InstanceMap
    from moonseg3r_ros.core.query_bank import QueryBank
    from moonseg3r_ros.core.query_memory import QueryIndexMemory

    scene = make_scene(rng, num_objects=200, room=5.0, spacing=0.015)
    instance_map = InstanceMap(MapConfig(voxel_size=0.02))
    memory = QueryIndexMemory(voxel_size=0.05)
    bank = QueryBank(dim=64)
    print(f"stream: {frames} frames, {points_per_frame:,} points each, keyframe every {keyframe_interval}")
    start = time.perf_counter()
    for frame in range(frames):
        pick = rng.integers(0, len(scene.points), points_per_frame)
        pts = scene.points[pick] + rng.normal(0, 0.003, (points_per_frame, 3)).astype(np.float32)
        ids = scene.ids[pick]
        instance_map.integrate(pts, scene.colors[pick], ids, float(frame) / 30.0)
        if frame % keyframe_interval == 0:
            angle = 2 * np.pi * frame / 600.0
            pose = look_at(np.array([2.5 + 3 * np.cos(angle), 2.5 + 3 * np.sin(angle), 1.5]),
                           np.array([2.5, 2.5, 0.0]))
            view = memory.retrieve(pose, K, HEIGHT, WIDTH)
            memory.update(pts, ids)
            seen = np.unique(ids[ids > 0])
            bank.upsert(seen, rng.normal(size=(seen.size, 64)), np.zeros((seen.size, 2, 3)))
            del view
        if (frame + 1) % report_every == 0 or frame in (0, frames - 1):  # the last frame: the result
            print(f"  frame {frame + 1:5d}: RSS {rss_mib():7.1f} MiB  map {len(instance_map):8,} voxels  "
                  f"memory {len(memory):7,} cells  bank {len(bank):4d}  "
                  f"{(time.perf_counter() - start) / (frame + 1) * 1e3:6.2f} ms/frame")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="moonseg3r bench map", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    keyframe_benchmark(args.repeats, rng)
    if args.frames > 0:
        stream_benchmark(args.frames, rng)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

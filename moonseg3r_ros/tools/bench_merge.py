"""Latency of the intra-frame merge evidence (core/merge_evidence.py) on 640x480 keyframes with ~100 masks
(a benchmark that prints figures, not a test).

Renders `--frames` views of a realistic tabletop scene, cuts every ground-truth mask by a `--grid` x `--grid`
lattice (about 100-150 masks per view), then times `boundary_evidence` + `merge_allowed` `--repeats` times per
view and prints the median, p10-p90 and min/max milliseconds and the mean number of masks.

    python -m moonseg3r_ros.tools.bench_merge [--frames 3] [--repeats 5] [--grid 10]
"""
from __future__ import annotations

import argparse
import time
from typing import Optional

import numpy as np

from moonseg3r_ros.core import merge_evidence as me


def lattice_labels(instance_ids: np.ndarray, grid: int) -> np.ndarray:
    """HxW GT ids -> HxW labels 1..n: every id cut by a grid x grid lattice of the image."""
    h, w = instance_ids.shape
    cell = (np.arange(h)[:, None] * grid // h) * grid + (np.arange(w)[None, :] * grid // w)
    _, labels = np.unique(instance_ids.astype(np.int64) * grid * grid + cell, return_inverse=True)
    return labels.reshape(h, w).astype(np.int32) + 1


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_merge", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--grid", type=int, default=10)
    args = parser.parse_args(argv)
    from moonseg3r_ros.data.tabletop import TabletopSpec, generate_tabletop

    scene = generate_tabletop(TabletopSpec(seed=0, num_frames=args.frames, width=640, height=480))
    times, counts = [], []
    for frame in scene.frames:
        labels = lattice_labels(frame.instance_ids, args.grid)
        n = int(labels.max())
        k = frame.intrinsics
        counts.append(n)
        for _ in range(args.repeats):
            start = time.perf_counter()
            evidence = me.boundary_evidence(labels, n, frame.depth, frame.depth > 0, (k[0, 0], k[1, 1]))
            me.merge_allowed(evidence)
            times.append(1000 * (time.perf_counter() - start))
    t = np.array(times)
    print(f"merge evidence, 640x480, {np.mean(counts):.0f} masks: median {np.median(t):.1f} ms, "
          f"p10-p90 {np.percentile(t, 10):.1f}-{np.percentile(t, 90):.1f}, min {t.min():.1f}, max {t.max():.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Latency of the mask sources on 640x480 keyframes (a benchmark that prints figures, not a test).

Renders `--frames` views of a realistic scene (`--kind tabletop`, pybullet; or `primitives`), computes the
recorded geometry once per view, then times `generate(frame, geometry)` of each source `--repeats` times per
view. Prints per source: median, p10-p90 spread, min/max milliseconds per frame, the mean number of masks and
the 1-minute load average. Network sources (fastsam, sam2, sam) need a checkpoint, or `--random-networks` for
FastSAM-s / SAM 2 Hiera-tiny with random weights (the network's cost; random weights pass few masks through
the thresholds, so the mask post-processing is cheaper than with real weights).

    python -m moonseg3r_ros.tools.bench_masks [--frames 8] [--repeats 3] [--kind tabletop] [--threads 2]
    moonseg3r bench masks ...
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Optional

import numpy as np

from moonseg3r_ros.core.config import PipelineConfig

SOURCES = ("rgbd", "weight_free")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moonseg3r bench masks", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8, help="views of the scene (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per view and source (default 3)")
    parser.add_argument("--kind", default="tabletop", choices=("tabletop", "room", "primitives"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--threads", type=int, default=0, help="limit BLAS/OpenCV threads (0 = library default)")
    parser.add_argument("--sources", default=",".join(SOURCES), help=f"comma-separated (default {','.join(SOURCES)}; "
                        "also fastsam, sam2, sam with a checkpoint or --random-networks)")
    parser.add_argument("--fastsam-checkpoint", default="", help="masks.fastsam_checkpoint (FastSAM-s.pt / -x.pt)")
    parser.add_argument("--sam2-checkpoint", default="", help="masks.sam2_checkpoint (transformers-format folder)")
    parser.add_argument("--random-networks", action="store_true",
                        help="fastsam/sam2 without a checkpoint: FastSAM-s / SAM 2 Hiera-tiny with random weights")
    parser.add_argument("--device", default="cpu", help="device of the mask networks (default cpu)")
    return parser


def make_source(config: PipelineConfig, name: str, args: argparse.Namespace, device):
    """The mask source `name`; a random FastSAM-s / SAM 2 Hiera-tiny when --random-networks and no checkpoint."""
    from moonseg3r_ros.core.masks import make_mask_source

    config.masks.source = name
    config.masks.fastsam_checkpoint, config.masks.sam2_checkpoint = args.fastsam_checkpoint, args.sam2_checkpoint
    if args.random_networks and name == "fastsam" and not args.fastsam_checkpoint:
        from moonseg3r_ros.core.masks_fastsam import FastSamMasks, random_fastsam

        return FastSamMasks(config.masks, device, model=random_fastsam("s").to(device))
    if args.random_networks and name == "sam2" and not args.sam2_checkpoint:
        from moonseg3r_ros.core.masks_sam2 import Sam2Masks, random_sam2

        return Sam2Masks(config.masks, device, model=random_sam2().to(device))
    return make_mask_source(config, device)


def time_source(source, inputs: list, repeats: int) -> tuple[np.ndarray, float]:
    """-> (per-call milliseconds, mean masks per frame); one untimed warm-up call first."""
    source.generate(*inputs[0])
    times, counts = [], []
    for frame, geometry in inputs:
        for _ in range(repeats):
            start = time.perf_counter()
            masks = source.generate(frame, geometry)
            times.append((time.perf_counter() - start) * 1e3)
        counts.append(len(masks))
    return np.asarray(times), float(np.mean(counts))


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    import torch  # after parsing: `--help` loads no torch

    from moonseg3r_ros.core.geometry import make_geometry_source
    from moonseg3r_ros.data.scenes import make_scene

    if args.threads > 0:
        import cv2
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
        cv2.setNumThreads(args.threads)
        torch.set_num_threads(args.threads)
    scene = make_scene(args.kind, seed=args.seed, num_frames=args.frames, width=args.width, height=args.height)
    config = PipelineConfig()
    config.device = "cpu"
    geometry_source = make_geometry_source(config, torch.device("cpu"))
    inputs = [(frame, geometry_source.compute(frame)) for frame in scene.frames]
    print(f"{args.kind} scene seed {args.seed}: {len(inputs)} views {args.width}x{args.height}, "
          f"{args.repeats} runs each, threads {'default' if args.threads <= 0 else args.threads}")
    for name in args.sources.split(","):
        source = make_source(config, name, args, torch.device(args.device))
        ms, masks = time_source(source, inputs, args.repeats)
        print(f"  {name:<12s} median {np.median(ms):7.1f} ms   p10-p90 {np.percentile(ms, 10):7.1f}-"
              f"{np.percentile(ms, 90):7.1f} ms   min/max {ms.min():7.1f}/{ms.max():7.1f} ms   "
              f"{masks:5.1f} masks/frame   load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

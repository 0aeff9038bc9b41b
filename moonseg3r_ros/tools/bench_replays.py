"""`moonseg3r bench replays`: N consecutive replays of one small generated scene through the node; lost frames.

Each run is a full `moonseg3r replay` of a folder (a fresh node process, the input handshake, every frame
sent once). A frame is lost when it was sent but the node never processed it: not received, or received and
dropped (images_dropped, the replay's `drops`). Prints one line per run and the total, e.g. "lost frames:
0 of 400 in 20 replays" (issue 13's target: 0 in 50 replays).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="moonseg3r bench replays", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="consecutive replays (default 50)")
    parser.add_argument("--frames", type=int, default=8, help="frames of the scene (default 8)")
    parser.add_argument("--masks", default="ground_truth", help="mask source of the node (default ground_truth)")
    parser.add_argument("--out", default=None, help="folder for the scene and the runs (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.frames < 1:
        parser.error("--runs and --frames must be >= 1")
    from moonseg3r_ros.data.synthetic import SceneSpec, generate_scene
    from moonseg3r_ros.tools import replay as rp

    rp.ensure_ros_environment()
    with tempfile.TemporaryDirectory(prefix="moonseg3r_replays_") as tmp:
        root = Path(args.out or tmp)
        scene = generate_scene(SceneSpec(seed=3, num_frames=args.frames, width=160, height=120, num_objects=4))
        folder = scene.save(root / "scene", progress=False)
        opts = rp.ReplayOptions(masks=args.masks, progress=False)
        lost_total, sent_total, runs_with_loss = 0, 0, 0
        for run in range(args.runs):
            start = time.monotonic()
            result = rp.replay(rp.open_input(folder), root / f"run_{run:03d}", opts)
            stats = result.stats
            lost = stats["frames_sent"] - stats["frames_processed"]
            lost_total += lost
            sent_total += stats["frames_sent"]
            runs_with_loss += lost > 0
            print(f"run {run + 1:3d}/{args.runs}: sent {stats['frames_sent']}, processed "
                  f"{stats['frames_processed']}, lost {lost} (not received {stats['not_received']}, dropped "
                  f"{stats['drops'] - stats['not_received']}) in {time.monotonic() - start:.1f} s", flush=True)
    print(f"lost frames: {lost_total} of {sent_total} in {args.runs} replays ({runs_with_loss} runs lost any)")
    return 0 if lost_total == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

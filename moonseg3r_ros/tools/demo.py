"""`moonseg3r demo`: the embedded default, end to end, with nothing downloaded.

    moonseg3r demo --out DIR [--kind tabletop|room|primitives] [--frames N] [--seed 0]
                   [--masks rgbd|weight_free|ground_truth] [--cut3r-checkpoint P] [--sam-checkpoint P]

1. generates a scene with ground truth (RGB, depth, poses, per-vertex GT): by default the realistic
   `tabletop` kind (moonseg3r_ros.data.tabletop: pybullet renders of textured household meshes on a table
   and the floor, 80 frames); `--kind primitives` is the simple generator (moonseg3r_ros.data.synthetic:
   flat-coloured shapes, 100 frames),
2. writes it as a rosbag2 (DIR/bag, the same path a recorded bag takes); the realistic kinds first go
   through a ScanNet-style folder (DIR/scene: colour as JPEG quality 95, depth as millimetre PNGs) and the
   bag is written from that folder, as `moonseg3r generate` + `moonseg3r to-bag` would
   (`--color-format raw` sends the renderer's frames as they are, the primitives default),
3. replays the bag through the real moonseg3r node (moonseg3r_ros.tools.replay: node subprocess, DDS on
   localhost, no dropped frames) and saves the node's final map (DIR/replay/map.npz, map.ply, pred/),
4. evaluates the ScanNet-format predictions over the scene's vertices (class-agnostic AP/AP50/AP25),
5. writes DIR/metrics.json (keys ap, ap50, ap25, scenes, plus the run's details) and DIR/instance_map.png
   (prediction next to the ground truth), and prints the AP table and which parts stood in for CUT3R/SAM.

Without checkpoints the node runs the pipeline's no-download sources: recorded depth + pose instead of
CUT3R, and the weight-free RGB-D mask source (masks.source rgbd; or the ground-truth masks with --masks
ground_truth) instead of SAM.
With --cut3r-checkpoint / --sam-checkpoint the same command runs the monocular pipeline
(geometry.source=cut3r on the RGB images alone, masks.source=sam); the CUT3R map is then aligned to the GT
world by a similarity fitted on the camera centres before the evaluation.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Optional


from moonseg3r_ros.tools import replay as rp
from moonseg3r_ros.tools.replay.cli import check_out_folder

DEFAULT_KIND = "tabletop"
DEFAULT_FRAMES = {"tabletop": 80, "room": 80, "primitives": 100}
DEFAULT_COLOR_FORMAT = {"tabletop": "jpg", "room": "jpg", "primitives": "raw"}
DEFAULT_SIZE = (320, 240)
DEFAULT_KEYFRAME_INTERVAL = 5


def stand_in_statement(opts: rp.ReplayOptions) -> str:
    """Plain words on which parts ran and which stood in for CUT3R and SAM."""
    if opts.geometry == "cut3r":
        geometry = f"Geometry: CUT3R ({opts.cut3r_checkpoint}) on the RGB images alone."
    else:
        geometry = ("Geometry: recorded depth+pose (from the synthetic renderer) stood in for CUT3R "
                    "(set --cut3r-checkpoint PATH to run CUT3R on the RGB images alone).")
    if opts.masks == "sam":
        masks = f"Masks: SAM ({opts.sam_checkpoint})."
    elif opts.masks == "ground_truth":
        masks = ("Masks: ground-truth instance masks stood in for SAM "
                 "(set --sam-checkpoint PATH to use SAM).")
    elif opts.masks == "rgbd":
        masks = ("Masks: the RGB-D mask source (support planes, depth jumps, concave creases and colour; no learned "
                 "weights) stood in for SAM (set --sam-checkpoint PATH to use SAM).")
    elif opts.masks == "weight_free":
        masks = ("Masks: the weight-free mask source (colour and depth edges, no learned weights) stood in for SAM "
                 "(set --sam-checkpoint PATH to use SAM).")
    else:
        masks = f"Masks: mask source '{opts.masks}' (see masks.source in docs/node.md)."
    return f"{geometry}\n{masks}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moonseg3r demo",
        description="Generate a synthetic scene, replay it as a bag through the moonseg3r node, evaluate it "
                    "(AP/AP50/AP25) and render the instance map next to the ground truth.")
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--kind", choices=tuple(DEFAULT_FRAMES), default=DEFAULT_KIND,
                        help=f"scene generator (default {DEFAULT_KIND}; primitives = the simple one)")
    parser.add_argument("--frames", type=int, default=None,
                        help="frames (default " + ", ".join(f"{v} for {k}" for k, v in DEFAULT_FRAMES.items()) + ")")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    parser.add_argument("--width", type=int, default=DEFAULT_SIZE[0], help=f"image width (default {DEFAULT_SIZE[0]})")
    parser.add_argument("--height", type=int, default=DEFAULT_SIZE[1],
                        help=f"image height (default {DEFAULT_SIZE[1]})")
    parser.add_argument("--color-format", choices=("jpg", "raw"), default=None,
                        help="jpg: frames go through a ScanNet-style folder with JPEG colour (default for "
                             "tabletop/room); raw: the renderer's frames straight into the bag (primitives)")
    parser.add_argument("--objects", type=int, default=None,
                        help="primitives in the scene (default 6), or objects on the table (default from the seed)")
    rp.add_node_options(parser)
    parser.set_defaults(keyframe_interval=DEFAULT_KEYFRAME_INTERVAL)
    return parser


def run(args: argparse.Namespace) -> dict:
    from moonseg3r_ros.data.bag import BagError, write_bag
    from moonseg3r_ros.data.datasets import open_sequence
    from moonseg3r_ros.data.scenes import camera_check_line, make_scene
    from moonseg3r_ros.eval.scannet_ap import format_table
    from moonseg3r_ros.tools.render import render_map_file

    opts = rp.options_from_args(args)
    check_out_folder(args.out)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    frames = args.frames if args.frames is not None else DEFAULT_FRAMES[args.kind]
    try:
        scene = make_scene(args.kind, seed=args.seed, num_frames=frames, width=args.width, height=args.height,
                           objects=args.objects)
    except ValueError as err:
        raise rp.ReplayError(f"invalid scene settings: {err}") from None
    print(f"scene {scene.name} ({args.kind}): {frames} frames {args.width}x{args.height}, "
          f"{len(scene.objects)} GT instances, {len(scene.vertices)} GT vertices", flush=True)
    check = camera_check_line(scene)
    if check:
        print(check, flush=True)
    bag = out / "bag"
    if bag.exists():
        if not (bag / "metadata.yaml").is_file():
            raise rp.ReplayError(f"{bag} exists and is not a bag written by an earlier demo; remove it")
        shutil.rmtree(bag)
    color_format = args.color_format or DEFAULT_COLOR_FORMAT[args.kind]
    frames_in = scene.frames
    if color_format == "jpg":
        folder = out / "scene"
        if folder.exists():
            if not (folder / "meta.json").is_file():
                raise rp.ReplayError(f"{folder} exists and is not a scene written by an earlier demo; remove it")
            shutil.rmtree(folder)
        frames_in = open_sequence(scene.save(folder, image_format="jpg"))
    try:
        write_bag(frames_in, bag, depth=True, gt=True, progress=opts.progress, total=len(scene.frames))
    except BagError as err:
        raise rp.ReplayError(str(err)) from None
    generated = time.monotonic() - start
    source = rp.open_input(bag, scene=scene.name)
    source.vertices, source.gt_labels = scene.vertices, scene.vertex_labels
    source.gt_poses = {int(round(k / scene.spec.fps * 1e9)): scene.poses[k] for k in range(len(scene.poses))}
    result = rp.replay(source, out / "replay", opts)
    rp.print_summary(result, table=False)
    if result.metrics is None:
        raise rp.ReplayError("no evaluation: the replay produced no predictions")
    png = render_map_file(result.map_path, out / "instance_map.png", source.vertices, source.gt_labels,
                          title=_title(scene.name, result, opts), alignment=result.alignment)
    metrics = {
        "ap": result.metrics["ap"], "ap50": result.metrics["ap50"], "ap25": result.metrics["ap25"],
        "scenes": result.metrics["scenes"],
        "sources": {"geometry": opts.geometry, "masks": opts.masks},
        "kind": args.kind, "color_format": color_format,
        "frames": frames, "width": args.width, "height": args.height, "seed": args.seed,
        "keyframe_interval": opts.keyframe_interval, "instances": result.instances,
        "gt_instances": len(scene.objects),
        "seconds": {"generate_and_bag": round(generated, 2), "replay": round(result.seconds, 2),
                    "total": round(time.monotonic() - start, 2)},
        "replay": result.stats,
    }
    (out / "metrics.json").write_text(json.dumps(rp.json_safe(metrics), indent=2))
    print()
    print(format_table(result.metrics))
    print()
    print(stand_in_statement(opts))
    print(f"\nwrote {out / 'metrics.json'}, {png}, {result.ply_path} "
          f"({metrics['seconds']['total']:.1f} s in all)")
    return metrics


def _title(scene: str, result: rp.ReplayResult, opts: rp.ReplayOptions) -> str:
    m = result.metrics
    return (f"{scene}: geometry {opts.geometry}, masks {opts.masks} — AP {m['ap']:.3f}  AP50 {m['ap50']:.3f}  "
            f"AP25 {m['ap25']:.3f}")


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rp.ensure_ros_environment()
        run(args)
    except rp.ReplayError as err:
        print(f"moonseg3r demo: error: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        print(f"moonseg3r demo: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`moonseg3r replay` command line: options, the summary it prints, exit codes (0 done, 1 error)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from moonseg3r_ros.eval.scannet_ap import json_safe
from moonseg3r_ros.tools.replay.choices import GEOMETRY_SOURCES, MASK_SOURCES
from moonseg3r_ros.tools.replay.export import ReplayResult
from moonseg3r_ros.tools.replay.inputs import ReplayError, open_input

if TYPE_CHECKING:  # run.py loads the ROS side (and torch): imported only once the options are parsed
    from moonseg3r_ros.tools.replay.run import ReplayOptions

def add_node_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by replay and demo: sources, checkpoints and how the node is driven."""
    parser.add_argument("--geometry", choices=GEOMETRY_SOURCES, default=None,
                        help="geometry source (default: cut3r when --cut3r-checkpoint is given, else recorded)")
    parser.add_argument("--masks", choices=MASK_SOURCES, default=None,
                        help="mask source (default: sam when --sam-checkpoint is given, else rgbd)")
    parser.add_argument("--cut3r-checkpoint", default="", help="CUT3R checkpoint (.pth/.safetensors)")
    parser.add_argument("--sam-checkpoint", default="", help="segment-anything checkpoint (sam_vit_b_01ec64.pth, ...)")
    parser.add_argument("--keyframe-interval", type=int, default=None, help="node parameter keyframe_interval")
    parser.add_argument("--params-file", default=None, help="ROS parameter YAML for the node (overridden by the "
                        "options above)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="extra node parameter, e.g. -p map.voxel_size:=0.03 (repeatable)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="frames per second to send; 0 (default) = as fast as the node keeps up, no drops")
    parser.add_argument("--window", type=int, default=3, help="with --rate 0: frames in flight (default 3)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="fail when the node makes no progress for this many seconds (default 300)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def options_from_args(args: argparse.Namespace) -> ReplayOptions:
    from moonseg3r_ros.tools.replay.run import ReplayOptions

    from moonseg3r_ros.ros.node_process import parse_overrides

    try:
        extra = parse_overrides(args.param)
    except ValueError as err:
        raise ReplayError(str(err)) from None
    geometry = args.geometry or ("cut3r" if args.cut3r_checkpoint else "recorded")
    masks = args.masks or ("sam" if args.sam_checkpoint else "rgbd")
    for path, what in ((args.cut3r_checkpoint, "CUT3R checkpoint"), (args.sam_checkpoint, "SAM checkpoint")):
        if path and not Path(path).expanduser().is_file():
            raise ReplayError(f"{what} not found: {path}")
    if args.window < 1:
        raise ReplayError("--window must be >= 1")
    return ReplayOptions(geometry=geometry, masks=masks, cut3r_checkpoint=args.cut3r_checkpoint,
                         sam_checkpoint=args.sam_checkpoint, keyframe_interval=args.keyframe_interval,
                         params_file=args.params_file, extra_params=extra, rate=max(0.0, args.rate),
                         window=args.window, timeout=args.timeout, progress=not args.quiet)


def check_out_folder(out: str) -> None:
    """ReplayError when --out names an existing file (the outputs go into a folder)."""
    if Path(out).exists() and not Path(out).is_dir():
        raise ReplayError(f"--out {out} is a file; give a folder (it is created when missing)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moonseg3r replay",
        description="Replay a rosbag2 or a dataset folder (ScanNet/SceneNN layout) through the moonseg3r node "
                    "and write its final map: OUT/map.npz, OUT/map.ply and ScanNet predictions OUT/pred/.")
    parser.add_argument("input", help="rosbag2 folder (or .db3/.mcap) or sequence folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--scene", default=None, help="scene name for the ScanNet export (default: the --gt file's "
                        "name, else the input's name)")
    parser.add_argument("--vertices", default=None, help="mesh PLY whose vertices the ScanNet export covers "
                        "(default: the sequence folder's <scene>_vh_clean_2.ply)")
    parser.add_argument("--gt", default=None, help="per-vertex GT <scene>.txt to evaluate against "
                        "(default: the sequence folder's <scene>.txt)")
    add_node_options(parser)
    return parser


def print_summary(result: ReplayResult, table: bool = True) -> None:
    s = result.stats
    print(f"replayed {s['frames_sent']} frames in {result.seconds:.1f} s: {s['frames_processed']} processed "
          f"({s['keyframes']} keyframes), {s['frames_skipped']} skipped, {s['drops']} dropped; "
          f"{result.instances} instances")
    print(f"map: {result.map_path}  ply: {result.ply_path}" + (f"  predictions: {result.pred_dir}"
                                                                  if result.pred_dir else ""))
    if table and result.metrics is not None:
        from moonseg3r_ros.eval.scannet_ap import format_table

        print(format_table(result.metrics))


def render_picture(result: ReplayResult, source) -> Optional[Path]:
    """OUT/instance_map.png, the demo's picture (tools/render.py); None when matplotlib fails."""
    from moonseg3r_ros.tools.render import render_map_file

    try:
        return render_map_file(result.map_path, result.out / "instance_map.png", source.vertices, source.gt_labels,
                               title=f"{source.scene}: {result.instances} instances", alignment=result.alignment)
    except (ImportError, OSError, ValueError) as err:
        print(f"moonseg3r replay: warning: no picture: {err}", file=sys.stderr)
        return None


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        opts = options_from_args(args)
        check_out_folder(args.out)
        scene = args.scene or (Path(args.gt).stem if args.gt else None)
        source = open_input(args.input, scene)
        if args.vertices:
            from moonseg3r_ros.data.scannet_io import read_vertex_ply

            source.vertices = read_vertex_ply(Path(args.vertices))
        if args.gt:
            source.gt_labels = np.loadtxt(args.gt, dtype=np.int64).reshape(-1)
        if source.gt_labels is not None and source.vertices is not None \
                and len(source.gt_labels) != len(source.vertices):
            raise ReplayError(f"GT has {len(source.gt_labels)} values but the mesh {len(source.vertices)} vertices")
        from moonseg3r_ros.tools.replay.run import ensure_ros_environment, replay

        ensure_ros_environment()
        result = replay(source, args.out, opts)
    except ReplayError as err:
        print(f"moonseg3r replay: error: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        print(f"moonseg3r replay: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print_summary(result)
    picture = render_picture(result, source)
    if picture is not None:
        print(f"picture: {picture}")
    if result.pred_dir is None:
        print("moonseg3r replay: warning: no pred/ written: ScanNet predictions cover a mesh's vertices, and "
              f"{args.input} brings none (a bag holds no mesh); pass --vertices <scene>_vh_clean_2.ply and "
              "--gt <scene>.txt, or replay the sequence folder itself", file=sys.stderr)
    if result.metrics is not None:
        Path(args.out, "metrics.json").write_text(json.dumps(json_safe(result.metrics), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

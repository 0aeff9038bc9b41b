"""The `moonseg3r` command.

    moonseg3r generate --out DIR [--kind tabletop|room|primitives] [--seed S] [--scenes N] [--frames F] ...
    moonseg3r to-bag SEQUENCE --out BAG [--storage sqlite3|mcap] [--depth] [--gt]
    moonseg3r evaluate --gt GT_DIR --pred PRED_DIR [--json OUT] [--missing-as-empty]
    moonseg3r replay ... | demo ... | train ... | bench {cut3r,map,pipeline,node} ...

`replay`, `demo`, `train` and `bench` live in moonseg3r_ros.tools.*: their arguments are passed through
unchanged to that module's `main(argv)` (so `moonseg3r bench cut3r --help` shows the tool's own help).
Exit codes: 0 success, 1 bad data (missing/corrupt input), 2 usage errors or a tool that is not installed.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

DISPATCH = {
    "replay": "moonseg3r_ros.tools.replay",
    "demo": "moonseg3r_ros.tools.demo",
    "train": "moonseg3r_ros.training.main",
    "view": "moonseg3r_ros.tools.view",
}
BENCH = {
    "cut3r": "moonseg3r_ros.tools.bench_cut3r",
    "map": "moonseg3r_ros.tools.bench_map",
    "pipeline": "moonseg3r_ros.tools.bench_pipeline",
    "node": "moonseg3r_ros.tools.bench_node",
    "masks": "moonseg3r_ros.tools.bench_masks",
    "scenes": "moonseg3r_ros.tools.eval_scenes",
    "replays": "moonseg3r_ros.tools.bench_replays",
    "burst": "moonseg3r_ros.tools.bench_burst",
    "e2e": "moonseg3r_ros.tools.bench_e2e",
}
HELP = {
    "replay": "replay a sequence or bag through the MoonSeg3R node/pipeline (moonseg3r_ros.tools.replay)",
    "demo": "run the demo on the embedded default scene (moonseg3r_ros.tools.demo)",
    "train": "train the query refinement: lifter, decoder, pixel head (moonseg3r_ros.training)",
    "bench": "benchmarks: " + ", ".join(BENCH),
    "view": "a saved map (map.npz) as a Rerun recording .rrd, no ROS desktop needed (moonseg3r_ros.tools.view)",
}


class CliError(Exception):
    """A user-facing error with an exit code."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------------------------------
# generate / to-bag / evaluate


def cmd_generate(args: argparse.Namespace) -> int:
    from moonseg3r_ros.data.scenes import camera_check_line, make_scene

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file; give a folder (each scene goes to OUT/<scene name>/)", 2)
    for k in range(args.scenes):
        name = args.name if args.name and args.scenes == 1 else None
        try:
            scene = make_scene(args.kind, seed=args.seed + k, num_frames=args.frames, width=args.width,
                               height=args.height, objects=args.objects, name=name)
        except ValueError as e:
            raise CliError(str(e), 2) from None
        path = scene.save(out / scene.name, image_format=args.image_format, progress=not args.quiet)
        print(f"{path}  ({len(scene.frames)} frames, {len(scene.objects)} objects, {len(scene.vertices)} vertices)")
        check = camera_check_line(scene)
        if check:
            print(f"  {check}")
    return 0


def cmd_to_bag(args: argparse.Namespace) -> int:
    from moonseg3r_ros.data.bag import BagError, write_bag
    from moonseg3r_ros.data.datasets import DatasetError, open_sequence

    out = Path(args.out) if args.out else Path(str(Path(args.sequence).resolve()) + "_bag")
    try:
        seq = open_sequence(args.sequence)
        write_bag(seq, out, storage=args.storage, depth=args.depth, gt=args.gt, progress=not args.quiet,
                  total=len(seq))
    except (DatasetError, BagError, ValueError) as e:
        raise CliError(str(e)) from None
    print(f"{out}  ({len(seq)} frames, {args.storage})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from moonseg3r_ros.eval.scannet_ap import EvalError, evaluate, format_table, json_safe

    try:
        result = evaluate(args.gt, args.pred, missing_as_empty=args.missing_as_empty)
    except EvalError as e:
        raise CliError(str(e)) from None
    print(format_table(result))
    if result["missing_scenes"]:
        print(f"note: {len(result['missing_scenes'])} GT scene(s) without predictions were skipped: "
              f"{', '.join(result['missing_scenes'])}", file=sys.stderr)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(json_safe(result), indent=2))
    return 0


# ----------------------------------------------------------------------------------------------------
# Parser and dispatch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moonseg3r", description="MoonSeg3R: monocular online zero-shot 3D "
                                     "instance segmentation — data, evaluation and tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    gen = sub.add_parser("generate", help="write synthetic scene(s) as ScanNet-style folders",
                         description="Render synthetic indoor scene(s) with ground truth into OUT/<scene>/.")
    gen.add_argument("--out", required=True, help="output folder; each scene goes to OUT/<scene name>/")
    gen.add_argument("--seed", type=int, default=0, help="seed of the first scene (default 0)")
    gen.add_argument("--scenes", type=int, default=1, help="number of scenes, seeds seed..seed+N-1 (default 1)")
    gen.add_argument("--frames", type=int, default=100, help="frames per scene (default 100)")
    gen.add_argument("--width", type=int, default=320, help="image width (default 320)")
    gen.add_argument("--height", type=int, default=240, help="image height (default 240)")
    gen.add_argument("--kind", choices=("tabletop", "room", "primitives"), default="primitives",
                     help="primitives: coloured shapes on a floor (default); tabletop / room: pybullet renders "
                          "of textured household meshes on a table, the floor and a shelf (data/tabletop.py)")
    gen.add_argument("--objects", type=int, default=None,
                     help="primitives per scene (default 6), or objects on the table (default from the seed)")
    gen.add_argument("--name", default=None, help="scene name (single scene only; default <kind>_<seed>, "
                                                  "synthetic_<seed> for primitives)")
    gen.add_argument("--image-format", choices=("jpg", "png"), default="jpg",
                     help="colour image format: jpg like ScanNet (default) or png (lossless)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=cmd_generate)

    bag = sub.add_parser("to-bag", help="convert a sequence folder (ScanNet/SceneNN) to a ROS 2 bag",
                         description="Write a rosbag2 with /camera/image_raw, /camera/camera_info, /camera/pose, "
                                     "/tf and optionally depth and ground-truth instance ids.")
    bag.add_argument("sequence", help="sequence folder (ScanNet-style or SceneNN)")
    bag.add_argument("--out", default=None, help="output bag folder (default: <sequence>_bag; must not exist)")
    bag.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3", help="storage plugin")
    bag.add_argument("--depth", action="store_true", help="also write /camera/depth/image_raw (32FC1 metres)")
    bag.add_argument("--gt", action="store_true", help="also write /camera/instance_ids (16UC1)")
    bag.add_argument("--quiet", action="store_true", help="no progress bar")
    bag.set_defaults(func=cmd_to_bag)

    ev = sub.add_parser("evaluate", help="class-agnostic AP/AP50/AP25 (ScanNet protocol)",
                        description="Evaluate <scene>.txt predictions (ScanNet format) against per-vertex GT.")
    ev.add_argument("--gt", required=True, help="GT folder: <scene>.txt or <scene>/<scene>.txt files")
    ev.add_argument("--pred", required=True, help="prediction folder: <scene>.txt + mask files")
    ev.add_argument("--json", default=None, help="write the results as JSON (keys ap, ap50, ap25, scenes)")
    ev.add_argument("--missing-as-empty", action="store_true",
                    help="count GT scenes without a prediction file as empty predictions (default: skip)")
    ev.set_defaults(func=cmd_evaluate)

    for name, text in HELP.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


MISSING_TOOL_HINTS: dict = {}  # module name -> extra text for a tool missing from an installation


def _run_tool(module_name: str, argv: list[str], prog: str) -> int:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            print(f"moonseg3r: {module_name} is not available in this installation yet"
                  f"{MISSING_TOOL_HINTS.get(module_name, '')}", file=sys.stderr)
            return 2
        raise
    if not hasattr(module, "main"):
        print(f"moonseg3r: {module_name} has no main(argv)", file=sys.stderr)
        return 2
    program, sys.argv[0] = sys.argv[0], prog  # argparse's default prog: usage lines read `moonseg3r bench map`
    try:
        code = module.main(argv)
    finally:
        sys.argv[0] = program
    return int(code or 0)


def _dispatch(argv: list[str]) -> Optional[int]:
    """Run a pass-through subcommand, or None when argv is not one."""
    if not argv:
        return None
    if argv[0] in DISPATCH:
        return _run_tool(DISPATCH[argv[0]], argv[1:], f"moonseg3r {argv[0]}")
    if argv[0] == "bench":
        if len(argv) < 2 or argv[1] in ("-h", "--help"):
            print("usage: moonseg3r bench {" + ",".join(BENCH) + "} [ARGS...]\n\n" + HELP["bench"] +
                  "\nEach benchmark's own options: moonseg3r bench <name> --help")
            return 0 if len(argv) >= 2 else 2
        if argv[1] not in BENCH:
            print(f"moonseg3r bench: unknown benchmark {argv[1]!r}; choose from {', '.join(BENCH)}",
                  file=sys.stderr)
            return 2
        return _run_tool(BENCH[argv[1]], argv[2:], f"moonseg3r bench {argv[1]}")
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    dispatched = _dispatch(argv)
    if dispatched is not None:
        return dispatched
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except CliError as e:
        print(f"moonseg3r {args.command}: error: {e}", file=sys.stderr)
        return e.code
    except OSError as e:  # an output folder that cannot be created or written (read-only, no such parent)
        print(f"moonseg3r {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

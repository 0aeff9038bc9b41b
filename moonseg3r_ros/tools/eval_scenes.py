"""`moonseg3r bench scenes`: AP per generated scene and mask source, through the `make demo` path.

    moonseg3r bench scenes [--kind tabletop|room|primitives] [--seeds 0-4] [--frames 80]
                           [--masks ground_truth,weight_free,rgbd] [--out eval_scenes_out] [--json FILE]

For every seed and mask source it runs exactly what `moonseg3r demo` runs (generate the scene, write a
bag, replay it through the real node with recorded depth + pose, evaluate class-agnostic AP over the
scene's vertices) into OUT/<kind>_<seed>_<masks>/, then prints one table: AP / AP50 / AP25, the instances
found against the ground truth, the masks the intra-frame merge fused (of all masks) and each run's
seconds, with the mean per mask source. Nothing is downloaded; checkpoints are not used.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from moonseg3r_ros.tools import demo
from moonseg3r_ros.tools import replay as rp

MASK_SOURCES = ("ground_truth", "weight_free", "rgbd")


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '1,3,5' -> [1, 3, 5] (ranges and lists may be mixed)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part[1:]:
            lo, hi = part.split("-", 1) if not part.startswith("-") else (part, part)
            seeds += list(range(int(lo), int(hi) + 1))
        elif part:
            seeds.append(int(part))
    if not seeds:
        raise ValueError(f"no seeds in {text!r}")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moonseg3r bench scenes",
                                     description="AP per generated scene and mask source (the demo's path).")
    parser.add_argument("--kind", choices=tuple(demo.DEFAULT_FRAMES), default="tabletop")
    parser.add_argument("--seeds", default="0-4", help="seeds, e.g. 0-4 or 1,3,5 (default 0-4)")
    parser.add_argument("--frames", type=int, default=None, help="frames per scene (default: the demo's)")
    parser.add_argument("--width", type=int, default=demo.DEFAULT_SIZE[0])
    parser.add_argument("--height", type=int, default=demo.DEFAULT_SIZE[1])
    parser.add_argument("--masks", default=",".join(MASK_SOURCES),
                        help="comma-separated mask sources (default ground_truth,weight_free,rgbd)")
    parser.add_argument("--keyframe-interval", type=int, default=demo.DEFAULT_KEYFRAME_INTERVAL)
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="extra node parameter for every run (repeatable)")
    parser.add_argument("--out", default="eval_scenes_out", help="output folder (default eval_scenes_out)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    return parser


def run_one(args: argparse.Namespace, seed: int, masks: str) -> dict:
    """One demo run; returns its row of the table."""
    out = Path(args.out) / f"{args.kind}_{seed:04d}_{masks}"
    argv = ["--out", str(out), "--kind", args.kind, "--seed", str(seed), "--width", str(args.width),
            "--height", str(args.height), "--masks", masks, "--keyframe-interval", str(args.keyframe_interval),
            "--quiet"]
    if args.frames is not None:
        argv += ["--frames", str(args.frames)]
    for item in args.param:
        argv += ["--param", item]
    metrics = demo.run(demo.build_parser().parse_args(argv))
    pipeline = metrics["replay"].get("pipeline", {})
    return {"scene": next(iter(metrics["scenes"])), "seed": seed, "masks": masks, "ap": metrics["ap"],
            "ap50": metrics["ap50"], "ap25": metrics["ap25"], "instances": metrics["instances"],
            "gt_instances": metrics["gt_instances"], "masks_merged": pipeline.get("masks_merged"),
            "masks_total": pipeline.get("masks_total"), "seconds": metrics["seconds"]["total"]}


def format_rows(rows: list[dict]) -> str:
    head = f"{'scene':<16} {'masks':<13} {'AP':>6} {'AP50':>6} {'AP25':>6} {'inst/GT':>8} {'merged':>9} {'s':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        merged = f"{r['masks_merged']}/{r['masks_total']}" if r["masks_merged"] is not None else "-"
        lines.append(f"{r['scene']:<16} {r['masks']:<13} {r['ap']:6.3f} {r['ap50']:6.3f} {r['ap25']:6.3f} "
                     f"{r['instances']:>4}/{r['gt_instances']:<3} {merged:>9} {r['seconds']:6.1f}")
    lines.append("-" * len(head))
    for masks in dict.fromkeys(r["masks"] for r in rows):
        sel = [r for r in rows if r["masks"] == masks]
        mean = {k: sum(r[k] for r in sel) / len(sel) for k in ("ap", "ap50", "ap25", "seconds")}
        lines.append(f"{'mean of ' + str(len(sel)):<16} {masks:<13} {mean['ap']:6.3f} {mean['ap50']:6.3f} "
                     f"{mean['ap25']:6.3f} {'':>8} {'':>9} {mean['seconds']:6.1f}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        sources = [m.strip() for m in args.masks.split(",") if m.strip()]
        unknown = [m for m in sources if m not in MASK_SOURCES]
        if unknown:
            raise ValueError(f"unknown mask source(s) {unknown}; choose from {', '.join(MASK_SOURCES)}")
        rp.ensure_ros_environment()
    except (rp.ReplayError, ValueError) as err:
        print(f"moonseg3r bench scenes: error: {err}", file=sys.stderr)
        return 1
    rows, failed = [], []
    for seed in seeds:
        for masks in sources:
            try:  # one failed run (a node that did not start on a loaded machine) does not lose the others
                rows.append(run_one(args, seed, masks))
            except (rp.ReplayError, OSError) as err:
                failed.append({"seed": seed, "masks": masks, "error": str(err)})
                print(f"moonseg3r bench scenes: seed {seed} {masks} failed: {err}", file=sys.stderr, flush=True)
                continue
            print(f"[{len(rows) + len(failed)}/{len(seeds) * len(sources)}] {rows[-1]['scene']} {masks}: "
                  f"AP {rows[-1]['ap']:.3f} ({rows[-1]['seconds']:.1f} s)", flush=True)
    print()
    if rows:
        print(format_rows(rows))
    for f in failed:
        print(f"FAILED: seed {f['seed']} {f['masks']}: {f['error']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rp.json_safe({"rows": rows, "failed": failed}), indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m moonseg3r_ros.training.compare`: AP of refiner variants on held-out sequences, as a table.

    python -m moonseg3r_ros.training.compare --sequences 'data/val/*' \
        --set geometry.recorded_features=true \
        --variant identity=identity \
        --variant trained=train_out/refiner.safetensors \
        --variant "no context=train_noctx/refiner.safetensors,memory.max_contextual_queries=0" \
        [--json results.json]

Each variant is NAME=WEIGHTS[,name=value...]: WEIGHTS is a refiner file or `identity` (refinement.mode identity);
the optional name=value pairs are pipeline settings of that variant only (`--set` ones apply to all). Every
variant runs the real pipeline (training/evaluate.py) over the same sequences; AP/AP50/AP25 are over all of them.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import yaml


def parse_setting(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"setting '{text}' is not name=value")
    return name.strip(), yaml.safe_load(value)


def parse_variant(text: str) -> tuple[str, str, dict]:
    name, sep, rest = text.partition("=")
    if not sep:
        raise ValueError(f"variant '{text}' is not NAME=WEIGHTS[,name=value...]")
    weights, *settings = rest.split(",")
    return name.strip(), weights.strip(), dict(parse_setting(s) for s in settings if s.strip())


def run_variants(base: dict, variants: list[tuple[str, str, dict]], sequences: list[str], work: Path) -> list[dict]:
    from moonseg3r_ros.core.config import from_flat
    from moonseg3r_ros.training.evaluate import evaluate_weights

    rows = []
    for k, (name, weights, settings) in enumerate(variants):
        config = from_flat({**base, **settings})
        identity = weights == "identity"
        start = time.perf_counter()
        metrics = evaluate_weights(config, None if identity else weights, sequences, work / f"v{k}",
                                   mode="identity" if identity else "trained")
        scene_ap = {scene: float(values["ap"]) for scene, values in sorted(metrics["scenes"].items())}
        rows.append({"variant": name, "weights": weights, "settings": settings, "ap": metrics["ap"],
                     "ap50": metrics["ap50"], "ap25": metrics["ap25"], "scene_ap": scene_ap,
                     "mean_scene_ap": sum(scene_ap.values()) / max(len(scene_ap), 1),
                     "seconds": time.perf_counter() - start})
    return rows


def scene_record(row: dict, reference: dict) -> str:
    """'better/same/worse' scene counts of a row's per-scene AP against the reference row's (the first variant)."""
    pairs = [(row["scene_ap"][s], reference["scene_ap"][s]) for s in row["scene_ap"] if s in reference["scene_ap"]]
    better = sum(a > b + 1e-9 for a, b in pairs)
    worse = sum(a < b - 1e-9 for a, b in pairs)
    return f"{better}/{len(pairs) - better - worse}/{worse}"


def format_rows(rows: list[dict], scenes: int) -> str:
    """Markdown table: pooled AP/AP50/AP25 over all scenes, the mean of the per-scene APs, and per-scene
    better/same/worse counts against the first variant."""
    first = rows[0]["variant"] if rows else ""
    lines = [f"| variant ({scenes} scenes) | AP | AP50 | AP25 | mean scene AP | scenes vs {first} |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['ap']:.3f} | {r['ap50']:.3f} | {r['ap25']:.3f} | {r['mean_scene_ap']:.3f} | "
              f"{scene_record(r, rows[0])} |" for r in rows]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moonseg3r_ros.training.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", required=True, action="append", help="held-out sequence folders (glob)")
    parser.add_argument("--set", action="append", default=[], help="pipeline setting name=value for every variant")
    parser.add_argument("--variant", action="append", required=True, help="NAME=WEIGHTS[,name=value...]")
    parser.add_argument("--json", default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    import logging
    logging.getLogger("moonseg3r").setLevel(logging.ERROR)
    sequences = sorted(p for pattern in args.sequences for p in glob.glob(pattern))
    if not sequences:
        print("compare: no sequences match", file=sys.stderr)
        return 2
    base = {"device": "cpu", **dict(parse_setting(s) for s in args.set)}
    variants = [parse_variant(v) for v in args.variant]
    with tempfile.TemporaryDirectory() as work:
        rows = run_variants(base, variants, sequences, Path(work))
    print(format_rows(rows, len(sequences)))
    if args.json:
        Path(args.json).write_text(json.dumps({"sequences": sequences, "base": base, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

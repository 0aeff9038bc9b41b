"""`moonseg3r train --config FILE.yaml [--set SECTION.KEY=VALUE ...] [--out DIR] [--steps N] [--fresh] [--quiet]`.

See docs/training.md."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Optional


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moonseg3r train", description="Train MoonSeg3R's query refinement "
                                     "(lifter eta, decoder phi, pixel head psi) with L_seg + L_dist + L_xseg.")
    parser.add_argument("--config", required=True, help="training YAML (sections pipeline, data, model, loss, "
                                                         "optim, run; see docs/training.md)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one value of the YAML (repeatable; e.g. loss.dist_weight=0, "
                             "pipeline.masks.source=ground_truth)")
    parser.add_argument("--out", default=None, help="output folder (overrides run.out_dir)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (overrides optim.steps)")
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints in the output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from moonseg3r_ros.training.checkpoint import OutputFolderBusy, exclusive_output_folder
    from moonseg3r_ros.training.config import load_config
    from moonseg3r_ros.training.trainer import Trainer

    try:
        config = load_config(args.config, args.set)
    except (OSError, ValueError, KeyError) as err:
        print(f"moonseg3r train: error: {err}", file=sys.stderr)
        return 2
    if args.out:
        config.run.out_dir = args.out
    if args.steps is not None:
        config.optim.steps = args.steps
    if args.quiet:
        config.run.progress = False
    try:  # the output folder is locked before the (slow) data preparation
        with exclusive_output_folder(config.run.out_dir):
            try:
                trainer = Trainer(config)
            except (OSError, ValueError) as err:
                print(f"moonseg3r train: error: {err}", file=sys.stderr)
                return 1
            result = trainer.run(resume=not args.fresh, folder_locked=True)
    except OutputFolderBusy as err:
        print(f"moonseg3r train: error: {err}", file=sys.stderr)
        return 1
    print(f"weights: {result.weights}  ({result.steps} steps, {result.wall_s:.1f} s)")
    if result.evaluations:
        print(json.dumps(result.evaluations[-1], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

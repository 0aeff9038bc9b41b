"""Evaluation of refiner weights: the real pipeline over held-out sequences, class-agnostic AP / AP50 / AP25.

Each sequence (a folder with a mesh and per-vertex ground truth, e.g. from `moonseg3r generate`) is streamed
through `MoonSeg3RPipeline` (every frame: recorded depth, K and pose are passed, ground-truth ids for the
ground-truth mask source), the map is exported over the mesh vertices in the ScanNet format and scored by
eval/scannet_ap.py over all sequences together. `mode` 'identity' runs the same pipeline without the trained
refiner (the baseline of the comparison).
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Optional

import numpy as np

from moonseg3r_ros.core.config import PipelineConfig


def run_sequence(config: PipelineConfig, path: str):
    """Stream one sequence through a fresh pipeline -> (pipeline, sequence)."""
    from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline
    from moonseg3r_ros.data.datasets import open_sequence

    sequence = open_sequence(path)
    pipeline = MoonSeg3RPipeline(config)
    for frame in sequence:
        pipeline.step(frame.image, frame.stamp, depth=frame.depth, intrinsics=frame.intrinsics,
                      pose_c2w=frame.pose_c2w, instance_ids=frame.instance_ids)
    return pipeline, sequence


def evaluate_config(config: PipelineConfig, sequences: list[str], out_dir: str | Path) -> dict:
    """AP / AP50 / AP25 (and per-scene results) of `config` over the sequences; predictions under out_dir."""
    from moonseg3r_ros.eval.scannet_ap import evaluate

    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    pred, gt = out / "pred", out / "gt"
    gt.mkdir(parents=True)
    for path in sequences:
        pipeline, sequence = run_sequence(config, path)
        if sequence.vertices is None or sequence.vertex_labels is None:
            raise ValueError(f"evaluation sequence {path} has no mesh/ground truth "
                             "(<scene>_vh_clean_2.ply, <scene>.txt)")
        pipeline.instance_map.export_scannet(np.asarray(sequence.vertices, np.float64), pred, sequence.name)
        np.savetxt(gt / f"{sequence.name}.txt", np.asarray(sequence.vertex_labels, np.int64), fmt="%d")
        pipeline.close()
    return evaluate(gt, pred)


def evaluate_weights(config: PipelineConfig, weights: Optional[str], sequences: list[str], out_dir: str | Path,
                     mode: str = "trained") -> dict:
    """evaluate_config with refinement.mode `mode` and refinement.weights `weights`."""
    refinement = dataclasses.replace(config.refinement, mode=mode, weights=weights or "")
    return evaluate_config(dataclasses.replace(config, refinement=refinement), sequences, out_dir)

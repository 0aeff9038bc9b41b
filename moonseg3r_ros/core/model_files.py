"""The model files and folders a pipeline configuration needs, and one message naming those missing."""
from __future__ import annotations

from pathlib import Path

from moonseg3r_ros.core.config import PipelineConfig


def required_files(config: PipelineConfig) -> list[tuple[str, str]]:
    """(field name, path) of every model file or folder `config` needs (the path may be empty)."""
    needed = []
    if config.geometry.source == "cut3r":
        needed.append(("geometry.cut3r_checkpoint", config.geometry.cut3r_checkpoint))
    if config.masks.source == "sam":
        needed.append(("masks.sam_checkpoint", config.masks.sam_checkpoint))
    if config.masks.source == "fastsam":
        needed.append(("masks.fastsam_checkpoint", config.masks.fastsam_checkpoint))
    if config.masks.source == "sam2":
        needed.append(("masks.sam2_checkpoint", config.masks.sam2_checkpoint))
    if config.masks.source == "precomputed":
        needed.append(("masks.precomputed_dir", config.masks.precomputed_dir))
    if config.features.backbone == "dino":
        needed.append(("features.weights", config.features.weights))
    if config.refinement.weights:
        needed.append(("refinement.weights", config.refinement.weights))
    return needed


def missing_files(config: PipelineConfig) -> str:
    """One message naming every required file that is unset or absent ('' when all exist)."""
    problems = []
    for name, path in required_files(config):
        if not path:
            problems.append(f"'{name}' is empty but required by this configuration")
        elif not Path(path).expanduser().exists():
            problems.append(f"'{name}' = '{path}' does not exist")
    return "; ".join(problems)

"""Typed configuration of `moonseg3r train` and its YAML file.

YAML layout (every section optional; unknown keys are errors):
    pipeline:   {dotted PipelineConfig names: values}  the frozen sources and the feature configuration the
                weights are trained for (the same names as the node parameters, e.g. features.backbone: none)
    data:       DataConfig    (training/data.py)      train/val sequences, frame and clip strides, cache
    model:      ModelConfig   (training/model.py)     psi width, memory gradient, assignment rule
    loss:       LossConfig    (training/losses.py)    weights 1.0 / 0.1 / 0.5, BCE/Dice, point sampling
    optim:      OptimConfig   AdamW, cosine schedule lr -> lr_min, clipping, AMP (CUDA only)
    run:        RunConfig     output folder, seed, checkpoints, logging, evaluation
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from moonseg3r_ros.core.config import PipelineConfig, from_flat
from moonseg3r_ros.training.data import DataConfig
from moonseg3r_ros.training.losses import LossConfig
from moonseg3r_ros.training.model import ModelConfig


@dataclass
class OptimConfig:
    lr: float = 1e-4  # paper: 1e-4 -> 1e-5 cosine
    lr_min: float = 1e-5
    warmup_steps: int = 0  # linear warm-up from 0 before the cosine
    weight_decay: float = 0.05
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0  # max global gradient norm (0 = off)
    steps: int = 1000  # optimiser steps (0: epochs x clips / batch_clips)
    epochs: int = 0
    batch_clips: int = 1  # clips per step (paper: batch 4)
    amp: bool = True  # autocast on CUDA (never on the CPU)
    amp_dtype: str = "bfloat16"  # bfloat16 or float16 (float16 uses a GradScaler)


@dataclass
class RunConfig:
    out_dir: str = "train_out"
    seed: int = 0
    checkpoint_every: int = 100  # steps (0 = only at the end)
    keep_checkpoints: int = 2  # newest training checkpoints kept (0 = all)
    log_every: int = 1  # CSV rows every N steps
    eval_every: int = 0  # validation losses (+ pipeline AP when eval_ap) every N steps (0 = only at the end)
    eval_ap: bool = True  # run the real pipeline on data.val and log AP / AP50 / AP25
    weights_name: str = "refiner.safetensors"  # final weights in out_dir (what refinement.weights loads)
    progress: bool = True  # tqdm progress bar


@dataclass
class TrainConfig:
    pipeline: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def pipeline_config(self) -> PipelineConfig:
        return from_flat(dict(self.pipeline))


def _section(kind: type, values: Any, name: str):
    if values is None:
        return kind()
    if not isinstance(values, dict):
        raise ValueError(f"training config: section '{name}' must be a mapping")
    known = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"training config: unknown key(s) in '{name}': {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(known))})")
    out = kind()
    for key, value in values.items():
        default = getattr(out, key)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"training config: '{name}.{key}' must be true/false, got {value!r}")
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(default, int) and not isinstance(default, bool) and not (
                isinstance(value, int) and not isinstance(value, bool)):
            raise ValueError(f"training config: '{name}.{key}' must be an integer, got {value!r}")
        if isinstance(default, float) and not isinstance(value, float):
            raise ValueError(f"training config: '{name}.{key}' must be a number, got {value!r}")
        if isinstance(default, (str, list)) and not isinstance(value, type(default)):
            raise ValueError(f"training config: '{name}.{key}' must be a {type(default).__name__}, got {value!r}")
        setattr(out, key, value)
    return out


def from_dict(values: dict) -> TrainConfig:
    """Nested dict (the YAML) -> TrainConfig; ValueError/KeyError naming the bad key."""
    values = dict(values or {})
    sections = {"data": DataConfig, "model": ModelConfig, "loss": LossConfig, "optim": OptimConfig, "run": RunConfig}
    unknown = sorted(set(values) - set(sections) - {"pipeline"})
    if unknown:
        raise ValueError(f"training config: unknown section(s) {', '.join(unknown)}")
    config = TrainConfig(pipeline=dict(values.get("pipeline") or {}),
                         **{name: _section(kind, values.get(name), name) for name, kind in sections.items()})
    config.pipeline_config()  # validates the pipeline names and values now
    if config.optim.amp_dtype not in ("bfloat16", "float16"):
        raise ValueError("training config: optim.amp_dtype must be bfloat16 or float16")
    for name in ("frame_stride", "clip_length", "clip_stride"):
        if getattr(config.data, name) < 1:
            raise ValueError(f"training config: data.{name} must be >= 1")
    return config


def apply_override(values: dict, text: str) -> dict:
    """'section.key=value' (value read as YAML; for `pipeline` the key is the dotted pipeline name) -> values."""
    import yaml

    name, sep, value = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not key:
        raise ValueError(f"training config: override '{text}' is not section.key=value")
    values.setdefault(section, {})
    if not isinstance(values[section], dict):
        raise ValueError(f"training config: section '{section}' must be a mapping")
    values[section][key] = yaml.safe_load(value)
    return values


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """The YAML file, with each 'section.key=value' of `overrides` applied before validation."""
    import yaml

    values = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"training config: {path} is not a mapping")
    for text in overrides:
        apply_override(values, text)
    return from_dict(values)


def to_dict(config: TrainConfig) -> dict:
    return dataclasses.asdict(config)

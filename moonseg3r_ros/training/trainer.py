"""The training loop of `moonseg3r train` (ROS-free).

AdamW over eta, phi, psi (CUT3R and the 2D backbone only ever run under no_grad in training/data.py); learning
rate: linear warm-up for `warmup_steps`, then cosine from lr to lr_min over the remaining steps (`lr_at`, a pure
function of the step); autocast on CUDA only (bfloat16, or float16 with a GradScaler); global gradient-norm
clipping. Every `checkpoint_every` steps a checkpoint (training/checkpoint.py) allows an exact resume: a run of
2N steps and a run of N steps, saved, resumed for N more give the same losses and weights. Metrics go to
`<out>/metrics.csv` (and TensorBoard under `<out>/tensorboard` when the tensorboard package is installed);
validation losses (and, with run.eval_ap, the pipeline's AP on data.val) to `<out>/eval.csv`. The output,
`<out>/refiner.safetensors`, is what `refinement.weights` loads.
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from moonseg3r_ros.core.refiner_weights import feature_signature, save_refiner
from moonseg3r_ros.training import checkpoint as ckpt
from moonseg3r_ros.training.config import TrainConfig, to_dict
from moonseg3r_ros.training.data import (ClipSampler, FrameRecord, attach_lifter_inputs, clip_index, expand_paths,
                                         sequence_records)
from moonseg3r_ros.training.model import Refiner, plan_clip

LOGGER = logging.getLogger("moonseg3r")
LOSS_NAMES = ("total", "seg", "dist", "xseg", "assoc")


def lr_at(step: int, config) -> float:
    """Learning rate of optimiser step `step` (0-based) for OptimConfig `config` and its total steps."""
    total = max(int(config.steps), 1)
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(total - config.warmup_steps - 1, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    return config.lr_min + 0.5 * (config.lr - config.lr_min) * (1 + math.cos(math.pi * progress))


@dataclass
class TrainResult:
    weights: Path
    steps: int
    losses: list = field(default_factory=list)  # per step {name: float}
    evaluations: list = field(default_factory=list)
    wall_s: float = 0.0


class Trainer:
    """One training run (see the module docstring). `train_records`/`val_records` (lists of per-sequence record
    lists) skip the sources, for tests and for callers that prepared the data already."""

    def __init__(self, config: TrainConfig, train_records: Optional[list] = None,
                 val_records: Optional[list] = None):
        self.config = config
        self.pipeline_config = config.pipeline_config()
        self.out = Path(config.run.out_dir)
        from moonseg3r_ros.core.pipeline import resolve_device
        self.device = resolve_device(self.pipeline_config.device)
        self.train_records = train_records if train_records is not None else self._records(config.data.train)
        self.val_records = val_records if val_records is not None else self._records(config.data.val)
        first = next((r for seq in self.train_records for r in seq), None)
        if first is None:
            raise ValueError("training data: no usable frames in the training sequences")
        geometric_dim = 0 if first.features_3d is None else int(first.features_3d.shape[0])
        self.model = Refiner(self.pipeline_config, int(first.features_2d.shape[0]), geometric_dim,
                             config.model).to(self.device)
        for records in self.train_records + self.val_records:
            for record in records:
                if record.pooled_2d is None:
                    attach_lifter_inputs(record, self.model.lifter)
        self.clips = clip_index([len(s) for s in self.train_records], config.data.clip_length, config.data.clip_stride)
        self.val_clips = clip_index([len(s) for s in self.val_records], config.data.clip_length,
                                    config.data.clip_stride)
        self.total_steps = self._total_steps()
        optim = config.optim
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=optim.lr,
                                           betas=tuple(optim.betas), weight_decay=optim.weight_decay)
        self.generator = torch.Generator().manual_seed(config.run.seed)
        self.sampler = ClipSampler(len(self.clips), config.run.seed)
        self.use_amp = self.device.type == "cuda" and optim.amp
        self.amp_dtype = torch.bfloat16 if optim.amp_dtype == "bfloat16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp and self.amp_dtype == torch.float16 else None
        self._plans: dict = {}
        self.step = 0

    # ------------------------------------------------------------------------------------------ data
    def _records(self, patterns: list) -> list[list[FrameRecord]]:
        out = []
        for path in expand_paths(patterns) if patterns else []:
            records = sequence_records(path, self.pipeline_config, self.config.data)
            LOGGER.info("training data: %s -> %d frames", path, len(records))
            out.append(records)
        return out

    def _total_steps(self) -> int:
        optim = self.config.optim
        if optim.steps > 0:
            return optim.steps
        steps = optim.epochs * math.ceil(len(self.clips) / max(optim.batch_clips, 1))
        if steps <= 0:
            raise ValueError("training config: set optim.steps or optim.epochs")
        optim.steps = steps
        return steps

    def _clip(self, records: list, clips: list, index: int, key: str) -> tuple[list, list]:
        seq, start = clips[index]
        frames = records[seq][start:start + self.config.data.clip_length]
        plan_key = (key, seq, start)
        if plan_key not in self._plans:
            self._plans[plan_key] = plan_clip(frames, self.pipeline_config, self.config.model.assign_fraction)
        return frames, self._plans[plan_key]

    # ------------------------------------------------------------------------------------------ loop
    def _autocast(self):
        if self.use_amp:
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def train_step(self) -> dict[str, float]:
        """One optimiser step over batch_clips clips -> the step's losses (floats) and grad norm."""
        self.model.train()
        lr = lr_at(self.step, self.config.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        batch = max(self.config.optim.batch_clips, 1)
        sums = {name: 0.0 for name in LOSS_NAMES}
        for _ in range(batch):
            frames, plans = self._clip(self.train_records, self.clips, self.sampler.next(), "train")
            with self._autocast():
                losses = self.model.clip_losses(frames, plans, self.config.loss, self.generator)
            scaled = losses["total"] / batch
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            for name in LOSS_NAMES:
                sums[name] += float(losses[name].detach()) / batch
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.config.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.step += 1
        sums.update(lr=lr, grad_norm=float(norm))
        return sums

    @torch.no_grad()
    def validation_losses(self, seed: int = 12345) -> dict[str, float]:
        """Mean losses over every validation clip (fixed sampling seed: comparable between evaluations)."""
        if not self.val_clips:
            return {}
        self.model.eval()
        generator = torch.Generator().manual_seed(seed)
        sums = {name: 0.0 for name in LOSS_NAMES}
        for index in range(len(self.val_clips)):
            frames, plans = self._clip(self.val_records, self.val_clips, index, "val")
            losses = self.model.clip_losses(frames, plans, self.config.loss, generator)
            for name in LOSS_NAMES:
                sums[name] += float(losses[name]) / len(self.val_clips)
        return {f"val_{k}": v for k, v in sums.items()}

    def evaluate(self) -> dict:
        row = {"step": self.step, **self.validation_losses(), "ap": "", "ap50": "", "ap25": ""}
        if self.config.run.eval_ap and self.config.data.val:
            from moonseg3r_ros.training.evaluate import evaluate_weights

            weights = self.save_weights(self.out / "eval_weights.safetensors")
            metrics = evaluate_weights(self.pipeline_config, str(weights), expand_paths(self.config.data.val),
                                       self.out / "eval_pred")
            row.update(ap=metrics["ap"], ap50=metrics["ap50"], ap25=metrics["ap25"])
        return row

    # ------------------------------------------------------------------------------------------ files
    def save_weights(self, path: Optional[Path] = None) -> Path:
        model = self.model
        dims = {"dim": model.pixel_head.dim, "semantic_dim": model.pixel_head.semantic_dim,
                "geometric_dim": model.pixel_head.geometric_dim, "pixel_hidden": model.pixel_head.hidden,
                "num_layers": len(model.decoder.layers), "num_heads": self.pipeline_config.refinement.num_heads,
                "pos_frequencies": model.lifter.pos_frequencies,
                "pixel_pos_frequencies": model.pixel_head.pos_frequencies,
                "pixel_pos_scale": self.pipeline_config.features.pos_scale,
                "cosine_logits": model.pixel_head.cosine}
        training = {"steps": self.step, "seed": self.config.run.seed, "config": to_dict(self.config)}
        return save_refiner(path or self.out / self.config.run.weights_name,
                            {"lifter": model.lifter, "decoder": model.decoder, "pixel_head": model.pixel_head},
                            dims, feature_signature(self.pipeline_config), training)

    def save_checkpoint(self) -> Path:
        return ckpt.save_checkpoint(self.out, self.step, self.model, self.optimizer, self.generator,
                                    self.sampler.state(), self.scaler.state_dict() if self.scaler else None,
                                    keep=self.config.run.keep_checkpoints)

    def resume(self, json_path: Optional[Path] = None) -> bool:
        """Restore the latest (or the given) checkpoint; False when there is none."""
        if json_path is None:
            found = ckpt.list_checkpoints(self.out)
            if not found:
                return False
            json_path = found[-1]
        meta = ckpt.load_checkpoint(json_path, self.model, self.optimizer, self.generator)
        self.step = int(meta["step"])
        self.sampler = ClipSampler(len(self.clips), self.config.run.seed, **meta["sampler"])
        if self.scaler and meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        LOGGER.info("resumed from %s (step %d)", json_path, self.step)
        return True

    def run(self, resume: bool = True, folder_locked: bool = False) -> TrainResult:
        """Train to total_steps (resuming from the newest checkpoint when `resume`), then write the weights.

        Holds the output folder's lock (checkpoint.exclusive_output_folder; OutputFolderBusy when another
        training is writing it) unless the caller already holds it (`folder_locked`)."""
        if folder_locked:
            return self._run(resume)
        with ckpt.exclusive_output_folder(self.out):
            return self._run(resume)

    def _run(self, resume: bool) -> TrainResult:
        start = time.perf_counter()
        if resume:
            self.resume()
        (self.out / "train_config.json").write_text(json.dumps(to_dict(self.config), indent=1))
        log = MetricsLog(self.out, self.step)
        result = TrainResult(self.out / self.config.run.weights_name, self.total_steps)
        run = self.config.run
        if self.step == 0 and self.val_clips:  # the baseline every later validation row is compared with
            row = {"step": 0, **self.validation_losses(), "ap": "", "ap50": "", "ap25": ""}
            result.evaluations.append(log.write("eval", row))
        bar = _progress(self.total_steps, self.step, run.progress)
        while self.step < self.total_steps:
            losses = self.train_step()
            result.losses.append(losses)
            if run.log_every and self.step % run.log_every == 0:
                log.write("metrics", {"step": self.step, **losses})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses['total']:.4f}")
            if run.eval_every and self.step % run.eval_every == 0 and self.step < self.total_steps:
                result.evaluations.append(log.write("eval", self.evaluate()))
            if run.checkpoint_every and self.step % run.checkpoint_every == 0:
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        result.weights = self.save_weights()
        if not ckpt.list_checkpoints(self.out) or ckpt.list_checkpoints(self.out)[-1].stem != f"step_{self.step:08d}":
            self.save_checkpoint()
        result.evaluations.append(log.write("eval", self.evaluate()))
        log.close()
        result.wall_s = time.perf_counter() - start
        return result


def _progress(total: int, done: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="train", unit="step", dynamic_ncols=True)


class MetricsLog:
    """CSV files <out>/<name>.csv (rows after `resumed_step` from an earlier run are dropped) + TensorBoard."""

    def __init__(self, out: Path, resumed_step: int):
        self.out = out
        for name in ("metrics", "eval"):
            path = out / f"{name}.csv"
            if path.is_file():
                rows = [r for r in csv.DictReader(path.open()) if int(float(r["step"])) <= resumed_step]
                path.unlink()
                for row in rows:
                    self.write(name, row, tensorboard=False)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tensorboard = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            self.tensorboard = None

    def write(self, name: str, row: dict, tensorboard: bool = True) -> dict:
        path = self.out / f"{name}.csv"
        new = not path.is_file()
        fields = list(row)
        if not new:
            with path.open() as handle:
                fields = next(csv.reader(handle))
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        if tensorboard and self.tensorboard is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, float):
                    self.tensorboard.add_scalar(f"{name}/{key}", value, int(row["step"]))
        return row

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()

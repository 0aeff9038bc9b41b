"""Training checkpoints with exact resume, in safetensors + JSON (no pickle: loading never executes code).

`<out>/checkpoints/step_<N>.safetensors` holds every tensor:
    model.<name>                 the Refiner's state_dict (eta, phi, psi)
    optim.<param index>.<key>    AdamW's per-parameter state (step, exp_avg, exp_avg_sq)
    rng.torch                    torch's CPU RNG state; rng.sampling: the loss sampling generator's state;
    rng.cuda                     CUDA RNG state (when CUDA is used)
`<out>/checkpoints/step_<N>.json` holds the rest: step, the clip sampler's position (epoch, offset), the
optimiser's param_groups (lr, betas, ...), the GradScaler state, and run facts. The JSON is written after the
tensors, so a checkpoint counts only when both exist. The learning-rate schedule is a pure function of the
step (trainer.lr_at), so the step restores it exactly.

`<out>/train.lock` is held (flock) by the one training writing `<out>`: a second training on the same folder
would resume from and overwrite the first one's checkpoints, so it is refused (`OutputFolderBusy`).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Iterator, Optional

import torch

from moonseg3r_ros.core.atomic_files import replaced_atomically


class OutputFolderBusy(RuntimeError):
    """Another training holds the output folder's lock."""


@contextlib.contextmanager
def exclusive_output_folder(out_dir: str | Path) -> Iterator[Path]:
    """Hold `<out>/train.lock` for the block (released when the process ends, however it ends)."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / "train.lock"
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise OutputFolderBusy(f"another training is writing {folder} (process {holder}, lock {lock}); "
                                   "give this one another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield folder
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def save_checkpoint(out_dir: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, sampler_state: dict, scaler_state: Optional[dict] = None,
                    extra: Optional[dict] = None, keep: int = 0) -> Path:
    """Write step_<step>.{safetensors,json}; keep the newest `keep` checkpoints (0 = all). -> the JSON path."""
    from safetensors.torch import save_file

    folder = checkpoint_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state = optimizer.state_dict()
    scalars: dict = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.sampling"] = generator.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    stem = folder / f"step_{step:08d}"
    with replaced_atomically(stem.with_suffix(".safetensors")) as partial:
        save_file(tensors, str(partial))
    meta = {"step": step, "sampler": sampler_state, "param_groups": state["param_groups"],
            "optim_scalars": scalars, "scaler": scaler_state, "extra": extra or {}}
    with replaced_atomically(stem.with_suffix(".json")) as partial:
        partial.write_text(json.dumps(meta, indent=1, sort_keys=True))
    if keep > 0:
        for old in list_checkpoints(out_dir)[:-keep]:
            old.unlink(missing_ok=True)
            old.with_suffix(".safetensors").unlink(missing_ok=True)
    return stem.with_suffix(".json")


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints (JSON + tensors) in step order -> their JSON paths."""
    folder = checkpoint_dir(out_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("step_*.json") if p.with_suffix(".safetensors").is_file()]
    return sorted(found, key=lambda p: int(p.stem.split("_")[1]))


def load_checkpoint(json_path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator) -> dict:
    """Restore model, optimiser, RNG states from a checkpoint; returns its JSON (step, sampler, scaler, extra)."""
    from safetensors.torch import load_file

    json_path = Path(json_path)
    meta = json.loads(json_path.read_text())
    tensors = load_file(str(json_path.with_suffix(".safetensors")))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    per_param: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            per_param.setdefault(int(index), {})[name] = value
    for key, value in meta["optim_scalars"].items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    groups = meta["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.sampling"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta

"""Loading CUT3R weights: the official checkpoint (`cut3r_512_dpt_4_64.pth`, a dict with `model` and `args`),
a plain state_dict (.pth/.pt) or a safetensors file, onto CPU or GPU, with clear errors.

The official `.pth` pickles its training arguments (`args`, whose `model` string names the configuration).
It is read without running anything from the file (`core/untrusted_files.load_torch_file`: torch's
weights_only unpickler; `argparse.Namespace` allowed; objects of other classes become attribute records, never
imported; any call outside torch's allow-list is refused with CheckpointError "refused to read ...").
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from ..untrusted_files import RefusedFileError, load_torch_file
from .config import Cut3rConfig
from .modeling.cut3r import Cut3r


class CheckpointError(RuntimeError):
    """The file exists but is not a usable CUT3R checkpoint (corrupt, truncated, or another architecture)."""


# ----------------------------------------------------------------------------------------------- reading
def _find_model_string(obj: Any, depth: int = 0) -> Optional[str]:
    """The first string in `obj` (args namespace, config object, dict) that names ARCroco3DStereo."""
    if depth > 8:
        return None
    if isinstance(obj, str):
        return obj if "ARCroco3DStereo(" in obj else None
    if isinstance(obj, dict):
        values = list(obj.values())
        if "model" in obj:
            values.insert(0, obj["model"])
    elif isinstance(obj, (list, tuple)):
        values = list(obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        values = list(vars(obj).values())
        if "model" in vars(obj):
            values.insert(0, vars(obj)["model"])
    else:
        return None
    for value in values:
        found = _find_model_string(value, depth + 1)
        if found:
            return found
    return None


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], Optional[str]]:
    """(state_dict on CPU with any `module.` prefix stripped, official model string or None).

    Raises FileNotFoundError for a missing file and CheckpointError for an unreadable one.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"CUT3R checkpoint not found: {path} (download cut3r_512_dpt_4_64.pth from the "
                                "official CUT3R repository and pass its path)")
    model_string = None
    try:
        if _is_safetensors(path):
            from safetensors.torch import load_file
            obj = load_file(str(path), device="cpu")
        else:
            obj = load_torch_file(path)
    except RefusedFileError as error:
        raise CheckpointError(f"{error} (a CUT3R checkpoint holds tensors and its training arguments only)") \
            from None
    except Exception as error:  # truncated zip, bad header
        raise CheckpointError(f"could not read CUT3R checkpoint {path} ({path.stat().st_size} bytes): the file "
                              f"is truncated or corrupt ({type(error).__name__}: {error})") from error
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        model_string = _find_model_string(obj.get("args"))
        obj = obj["model"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state_dict (expected a dict of tensors, or a dict with 'model')")
    state = dict(obj)
    if all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state, model_string


# ----------------------------------------------------------------------------------------------- matching
def _complete(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official conventions: copy dec_blocks into dec_blocks_state when absent; fill alias keys (layer_rn.k)."""
    state = dict(state)
    if not any(key.startswith("dec_blocks_state.") for key in state):
        for key, value in list(state.items()):
            if key.startswith("dec_blocks."):
                state["dec_blocks_state." + key[len("dec_blocks."):]] = value
    for key in expected:
        if key not in state and ".scratch.layer_rn." in key:
            index = int(key.rsplit(".", 2)[-2])
            canonical = key.replace(f"layer_rn.{index}.", f"layer{index + 1}_rn.")
            if canonical in state:
                state[key] = state[canonical]
    return state


def check_state_dict(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], limit: int = 5) -> None:
    """Raise CheckpointError naming the first missing, unexpected and mis-shaped keys, if any."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatches, first: " + "; ".join(mismatched[:limit]))
    if missing:
        parts.append(f"{len(missing)} missing keys, first: " + ", ".join(missing[:limit]))
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys, first: " + ", ".join(unexpected[:limit]))
    raise CheckpointError("checkpoint does not match the CUT3R architecture: " + " | ".join(parts))


def load_checkpoint(path: str | Path, config: Optional[Cut3rConfig] = None, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> Cut3r:
    """Build a Cut3r from a checkpoint file, in eval mode on `device` with parameters in `dtype`.

    `config`: the architecture; when None it is read from the official file's `args.model` string, or the
    released 512 DPT configuration is assumed. The weights are assigned without first allocating a randomly
    initialised model (the model is built on the meta device), so peak memory is about one copy of the weights.
    """
    state, model_string = read_checkpoint(path)
    if config is None:
        config = Cut3rConfig.from_model_string(model_string) if model_string else Cut3rConfig.full_512()
    with torch.device("meta"):
        model = Cut3r(config)
    expected = model.state_dict()
    state = _complete(state, expected)
    check_state_dict(state, expected)
    converted: dict[int, torch.Tensor] = {}  # keep aliases shared
    ready = {}
    for key in expected:
        tensor = state[key]
        if id(tensor) not in converted:
            converted[id(tensor)] = tensor.to(device=device, dtype=dtype)
        ready[key] = converted[id(tensor)]
    model.load_state_dict(ready, strict=True, assign=True)
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()

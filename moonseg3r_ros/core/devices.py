"""Torch device selection from the configuration's device name."""
from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available else cpu; anything else is passed to torch.device (clear error)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"invalid device '{name}': {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but CUDA is not available (use 'auto' or 'cpu')")
    return device

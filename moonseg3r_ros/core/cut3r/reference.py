"""The CUT3R reference data (test/data/cut3r_reference, a copy of ../shared/cut3r_reference without
small_state_dict.pt): the weight formula of the small test model and a
loader that assembles that model from `small_state_dict.pt` plus the regenerated DPT adapter tensors.

Formula (README of the reference data), exact int64 on the C-order flat index i of each parameter:
    seed = crc32(name); x = (i*40503 + seed) & M; x = (x*1103515245 + 12345) & M; x ^= x >> 16;
    x = (x*1103515245 + 12345) & M; x ^= x >> 16; u = ((x >> 8) & 0xFFFF) - 32768     (M = 2**31 - 1)
    1-D '.weight': 1 + u*2**-18;  1-D '.bias': u*2**-19;  else u*2**(-15 - floor(log2(n/shape[0]))//2)
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .config import Cut3rConfig
from .modeling.cut3r import Cut3r

_MASK = (1 << 31) - 1
GENERATED_PREFIXES = ("downstream_head.dpt_self.", "downstream_head.dpt_cross.", "downstream_head.dpt_rgb.")


def formula_tensor(name: str, shape: Sequence[int]) -> torch.Tensor:
    """The reference weight formula for parameter `name` of `shape` (float32, exact)."""
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape)) if shape else 1
    seed = zlib.crc32(name.encode("utf-8")) & 0xFFFFFFFF
    x = np.arange(n, dtype=np.int64)
    x *= 40503
    x += seed
    x &= _MASK
    for _ in range(2):
        x *= 1103515245
        x += 12345
        x &= _MASK
        x ^= x >> 16
    u = ((x >> 8) & 0xFFFF) - 32768
    if len(shape) == 1 and name.endswith(".weight"):
        values = 1.0 + u * 2.0 ** -18
    elif len(shape) == 1 and name.endswith(".bias"):
        values = u * 2.0 ** -19
    else:
        fan_in = n // shape[0]
        k = int(math.floor(math.log2(fan_in)))
        values = u * 2.0 ** (-15 - k // 2)
    return torch.from_numpy(values.astype(np.float32).reshape(shape))


def load_reference_config(reference_dir: str | Path) -> tuple[Cut3rConfig, dict]:
    """(config, small_config.json contents)."""
    meta = json.loads((Path(reference_dir) / "small_config.json").read_text())
    return Cut3rConfig.from_official(meta["config"]), meta


def load_reference_model(reference_dir: str | Path) -> Cut3r:
    """The small reference model on CPU in float32, eval mode, with the stored plus regenerated weights.

    Without `small_state_dict.pt` (the copy kept in test/data/ leaves it out: every stored tensor equals
    the formula bit for bit) every tensor is regenerated."""
    config, _ = load_reference_config(reference_dir)
    model = Cut3r(config).eval()
    stored_path = Path(reference_dir) / "small_state_dict.pt"
    stored = torch.load(stored_path, map_location="cpu", weights_only=True) if stored_path.exists() else {}
    state = dict(stored)
    for name, param in model.named_parameters():  # canonical names only (aliases share these tensors)
        if name not in state and (not stored or name.startswith(GENERATED_PREFIXES)):
            state[name] = formula_tensor(name, param.shape)
    for name in model.state_dict():
        if name not in state and ".scratch.layer_rn." in name:  # alias keys -> canonical tensors
            index = int(name.rsplit(".", 2)[-2])
            state[name] = state[name.replace(f"layer_rn.{index}.", f"layer{index + 1}_rn.")]
    model.load_state_dict(state, strict=True)
    return model

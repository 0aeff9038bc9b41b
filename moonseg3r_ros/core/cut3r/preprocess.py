"""Preprocessing as the official CUT3R demo does it, and the mapping of outputs back to the input grid.

Official sizing for the 512 model: resize so that the long side is `long_side` (each side
round(side * long_side / long); LANCZOS when shrinking, BICUBIC when enlarging), then centre-crop to multiples
of 16 (half widths ((2*c)//16)*8); a square image is cropped to 4:3 landscape. Portrait stays portrait.
Pixels are normalised to [-1, 1] as (x/255 - 0.5)/0.5. No intrinsics are needed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch

from moonseg3r_ros.core.images import to_rgb8


@dataclass(frozen=True)
class PreprocessInfo:
    """How an input image became the model's input: input HxW -> resized HxW -> crop (top, left, height, width)."""

    input_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    crop_top: int
    crop_left: int
    crop_hw: tuple[int, int]


def official_geometry(height: int, width: int, long_side: int = 512, patch: int = 16,
                      square_ok: bool = False) -> PreprocessInfo:
    """The resize and centre crop the official loader applies to an HxW image."""
    scale = long_side / max(height, width)
    resized_w, resized_h = int(round(width * scale)), int(round(height * scale))
    cx, cy = resized_w // 2, resized_h // 2
    half_w = ((2 * cx) // patch) * (patch // 2)
    half_h = ((2 * cy) // patch) * (patch // 2)
    if not square_ok and resized_w == resized_h:
        half_h = ((3 * half_w // 4) // (patch // 2)) * (patch // 2)  # official 3/4 (192 at 512), kept a
        # multiple of the patch for other long sides
    if half_w < patch // 2 or half_h < patch // 2:
        raise ValueError(f"image {height}x{width} is too small for CUT3R at long side {long_side}")
    return PreprocessInfo((height, width), (resized_h, resized_w), cy - half_h, cx - half_w, (2 * half_h, 2 * half_w))


def preprocess_image(image: np.ndarray, long_side: int = 512, device: torch.device | str = "cpu",
                     square_ok: bool = False) -> tuple[torch.Tensor, PreprocessInfo]:
    """Any image `images.to_rgb8` accepts -> (1x3xhxw float32 in [-1, 1] on `device`, PreprocessInfo)."""
    rgb = to_rgb8(image)
    info = official_geometry(rgb.shape[0], rgb.shape[1], long_side, square_ok=square_ok)
    pil = PIL.Image.fromarray(rgb)
    if info.resized_hw != info.input_hw:
        shrinking = max(info.input_hw) > long_side
        resample = PIL.Image.Resampling.LANCZOS if shrinking else PIL.Image.Resampling.BICUBIC
        pil = pil.resize((info.resized_hw[1], info.resized_hw[0]), resample)
    top, left = info.crop_top, info.crop_left
    pil = pil.crop((left, top, left + info.crop_hw[1], top + info.crop_hw[0]))
    return normalise(np.asarray(pil), device), info


def normalise(rgb: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """HxWx3 uint8 -> 1x3xHxW float32 (x/255 - 0.5)/0.5, as the official ImgNorm."""
    tensor = torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).to(device)
    return tensor.permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)[None]


def input_grid_index(info: PreprocessInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every input pixel, the nearest model-grid pixel: (rows HxW, cols HxW, inside HxW bool)."""
    (in_h, in_w), (rs_h, rs_w) = info.input_hw, info.resized_hw
    ys = (np.arange(in_h) + 0.5) * rs_h / in_h - 0.5 - info.crop_top
    xs = (np.arange(in_w) + 0.5) * rs_w / in_w - 0.5 - info.crop_left
    rows, cols = np.rint(ys).astype(np.int64), np.rint(xs).astype(np.int64)
    inside_r = (rows >= 0) & (rows < info.crop_hw[0])
    inside_c = (cols >= 0) & (cols < info.crop_hw[1])
    rows, cols = np.clip(rows, 0, info.crop_hw[0] - 1), np.clip(cols, 0, info.crop_hw[1] - 1)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return rr, cc, np.logical_and.outer(inside_r, inside_c)


def to_input_grid(values: np.ndarray, info: PreprocessInfo, fill: float = np.nan) -> np.ndarray:
    """hxw[xC] map on the model grid -> HxW[xC] on the input grid (nearest; `fill` outside the crop)."""
    rows, cols, inside = input_grid_index(info)
    out = values[rows, cols].astype(np.float32, copy=True)
    out[~inside] = fill
    return out

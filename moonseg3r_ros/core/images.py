"""Input images of any common encoding -> HxWx3 uint8 RGB (the pipeline's image convention).

Accepted arrays: HxW, HxWx1 (mono), HxWx3 (rgb/bgr), HxWx4 (rgba/bgra); dtypes uint8, uint16 (scaled by
1/257, i.e. 65535 -> 255), bool, other integers in [0, 255] and floats (in [0, 1] when max <= 1, else
[0, 255]). `encoding` follows ROS sensor_msgs/image_encodings names ("rgb8", "bgr8", "mono8", "mono16",
"rgba8", "bgra8", "rgb16", "bgr16", "8UC1", "16UC1", "32FC1", ...) or the bare words "rgb", "bgr",
"mono", "rgba", "bgra". Without an encoding, 3 channels are RGB and 4 channels RGBA.
Every rejection raises `ImageError` with a message that says what was wrong.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

DEFAULT_MAX_PIXELS = 50_000_000


class ImageError(ValueError):
    """The image cannot be used (empty, too large, wrong shape or dtype, non-finite values)."""


_ORDER_BY_WORD = {"rgb": "rgb", "bgr": "bgr", "mono": "mono", "rgba": "rgba", "bgra": "bgra",
                  "8uc1": "mono", "16uc1": "mono", "32fc1": "mono", "64fc1": "mono",
                  "8uc3": "bgr", "16uc3": "bgr", "8uc4": "bgra", "16uc4": "bgra"}


def channel_order(encoding: Optional[str], channels: int) -> str:
    """'rgb' | 'bgr' | 'mono' | 'rgba' | 'bgra' for an encoding name (None -> from the channel count)."""
    if encoding is None:
        return {1: "mono", 3: "rgb", 4: "rgba"}[channels]
    word = encoding.strip().lower()
    if word in _ORDER_BY_WORD:
        return _ORDER_BY_WORD[word]
    stripped = word.rstrip("0123456789")
    if stripped in _ORDER_BY_WORD:
        return _ORDER_BY_WORD[stripped]
    raise ImageError(f"unsupported image encoding '{encoding}' (use rgb8, bgr8, mono8, mono16, rgba8, bgra8, ...)")


def _check_shape(array: np.ndarray, max_pixels: int) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(f"image must be HxW, HxWx1, HxWx3 or HxWx4, got shape {array.shape}")
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise ImageError(f"image is empty (shape {array.shape})")
    if height * width > max_pixels:
        raise ImageError(f"image has {height * width} pixels, more than the allowed {max_pixels} "
                         f"({width}x{height}); raise max_image_pixels or downscale the input")
    return array


def uint16_to_uint8(array: np.ndarray) -> np.ndarray:
    """uint16 array (any shape) -> uint8 of the same shape, round(x / 257) so that 65535 -> 255 exactly."""
    return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return uint16_to_uint8(array)
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise ImageError(f"integer image of dtype {array.dtype} has values outside [0, 255] "
                             f"({array.min()}..{array.max()}); use uint16 for 16-bit data")
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError("float image contains NaN or inf values")
        scale = 255.0 if float(array.max()) <= 1.0 else 1.0
        return np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)
    raise ImageError(f"unsupported image dtype {array.dtype} (use uint8, uint16 or float)")


def to_rgb8(array: np.ndarray, encoding: Optional[str] = None,
            max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any supported image -> contiguous HxWx3 uint8 RGB (a new array, never a view of the input)."""
    if not isinstance(array, np.ndarray):
        raise ImageError(f"image must be a numpy array, got {type(array).__name__}")
    array = _check_shape(array, max_pixels)
    order = channel_order(encoding, array.shape[2])
    expected = {"mono": 1, "rgb": 3, "bgr": 3, "rgba": 4, "bgra": 4}[order]
    if array.shape[2] != expected:
        raise ImageError(f"encoding '{encoding}' needs {expected} channel(s), image has {array.shape[2]}")
    pixels = _to_uint8(array)
    if order == "mono":
        pixels = np.repeat(pixels, 3, axis=2)
    elif order in ("bgr", "bgra"):
        pixels = pixels[:, :, 2::-1]
    else:
        pixels = pixels[:, :, :3]
    return np.array(pixels, dtype=np.uint8, order="C", copy=True)

"""Raw image buffers laid out as sensor_msgs/Image does (encoding, step, endianness) <-> numpy arrays.

ROS-free, so that the node's message conversions and the rosbag reader decode images the same way.
Errors raise `ImageError` (core/images.py) with a message that names the problem.
"""
from __future__ import annotations

import array
from typing import Any, Optional, Sequence

import numpy as np

from moonseg3r_ros.core.images import ImageError

# encoding -> (numpy dtype, channels)
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "32SC1": (np.dtype(np.int32), 1),
}


def decode_image_buffer(data: Any, height: int, width: int, step: int, encoding: str, big_endian: bool,
                        allowed: Optional[Sequence[str]] = None) -> np.ndarray:
    """Image bytes -> HxW (1 channel) or HxWxC array of the encoding's dtype, native byte order (a copy).

    Validates the encoding (against `allowed` when given), a non-zero size, `step` >= width * pixel size
    and `len(data) == step * height`; honours `big_endian` and row padding.
    """
    supported = tuple(allowed) if allowed is not None else tuple(IMAGE_ENCODINGS)
    if encoding not in supported or encoding not in IMAGE_ENCODINGS:
        raise ImageError(f"unsupported image encoding '{encoding}' (supported: {', '.join(supported)})")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    if height <= 0 or width <= 0:
        raise ImageError(f"zero-size image ({width}x{height})")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageError(f"image step {step} is smaller than width * pixel size = {row_bytes}")
    raw = np.frombuffer(as_buffer(data), dtype=np.uint8)
    if raw.size != step * height:
        raise ImageError(f"image data length {raw.size} does not match step * height = "
                         f"{step} * {height} = {step * height}")
    rows = raw.reshape(height, step)[:, :row_bytes]
    wire_dtype = dtype.newbyteorder(">" if big_endian else "<") if dtype.itemsize > 1 else dtype
    out = np.ascontiguousarray(rows).view(wire_dtype).astype(dtype, copy=True)
    return out.reshape((height, width) if channels == 1 else (height, width, channels))


def encode_image_buffer(pixels: np.ndarray, encoding: str) -> tuple[np.ndarray, int]:
    """HxW / HxWxC array -> (contiguous little-endian array of the encoding's dtype, step in bytes)."""
    if encoding not in IMAGE_ENCODINGS:
        raise ImageError(f"unsupported image encoding '{encoding}'")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    pixels = np.ascontiguousarray(pixels, dtype=dtype.newbyteorder("<"))
    if pixels.ndim != (2 if channels == 1 else 3) or (channels > 1 and pixels.shape[2] != channels):
        raise ImageError(f"array of shape {pixels.shape} does not fit encoding '{encoding}'")
    return pixels, int(pixels.shape[1] * channels * dtype.itemsize)


def as_buffer(data: Any):
    """Message byte data (array.array, bytes, numpy, list of ints) -> an object with the buffer protocol."""
    if isinstance(data, (bytes, bytearray, memoryview, array.array, np.ndarray)):
        return data
    return bytes(data)

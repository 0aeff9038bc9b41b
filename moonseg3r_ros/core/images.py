"""Input images of any common encoding -> HxWx3 uint8 RGB (the pipeline's image convention).

Accepted arrays: HxW, HxWx1 (mono), HxWx3 (rgb/bgr), HxWx4 (rgba/bgra); dtypes uint8, uint16 (scaled by
1/257, i.e. 65535 -> 255), bool, other integers in [0, 255] and floats (in [0, 1] when max <= 1, else
[0, 255]). `encoding` follows ROS sensor_msgs/image_encodings names ("rgb8", "bgr8", "mono8", "mono16",
"rgba8", "bgra8", "rgb16", "bgr16", "8UC1", "16UC1", "32FC1", ...) or the bare words "rgb", "bgr",
"mono", "rgba", "bgra". Without an encoding, 3 channels are RGB and 4 channels RGBA.
Every rejection raises `ImageError` with a message that says what was wrong.

`check_compressed_size` reads the size a PNG (IHDR) or JPEG (first start-of-frame segment) declares without
decoding it, so an oversized compressed image is refused before any pixel buffer is allocated.
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


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)


def compressed_image_size(data: bytes | memoryview | np.ndarray) -> tuple[int, int]:
    """(height, width) a PNG or JPEG declares in its header, read without decoding (or copying) it; ImageError
    when `data` is neither, or its header is cut short or declares no size."""
    data = memoryview(data).cast("B")  # type: ignore[arg-type]  # ndarray, bytes and memoryview are buffers
    if bytes(data[:8]) == _PNG_SIGNATURE:
        if len(data) < 24 or bytes(data[12:16]) != b"IHDR":
            raise ImageError("PNG image has no IHDR header")
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return height, width
    if bytes(data[:2]) == b"\xff\xd8":
        return _jpeg_size(data)
    raise ImageError("compressed image is neither PNG nor JPEG (supported: png, jpeg)")


def _jpeg_size(data: memoryview) -> tuple[int, int]:
    """Walk the JPEG marker segments up to the first start-of-frame; its height and width."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ImageError(f"JPEG header is corrupt (no marker at byte {pos})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers carry no length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                break
            height, width = int.from_bytes(data[pos + 5:pos + 7], "big"), int.from_bytes(data[pos + 7:pos + 9], "big")
            if height == 0 or width == 0:
                raise ImageError("JPEG image does not declare its size in its frame header")
            return height, width
        if marker == 0xDA or length < 2:  # start of scan before any frame header, or a broken length
            break
        pos += 2 + length
    raise ImageError("JPEG image has no frame header (size unknown)")


def check_compressed_size(data: bytes | memoryview | np.ndarray,
                          max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(height, width) from a PNG/JPEG header; ImageError before any decoding when the image would have more
    than `max_pixels` pixels or declares an empty size."""
    height, width = compressed_image_size(data)
    if height == 0 or width == 0:
        raise ImageError(f"compressed image declares an empty size ({width}x{height})")
    if height * width > max_pixels:
        raise ImageError(f"compressed image declares {width}x{height} = {height * width} pixels, more than the "
                         f"allowed {max_pixels}; refused before decoding (raise max_image_pixels or downscale)")
    return height, width


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

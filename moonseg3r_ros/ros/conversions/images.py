"""sensor_msgs/Image and CompressedImage <-> numpy: colour (HxWx3 uint8 RGB), depth (metres), instance ids.

Pixel layout decoding is core/image_buffers.py and the colour rule (channel order, uint16 -> uint8) is
core/images.py's `to_rgb8`, shared with the pipeline and the bag reader.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from moonseg3r_ros.core.image_buffers import as_buffer, decode_image_buffer, encode_image_buffer
from moonseg3r_ros.core.images import DEFAULT_MAX_PIXELS, ImageError, check_compressed_size, to_rgb8
from moonseg3r_ros.ros.conversions.common import ConversionError, bytes_to_array

COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")
DEPTH_ENCODINGS = ("32FC1", "16UC1", "mono16")
INSTANCE_ID_ENCODINGS = ("mono16", "16UC1", "32SC1", "mono8", "8UC1")


def image_msg_to_array(msg: Any, allowed: Optional[Sequence[str]] = None) -> np.ndarray:
    """sensor_msgs/Image -> HxW (1 channel) or HxWxC numpy array of the encoding's dtype (a copy).

    Validates the encoding (against `allowed` when given), size, step and data length (see
    core/image_buffers.decode_image_buffer); honours `is_bigendian` and row padding.
    """
    try:
        return decode_image_buffer(msg.data, int(msg.height), int(msg.width), int(msg.step), str(msg.encoding),
                                   bool(msg.is_bigendian), allowed)
    except ImageError as err:
        raise ConversionError(str(err)) from None


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8, mono16) -> HxWx3 uint8 RGB."""
    return pixels_to_rgb(image_msg_to_array(msg, COLOR_ENCODINGS), str(msg.encoding))


def pixels_to_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """HxW / HxWxC array in `encoding` -> HxWx3 uint8 RGB (16-bit scaled by 1/257, alpha dropped)."""
    try:
        return to_rgb8(pixels, encoding, max_pixels=max(int(pixels.shape[0]) * int(pixels.shape[1]), 1))
    except (ImageError, IndexError) as err:
        raise ConversionError(f"{err} (supported: {', '.join(COLOR_ENCODINGS)})") from None


def compressed_msg_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png, as image_transport writes it) -> HxWx3 uint8 RGB.

    The size the PNG/JPEG header declares is checked against `max_pixels` before decoding."""
    import cv2

    data = np.frombuffer(as_buffer(msg.data), dtype=np.uint8)
    if data.size == 0:
        raise ConversionError("compressed image has no data")
    fmt = str(msg.format).lower()
    if fmt and not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise ConversionError(f"unsupported compressed image format '{msg.format}' (supported: jpeg, png)")
    try:
        check_compressed_size(data, max_pixels)  # a small file may declare a huge image: refuse it undecoded
    except ImageError as err:
        raise ConversionError(str(err)) from None
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise ConversionError(f"could not decode compressed image (format '{msg.format}', {data.size} bytes)")
    # OpenCV decodes to BGR(A); image_transport's "rgb8; jpeg compressed bgr8" also means BGR on the wire.
    order = "mono" if decoded.ndim == 2 else "bgra" if decoded.shape[2] == 4 else "bgr"
    return pixels_to_rgb(decoded, order)


def depth_msg_to_metres(msg: Any) -> np.ndarray:
    """Depth image (32FC1 metres, or 16UC1/mono16 millimetres) -> HxW float32 metres, invalid = 0."""
    depth = image_msg_to_array(msg, DEPTH_ENCODINGS)
    if depth.dtype == np.uint16:
        return depth.astype(np.float32) / 1000.0
    depth = depth.astype(np.float32, copy=False)
    depth[~np.isfinite(depth)] = 0.0
    return depth


def instance_ids_msg_to_array(msg: Any) -> np.ndarray:
    """Ground-truth instance id image (mono16/16UC1/32SC1/mono8) -> HxW int32 (0 = none)."""
    return image_msg_to_array(msg, INSTANCE_ID_ENCODINGS).astype(np.int32)


def array_to_image_msg(pixels: np.ndarray, encoding: str, stamp: Any = None, frame_id: str = ""):
    """numpy array -> sensor_msgs/Image in `encoding` (little endian, no padding)."""
    from sensor_msgs.msg import Image

    try:
        pixels, step = encode_image_buffer(pixels, encoding)
    except ImageError as err:
        raise ConversionError(str(err)) from None
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = step
    msg.data = bytes_to_array(pixels.tobytes())
    return msg


def rgb_to_compressed_msg(rgb: np.ndarray, fmt: str = "png", stamp: Any = None, frame_id: str = ""):
    """HxWx3 uint8 RGB -> sensor_msgs/CompressedImage (png or jpeg), as image_transport would send it."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    ok, encoded = cv2.imencode("." + ("jpg" if fmt.startswith("jp") else "png"), rgb[..., ::-1])
    if not ok:
        raise ConversionError("could not encode image")
    msg = CompressedImage()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.format = f"rgb8; {'jpeg' if fmt.startswith('jp') else 'png'} compressed bgr8"
    msg.data = bytes_to_array(encoded.tobytes())
    return msg


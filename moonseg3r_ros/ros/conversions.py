"""Conversions between ROS messages and numpy (our own cv_bridge replacement; no ROS 1 code).

The readers take any message-like object with the standard fields (a real `sensor_msgs/Image`, or a
`types.SimpleNamespace` in tests), so they are testable without the middleware. The builders import the
message classes lazily.

Errors: every reader raises `ConversionError` (a ValueError) with a message that names the problem
(unsupported encoding, zero size, data length not matching step * height, ...). The node logs and counts
these; it never crashes on bad input.

Frames and units follow REP 103: optical frames (x right, y down, z forward), metres, float seconds in
the core and `builtin_interfaces/Time` (sec, nanosec) on the wire; stamps are carried as integer
nanoseconds in between so that pairing by stamp is exact.
"""
from __future__ import annotations

import array
import math
from typing import Any, Optional, Sequence

import numpy as np


class ConversionError(ValueError):
    """A message could not be converted (the text says why)."""


# ----------------------------------------------------------------------------------------------------
# Stamps

def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_seconds(ns: int) -> float:
    return ns / 1e9


def ns_to_stamp(ns: int):
    """Integer nanoseconds -> builtin_interfaces/Time."""
    from builtin_interfaces.msg import Time

    ns = int(ns)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def seconds_to_stamp(seconds: float):
    return ns_to_stamp(int(round(float(seconds) * 1e9)))


# ----------------------------------------------------------------------------------------------------
# Images

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
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")
DEPTH_ENCODINGS = ("32FC1", "16UC1", "mono16")
INSTANCE_ID_ENCODINGS = ("mono16", "16UC1", "32SC1", "mono8", "8UC1")


def image_msg_to_array(msg: Any, allowed: Optional[Sequence[str]] = None) -> np.ndarray:
    """sensor_msgs/Image -> HxW (1 channel) or HxWxC numpy array of the encoding's dtype (a copy).

    Validates the encoding (against `allowed` when given), a non-zero size, `step` >= width * pixel
    size and `len(data) == step * height`; honours `is_bigendian` and row padding.
    """
    encoding = str(msg.encoding)
    supported = tuple(allowed) if allowed is not None else tuple(IMAGE_ENCODINGS)
    if encoding not in supported or encoding not in IMAGE_ENCODINGS:
        raise ConversionError(f"unsupported image encoding '{encoding}' (supported: {', '.join(supported)})")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ConversionError(f"zero-size image ({width}x{height})")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ConversionError(f"image step {step} is smaller than width * pixel size = {row_bytes}")
    data = np.frombuffer(_as_buffer(msg.data), dtype=np.uint8)
    if data.size != step * height:
        raise ConversionError(f"image data length {data.size} does not match step * height = "
                              f"{step} * {height} = {step * height}")
    rows = data.reshape(height, step)[:, :row_bytes]
    big_endian = bool(msg.is_bigendian)
    wire_dtype = dtype.newbyteorder(">" if big_endian else "<") if dtype.itemsize > 1 else dtype
    out = np.ascontiguousarray(rows).view(wire_dtype).astype(dtype, copy=True)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return out.reshape(shape)


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8, mono16) -> HxWx3 uint8 RGB."""
    pixels = image_msg_to_array(msg, COLOR_ENCODINGS)
    return pixels_to_rgb(pixels, str(msg.encoding))


def pixels_to_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """Array in `encoding` -> HxWx3 uint8 RGB (mono16 scaled by 1/257, alpha dropped)."""
    if encoding == "rgb8":
        return pixels
    if encoding == "bgr8":
        return np.ascontiguousarray(pixels[..., ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(pixels[..., :3])
    if encoding == "bgra8":
        return np.ascontiguousarray(pixels[..., 2::-1])
    if encoding in ("mono8", "8UC1"):
        return np.repeat(pixels[..., None], 3, axis=2)
    if encoding in ("mono16", "16UC1"):
        eight = (pixels.astype(np.uint32) * 255 + 32767) // 65535
        return np.repeat(eight.astype(np.uint8)[..., None], 3, axis=2)
    raise ConversionError(f"unsupported image encoding '{encoding}' (supported: {', '.join(COLOR_ENCODINGS)})")


def compressed_msg_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png, as image_transport writes it) -> HxWx3 uint8 RGB."""
    import cv2

    data = np.frombuffer(_as_buffer(msg.data), dtype=np.uint8)
    if data.size == 0:
        raise ConversionError("compressed image has no data")
    fmt = str(msg.format).lower()
    if fmt and not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise ConversionError(f"unsupported compressed image format '{msg.format}' (supported: jpeg, png)")
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise ConversionError(f"could not decode compressed image (format '{msg.format}', {data.size} bytes)")
    if decoded.ndim == 2:
        return pixels_to_rgb(decoded, "mono16" if decoded.dtype == np.uint16 else "mono8")
    if decoded.dtype == np.uint16:
        decoded = ((decoded.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    # OpenCV decodes to BGR(A); image_transport's "rgb8; jpeg compressed bgr8" also means BGR on the wire.
    return pixels_to_rgb(decoded, "bgra8" if decoded.shape[2] == 4 else "bgr8")


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

    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError(f"unsupported image encoding '{encoding}'")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    pixels = np.ascontiguousarray(pixels, dtype=dtype.newbyteorder("<"))
    if pixels.ndim != (2 if channels == 1 else 3) or (channels > 1 and pixels.shape[2] != channels):
        raise ConversionError(f"array of shape {pixels.shape} does not fit encoding '{encoding}'")
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(msg.width * channels * dtype.itemsize)
    msg.data = _bytes_to_array(pixels.tobytes())
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
    msg.data = _bytes_to_array(encoded.tobytes())
    return msg


def _as_buffer(data: Any):
    """Message byte data (array.array, bytes, list of ints) -> an object with the buffer protocol."""
    if isinstance(data, (bytes, bytearray, memoryview, array.array, np.ndarray)):
        return data
    return bytes(data)


def _bytes_to_array(buffer: bytes) -> array.array:
    out = array.array("B")
    out.frombytes(buffer)
    return out


# ----------------------------------------------------------------------------------------------------
# Camera info and poses

def camera_info_to_k(msg: Any) -> np.ndarray:
    """sensor_msgs/CameraInfo -> 3x3 float64 K (validated: fx, fy > 0)."""
    k = np.asarray(list(msg.k), dtype=np.float64)
    if k.size != 9:
        raise ConversionError(f"camera_info.k must have 9 entries, got {k.size}")
    k = k.reshape(3, 3)
    if not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ConversionError(f"camera_info.k is not a valid pinhole matrix (fx={k[0, 0]}, fy={k[1, 1]})")
    return k


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> 3x3 rotation (normalised; a zero quaternion is an error)."""
    q = np.array([x, y, z, w], dtype=np.float64)
    n = float(np.linalg.norm(q))
    if not math.isfinite(n) or n < 1e-9:
        raise ConversionError(f"invalid quaternion {q.tolist()}")
    x, y, z, w = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """3x3 rotation -> unit quaternion (x, y, z, w) with w >= 0."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = math.sqrt(trace + 1.0) * 2
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    q = np.array(q) / np.linalg.norm(q)
    return -q if q[3] < 0 else q


def pose_msg_to_matrix(msg: Any) -> np.ndarray:
    """geometry_msgs/PoseStamped or Pose -> 4x4 float64 (the pose of the child in the header frame)."""
    pose = getattr(msg, "pose", msg)
    p, o = pose.position, pose.orientation
    t = np.eye(4)
    t[:3, :3] = quaternion_to_matrix(o.x, o.y, o.z, o.w)
    t[:3, 3] = (p.x, p.y, p.z)
    if not np.all(np.isfinite(t)):
        raise ConversionError("pose contains non-finite values")
    return t


def xyz_quat_to_matrix(values: Sequence[float]) -> np.ndarray:
    """[x, y, z, qx, qy, qz, qw] -> 4x4 float64."""
    if len(values) != 7:
        raise ConversionError(f"a transform needs 7 numbers [x, y, z, qx, qy, qz, qw], got {len(values)}")
    t = np.eye(4)
    t[:3, :3] = quaternion_to_matrix(*values[3:7])
    t[:3, 3] = values[:3]
    return t


def matrix_to_pose_msg(t: np.ndarray):
    from geometry_msgs.msg import Pose

    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in t[:3, 3])
    q = matrix_to_quaternion(t[:3, :3])
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in q)
    return pose


def matrix_to_transform_msg(t: np.ndarray, parent: str, child: str, stamp: Any):
    """4x4 pose of `child` in `parent` -> geometry_msgs/TransformStamped."""
    from geometry_msgs.msg import TransformStamped

    msg = TransformStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = parent
    msg.child_frame_id = child
    tr = msg.transform.translation
    tr.x, tr.y, tr.z = (float(v) for v in t[:3, 3])
    q = matrix_to_quaternion(t[:3, :3])
    ro = msg.transform.rotation
    ro.x, ro.y, ro.z, ro.w = (float(v) for v in q)
    return msg


def transform_msg_to_matrix(msg: Any) -> np.ndarray:
    """geometry_msgs/TransformStamped or Transform -> 4x4."""
    tf = getattr(msg, "transform", msg)
    t = np.eye(4)
    t[:3, :3] = quaternion_to_matrix(tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w)
    t[:3, 3] = (tf.translation.x, tf.translation.y, tf.translation.z)
    return t


# ----------------------------------------------------------------------------------------------------
# PointCloud2

# sensor_msgs/PointField datatype -> numpy dtype
POINTFIELD_DTYPES = {1: np.int8, 2: np.uint8, 3: np.int16, 4: np.uint16, 5: np.int32, 6: np.uint32,
                     7: np.float32, 8: np.float64}
FLOAT32, UINT32 = 7, 6
CLOUD_FIELDS = (("x", 0, FLOAT32), ("y", 4, FLOAT32), ("z", 8, FLOAT32), ("rgb", 12, FLOAT32),
                ("instance_id", 16, UINT32))
CLOUD_POINT_STEP = 20
CLOUD_DTYPE = np.dtype({"names": [f[0] for f in CLOUD_FIELDS],
                        "formats": ["<f4", "<f4", "<f4", "<u4", "<u4"],
                        "offsets": [f[1] for f in CLOUD_FIELDS], "itemsize": CLOUD_POINT_STEP})


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Nx3 uint8 -> N uint32 0x00RRGGBB (the bit pattern of PCL's float `rgb` field)."""
    rgb = np.asarray(rgb, dtype=np.uint32)
    return (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """N float32 or uint32 PCL rgb -> Nx3 uint8."""
    bits = np.asarray(packed)
    bits = bits.view(np.uint32) if bits.dtype == np.float32 else bits.astype(np.uint32)
    return np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], axis=1).astype(np.uint8)


def pack_cloud_bytes(xyz: np.ndarray, rgb: np.ndarray, ids: np.ndarray) -> bytes:
    """Points -> the little-endian byte payload of a cloud with fields x y z rgb instance_id."""
    n = int(xyz.shape[0])
    if rgb.shape != (n, 3) or ids.shape != (n,):
        raise ConversionError(f"cloud arrays disagree: xyz {xyz.shape}, rgb {rgb.shape}, ids {ids.shape}")
    packed = np.empty(n, dtype=CLOUD_DTYPE)
    packed["x"], packed["y"], packed["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    packed["rgb"] = pack_rgb(rgb)
    packed["instance_id"] = ids
    return packed.tobytes()


def make_cloud_msg(xyz: np.ndarray, rgb: np.ndarray, ids: np.ndarray, frame_id: str, stamp: Any):
    """Points (Nx3 float32, Nx3 uint8, N int) -> sensor_msgs/PointCloud2 (unordered, height 1)."""
    from sensor_msgs.msg import PointCloud2, PointField

    msg = PointCloud2()
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = stamp
    msg.height, msg.width = 1, int(xyz.shape[0])
    msg.fields = [PointField(name=name, offset=offset, datatype=datatype, count=1)
                  for name, offset, datatype in CLOUD_FIELDS]
    msg.is_bigendian = False
    msg.point_step = CLOUD_POINT_STEP
    msg.row_step = CLOUD_POINT_STEP * msg.width
    msg.is_dense = bool(np.all(np.isfinite(xyz)))
    msg.data = _bytes_to_array(pack_cloud_bytes(xyz, rgb, ids))
    return msg


def read_cloud(msg: Any) -> dict[str, np.ndarray]:
    """PointCloud2 -> {field name: array of N (count 1) or NxCount} decoded from its PointField spec."""
    n = int(msg.width) * int(msg.height)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    data = np.frombuffer(_as_buffer(msg.data), dtype=np.uint8)
    if data.size != row_step * int(msg.height) or row_step < point_step * int(msg.width):
        raise ConversionError(f"cloud data length {data.size} does not match row_step * height = "
                              f"{row_step} * {msg.height}")
    order = ">" if msg.is_bigendian else "<"
    rows = data.reshape(int(msg.height), row_step)[:, :point_step * int(msg.width)]
    points = np.ascontiguousarray(rows).reshape(n, point_step)
    out: dict[str, np.ndarray] = {}
    for f in msg.fields:
        if f.datatype not in POINTFIELD_DTYPES:
            raise ConversionError(f"field '{f.name}' has unknown datatype {f.datatype}")
        dtype = np.dtype(POINTFIELD_DTYPES[f.datatype]).newbyteorder(order)
        count = max(int(f.count), 1)
        end = int(f.offset) + dtype.itemsize * count
        if end > point_step:
            raise ConversionError(f"field '{f.name}' ends at byte {end} beyond point_step {point_step}")
        values = np.ascontiguousarray(points[:, int(f.offset):end]).view(dtype)
        values = values.astype(dtype.newbyteorder("="))
        out[f.name] = values[:, 0] if count == 1 else values
    return out


def voxel_downsample(xyz: np.ndarray, rgb: np.ndarray, ids: np.ndarray, voxel: float):
    """Keep one point per `voxel` cell (the first one in input order); voxel <= 0 keeps everything."""
    if voxel <= 0 or xyz.shape[0] == 0:
        return xyz, rgb, ids
    cells = np.floor(xyz / voxel).astype(np.int64)
    cells -= cells.min(axis=0)
    extent = cells.max(axis=0) + 1
    if float(extent[0]) * float(extent[1]) * float(extent[2]) < 2**62:  # one int64 key per cell: fast 1-D unique
        keys = (cells[:, 0] * extent[1] + cells[:, 1]) * extent[2] + cells[:, 2]
        _, keep = np.unique(keys, return_index=True)
    else:
        _, keep = np.unique(cells, axis=0, return_index=True)
    keep.sort()
    return xyz[keep], rgb[keep], ids[keep]


def instance_colors(ids: np.ndarray, color_of: dict[int, Sequence[float]],
                    background=(128, 128, 128)) -> np.ndarray:
    """Per-point colours by instance: color_of[id] (floats in [0, 1]); id 0 / unknown = background."""
    ids = np.asarray(ids)
    out = np.empty((ids.shape[0], 3), dtype=np.uint8)
    out[:] = background
    if ids.size == 0 or not color_of:
        return out
    max_id = int(max(int(ids.max()), max(color_of)))
    table = np.empty((max_id + 1, 3), dtype=np.uint8)
    table[:] = background
    for iid, color in color_of.items():
        if 0 < iid <= max_id:
            table[iid] = np.clip(np.round(np.asarray(color, dtype=np.float64)[:3] * 255.0), 0, 255)
    valid = (ids > 0) & (ids <= max_id)
    out[valid] = table[ids[valid]]
    return out


def id_color(instance_id: int) -> tuple[float, float, float]:
    """A stable, well-spread colour for an id (golden-ratio hue), used when a record has none."""
    import colorsys

    return colorsys.hsv_to_rgb((instance_id * 0.618033988749895) % 1.0, 0.75, 0.95)


# ----------------------------------------------------------------------------------------------------
# InstanceMap

def instance_map_msg(records: Sequence[Any], frame_id: str, stamp: Any, frame_index: int,
                     keyframe_count: int, point_count: int, cloud_topic: str):
    """InstanceRecords (see core/instance_map.py) -> moonseg3r_msgs/InstanceMap, ordered by id."""
    from moonseg3r_msgs.msg import Instance, InstanceMap

    msg = InstanceMap()
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = stamp
    msg.cloud_topic = cloud_topic
    msg.frame_index = max(int(frame_index), 0)
    msg.keyframe_count = max(int(keyframe_count), 0)
    msg.point_count = max(int(point_count), 0)
    instances = []
    for r in sorted(records, key=lambda r: int(r.id)):
        inst = Instance()
        inst.id = int(r.id)
        inst.confidence = float(r.confidence)
        inst.point_count = int(r.point_count)
        _set_point(inst.centroid, r.centroid)
        _set_point(inst.bbox_min, r.bbox_min)
        _set_point(inst.bbox_max, r.bbox_max)
        color = getattr(r, "color", None)
        color = id_color(int(r.id)) if color is None else color
        inst.color.r, inst.color.g, inst.color.b = (float(c) for c in list(color)[:3])
        inst.color.a = 1.0
        inst.first_seen = seconds_to_stamp(r.first_seen)
        inst.last_seen = seconds_to_stamp(r.last_seen)
        descriptor = getattr(r, "descriptor", None)
        if descriptor is not None and len(descriptor):
            desc = array.array("f")
            desc.frombytes(np.ascontiguousarray(descriptor, dtype=np.float32).tobytes())
            inst.descriptor = desc
        instances.append(inst)
    msg.instances = instances
    return msg


def _set_point(point: Any, values: Sequence[float]) -> None:
    point.x, point.y, point.z = (float(v) for v in list(values)[:3])

"""sensor_msgs/PointCloud2 with fields x y z rgb instance_id <-> numpy (and a reader for any field layout)."""
from __future__ import annotations

from typing import Any

import numpy as np

from moonseg3r_ros.core.image_buffers import as_buffer
from moonseg3r_ros.ros.conversions.common import ConversionError, bytes_to_array

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
    msg.data = bytes_to_array(pack_cloud_bytes(xyz, rgb, ids))
    return msg


def read_cloud(msg: Any) -> dict[str, np.ndarray]:
    """PointCloud2 -> {field name: array of N (count 1) or NxCount} decoded from its PointField spec."""
    n = int(msg.width) * int(msg.height)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    data = np.frombuffer(as_buffer(msg.data), dtype=np.uint8)
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


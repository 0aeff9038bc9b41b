"""Image/CompressedImage/CameraInfo/Pose <-> numpy and PointCloud2 packing, on real message classes; the
quaternion helpers (core/rotations.py) and the published-cloud helpers (core/map_cloud.py) they use."""
import array
import math
from types import SimpleNamespace

import numpy as np
import pytest

from moonseg3r_ros.core import map_cloud, rotations
from moonseg3r_ros.core.instance_map import InstanceRecord
from moonseg3r_ros.ros import conversions as cv


def raw_image(pixels: np.ndarray, encoding: str, step=None, bigendian=False, data=None):
    """A message-like sensor_msgs/Image with optional row padding / wrong length."""
    height, width = pixels.shape[:2]
    row = pixels.reshape(height, -1).view(np.uint8).reshape(height, -1) if pixels.size else np.zeros((0, 0), np.uint8)
    step = row.shape[1] if step is None else step
    padded = np.zeros((height, step), np.uint8)
    padded[:, :row.shape[1]] = row
    return SimpleNamespace(height=height, width=width, encoding=encoding, is_bigendian=int(bigendian), step=step,
                           data=padded.tobytes() if data is None else data)


RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding,pixels", [
    ("rgb8", RGB),
    ("bgr8", RGB[..., ::-1].copy()),
    ("rgba8", np.concatenate([RGB, np.full((5, 7, 1), 9, np.uint8)], axis=2)),
    ("bgra8", np.concatenate([RGB[..., ::-1], np.full((5, 7, 1), 9, np.uint8)], axis=2)),
])
def test_colour_encodings_give_the_same_rgb(encoding, pixels):
    out = cv.image_msg_to_rgb(raw_image(pixels, encoding))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, RGB)


def test_mono_encodings_replicate_the_grey_value():
    grey = RNG.integers(0, 256, size=(4, 6), dtype=np.uint8)
    out = cv.image_msg_to_rgb(raw_image(grey, "mono8"))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))
    grey16 = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
    out16 = cv.image_msg_to_rgb(raw_image(grey16, "mono16"))
    np.testing.assert_array_equal(out16[0, :, 0], [0, 1, 255, 128])


def test_big_endian_mono16_and_row_padding():
    values = np.array([[1, 2, 300], [40000, 5, 6]], dtype=np.uint16)
    msg = raw_image(values.astype(">u2"), "mono16", step=8, bigendian=True)
    np.testing.assert_array_equal(cv.image_msg_to_array(msg), values)
    padded = raw_image(RGB, "rgb8", step=7 * 3 + 5)
    np.testing.assert_array_equal(cv.image_msg_to_rgb(padded), RGB)


def test_bad_images_raise_clear_errors():
    with pytest.raises(cv.ConversionError, match="unsupported image encoding 'yuv422'"):
        cv.image_msg_to_rgb(raw_image(RGB, "yuv422"))
    with pytest.raises(cv.ConversionError, match="zero-size"):
        cv.image_msg_to_rgb(SimpleNamespace(height=0, width=0, encoding="rgb8", is_bigendian=0, step=0, data=b""))
    short = raw_image(RGB, "rgb8")
    short.data = short.data[:-1]
    with pytest.raises(cv.ConversionError, match="does not match step \\* height = 21 \\* 5 = 105"):
        cv.image_msg_to_rgb(short)
    with pytest.raises(cv.ConversionError, match="step 20 is smaller"):
        cv.image_msg_to_rgb(SimpleNamespace(height=5, width=7, encoding="rgb8", is_bigendian=0, step=20,
                                            data=bytes(100)))
    # A depth encoding is not a colour encoding.
    with pytest.raises(cv.ConversionError, match="unsupported image encoding '32FC1'"):
        cv.image_msg_to_rgb(raw_image(np.zeros((2, 2), np.float32), "32FC1"))
    # Depth and id images accept only their own encodings (a colour image is not depth, a float image no ids).
    with pytest.raises(cv.ConversionError,
                       match=r"unsupported image encoding 'rgb8' \(supported: 32FC1, 16UC1, mono16\)"):
        cv.depth_msg_to_metres(raw_image(RGB, "rgb8"))
    with pytest.raises(cv.ConversionError, match="unsupported image encoding '32FC1'"):
        cv.instance_ids_msg_to_array(raw_image(np.zeros((2, 2), np.float32), "32FC1"))


def test_round_trip_through_the_real_image_message():
    msg = cv.array_to_image_msg(RGB, "rgb8", frame_id="cam")
    assert (msg.height, msg.width, msg.step, msg.encoding) == (5, 7, 21, "rgb8")
    assert isinstance(msg.data, array.array)
    np.testing.assert_array_equal(cv.image_msg_to_rgb(msg), RGB)


def test_depth_in_metres_and_millimetres():
    metres = np.array([[0.5, np.nan], [np.inf, 2.25]], dtype=np.float32)
    out = cv.depth_msg_to_metres(cv.array_to_image_msg(metres, "32FC1"))
    np.testing.assert_array_equal(out, [[0.5, 0.0], [0.0, 2.25]])
    mm = np.array([[500, 0], [1234, 65535]], dtype=np.uint16)
    out = cv.depth_msg_to_metres(cv.array_to_image_msg(mm, "16UC1"))
    np.testing.assert_allclose(out, [[0.5, 0.0], [1.234, 65.535]], rtol=1e-6)
    assert out.dtype == np.float32


def test_instance_ids_encodings():
    ids = np.array([[0, 1], [7, 300]], dtype=np.int32)
    for enc in ("mono16", "16UC1", "32SC1"):
        out = cv.instance_ids_msg_to_array(cv.array_to_image_msg(ids, enc))
        assert out.dtype == np.int32
        np.testing.assert_array_equal(out, ids)


def test_compressed_png_is_lossless_and_jpeg_close():
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[:, :8] = (255, 0, 0)
    rgb[:, 8:16] = (0, 255, 0)
    rgb[:, 16:] = (0, 0, 255)
    np.testing.assert_array_equal(cv.compressed_msg_to_rgb(cv.rgb_to_compressed_msg(rgb, "png")), rgb)
    jpeg = cv.compressed_msg_to_rgb(cv.rgb_to_compressed_msg(rgb, "jpeg"))
    assert np.abs(jpeg[:, 2:6].astype(int) - (255, 0, 0)).max() < 30  # red stays red (not BGR swapped)
    with pytest.raises(cv.ConversionError, match="neither PNG nor JPEG"):  # refused from its header
        cv.compressed_msg_to_rgb(SimpleNamespace(format="png", data=b"not a png"))
    with pytest.raises(cv.ConversionError, match="no data"):
        cv.compressed_msg_to_rgb(SimpleNamespace(format="jpeg", data=b""))


def test_camera_info_and_pose():
    info = SimpleNamespace(k=[500.0, 0, 320, 0, 510.0, 240, 0, 0, 1])
    np.testing.assert_array_equal(cv.camera_info_to_k(info), [[500, 0, 320], [0, 510, 240], [0, 0, 1]])
    with pytest.raises(cv.ConversionError, match="not a valid pinhole"):
        cv.camera_info_to_k(SimpleNamespace(k=[0.0] * 9))
    angle = 0.7
    t = np.eye(4)
    t[:3, :3] = [[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]]
    t[:3, 3] = (1.0, -2.0, 0.5)
    pose = cv.matrix_to_pose_msg(t)
    assert pose.orientation.z == pytest.approx(math.sin(angle / 2))
    np.testing.assert_allclose(cv.pose_msg_to_matrix(pose), t, atol=1e-12)
    tf = cv.matrix_to_transform_msg(t, "map", "camera_optical", cv.ns_to_stamp(1_500_000_001))
    assert (tf.header.frame_id, tf.child_frame_id) == ("map", "camera_optical")
    assert (tf.header.stamp.sec, tf.header.stamp.nanosec) == (1, 500_000_001)
    np.testing.assert_allclose(cv.transform_msg_to_matrix(tf), t, atol=1e-12)
    with pytest.raises(ValueError, match="invalid quaternion"):
        rotations.quaternion_to_matrix([0, 0, 0, 0])
    with pytest.raises(cv.ConversionError, match="invalid quaternion"):
        cv.xyz_quat_to_matrix([1, 2, 3, 0, 0, 0, 0])
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(cv.ConversionError, match="non-finite"):
        cv.pose_msg_to_matrix(cv.matrix_to_pose_msg(bad))


def test_quaternion_round_trip_for_many_rotations():
    rng = np.random.default_rng(3)
    for q in rng.normal(size=(50, 4)):
        r = rotations.quaternion_to_matrix(q)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        back = rotations.matrix_to_quaternion(r)
        assert back[3] >= 0
        np.testing.assert_allclose(np.abs(back @ (q / np.linalg.norm(q))), 1.0, atol=1e-12)  # q or -q
        np.testing.assert_allclose(rotations.quaternion_to_matrix(back), r, atol=1e-12)


def test_stamp_conversions_are_exact():
    stamp = cv.ns_to_stamp(12_345_678_901_234)
    assert (stamp.sec, stamp.nanosec) == (12345, 678_901_234)
    assert cv.stamp_to_ns(stamp) == 12_345_678_901_234
    assert cv.stamp_to_ns(cv.seconds_to_stamp(0.3)) == 300_000_000


def test_point_cloud_round_trip_field_by_field():
    n = 1000
    xyz = RNG.normal(size=(n, 3)).astype(np.float32)
    rgb = RNG.integers(0, 256, size=(n, 3), dtype=np.uint8)
    ids = RNG.integers(0, 70000, size=n).astype(np.int32)
    msg = cv.make_cloud_msg(xyz, rgb, ids, "map", cv.ns_to_stamp(5))
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 12, 7, 1), ("instance_id", 16, 6, 1)]
    assert (msg.height, msg.width, msg.point_step, msg.row_step, len(msg.data)) == (1, n, 20, 20 * n, 20 * n)
    fields = cv.read_cloud(msg)
    np.testing.assert_array_equal(np.stack([fields["x"], fields["y"], fields["z"]], axis=1), xyz)
    np.testing.assert_array_equal(cv.unpack_rgb(fields["rgb"]), rgb)
    assert fields["instance_id"].dtype == np.uint32
    np.testing.assert_array_equal(fields["instance_id"], ids)
    # The float 'rgb' field has PCL's bit layout 0x00RRGGBB.
    assert fields["rgb"][:1].view(np.uint32)[0] == (int(rgb[0, 0]) << 16) | (int(rgb[0, 1]) << 8) | int(rgb[0, 2])


def test_read_cloud_honours_other_layouts():
    """A big-endian cloud with padding and a count-3 field is decoded from its PointField spec."""
    from sensor_msgs.msg import PointField

    points = np.zeros(3, dtype=np.dtype([("pad", "u1", 2), ("xyz", ">f8", 3), ("label", ">u2")]))
    points["xyz"] = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    points["label"] = [10, 20, 65000]
    msg = SimpleNamespace(height=1, width=3, point_step=points.dtype.itemsize, row_step=3 * points.dtype.itemsize,
                          is_bigendian=True, data=points.tobytes(),
                          fields=[PointField(name="xyz", offset=2, datatype=8, count=3),
                                  PointField(name="label", offset=26, datatype=4, count=1)])
    fields = cv.read_cloud(msg)
    np.testing.assert_array_equal(fields["xyz"], [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    np.testing.assert_array_equal(fields["label"], [10, 20, 65000])


def test_voxel_downsample_keeps_one_point_per_cell():
    xyz = np.array([[0.01, 0.01, 0.01], [0.02, 0.03, 0.04], [0.5, 0.5, 0.5], [0.51, 0.52, 0.53]], np.float32)
    rgb = np.arange(12, dtype=np.uint8).reshape(4, 3)
    ids = np.array([1, 2, 3, 3], np.int32)
    x2, r2, i2 = map_cloud.voxel_downsample(xyz, rgb, ids, 0.1)
    np.testing.assert_array_equal(i2, [1, 3])
    np.testing.assert_array_equal(x2, xyz[[0, 2]])
    assert map_cloud.voxel_downsample(xyz, rgb, ids, 0.0)[0] is xyz


def test_instance_colors_and_background():
    colors = map_cloud.instance_colors(np.array([0, 1, 2, 5]), {1: (1.0, 0.0, 0.0), 2: (0.0, 0.5, 1.0)})
    np.testing.assert_array_equal(colors, [[128, 128, 128], [255, 0, 0], [0, 128, 255], [128, 128, 128]])


def test_instance_map_message_from_records():
    records = [InstanceRecord(4, 0.5, 10, np.array([1.0, 2, 3]), np.array([0, 1, 2], np.float32),
                              np.array([2, 3, 4], np.float32), np.array([0.1, 0.2, 0.3]), 1.5, 2.25,
                              np.arange(4, dtype=np.float32)),
               InstanceRecord(2, 0.9, 3, np.zeros(3), np.zeros(3, np.float32), np.zeros(3, np.float32),
                              np.array([0.5, 0.5, 0.5]), 0.0, 0.1, np.zeros(0, np.float32))]
    msg = cv.instance_map_msg(records, "map", cv.ns_to_stamp(7), frame_index=12, keyframe_count=2,
                              point_count=13, cloud_topic="/cloud")
    assert [i.id for i in msg.instances] == [2, 4]
    inst = msg.instances[1]
    assert (inst.centroid.x, inst.bbox_max.z, inst.point_count) == (1.0, 4.0, 10)
    assert (inst.first_seen.sec, inst.first_seen.nanosec, inst.last_seen.nanosec) == (1, 500_000_000, 250_000_000)
    assert list(inst.descriptor) == [0, 1, 2, 3]
    assert inst.color.a == 1.0 and inst.color.r == pytest.approx(0.1)
    assert len(msg.instances[0].descriptor) == 0
    assert (msg.frame_index, msg.keyframe_count, msg.point_count, msg.cloud_topic) == (12, 2, 13, "/cloud")
    assert msg.CLOUD_INSTANCE_FIELD == "instance_id"

"""Bag round trip (sqlite3 and mcap), stamps, encodings and errors."""
import numpy as np
import pytest

from moonseg3r_ros.data.bag import BagError, read_bag, stamp_to_sec_nsec, write_bag
from moonseg3r_ros.data.synthetic import SceneSpec, generate_scene


@pytest.fixture(scope="module")
def frames():
    scene = generate_scene(SceneSpec(seed=2, num_frames=5, width=40, height=30, num_objects=4))
    return list(scene.frames)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_round_trip_is_exact(frames, tmp_path, storage):
    bag = write_bag(frames, tmp_path / "bag", storage=storage)
    assert (bag / "metadata.yaml").is_file()
    got = list(read_bag(bag))
    assert len(got) == 5
    for g, f in zip(got, frames):
        assert np.array_equal(g.image, f.image) and g.image.dtype == np.uint8
        assert np.array_equal(g.depth, f.depth) and g.depth.dtype == np.float32
        assert np.array_equal(g.instance_ids, f.instance_ids) and g.instance_ids.dtype == np.int32
        assert np.array_equal(g.intrinsics, f.intrinsics)
        assert np.allclose(g.pose_c2w, f.pose_c2w, atol=1e-12)
        assert g.stamp == pytest.approx(f.stamp, abs=1e-9)
    assert [g.frame_index for g in got] == [0, 1, 2, 3, 4]


def test_topics_types_and_stamps(frames, tmp_path):
    from rosbags.rosbag2 import Reader

    bag = write_bag(frames, tmp_path / "bag", depth=False, gt=False)
    with Reader(bag) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        assert topics == {"/camera/image_raw": "sensor_msgs/msg/Image",
                          "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
                          "/camera/pose": "geometry_msgs/msg/PoseStamped", "/tf": "tf2_msgs/msg/TFMessage"}
        times = sorted({t for _, t, _ in reader.messages()})
    assert times == [0, 100_000_000, 200_000_000, 300_000_000, 400_000_000]
    got = list(read_bag(bag))
    assert got[0].depth is None and got[0].instance_ids is None and got[0].pose_c2w is not None


def test_stamp_conversion():
    assert stamp_to_sec_nsec(0.1) == (0, 100_000_000)
    assert stamp_to_sec_nsec(1700000000.25) == (1700000000, 250_000_000)
    assert stamp_to_sec_nsec(2.9999999999) == (3, 0)  # rounding carries into seconds


def test_tf_used_when_pose_topic_absent(frames, tmp_path):
    from rosbags.rosbag2 import Reader, Writer

    bag = write_bag(frames[:2], tmp_path / "bag")
    trimmed = tmp_path / "trimmed"
    with Reader(bag) as reader, Writer(trimmed, version=9) as writer:
        conns = {}
        for c, t, raw in reader.messages():
            if c.topic == "/camera/pose":
                continue
            if c.topic not in conns:
                conns[c.topic] = writer.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data,
                                                       rihs01=c.digest)
            writer.write(conns[c.topic], t, raw)
    got = list(read_bag(trimmed))
    assert np.allclose(got[1].pose_c2w, frames[1].pose_c2w, atol=1e-12)


def test_missing_and_corrupt_bags_raise(frames, tmp_path):
    with pytest.raises(BagError, match="not found"):
        list(read_bag(tmp_path / "nope"))
    bag = write_bag(frames[:2], tmp_path / "bag")
    (bag / "metadata.yaml").write_text("this: [is not a rosbag2 metadata\n")
    with pytest.raises(BagError):
        list(read_bag(bag))
    bag2 = write_bag(frames[:2], tmp_path / "bag2")
    db = next(bag2.glob("*.db3"))
    db.write_bytes(b"garbage" * 100)
    with pytest.raises(BagError):
        list(read_bag(bag2))
    with pytest.raises(BagError, match="already exists"):
        write_bag(frames[:1], bag2)
    with pytest.raises(BagError, match="storage"):
        write_bag(frames[:1], tmp_path / "x", storage="zip")


def test_image_messages_decode_with_the_core_rules():
    from types import SimpleNamespace

    from moonseg3r_ros.data.bag import image_to_rgb

    def msg(array, encoding):
        array = np.ascontiguousarray(array)
        return SimpleNamespace(data=array.view(np.uint8).reshape(-1), height=array.shape[0], width=array.shape[1],
                               step=array.strides[0], encoding=encoding, is_bigendian=0)

    bgr = np.array([[[10, 20, 30], [40, 50, 60]]], np.uint8)
    assert image_to_rgb(msg(bgr, "bgr8")).tolist() == [[[30, 20, 10], [60, 50, 40]]]
    mono16 = np.array([[128, 129, 65280]], np.uint16)
    assert image_to_rgb(msg(mono16, "mono16"))[..., 0].tolist() == [[0, 1, 254]]  # round(x / 257)
    with pytest.raises(BagError, match="data length"):
        short = msg(bgr, "bgr8")
        short.data = short.data[:-1]
        image_to_rgb(short)

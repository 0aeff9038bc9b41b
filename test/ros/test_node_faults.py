"""Bad input and faults against the running node process: wrong encoding, zero-size image, data length
not matching step * height, stamps going backwards, a burst of 100 frames in about a second, and
deactivation/re-activation mid-stream. After each: the node is alive, active, and its map intact."""
import pytest
from sensor_msgs.msg import Image

from moonseg3r_ros.data.synthetic import SceneSpec, generate_scene
from moonseg3r_ros.ros import conversions as conv
from moonseg3r_ros.ros.testing import ACTIVATE, CAMERA_REMAPS, CONFIGURE, DEACTIVATE, NodeProcess, TestClient

PARAMS = {"masks.source": "ground_truth", "keyframe_interval": 2, "input_reliability": "reliable",
          "cloud.rate": 0.0, "queue_size": 2, "drop_policy": "latest", "diagnostics_rate": 5.0}
LOST = ("queue_drops", "pairing_drops.image", "bad_input.image", "stamps_not_increasing", "skipped",
        "processing_errors", "discarded_on_deactivate", "discarded_on_reset")


@pytest.fixture(scope="module")
def frames():
    scene = generate_scene(SceneSpec(seed=7, num_frames=6, width=128, height=96, num_objects=4))
    return [scene.frames[i] for i in range(6)]


class Stamps:
    """Increasing stamps across the module's tests."""

    def __init__(self):
        self.next = 100.0

    def take(self, n: int) -> float:
        start, self.next = self.next, self.next + 0.1 * n + 1.0
        return start


@pytest.fixture(scope="module")
def node(ros_context, tmp_path_factory, frames):
    proc = NodeProcess("moonseg3r", PARAMS, CAMERA_REMAPS, tmp_path_factory.mktemp("faults")).start()
    client = TestClient(ros_context, "faults_client")
    stamps = Stamps()
    try:
        client.subscribe_outputs()
        assert client.change_state(CONFIGURE) and client.change_state(ACTIVATE), proc.log()
        client.feed(frames[:4], stamps.take(4))
        assert client.spin_until(lambda: len(client["instance_map"]) >= 2, 120), proc.log()
        yield client, proc, stamps
    finally:
        client.close()
        proc.stop()


def counter(client, name: str) -> int:
    return int(client.diagnostics().get(name, 0))


def accounted(client) -> bool:
    """Every received image is processed or counted as dropped, and nothing is queued."""
    d = client.diagnostics()
    if not d or d.get("queue_length") != "0":
        return False
    done = int(d.get("frames_processed", 0)) + sum(int(d.get(k, 0)) for k in LOST)
    return done == int(d.get("images_received", 0))


def instance_ids(client) -> set:
    return {i.id for i in client["instance_map"].last().instances}


def assert_alive_and_intact(client, proc, ids_before: set) -> None:
    assert proc.alive()
    assert client.get_state() == "active"
    assert ids_before <= instance_ids(client)


def test_bad_images_are_dropped_counted_and_explained(node, frames):
    client, proc, stamps = node
    ids_before = instance_ids(client)
    assert client.spin_until(lambda: accounted(client), 60)
    bad_before = counter(client, "bad_input.image")
    start = stamps.take(3)
    bad = [Image(height=4, width=4, encoding="yuv422", step=8, data=bytes(32)),
           Image(height=0, width=0, encoding="rgb8", step=0, data=b""),
           Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(40))]
    for i, msg in enumerate(bad):
        msg.header.stamp = conv.seconds_to_stamp(start + 0.1 * i)
        client.publisher("image", Image, "/camera/image_raw").publish(msg)
    assert client.spin_until(lambda: counter(client, "bad_input.image") == bad_before + 3, 60), proc.log()
    log = proc.log()
    assert "unsupported image encoding 'yuv422'" in log
    assert "zero-size image (0x0)" in log
    assert "image data length 40 does not match step * height = 12 * 4 = 48" in log
    # Good frames still go through afterwards.
    n_tf = len(client["tf"])
    client.feed(frames[4:6], stamps.take(2))
    assert client.spin_until(lambda: len(client["tf"]) >= n_tf + 2, 60), proc.log()
    assert_alive_and_intact(client, proc, ids_before)


def test_stamps_going_backwards_are_dropped_and_counted(node, frames):
    client, proc, stamps = node
    ids_before = instance_ids(client)
    before = counter(client, "stamps_not_increasing")
    n_tf = len(client["tf"])
    client.feed(frames[:1], 1.0)  # far older than everything so far
    assert client.spin_until(lambda: counter(client, "stamps_not_increasing") == before + 1, 60), proc.log()
    client.spin_for(0.3)
    assert len(client["tf"]) == n_tf  # nothing published for the old frame
    assert "does not follow the previous one" in proc.log()
    assert_alive_and_intact(client, proc, ids_before)


def test_a_burst_of_100_frames_drops_old_frames_by_policy(node, frames):
    client, proc, stamps = node
    ids_before = instance_ids(client)
    assert client.set_parameters({"keyframe_interval": 1})[0].successful  # every frame is a full keyframe
    assert client.spin_until(lambda: accounted(client), 60)
    received_before, drops_before = counter(client, "images_received"), counter(client, "queue_drops")
    processed_before = counter(client, "frames_processed")
    start = stamps.take(100)
    for i in range(100):  # as fast as this process can publish: well within about a second
        client.publish_frame(frames[i % len(frames)], conv.seconds_to_stamp(start + 0.01 * i))
    assert client.spin_until(lambda: accounted(client) and counter(client, "images_received") > received_before, 180)
    received = counter(client, "images_received") - received_before
    drops = counter(client, "queue_drops") - drops_before
    processed = counter(client, "frames_processed") - processed_before
    assert 0 < received <= 100
    assert drops > 0, "the worker is slower than a 100 Hz burst: old frames must be dropped (latest wins)"
    assert processed + drops <= received
    # Latest wins: the last frame of the burst is processed (its stamp is the newest TF).
    newest = max(conv.stamp_to_ns(t.header.stamp) for m in client["tf"].messages for t in m.transforms)
    assert newest == conv.stamp_to_ns(conv.seconds_to_stamp(start + 0.01 * 99))
    assert client.set_parameters({"keyframe_interval": 2})[0].successful
    assert_alive_and_intact(client, proc, ids_before)
    assert counter(client, "debug_images_published") == 0  # nobody subscribes to the overlay here


def test_deactivate_and_reactivate_mid_stream_keeps_the_map(node, frames):
    client, proc, stamps = node
    assert client.spin_until(lambda: accounted(client), 60)
    ids_before = instance_ids(client)
    points_before = client["instance_map"].last().point_count
    client.feed(frames[:2], stamps.take(2))
    assert client.change_state(DEACTIVATE)  # possibly while a frame is being processed
    assert client.get_state() == "inactive"
    n_tf = len(client["tf"])
    client.make_input_publishers()
    start = stamps.take(2)
    for i, frame in enumerate(frames[2:4]):  # nobody listens now
        client.publish_frame(frame, conv.seconds_to_stamp(start + 0.1 * i))
    client.spin_for(0.5)
    assert len(client["tf"]) == n_tf
    assert client.change_state(ACTIVATE)
    n_maps = len(client["instance_map"])
    client.feed(frames[4:6], stamps.take(2))
    assert client.spin_until(lambda: len(client["instance_map"]) > n_maps, 60), proc.log()
    assert client["instance_map"].last().point_count >= points_before
    assert_alive_and_intact(client, proc, ids_before)

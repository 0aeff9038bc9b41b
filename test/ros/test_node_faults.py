"""Bad input and faults against the running node process: wrong encoding, zero-size image, data length
not matching step * height, stamps going backwards, a burst of 100 frames in about a second, and
deactivation/re-activation mid-stream. After each: the node is alive, active, and its map intact.

Nothing here depends on how fast the node is: absence is asserted after a later frame came through (the
node works in stamp order), and the burst is checked by its accounting, whatever share gets dropped."""
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
        client.handshake_frames = frames[5:6]
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


def settled(client, timeout: float = 60.0) -> bool:
    """accounted() on a diagnostics message the node sent after everything before this call was processed."""
    if not client.spin_until(lambda: accounted(client), timeout):
        return False
    count = client.diagnostics_count
    client.spin_until(lambda: client.diagnostics_count >= count + 2, timeout)  # one sent after this moment
    return client.spin_until(lambda: accounted(client), timeout)


def tf_stamps(client) -> set:
    return {conv.stamp_to_ns(t.header.stamp) for m in client["tf"].messages for t in m.transforms}


def handshake(client, proc, stamps) -> int:
    """Feed one good frame and wait for its TF: whatever the node was given before is behind it. Its stamp."""
    start = stamps.take(1)
    stamp_ns = conv.stamp_to_ns(conv.seconds_to_stamp(start))
    client.feed(client.handshake_frames[:1], start)
    assert client.spin_until(lambda: stamp_ns in tf_stamps(client), 60), proc.log()
    return stamp_ns


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
    old_ns = conv.stamp_to_ns(conv.seconds_to_stamp(1.0))
    client.feed(frames[:1], 1.0)  # far older than everything so far
    assert client.spin_until(lambda: counter(client, "stamps_not_increasing") == before + 1, 60), proc.log()
    handshake(client, proc, stamps)
    assert old_ns not in tf_stamps(client)  # nothing published for the old frame
    assert "does not follow the previous one" in proc.log()
    assert_alive_and_intact(client, proc, ids_before)


def test_a_burst_of_100_frames_is_accounted_for_and_the_latest_wins(node, frames):
    client, proc, stamps = node
    ids_before = instance_ids(client)
    assert client.set_parameters({"keyframe_interval": 1})[0].successful  # every frame is a full keyframe
    assert settled(client)
    before = {name: counter(client, name) for name in ("images_received", "frames_processed") + LOST}
    start = stamps.take(100)
    burst = [conv.stamp_to_ns(conv.seconds_to_stamp(start + 0.01 * i)) for i in range(100)]
    for i in range(100):  # as fast as this process can publish: well within about a second
        client.publish_frame(frames[i % len(frames)], conv.seconds_to_stamp(start + 0.01 * i))
    assert client.spin_until(lambda: counter(client, "images_received") > before["images_received"], 180)
    assert settled(client, 180)
    delta = {name: counter(client, name) - value for name, value in before.items()}
    received, processed = delta["images_received"], delta["frames_processed"]
    assert 0 < received <= 100
    # Every received image was processed, dropped by the queue policy (latest wins), or dropped unpaired (its
    # depth/pose/ids lost to the input QoS depth in the burst): each counted once, nothing else lost.
    dropped = delta["queue_drops"] + delta["pairing_drops.image"]
    assert processed + dropped == received, sorted(delta.items())
    assert all(delta[name] == 0 for name in LOST if name not in ("queue_drops", "pairing_drops.image")), delta
    # One TF per processed frame of the burst, and latest wins: the burst's last frame is among them.
    published = sorted(tf_stamps(client) & set(burst))
    assert len(published) == processed
    assert published[-1] == burst[-1]
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
    client.make_input_publishers()
    start = stamps.take(2)
    unheard = [conv.stamp_to_ns(conv.seconds_to_stamp(start + 0.1 * i)) for i in range(2)]
    for i, frame in enumerate(frames[2:4]):  # nobody listens now
        client.publish_frame(frame, conv.seconds_to_stamp(start + 0.1 * i))
    assert client.change_state(ACTIVATE)
    n_maps = len(client["instance_map"])
    client.feed(frames[4:6], stamps.take(2))
    assert client.spin_until(lambda: len(client["instance_map"]) > n_maps, 60), proc.log()
    handshake(client, proc, stamps)
    assert not set(unheard) & tf_stamps(client)  # the frames sent while inactive were never processed
    assert client["instance_map"].last().point_count >= points_before
    assert_alive_and_intact(client, proc, ids_before)

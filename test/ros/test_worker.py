"""The bounded drop-policy queue, the worker thread and stamp pairing (no middleware, no timing asserts)."""
import threading

import pytest

from moonseg3r_ros.ros.worker import FrameQueue, FrameWorker, StampPairing


def test_latest_policy_drops_the_oldest_queued_frame():
    q = FrameQueue(2, "latest")
    assert q.put(1) is None and q.put(2) is None
    assert q.put(3) == 1  # the oldest queued frame makes room
    assert q.put(4) == 2
    assert [q.get(0), q.get(0), q.get(0)] == [3, 4, None]
    assert (q.accepted, q.dropped) == (4, 2)


def test_oldest_policy_drops_the_incoming_frame_and_keeps_order():
    q = FrameQueue(3, "oldest")
    dropped = [q.put(i) for i in range(5)]
    assert dropped == [None, None, None, 3, 4]
    assert [q.get(0) for _ in range(3)] == [0, 1, 2]
    assert (q.accepted, q.dropped) == (3, 2)


def test_queue_rejects_bad_settings():
    with pytest.raises(ValueError, match="capacity"):
        FrameQueue(0)
    with pytest.raises(ValueError, match="drop_policy"):
        FrameQueue(1, "block")


def test_worker_processes_everything_in_order_and_survives_errors():
    q = FrameQueue(1000, "oldest")
    seen, errors = [], []

    def process(item):
        if item == 3:
            raise RuntimeError("bad frame")
        seen.append(item)

    worker = FrameWorker(q, process, on_error=lambda item, exc: errors.append((item, str(exc)))).start()
    for i in range(10):
        assert q.put(i) is None
    assert worker.wait_idle(timeout=30)
    assert seen == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert errors == [(3, "bad frame")]
    assert (worker.stats.processed, worker.stats.errors) == (9, 1)
    assert worker.stats.last_error == "RuntimeError: bad frame"
    assert worker.stop(timeout=30)


def test_a_busy_worker_makes_the_latest_policy_drop_and_count():
    """While the worker is blocked on frame 0, a burst of 100 frames leaves only the newest queued."""
    q = FrameQueue(2, "latest")
    release, started = threading.Event(), threading.Event()
    seen = []

    def process(item):
        seen.append(item)
        started.set()
        release.wait(30)

    worker = FrameWorker(q, process).start()
    q.put(0)
    assert started.wait(30)
    for i in range(1, 101):
        q.put(i)
    release.set()
    assert worker.wait_idle(timeout=30)
    assert seen == [0, 99, 100]
    assert q.dropped == 98 and q.accepted == 101
    worker.stop(timeout=30)


def test_pause_waits_for_the_current_frame_and_holds_the_queue():
    q = FrameQueue(10, "oldest")
    release, started = threading.Event(), threading.Event()
    seen = []

    def process(item):
        started.set()
        release.wait(30)
        seen.append(item)

    worker = FrameWorker(q, process).start()
    q.put("a")
    assert started.wait(30)
    q.put("b")
    result = {}
    pauser = threading.Thread(target=lambda: result.setdefault("idle", worker.pause(timeout=30)))
    pauser.start()
    release.set()
    pauser.join(30)
    assert result["idle"] is True and seen == ["a"]
    assert len(q) == 1  # 'b' waits while paused
    assert q.clear() == 1
    q.put("c")
    worker.resume()
    assert worker.wait_idle(timeout=30)
    assert seen == ["a", "c"]
    worker.stop(timeout=30)


def test_pairing_by_exact_stamp():
    p = StampPairing(["image", "depth", "pose"], capacity=3)
    assert p.add("image", 100, "i100") is None
    assert p.add("depth", 100, "d100") is None
    assert p.add("pose", 200, "p200") is None
    assert p.add("pose", 100, "p100") == {"image": "i100", "depth": "d100", "pose": "p100"}
    assert p.pending() == 1 and p.stats.paired == 1
    # Out of order arrival across streams is fine.
    assert p.add("depth", 200, "d200") is None
    assert p.add("image", 200, "i200") == {"image": "i200", "depth": "d200", "pose": "p200"}
    assert p.stats.total_dropped == 0


def test_pairing_drops_and_counts_unpaired_entries():
    p = StampPairing(["image", "depth"], capacity=2)
    p.add("image", 1, "i1")  # depth for stamp 1 never comes
    p.add("image", 2, "i2")
    p.add("image", 3, "i3")  # over capacity: stamp 1 is dropped
    assert p.stats.dropped == {"image": 1, "depth": 0}
    assert p.add("depth", 3, "d3") == {"image": "i3", "depth": "d3"}
    # stamp 2 can never complete now (streams arrive in order): dropped at once.
    assert p.stats.dropped == {"image": 2, "depth": 0}
    assert p.add("depth", 2, "late") is None
    assert p.stats.dropped == {"image": 2, "depth": 1}
    assert p.pending() == 0
    with pytest.raises(KeyError):
        p.add("pose", 4, None)

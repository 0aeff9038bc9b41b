"""The map cloud's stamp and content come from one map state (issue 13: 3 of 20 clouds carried the next
keyframe's content under the previous stamp).

Deterministic: the pipeline lock is wrapped so that the cloud timer's publish runs exactly in the gap after the
worker stepped frame 2 and let go of the lock; the cloud must then carry frame 2's stamp with frame 2's points.
"""
import threading
from types import SimpleNamespace

import numpy as np

from moonseg3r_ros.core.config import PipelineConfig
from moonseg3r_ros.ros import conversions as conv
from moonseg3r_ros.ros.diagnostics import DiagnosticsMixin
from moonseg3r_ros.ros.inputs import FrameInput, InputsMixin
from moonseg3r_ros.ros.node_config import NodeConfig
from moonseg3r_ros.ros.outputs import OutputsMixin


class HookLock:
    """An RLock that runs `hook` (once, in another thread, joined) when fully released."""

    def __init__(self):
        self._lock = threading.RLock()
        self._depth = 0
        self.hook = None

    def __enter__(self):
        self._lock.acquire()
        self._depth += 1

    def __exit__(self, *exc):
        self._depth -= 1
        outermost = self._depth == 0
        self._lock.release()
        hook, self.hook = (self.hook, None) if outermost else (None, self.hook)
        if hook is not None:
            thread = threading.Thread(target=hook)
            thread.start()
            thread.join()


class FakeMap:
    """Every point sits at (k, k, k) after the pipeline's k-th frame."""

    def __init__(self):
        self.state = 0

    def points(self):
        return (np.full((10, 3), self.state, np.float32), np.zeros((10, 3), np.uint8), np.ones(10, np.int32))

    def instances(self):
        return []

    def __len__(self):
        return 10


class FakePipeline:
    def __init__(self):
        self.instance_map = FakeMap()
        self.stats = {}
        self.config = PipelineConfig()

    def step(self, rgb, stamp, **_):
        self.instance_map.state = int(stamp)
        return SimpleNamespace(skipped=False, frame_index=int(stamp), is_keyframe=True, pose_c2w=None,
                               instance_ids_2d=None, committed=[])


class FakeNode(OutputsMixin, InputsMixin, DiagnosticsMixin):
    def __init__(self):
        self.config = NodeConfig()
        self.config.cloud.rate = 1.0  # clouds from the timer only
        self.config.cloud.voxel_size = 0.0
        self._lock = HookLock()
        self._counter_lock = threading.Lock()
        self.counters = {}
        self._pipeline = FakePipeline()
        self._cloud_dirty = self._last_map_stamp = None
        self._last_frame_index = -1
        self._recent = []
        self.published = []

    def _count(self, key, n=1):
        self.counters[key] = self.counters.get(key, 0) + n

    def _publish(self, name, msg):
        self.published.append((name, msg))

    def _nav_prepare(self, frame):
        return True

    def _points_for_output(self, xyz):  # NavMixin's: no robot-frame alignment here
        return xyz

    def _nav_keyframe(self, frame, result, records):
        pass

    def _keyframe_messages(self, pipeline, frame, result):
        return None, None, []

    def _publish_debug_image(self, frame, result, colors):
        pass


def frame(seconds: int) -> FrameInput:
    stamp = conv.seconds_to_stamp(float(seconds))
    return FrameInput(stamp=stamp, stamp_ns=conv.stamp_to_ns(stamp), rgb=np.zeros((4, 4, 3), np.uint8), received=0.0)


def test_cloud_published_between_step_and_bookkeeping_pairs_stamp_with_its_content():
    node = FakeNode()
    node._process_frame(frame(1))
    node._lock.hook = node._cloud_tick  # the timer fires right after frame 2's step released the lock
    node._process_frame(frame(2))
    clouds = [msg for name, msg in node.published if name == "cloud"]
    assert len(clouds) >= 1
    for cloud in clouds:
        x = float(np.frombuffer(bytes(cloud.data), np.float32)[0])
        stamp = cloud.header.stamp.sec
        assert x == stamp, f"content of frame {x:.0f} under the stamp of frame {stamp}"
    assert clouds[0].header.stamp.sec == 2
    assert node.counters["frames_processed"] == 2

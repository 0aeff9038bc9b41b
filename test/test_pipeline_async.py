"""masks.asynchronous: keyframe masks on a worker thread, committed in frame order (core/keyframe_queue.py)."""
import threading

import numpy as np
import pytest

from moonseg3r_ros.core.config import PipelineConfig
from moonseg3r_ros.core.masks import GroundTruthMasks, MaskError, make_mask_source
from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline
from moonseg3r_ros.data.synthetic import SceneSpec, generate_scene


@pytest.fixture(scope="module")
def scene():
    return generate_scene(SceneSpec(seed=3, num_frames=14, width=96, height=72, num_objects=4, orbit_degrees=40))


def _config(asynchronous: bool, interval: int = 2, max_pending: int = 8, source: str = "weight_free"):
    config = PipelineConfig()
    config.device = "cpu"
    config.masks.source = source
    config.masks.min_mask_area = 20
    config.masks.min_valid_points = 5
    config.masks.asynchronous = asynchronous
    config.masks.max_pending = max_pending
    config.geometry.recorded_features = True  # F3d too
    config.map.min_instance_points = 1
    config.keyframe_interval = interval
    config.prune_interval = 2  # prune runs, on the keyframe's own ordinal
    return config


class GatedMasks:
    """Masks (ground truth unless `inner` is given) that wait for `gate` (the test opens it); calls counted."""

    def __init__(self, fail_on: tuple = (), inner=None):
        self.inner = inner or GroundTruthMasks(min_area=20)
        self.gate = threading.Event()
        self.calls = 0
        self.fail_on = fail_on

    def generate(self, frame, geometry=None):
        self.calls += 1
        if not self.gate.wait(timeout=60):
            raise RuntimeError("gate never opened")
        if frame.frame_index in self.fail_on:
            raise MaskError("no masks for this frame")
        return self.inner.generate(frame, geometry)


def _feed(pipe, frames):
    return [pipe.step(f.image, f.stamp, depth=f.depth, intrinsics=f.intrinsics, pose_c2w=f.pose_c2w,
                      instance_ids=f.instance_ids) for f in frames]


def _summary(pipe, results):
    keyframes = [(r.frame_index, r.num_masks, r.skipped_reason, r.new_instance_ids, r.matched_instance_ids,
                  None if r.instance_ids_2d is None else r.instance_ids_2d.tobytes())
                 for r in results if r.is_keyframe]
    xyz, rgb, ids = pipe.instance_map.points()
    records = pipe.instance_map.instances()  # ids, confidences (keyframe counts), boxes, descriptors
    descriptors = {i: pipe.bank.get([i])[0].tobytes() for i in pipe.bank.ids().tolist()}
    return keyframes, xyz.tobytes(), rgb.tobytes(), ids.tobytes(), records, descriptors, dict(pipe.stats)


@pytest.mark.parametrize("source,held", [("weight_free", False), ("rgbd", False), ("weight_free", True)])
def test_asynchronous_masks_give_the_synchronous_results(scene, source, held):
    sync = MoonSeg3RPipeline(_config(False, source=source))
    expected = _summary(sync, _feed(sync, scene.frames))
    config = _config(True, source=source)
    masks = GatedMasks(inner=make_mask_source(config, "cpu"))
    if not held:
        masks.gate.set()
    pipe = MoonSeg3RPipeline(config, mask_source=masks)  # held: every keyframe waits, all commit in flush()
    results = _feed(pipe, scene.frames)
    if held:
        assert not any(r.committed for r in results) and len(pipe.instance_map) == 0
        masks.gate.set()
    committed = [r for step in results for r in step.committed] + pipe.flush()
    assert [r.frame_index for r in committed] == [r.frame_index for r in results if r.is_keyframe]
    assert all(c is r for c, r in zip(committed, [r for r in results if r.is_keyframe]))  # completed in place
    assert all("masks" in r.timings for r in committed)
    got = _summary(pipe, results)
    assert expected[-1]["instances_new"] > 0 and expected[-1]["keyframes"] == 7
    assert got[0] == expected[0]  # every keyframe: masks, ids, labels
    assert got == expected  # the map, the bank and every counter
    assert pipe.stats["keyframes_dropped_pending"] == 0
    pipe.close()


def test_geometry_of_the_following_frames_does_not_wait_for_masks(scene):
    masks = GatedMasks()
    pipe = MoonSeg3RPipeline(_config(True, max_pending=2), mask_source=masks)
    results = _feed(pipe, scene.frames[:6])  # keyframes 0, 2, 4; the mask job of frame 0 is held at the gate
    assert [r.frame_index for r in results] == list(range(6)) and all(r.pose_c2w is not None for r in results)
    assert masks.calls == 1 and all(r.instance_ids_2d is None and not r.committed for r in results)
    assert len(pipe.instance_map) == 0 and pipe.stats["keyframes_dropped_pending"] == 1
    assert results[4].skipped_reason.startswith("masks: 2 keyframes already wait")
    masks.gate.set()
    done = pipe.flush()
    assert [r.frame_index for r in done] == [0, 2] and done[0] is results[0]
    assert results[0].num_masks == 4 and sorted(np.unique(results[0].instance_ids_2d).tolist()) == [0, 1, 2, 3, 4]
    assert pipe.stats["instances_new"] == 4 and len(pipe.instance_map) > 0
    later = _feed(pipe, scene.frames[6:8])  # keyframe 6 runs at once now (the gate is open)
    done = later[1].committed + pipe.flush()  # committed at frame 7 if its masks were ready by then
    assert len(done) == 1 and done[0] is later[0] and later[0].num_masks == 4
    pipe.close()


def test_mask_errors_are_counted_at_commit_and_other_faults_raise(scene):
    masks = GatedMasks(fail_on=(0,))
    masks.gate.set()
    pipe = MoonSeg3RPipeline(_config(True, interval=1), mask_source=masks)
    first = _feed(pipe, scene.frames[:2])
    pipe.flush()
    assert first[0].skipped_reason == "masks: no masks for this frame" and first[1].num_masks == 4
    assert pipe.stats["skipped_no_masks"] == 1
    masks.fail_on, masks.gate = (), threading.Event()
    masks.inner.generate = lambda frame, geometry=None: 1 / 0  # not a MaskError: raises like the synchronous path
    _feed(pipe, scene.frames[2:4])  # two keyframes held at the gate
    masks.gate.set()
    for _ in range(2):  # each keyframe's fault is raised once; the second is not lost with the first
        with pytest.raises(ZeroDivisionError):
            pipe.flush()
    assert pipe.flush() == [] and pipe.stats["skipped_no_masks"] == 1
    pipe.close()


def test_reset_and_close_discard_pending_keyframes(scene):
    masks = GatedMasks()
    pipe = MoonSeg3RPipeline(_config(True), mask_source=masks)
    _feed(pipe, scene.frames[:3])
    masks.gate.set()
    pipe.reset()  # waits for the job in progress, commits nothing
    assert pipe.flush() == [] and len(pipe.instance_map) == 0 and pipe.stats["keyframes"] == 0
    results = _feed(pipe, scene.frames[:1])
    pipe.close()
    assert results[0].instance_ids_2d is None and len(pipe.instance_map) == 0

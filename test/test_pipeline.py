import threading

import numpy as np
import pytest

from moonseg3r_ros.core.config import PipelineConfig
from moonseg3r_ros.core.masks import as_mask_set, drop_masks_without_geometry
from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline
from moonseg3r_ros.core.types import Frame

from synthetic_runs import run_orbit_scene  # test/synthetic_runs.py

K = np.array([[40.0, 0, 19.5], [0, 40.0, 14.5], [0, 0, 1]])


def _config(**top):
    config = PipelineConfig()
    config.masks.source = "ground_truth"
    config.masks.min_mask_area = 10
    config.masks.min_valid_points = 5
    config.map.min_instance_points = 1
    config.keyframe_interval = 1
    config.device = "cpu"
    for k, v in top.items():
        setattr(config, k, v)
    return config


def _frame_inputs(shift=0):
    """A 30x40 view of a wall at 2 m with two coloured squares (ids 1, 2)."""
    image = np.full((30, 40, 3), 100, np.uint8)
    ids = np.zeros((30, 40), np.int32)
    image[5:15, 5 + shift:15 + shift] = (220, 20, 20)
    ids[5:15, 5 + shift:15 + shift] = 1
    image[15:28, 22:36] = (20, 20, 220)
    ids[15:28, 22:36] = 2
    depth = np.full((30, 40), 2.0, np.float32)
    depth[ids > 0] = 1.8
    return dict(image=image, depth=depth, intrinsics=K, pose_c2w=np.eye(4), instance_ids=ids)


def _step(pipe, stamp, **changes):
    inputs = _frame_inputs()
    inputs.update(changes)
    image = inputs.pop("image")
    return pipe.step(image, stamp, **inputs)


def test_keyframes_create_then_match_instances():
    pipe = MoonSeg3RPipeline(_config())
    assert pipe.refinement_mode == "identity"
    first = _step(pipe, 0.0)
    assert first.is_keyframe and first.num_masks == 2 and sorted(first.new_instance_ids) == [1, 2]
    assert set(np.unique(first.instance_ids_2d)) == {0, 1, 2}
    second = _step(pipe, 0.1)
    assert second.new_instance_ids == [] and second.matched_instance_ids == [1, 2]
    np.testing.assert_array_equal(first.instance_ids_2d, second.instance_ids_2d)
    assert pipe.stats["frames"] == 2 and pipe.stats["keyframes"] == 2 and pipe.stats["masks_total"] == 4
    assert sorted(pipe.instance_map.instance_ids().tolist()) == [1, 2]
    for key in ("masks", "lifting", "refinement", "memory", "association", "map_update", "total"):
        assert key in second.timings
    np.testing.assert_array_equal(second.pose_c2w, np.eye(4))


def test_keyframe_interval():
    pipe = MoonSeg3RPipeline(_config(keyframe_interval=3))
    flags = [_step(pipe, 0.1 * i).is_keyframe for i in range(7)]
    assert flags == [True, False, False, True, False, False, True]
    assert pipe.stats["keyframes"] == 3


def test_bad_frames_are_counted_and_leave_the_map_alone():
    pipe = MoonSeg3RPipeline(_config())
    _step(pipe, 1.0)
    before = pipe.snapshot()
    results = [
        _step(pipe, 0.5),                                               # older stamp
        _step(pipe, 1.0),                                               # same stamp
        _step(pipe, float("nan")),                                      # bad stamp
        _step(pipe, 2.0, image=np.zeros((0, 4, 3), np.uint8)),          # empty image
        _step(pipe, 2.1, depth=np.full((30, 40), np.nan, np.float32)),  # no valid geometry
        _step(pipe, 2.2, pose_c2w=np.full((4, 4), np.inf)),             # bad pose
        _step(pipe, 2.3, instance_ids=None),                            # no masks
    ]
    assert all(r.skipped for r in results)
    assert pipe.stats["skipped_out_of_order"] == 2 and pipe.stats["skipped_bad_input"] == 2
    assert pipe.stats["skipped_no_geometry"] == 2 and pipe.stats["skipped_no_masks"] == 1
    after = pipe.snapshot()
    np.testing.assert_array_equal(before.xyz, after.xyz)
    np.testing.assert_array_equal(before.ids, after.ids)
    ok = _step(pipe, 3.0)  # the stream goes on
    assert not ok.skipped and ok.matched_instance_ids == [1, 2]


def test_empty_masks_and_16bit_mono_input():
    pipe = MoonSeg3RPipeline(_config())
    inputs = _frame_inputs()
    mono16 = (inputs.pop("image")[..., 0].astype(np.uint16) * 257)
    inputs["instance_ids"] = np.zeros((30, 40), np.int32)
    result = pipe.step(mono16, 0.0, encoding="mono16", **inputs)
    assert not result.skipped and result.num_masks == 0
    assert pipe.stats["keyframes_without_masks"] == 1 and len(pipe.instance_map.instance_ids()) == 0


def test_reset_snapshot_thread_and_close():
    pipe = MoonSeg3RPipeline(_config())
    errors = []

    def reader():
        try:
            for _ in range(20):
                snap = pipe.snapshot()
                assert snap.xyz.shape[0] == snap.ids.shape[0]
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(5):
        _step(pipe, 0.1 * i)
    thread.join()
    assert not errors
    assert len(pipe.snapshot().instances) == 2
    pipe.reset()
    assert pipe.stats["frames"] == 0 and len(pipe.instance_map) == 0 and len(pipe.bank) == 0
    assert not _step(pipe, 0.0).skipped  # stamps start again after reset
    pipe.close()
    with pytest.raises(RuntimeError, match="closed"):
        _step(pipe, 5.0)


def test_weight_free_default_pipeline_runs():
    config = PipelineConfig()
    config.device = "cpu"
    config.keyframe_interval = 1
    config.masks.min_mask_area = 10
    config.masks.min_valid_points = 5
    pipe = MoonSeg3RPipeline(config)
    result = _step(pipe, 0.0)
    assert result.num_masks >= 3  # wall + two squares
    ids = result.instance_ids_2d
    assert len(np.unique(ids[5:15, 5:15])) == 1 and ids[7, 7] != ids[20, 30]


def test_end_to_end_synthetic_scene_stable_ids():
    scene, pipe, assignments = run_orbit_scene(seed=1, interval=2)
    assert pipe.stats["keyframes"] == 20
    # every visible object maps to exactly one map instance, the same at every keyframe, ids distinct
    assert all(len(ids) == 1 for ids in assignments.values()), assignments
    map_of = {obj: next(iter(ids)) for obj, ids in assignments.items()}
    assert len(set(map_of.values())) == len(map_of) and 0 not in map_of.values()
    assert len(pipe.instance_map.instance_ids()) == len(map_of)
    # the points of each instance lie within the object's ground-truth box
    xyz, _, ids = pipe.instance_map.points()
    vertex_ids = scene.vertex_labels % 1000
    for obj, instance in map_of.items():
        gt = scene.vertices[vertex_ids == obj]
        lo, hi = gt.min(axis=0) - 0.03, gt.max(axis=0) + 0.03
        pts = xyz[ids == instance]
        inside = ((pts >= lo) & (pts <= hi)).all(axis=1).mean()
        assert inside > 0.95, (obj, inside)


def test_masks_without_enough_valid_geometry_are_dropped():
    pipe = MoonSeg3RPipeline(_config())
    inputs = _frame_inputs()
    inputs["depth"][5:15, 5:15] = np.nan  # object 1 (100 px) has no valid geometry, object 2 keeps all
    result = _step(pipe, 0.0, depth=inputs["depth"])
    assert result.num_masks == 1 and pipe.stats["masks_dropped_no_geometry"] == 1
    assert set(np.unique(result.instance_ids_2d[15:28, 22:36])) == {1}
    # the same count on a mask stack (not a label image): 4 valid pixels < min_valid_points 5 -> dropped
    geometry = pipe.geometry_source.compute(Frame(inputs["image"], 1.0, inputs["depth"], K, np.eye(4)))
    stack = np.zeros((2, 30, 40), bool)
    stack[0, 13:17, 5:7] = True  # rows 13-14 invalid, 15-16 valid: 4 valid pixels
    stack[1, 20:25, 20:25] = True  # 25 valid pixels
    kept, dropped = drop_masks_without_geometry(as_mask_set(stack), geometry.valid, pipe.config.masks.min_valid_points)
    assert len(kept) == 1 and kept.masks[0].sum() == 25 and dropped == 1

"""A saved map is validated field by field before it replaces the running map: every invalid value is refused
with its reason (MapFileError), a valid map still loads exactly, and a refused load leaves the map as it was."""
import json

import numpy as np
import pytest

from moonseg3r_ros.core.config import MapConfig
from moonseg3r_ros.core.instance_map import InstanceMap
from moonseg3r_ros.core.map_files import MapFileError
from moonseg3r_ros.core.map_validation import (MAX_INSTANCE_ID, MapValidationError, config_differences,
                                                config_from_json, unknown_config_keys)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(path, arrays of the file, the map) of a small map with instances 1..3 and a descriptor."""
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (400, 3)).astype(np.float32)
    colors = rng.integers(0, 256, (400, 3), dtype=np.uint8)
    ids = rng.integers(0, 4, 400).astype(np.int32)
    instance_map = InstanceMap(MapConfig(voxel_size=0.1))
    instance_map.integrate(points, colors, ids, 1.0)
    instance_map.integrate(points + 0.01, colors, ids, 2.0)
    instance_map.set_descriptor(2, np.arange(4, dtype=np.float32))
    path = tmp_path_factory.mktemp("map") / "map.npz"
    instance_map.save(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    return path, arrays, instance_map


def _write(tmp_path, arrays, **changes):
    out = dict(arrays)
    out.update(changes)
    path = tmp_path / "edited.npz"
    with open(path, "wb") as f:
        np.savez(f, **out)
    return path


def _with_config(arrays, **fields):
    config = json.loads(str(arrays["config"]))
    config.update(fields)
    return np.array(json.dumps(config))


def test_a_valid_map_loads_exactly(saved):
    path, _, instance_map = saved
    loaded = InstanceMap.load(path)
    assert loaded.instances() == instance_map.instances() and len(loaded) == len(instance_map)
    assert loaded.config == instance_map.config and loaded.next_id() == 4


@pytest.mark.parametrize("fields, reason", [
    ({"voxel_size": 0}, r"voxel_size is 0.0, outside \[0.0001, 10.0\]"),
    ({"voxel_size": -0.02}, r"voxel_size is -0.02, outside"),
    ({"voxel_size": "abc"}, r"voxel_size is 'abc', expected a number"),
    ({"voxel_size": float("nan")}, r"voxel_size is nan, expected a finite number"),
    ({"voxel_size": True}, r"voxel_size is True, expected a float"),
    ({"max_point_weight": 0}, r"max_point_weight is 0, outside \[1, "),
    ({"max_point_weight": 2.5}, r"max_point_weight is 2.5, expected an integer"),
    ({"stale_after_s": float("inf")}, r"stale_after_s is inf, expected a finite number"),
    ({"min_instance_points": -1}, r"min_instance_points is -1, outside"),
])
def test_bad_map_configuration_is_refused(tmp_path, saved, fields, reason):
    _, arrays, _ = saved
    path = _write(tmp_path, arrays, config=_with_config(arrays, **fields))
    with pytest.raises(MapFileError, match="bad map configuration: map configuration " + reason):
        InstanceMap.load(path)


def test_configuration_that_is_not_an_object_is_refused(tmp_path, saved):
    _, arrays, _ = saved
    with pytest.raises(MapFileError, match="is a list, not an object"):
        InstanceMap.load(_write(tmp_path, arrays, config=np.array("[1, 2]")))
    with pytest.raises(MapFileError, match="not JSON"):
        InstanceMap.load(_write(tmp_path, arrays, config=np.array("{voxel")))


def _edited(arrays, name, edit):
    value = arrays[name].copy()
    edit(value)
    return {name: value}


@pytest.mark.parametrize("name, edit, reason", [
    ("slot_xyz", lambda a: a.__setitem__((3, 1), np.nan), r"voxel coordinates \(xyz\) hold NaN"),
    ("slot_xyz", lambda a: a.__setitem__((0, 0), np.inf), r"voxel coordinates \(xyz\) hold NaN or infinite"),
    ("slot_conf", lambda a: a.__setitem__(2, np.nan), "voxel confidences hold NaN"),
    ("slot_rgb", lambda a: a.__setitem__((1, 2), 300.0), r"voxel colours \(rgb\) are not finite values in"),
    ("slot_weight", lambda a: a.__setitem__(0, 0.0), "voxel weights are not finite and > 0"),
    ("slot_weight", lambda a: a.__setitem__(0, np.nan), "voxel weights are not finite and > 0"),
    ("slot_vote_id", lambda a: a.__setitem__(0, -5), r"voxel instance ids \(vote_id\) are negative"),
    ("slot_vote_count", lambda a: a.__setitem__(0, -1), "voxel vote counts are negative"),
    ("meta_ids", lambda a: a.__setitem__(0, -1), "instance ids must be >= 1"),
    ("meta_ids", lambda a: a.__setitem__(1, a[0]), "instance ids are not strictly ascending"),
    ("meta_first_seen", lambda a: a.__setitem__(0, np.inf), "instance stamps are infinite"),
    ("meta_first_seen", lambda a: a.__setitem__(0, 99.0), "an instance was first seen after it was last seen"),
    ("meta_desc_data", lambda a: a.__setitem__(0, np.nan), "descriptor of instance 2 is not finite"),
])
def test_bad_map_content_is_refused(tmp_path, saved, name, edit, reason):
    _, arrays, _ = saved
    with pytest.raises(MapFileError, match="invalid map: " + reason):
        InstanceMap.load(_write(tmp_path, arrays, **_edited(arrays, name, edit)))


@pytest.mark.parametrize("next_id, reason", [
    (3, "next_id 3 is not above the largest instance id 3"),
    (0, "next_id 0 is not above the largest instance id 3"),
    (-7, "next_id -7 is not above"),
    (2**27, f"next_id {2**27} is above {MAX_INSTANCE_ID}"),
    (2**40, f"next_id {2**40} is above {MAX_INSTANCE_ID}"),
])
def test_bad_next_id_is_refused(tmp_path, saved, next_id, reason):
    _, arrays, _ = saved
    with pytest.raises(MapFileError, match="invalid map: " + reason):
        InstanceMap.load(_write(tmp_path, arrays, next_id=np.array(next_id, np.int64)))


def test_next_id_must_be_one_integer_and_ids_bounded(tmp_path, saved):
    _, arrays, _ = saved
    with pytest.raises(MapFileError, match="next_id is float64 \\(\\), expected one integer"):
        InstanceMap.load(_write(tmp_path, arrays, next_id=np.array(4.0)))
    with pytest.raises(MapFileError, match="next_id is int64 \\(2,\\)"):
        InstanceMap.load(_write(tmp_path, arrays, next_id=np.array([4, 5])))
    votes = arrays["slot_vote_id"].copy()
    votes[0] = 2**31 - 1  # one voxel claiming a huge id (dense per-id tables would take 16 GB)
    with pytest.raises(MapFileError, match="is not above the largest instance id 2147483647"):
        InstanceMap.load(_write(tmp_path, arrays, slot_vote_id=votes))
    with pytest.raises(MapFileError, match="is above"):
        InstanceMap.load(_write(tmp_path, arrays, slot_vote_id=votes, next_id=np.array(2**31, np.int64)))


def test_inconsistent_lengths_are_refused(tmp_path, saved):
    _, arrays, _ = saved
    with pytest.raises(MapFileError, match="array xyz has float32"):
        InstanceMap.load(_write(tmp_path, arrays, slot_xyz=arrays["slot_xyz"][:-1]))
    with pytest.raises(MapFileError, match="inconsistent instance records"):
        InstanceMap.load(_write(tmp_path, arrays, meta_last_seen=arrays["meta_last_seen"][:-1]))
    lengths = arrays["meta_desc_len"].copy()
    lengths[0], lengths[1] = -1, lengths[1] + 1  # same sum, a negative length
    with pytest.raises(MapFileError, match="inconsistent instance records"):
        InstanceMap.load(_write(tmp_path, arrays, meta_desc_len=lengths))


def test_config_helpers():
    assert config_from_json(json.dumps({"voxel_size": 1, "future_field": 3})) == MapConfig(voxel_size=1.0)
    assert unknown_config_keys(json.dumps({"voxel_size": 1, "future_field": 3})) == ["future_field"]
    with pytest.raises(MapValidationError):
        config_from_json("NaN")
    saved, current = MapConfig(voxel_size=0.05, max_point_weight=7), MapConfig()
    assert config_differences(saved, current) == {"voxel_size": (0.02, 0.05), "max_point_weight": (100, 7)}
    assert config_differences(current, MapConfig()) == {}


# ------------------------------------------------------------------------------------------- all or nothing
def test_a_refused_load_leaves_the_pipeline_map_as_it_was(tmp_path, saved):
    from moonseg3r_ros.core.config import PipelineConfig
    from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline

    _, arrays, instance_map = saved
    config = PipelineConfig()
    config.masks.source = "ground_truth"
    config.device = "cpu"
    pipeline = MoonSeg3RPipeline(config)
    pipeline.instance_map = before = InstanceMap.load(saved[0])
    expected = before.instances()
    for bad in (dict(next_id=np.array(2**40, np.int64)), dict(config=_with_config(arrays, voxel_size=0)),
                _edited(arrays, "slot_vote_id", lambda a: a.__setitem__(0, -3))):
        with pytest.raises(MapFileError):
            pipeline.load_map(_write(tmp_path, arrays, **bad))
        assert pipeline.instance_map is before and before.instances() == expected
    assert before.next_id() == 4  # the id counter is untouched too


def test_map_work_does_not_grow_with_the_id_counter(saved):
    """instances() and prune() size their per-id tables by the ids present, not by next_id (a counter of
    2**27 once made every frame take 77 s and 14 GB). Measured as numpy's traced peak allocation."""
    import tracemalloc

    instance_map = InstanceMap.load(saved[0])
    expected = instance_map.instances()
    instance_map._next_id = 2**24  # reachable by a long run's counter, not only by a file
    tracemalloc.start()
    try:
        records = instance_map.instances()
        pruned = instance_map.prune(now=2.0, min_points=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert records == expected and pruned == []
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"  # 2**24 int64 counts alone would be 128 MiB

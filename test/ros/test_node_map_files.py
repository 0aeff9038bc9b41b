"""The node's map services against invalid and foreign map files (a real node process): a refused load answers
success=false with the reason and leaves the running map exactly as it was; a map saved with another MapConfig
loads and the node's map.* parameters then report its values; a failed save (onto a directory, below a file)
answers false, leaves no temporary file and keeps the old file (disk full mid-write: test/test_atomic_files.py)."""
import json

import numpy as np
import pytest

from moonseg3r_ros.core.config import MapConfig
from moonseg3r_ros.core.instance_map import InstanceMap
from moonseg3r_ros.ros.testing import CONFIGURE, NodeProcess, TestClient

PARAMS = {"geometry.source": "recorded", "masks.source": "ground_truth", "map.voxel_size": 0.02,
          "map.max_point_weight": 100}


def _map(config: MapConfig, seed: int = 0) -> InstanceMap:
    rng = np.random.default_rng(seed)
    instance_map = InstanceMap(config)
    points = rng.uniform(-1, 1, (300, 3)).astype(np.float32)
    instance_map.integrate(points, rng.integers(0, 256, (300, 3), dtype=np.uint8),
                           rng.integers(0, 4, 300).astype(np.int32), 1.0)
    return instance_map


def _edited(source, target, **changes):
    with np.load(source, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays.update(changes)
    with open(target, "wb") as f:
        np.savez(f, **arrays)
    return target


@pytest.fixture(scope="module")
def node(ros_context, tmp_path_factory):
    proc = NodeProcess("moonseg3r", PARAMS, {}, tmp_path_factory.mktemp("map_files_node")).start()
    client = TestClient(ros_context, "map_files_client")
    try:
        assert client.change_state(CONFIGURE), proc.log()
        yield client, proc
    finally:
        client.close()
        proc.stop()


def _load(client, path):
    from moonseg3r_msgs.srv import LoadMap

    response = client.call(LoadMap, "/moonseg3r/load_map", LoadMap.Request(path=str(path)))
    return bool(response.success), str(response.message)


def test_refused_loads_leave_the_running_map_intact(node, tmp_path):
    client, proc = node
    good = tmp_path / "good.npz"
    original = _map(MapConfig(voxel_size=0.02))
    original.save(good)
    ok, message = _load(client, good)
    assert ok, message
    with np.load(good, allow_pickle=False) as data:
        config = json.loads(str(data["config"]))
    bad_files = {
        "next_id 1099511627776 is above": dict(next_id=np.array(2**40, np.int64)),
        "voxel_size is 0.0, outside": dict(config=np.array(json.dumps({**config, "voxel_size": 0}))),
        "voxel_size is 'abc', expected a number": dict(config=np.array(json.dumps({**config, "voxel_size": "abc"}))),
        "next_id 2 is not above the largest instance id 3": dict(next_id=np.array(2, np.int64)),
    }
    for reason, change in bad_files.items():
        ok, message = _load(client, _edited(good, tmp_path / "bad.npz", **change))
        assert not ok and reason in message, message
        saved = tmp_path / "after.npz"
        ok, message = client.save_map(saved)
        assert ok, message
        assert InstanceMap.load(saved).instances() == original.instances()  # the map did not change
    assert client.get_parameters(["map.voxel_size"]) == [0.02]
    assert proc.alive()


def test_a_map_saved_with_another_map_config_sets_the_parameters(node, tmp_path):
    client, _ = node
    foreign = tmp_path / "foreign.npz"
    original = _map(MapConfig(voxel_size=0.05, max_point_weight=7), seed=1)
    original.save(foreign)
    ok, message = _load(client, foreign)
    assert ok, message
    assert "map.voxel_size 0.02 -> 0.05" in message and "map.max_point_weight 100 -> 7" in message
    assert client.get_parameters(["map.voxel_size", "map.max_point_weight"]) == [0.05, 7]
    saved = tmp_path / "saved.npz"
    assert client.save_map(saved)[0]
    reloaded = InstanceMap.load(saved)
    assert (reloaded.config.voxel_size, reloaded.config.max_point_weight) == (0.05, 7)
    assert reloaded.instances() == original.instances()
    ok, message = _load(client, saved)  # same settings again: nothing to report
    assert ok and "other map settings" not in message


def test_failed_saves_leave_no_partial_file_and_keep_the_old_one(node, tmp_path):
    client, _ = node
    folder = tmp_path / "a_folder"
    folder.mkdir()
    ok, message = client.save_map(folder)
    assert not ok and "is a directory" in message

    target = tmp_path / "map.npz"
    assert client.save_map(target)[0]
    old = target.read_bytes()
    not_a_folder = tmp_path / "map.npz" / "inside.npz"
    ok, message = client.save_map(not_a_folder)
    assert not ok and "map.npz is a file, not a folder" in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_folder", "map.npz"]
    assert target.read_bytes() == old
    assert client.save_map(target)[0]  # the service still saves after failed saves

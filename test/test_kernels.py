"""The numba kernels (core/kernels.py) give byte-identical maps, memories and pipeline results to the numpy code."""
import sys
from pathlib import Path

import numpy as np
import pytest

from moonseg3r_ros.core import kernels
from moonseg3r_ros.core.config import MapConfig
from moonseg3r_ros.core.instance_map import InstanceMap
from moonseg3r_ros.core.query_memory import QueryIndexMemory
from moonseg3r_ros.core.voxels import VoxelHash

pytestmark = pytest.mark.skipif(not kernels.NUMBA_ENABLED, reason=kernels.DISABLED_REASON or "numba off")


def _stream(rng, steps=12):
    """Batches of points with mixed ids (ties included), new and revisited cells, uint8 and float colours."""
    for step in range(steps):
        n = int(rng.integers(1, 4000))
        centre = rng.uniform(-1, 1, 3) * (step % 4)
        pts = (centre + rng.normal(0, 0.3, (n, 3))).astype(np.float32)
        pts[: n // 4] = rng.uniform(0.0, 0.1, (n // 4, 3))  # a few voxels revisited often: counts reach the cap
        ids = rng.choice([0, 0, 1, 2, 3, 7, 40], n).astype(np.int32)
        colors = rng.integers(0, 256, (n, 3)).astype(np.uint8 if step % 3 else np.float32)
        conf = rng.uniform(0.1, 2.0, n).astype(np.float32) if step % 2 else None
        if step == 5:
            pts[::50] = np.nan  # dropped by validation
        yield pts, colors, ids, conf, float(step)


def _run(numba_on, monkeypatch):
    monkeypatch.setattr(kernels, "NUMBA_ENABLED", numba_on)
    rng = np.random.default_rng(7)
    instance_map = InstanceMap(MapConfig(voxel_size=0.05, max_point_weight=5))
    memory = QueryIndexMemory(voxel_size=0.1)
    for pts, colors, ids, conf, stamp in _stream(rng):
        instance_map.integrate(pts, colors, ids, stamp, confidences=conf)
        memory.update(pts[np.isfinite(pts).all(1)], ids[np.isfinite(pts).all(1)])
    lookup = memory._voxels.lookup(np.r_[memory._voxels.keys, np.arange(50, dtype=np.int64)])
    return instance_map, memory, lookup


def test_numba_and_numpy_paths_agree_exactly(monkeypatch, tmp_path):
    fast_map, fast_memory, fast_lookup = _run(True, monkeypatch)
    slow_map, slow_memory, slow_lookup = _run(False, monkeypatch)
    n = len(slow_map)
    assert len(fast_map) == n > 1000
    assert fast_map._voxels.keys.tobytes() == slow_map._voxels.keys.tobytes()
    for name in ("_attrs", "_votes"):
        assert getattr(fast_map, name)[:n].tobytes() == getattr(slow_map, name)[:n].tobytes(), name
    assert fast_map.instances() == slow_map.instances()
    assert (fast_map._votes[:n, 1] == 5).any() and fast_map._votes[:n, 1].max() == 5  # the cap was reached
    assert fast_memory._n == slow_memory._n
    assert fast_memory._ids[: fast_memory._n].tobytes() == slow_memory._ids[: slow_memory._n].tobytes()
    assert np.array_equal(fast_lookup, slow_lookup) and (fast_lookup == -1).any()
    fast_map.save(tmp_path / "fast.npz")
    slow_map.save(tmp_path / "slow.npz")
    with np.load(tmp_path / "fast.npz", allow_pickle=False) as a, \
            np.load(tmp_path / "slow.npz", allow_pickle=False) as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            assert a[name].dtype == b[name].dtype and a[name].tobytes() == b[name].tobytes(), name


def test_hash_kernels_match_vectorised_hash(monkeypatch):
    rng = np.random.default_rng(3)
    keys = np.unique(rng.integers(0, 1 << 40, 5000))
    for numba_on in (True, False):
        monkeypatch.setattr(kernels, "NUMBA_ENABLED", numba_on)
        table = VoxelHash(16)
        table.insert(keys[:3000], np.arange(3000))  # grows (rebuilds) on the way
        table.insert(keys[3000:], np.arange(3000, keys.size))
        probe = np.r_[keys, keys + 1, keys[::-1]]
        expected = np.r_[np.arange(keys.size), np.where(np.isin(keys + 1, keys), -2, -1), np.arange(keys.size)[::-1]]
        got = table.lookup(probe)
        known = expected != -2
        assert np.array_equal(got[known], expected[known]) and len(table) == keys.size


def test_pipeline_stream_identical_with_and_without_kernels(monkeypatch):
    sys.path.insert(0, str(Path(__file__).parent))
    from synthetic_runs import run_orbit_scene

    results = []
    for numba_on in (True, False):
        monkeypatch.setattr(kernels, "NUMBA_ENABLED", numba_on)
        _, pipe, assignments = run_orbit_scene(3, 8)
        m = pipe.instance_map
        results.append((assignments, m._voxels.keys.tobytes(), m._attrs[: len(m)].tobytes(),
                        m._votes[: len(m)].tobytes(), pipe.memory._ids[: pipe.memory._n].tobytes(),
                        pipe.bank.ids().tolist()))
    assert results[0] == results[1]


def test_retrieve_identical_with_and_without_kernels(monkeypatch):
    """Visibility, depth occlusion (float32 pointmap z and float64 depth, validity mask), raster, skewed K."""
    rng = np.random.default_rng(11)
    memory = QueryIndexMemory(voxel_size=0.05, occlusion_tolerance=0.1)
    points = rng.uniform([-2, -2, -1], [2, 2, 4], (30000, 3))
    memory.update(points, rng.integers(1, 30, points.shape[0]))
    memory.remove([5])  # released cells are never visible
    pose = np.eye(4)
    pose[:3, 3] = [0.1, -0.2, -0.5]
    height, width = 48, 64
    pointmap = np.zeros((height, width, 3), np.float32)
    pointmap[..., 2] = rng.uniform(0.5, 3.0, (height, width))
    pointmap[0, :5, 2] = np.nan
    pointmap[1, :5, 2] = -1.0
    valid = rng.random((height, width)) > 0.1
    for k01 in (0.0, 0.7):
        intrinsics = np.array([[40.0, k01, 31.5], [0.0, 40.0, 23.5], [0.0, 0.0, 1.0]])
        depths = ((None, None), (pointmap[..., 2], valid), (pointmap[..., 2].astype(np.float64), None))
        for depth, depth_valid in depths:
            views = []
            for numba_on in (True, False):
                monkeypatch.setattr(kernels, "NUMBA_ENABLED", numba_on)
                views.append(memory.retrieve(pose, intrinsics, height, width, depth_map=depth, max_ids=12,
                                             with_raster=True, depth_valid=depth_valid))
            fast, slow = views
            assert fast.ids.tobytes() == slow.ids.tobytes() and fast.cell_counts.tobytes() == slow.cell_counts.tobytes()
            assert fast.raster.tobytes() == slow.raster.tobytes() and fast.ids.size == 12 and 5 not in fast.ids

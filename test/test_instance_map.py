"""Instance map: voxel fusion, votes, records, prune/merge, PLY/ScanNet export, save/load."""
import dataclasses

import numpy as np
import open3d as o3d
import pytest

from moonseg3r_ros.core.config import MapConfig
from moonseg3r_ros.core.colors import instance_color
from moonseg3r_ros.core.instance_map import InstanceMap, InstanceRecord
from moonseg3r_ros.core.map_files import MapFileError


def _cfg(**kw):
    return MapConfig(**{"voxel_size": 0.1, "min_instance_points": 2, **kw})


def _two_boxes(rng, repeats=2):
    """Two clusters covering every 0.1 m cell: id 1 in [0,1]^3, id 2 in [2,3]x[0,1]x[0,1]."""
    centres = (np.stack(np.meshgrid(*[np.arange(10)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * 0.1
    cube = np.repeat(centres, repeats, 0) + rng.uniform(-0.04, 0.04, (1000 * repeats, 3))
    n = cube.shape[0]
    pts = np.concatenate([cube, cube + [2, 0, 0]]).astype(np.float32)
    ids = np.r_[np.full(n, 1), np.full(n, 2)].astype(np.int32)
    colors = np.concatenate([np.full((n, 3), [200, 10, 10]), np.full((n, 3), [10, 10, 200])]).astype(np.uint8)
    return pts, colors, ids


def test_single_voxel_means_and_vote():
    m = InstanceMap(_cfg())
    pts = np.array([[0.01, 0.01, 0.01], [0.03, 0.05, 0.07]], np.float32)
    m.integrate(pts, np.array([[10, 20, 30], [20, 40, 60]], np.uint8), np.array([3, 3], np.int32), 1.0,
                confidences=np.array([0.5, 1.0]))
    xyz, rgb, ids = m.points()
    assert len(m) == 1 and ids.tolist() == [3]
    assert np.allclose(xyz[0], [0.02, 0.03, 0.04]) and rgb[0].tolist() == [15, 30, 45]
    assert xyz.dtype == np.float32 and rgb.dtype == np.uint8 and ids.dtype == np.int32
    # a minority of id 5 does not flip the voxel; a larger majority does (Boyer-Moore counts)
    m.integrate(pts[:1], np.zeros((1, 3), np.uint8), np.array([5], np.int32), 2.0)
    assert m.points()[2].tolist() == [3]
    m.integrate(np.repeat(pts[:1], 2, 0), np.zeros((2, 3), np.uint8), np.array([5, 5], np.int32), 3.0)
    assert m.points()[2].tolist() == [5]
    # unassigned points change geometry only
    m.integrate(pts[:1], np.zeros((1, 3), np.uint8), np.array([0], np.int32), 4.0)
    assert m.points()[2].tolist() == [5]
    assert m.next_id() == 6


def test_records_and_colors():
    rng = np.random.default_rng(0)
    m = InstanceMap(_cfg())
    pts, colors, ids = _two_boxes(rng)
    m.integrate(pts, colors, ids, 5.0)
    m.integrate(pts[:10], colors[:10], ids[:10], 7.0)
    records = m.instances()
    assert [r.id for r in records] == [1, 2]
    r1, r2 = records
    assert r1.point_count == 1000 and r2.point_count == 1000  # 10x10x10 voxels each
    assert np.allclose(r1.centroid, [0.5, 0.5, 0.5], atol=0.02)
    assert np.all(r1.bbox_min >= 0) and np.all(r1.bbox_max <= 1) and r2.bbox_min[0] >= 2
    assert (r1.first_seen, r1.last_seen, r2.last_seen) == (5.0, 7.0, 5.0)
    assert r1.confidence == pytest.approx(1.0)
    assert np.all((r1.color >= 0) & (r1.color <= 1)) and not np.allclose(r1.color, r2.color)
    assert np.array_equal(instance_color(1), r1.color)
    assert r1.descriptor.shape == (0,)
    m.set_descriptor(1, np.arange(4))
    assert m.instances()[0].descriptor.tolist() == [0, 1, 2, 3]
    assert m.next_id() == 3


def test_voxel_count_bounded_over_100_reintegrations():
    rng = np.random.default_rng(1)
    m = InstanceMap(_cfg())
    pts, colors, ids = _two_boxes(rng)
    sizes = []
    for k in range(100):
        noisy = pts + rng.normal(0, 0.002, pts.shape).astype(np.float32)
        noisy = np.clip(noisy, [0, 0, 0], [2.999, 0.999, 0.999])
        m.integrate(noisy, colors, ids, float(k))
        sizes.append(len(m))
    assert sizes[-1] <= 2000  # the two 1 m cubes have 2 x 1000 cells of 0.1 m
    assert sizes[-1] == sizes[50]
    assert m.nbytes < 200_000


def test_prune_small_and_stale():
    rng = np.random.default_rng(2)
    m = InstanceMap(_cfg())
    pts, colors, ids = _two_boxes(rng)
    m.integrate(pts, colors, ids, 1.0)
    m.integrate(np.array([[9.05, 9.05, 9.05]], np.float32), np.zeros((1, 3), np.uint8),
                np.array([7], np.int32), 10.0)
    m.set_descriptor(1, np.array([1.0, 0.0]))
    m.set_descriptor(2, np.array([0.0, 1.0]))
    assert m.prune(now=10.0) == [7]  # one voxel < min_instance_points=2
    assert m.instance_ids().tolist() == [1, 2] and len(m) == 2001  # geometry stays, unassigned
    assert [r.point_count for r in m.instances()] == [1000, 1000]
    assert m.prune(now=30.0, stale_after_s=50.0) == []
    assert m.prune(now=100.0, stale_after_s=50.0) == [1, 2]
    assert m.instances() == []
    assert m.next_id() == 8  # never reused


def _populated_map():
    rng = np.random.default_rng(3)
    m = InstanceMap(_cfg(max_point_weight=7))
    pts, colors, ids = _two_boxes(rng, 1)
    m.integrate(pts, colors, ids, 1.5, confidences=rng.uniform(0, 1, pts.shape[0]))
    sub = np.repeat(pts[::3], 2, 0) + 0.001
    m.integrate(sub, np.repeat(colors[::3], 2, 0), np.repeat(np.where(ids[::3] == 1, 4, 0), 2).astype(np.int32), 2.5)
    m.set_descriptor(1, rng.normal(size=8))
    m.set_descriptor(4, rng.normal(size=3))
    m.next_id()
    return m


def test_save_load_exact_round_trip(tmp_path):
    m = _populated_map()
    path = tmp_path / "map.npz"
    m.save(path)
    loaded = InstanceMap.load(path)
    for a, b in zip(m.points(), loaded.points()):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    for name in m._slots:
        assert np.array_equal(m._col(name), loaded._col(name))
    assert np.array_equal(loaded._voxels.lookup(m._col("keys")), np.arange(len(m)))
    assert m.instances() == loaded.instances() and len(m.instances()) == 3
    assert loaded.config == m.config
    assert loaded.next_id() == m.next_id()
    # the loaded map keeps working
    loaded.integrate(np.array([[5.0, 5.0, 5.0]], np.float32), np.zeros((1, 3), np.uint8),
                     np.array([9], np.int32), 3.0)
    assert len(loaded) == len(m) + 1
    empty = InstanceMap(_cfg())
    empty.save(tmp_path / "empty.npz")
    assert len(InstanceMap.load(tmp_path / "empty.npz")) == 0


def test_load_errors(tmp_path):
    m = _populated_map()
    good = tmp_path / "map.npz"
    m.save(good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(MapFileError, match="corrupt or truncated"):
        InstanceMap.load(truncated)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(MapFileError):
        InstanceMap.load(garbage)
    with pytest.raises(MapFileError, match="not found"):
        InstanceMap.load(tmp_path / "missing.npz")
    with np.load(good, allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    arrays["format_version"] = np.array(99, np.int64)
    wrong = tmp_path / "wrong.npz"
    with open(wrong, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(MapFileError, match="version 99"):
        InstanceMap.load(wrong)
    arrays["format_version"] = np.array(1, np.int64)
    arrays["slot_xyz"] = arrays["slot_xyz"][:-1]
    with open(wrong, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(MapFileError, match="xyz"):
        InstanceMap.load(wrong)


def test_export_ply_readable_by_open3d(tmp_path):
    m = _populated_map()
    for color_by in ("instance", "rgb"):
        path = tmp_path / f"map_{color_by}.ply"
        m.export_ply(path, color_by=color_by)
        cloud = o3d.io.read_point_cloud(str(path))
        assert len(cloud.points) == len(m)
        assert np.allclose(np.asarray(cloud.points), m.points()[0])
    rgb_cloud = o3d.io.read_point_cloud(str(tmp_path / "map_rgb.ply"))
    assert np.allclose(np.asarray(rgb_cloud.colors) * 255, m.points()[1], atol=0.51)
    raw = (tmp_path / "map_instance.ply").read_bytes()
    header_end = raw.index(b"end_header\n") + len(b"end_header\n")
    assert b"property int instance_id" in raw[:header_end]
    vertex = np.frombuffer(raw[header_end:], dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3), ("id", "<i4")])
    assert np.array_equal(vertex["id"], m.points()[2])
    with pytest.raises(ValueError, match="color_by"):
        m.export_ply(tmp_path / "x.ply", color_by="depth")


def test_export_scannet_nearest_neighbour(tmp_path):
    m = InstanceMap(_cfg(voxel_size=1.0))
    pts = np.array([[0.5, 0.5, 0.5], [1.5, 0.5, 0.5], [5.5, 0.5, 0.5], [9.5, 9.5, 9.5]], np.float32)
    m.integrate(pts, np.zeros((4, 3), np.uint8), np.array([1, 1, 2, 0], np.int32), 0.0,
                confidences=np.array([0.9, 0.7, 0.4, 1.0]))
    vertices = np.array([[0.4, 0.5, 0.5],   # -> voxel 0 (id 1)
                         [1.7, 0.5, 0.5],   # -> voxel 1 (id 1)
                         [5.2, 0.6, 0.5],   # -> id 2
                         [3.5, 0.5, 0.5],   # 2.0 from the nearest voxel: beyond max distance 1.5
                         [9.4, 9.5, 9.5]])  # nearest voxel is unassigned
    exported = m.export_scannet(vertices, tmp_path, "scene0000_00", max_distance=1.5)
    assert exported == [1, 2]
    lines = (tmp_path / "scene0000_00.txt").read_text().splitlines()
    assert lines == ["pred_mask/scene0000_00_000.txt 1 0.800000", "pred_mask/scene0000_00_001.txt 1 0.400000"]
    mask0 = np.loadtxt(tmp_path / "pred_mask/scene0000_00_000.txt", dtype=int)
    mask1 = np.loadtxt(tmp_path / "pred_mask/scene0000_00_001.txt", dtype=int)
    assert mask0.tolist() == [1, 1, 0, 0, 0] and mask1.tolist() == [0, 0, 1, 0, 0]
    assert m.export_scannet(vertices, tmp_path / "b", "s", min_points=2, max_distance=1.5) == [1]


def test_record_equality_and_bad_input():
    r = InstanceRecord(1, 0.5, 3, np.zeros(3), np.zeros(3, np.float32), np.ones(3, np.float32), np.ones(3),
                       0.0, 1.0, np.zeros(2, np.float32))
    assert r == dataclasses.replace(r)
    assert r != dataclasses.replace(r, descriptor=np.ones(2, np.float32))
    m = InstanceMap(_cfg())
    with pytest.raises(ValueError, match="Nx3"):
        m.integrate(np.zeros((3, 2)), np.zeros((3, 3), np.uint8), np.zeros(3, np.int32), 0.0)
    with pytest.raises(ValueError, match="colors"):
        m.integrate(np.zeros((3, 3)), np.zeros((2, 3), np.uint8), np.zeros(3, np.int32), 0.0)
    # non-finite points are dropped, not fused
    m.integrate(np.array([[np.nan, 0, 0], [0.05, 0.05, 0.05]]), np.zeros((2, 3), np.uint8),
                np.array([1, 1], np.int32), 0.0)
    assert len(m) == 1

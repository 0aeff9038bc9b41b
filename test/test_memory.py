"""3D query index memory (cells -> query ids) and query bank."""
import numpy as np
import pytest

from moonseg3r_ros.core.camera import estimate_intrinsics
from moonseg3r_ros.core.query_bank import QueryBank
from moonseg3r_ros.core.query_memory import QueryIndexMemory
from moonseg3r_ros.core.voxels import (VoxelHash, VoxelSlots, dense_groups, majority_of_groups, majority_per_group,
                                       pack_keys, unpack_keys, voxel_keys)

K = np.array([[100.0, 0, 31.5], [0, 100.0, 23.5], [0, 0, 1]])
H, W = 48, 64


def test_pack_unpack_round_trip_and_range():
    cells = np.array([[0, 0, 0], [-5, 7, -(1 << 20)], [(1 << 20) - 1, -1, 3]], np.int64)
    assert np.array_equal(unpack_keys(pack_keys(cells)), cells)
    with pytest.raises(ValueError, match="outside"):
        pack_keys(np.array([[1 << 20, 0, 0]], np.int64))


def test_majority_per_group_ties_to_smaller_id():
    groups, ids, counts = majority_per_group(np.array([3, 3, 3, 1, 1, 2, 2]), np.array([5, 5, 4, 9, 8, 7, 7]))
    assert groups.tolist() == [1, 2, 3]
    assert ids.tolist() == [8, 7, 5]
    assert counts.tolist() == [1, 2, 2]


def _memory_with(points, ids, voxel=0.1):
    memory = QueryIndexMemory(voxel_size=voxel, occlusion_tolerance=0.05)
    memory.update(np.asarray(points, np.float64), np.asarray(ids))
    return memory


def test_retrieve_returns_exactly_the_cells_in_view():
    # identity pose: camera at origin looking +z. Cell size 0.1; points at cell centres.
    points = [
        [0.05, 0.05, 2.05],    # id 1: in front, centre of the image
        [-1.95, 0.05, 2.05],   # id 2: in front but left of the image (u = 31.5 - 97.5 < 0)
        [0.05, 0.05, -2.05],   # id 3: behind the camera
        [0.25, -0.35, 3.05],   # id 4: in front, inside
        [0.05, 1.95, 2.05],    # id 5: below the image (v > 47.5)
    ]
    memory = _memory_with(points, [1, 2, 3, 4, 5])
    assert len(memory) == 5
    view = memory.retrieve(np.eye(4), K, H, W, with_raster=True)
    assert view.ids.tolist() == [1, 4]
    assert view.cell_counts.tolist() == [1, 1]
    # brute-force reference: project every point, keep those in the image
    ref = []
    for pid, p in zip([1, 2, 3, 4, 5], points):
        if p[2] <= 0:
            continue
        u, v = K[0, 0] * p[0] / p[2] + K[0, 2], K[1, 1] * p[1] / p[2] + K[1, 2]
        if -0.5 <= u < W - 0.5 and -0.5 <= v < H - 0.5:
            ref.append(pid)
    assert view.ids.tolist() == ref
    raster = view.raster
    assert raster.shape == (H, W)
    assert sorted(np.unique(raster[raster > 0]).tolist()) == [1, 4]
    u1 = int(np.floor(K[0, 0] * 0.05 / 2.05 + K[0, 2] + 0.5))
    v1 = int(np.floor(K[1, 1] * 0.05 / 2.05 + K[1, 2] + 0.5))
    assert raster[v1, u1] == 1


def test_retrieve_with_moved_camera():
    # camera translated to x=+10 and rotated 180 deg about y: looks towards -z
    pose = np.eye(4)
    pose[:3, :3] = np.diag([-1.0, 1.0, -1.0])
    pose[:3, 3] = [10.0, 0.0, 0.0]
    memory = _memory_with([[10.05, 0.05, -2.05], [10.05, 0.05, 2.05]], [7, 8])
    assert memory.retrieve(pose, K, H, W).ids.tolist() == [7]


def test_retrieve_depth_occlusion_and_zbuffer():
    # two cells on the same ray: near (id 1, z=1.05) and far (id 2, z=3.05)
    memory = _memory_with([[0.05, 0.05, 1.05], [0.15, 0.15, 3.15]], [1, 2])
    depth_wall = np.full((H, W), 1.1)
    assert memory.retrieve(np.eye(4), K, H, W, depth_map=depth_wall).ids.tolist() == [1]
    assert memory.retrieve(np.eye(4), K, H, W, depth_map=np.full((H, W), 5.0)).ids.tolist() == [1, 2]
    # invalid depth occludes nothing
    assert memory.retrieve(np.eye(4), K, H, W, depth_map=np.zeros((H, W))).ids.tolist() == [1, 2]
    # z-buffer: both cell centres (0.05, 0.05, 1.05) and (0.15, 0.15, 3.15) project to the same pixel
    view = memory.retrieve(np.eye(4), K, H, W, with_raster=True)
    u = int(np.floor(100 * 0.05 / 1.05 + 31.5 + 0.5))
    v = int(np.floor(100 * 0.05 / 1.05 + 23.5 + 0.5))
    assert view.raster[v, u] == 1
    with pytest.raises(ValueError, match="depth_map"):
        memory.retrieve(np.eye(4), K, H, W, depth_map=np.zeros((3, 3)))


def test_retrieve_max_ids_keeps_most_visible():
    pts = np.array([[0.05 + 0.1 * i, 0.05, 2.05] for i in range(4)] + [[-0.55, 0.05, 2.05]])
    memory = _memory_with(pts, [3, 3, 3, 9, 5])
    view = memory.retrieve(np.eye(4), K, H, W, max_ids=1)
    assert view.ids.tolist() == [3] and view.cell_counts.tolist() == [3]


def test_update_majority_then_latest_wins_and_bounded():
    memory = QueryIndexMemory(voxel_size=0.1)
    cell = np.array([[0.01, 0.01, 0.01], [0.02, 0.02, 0.02], [0.03, 0.03, 0.03]])
    memory.update(cell, [4, 4, 6])
    assert memory.cells()[1].tolist() == [4]
    memory.update(cell[:1], [6])
    assert memory.cells()[1].tolist() == [6]
    memory.update(cell, [0, 0, 0])  # id 0 claims nothing
    assert memory.cells()[1].tolist() == [6]
    rng = np.random.default_rng(0)
    scene = rng.uniform(0, 2, (5000, 3))
    memory.reset()
    seen = []
    for _ in range(20):
        sub = scene[rng.choice(5000, 1000)]
        seen.append(sub)
        memory.update(sub, rng.integers(1, 5, 1000))
    assert len(memory) == np.unique(voxel_keys(np.concatenate(seen), 0.1)).size
    assert len(memory) <= np.unique(voxel_keys(scene, 0.1)).size


def test_remove_releases_cells():
    memory = _memory_with([[0.05, 0, 2], [0.15, 0, 2], [0.25, 0, 2]], [1, 2, 3])
    memory.remove([3])
    assert memory.ids().tolist() == [1, 2] and len(memory) == 2
    assert memory.ids_at(np.array([[0.25, 0, 2]])).tolist() == [0]
    memory.remove([1, 2])
    assert len(memory) == 0


def test_estimate_intrinsics_recovers_focal():
    fx, height, width = 250.0, 30, 40
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    depth = 1.0 + np.random.default_rng(1).uniform(0, 3, (height, width))
    cx, cy = (width - 1) / 2, (height - 1) / 2
    pts = np.stack([(cols - cx) / fx * depth, (rows - cy) / fx * depth, depth], axis=2)
    pts[0, 0] = np.nan
    k = estimate_intrinsics(pts)
    assert k[0, 0] == pytest.approx(fx, rel=1e-9) and k[1, 1] == pytest.approx(fx, rel=1e-9)
    assert (k[0, 2], k[1, 2]) == (cx, cy)
    with pytest.raises(ValueError, match="valid"):
        estimate_intrinsics(np.zeros((4, 4, 3)))


def test_query_bank_running_average_and_boxes():
    bank = QueryBank(dim=2, window=2)
    box_a = np.array([[0, 0, 0], [1, 1, 1]], np.float32)
    bank.upsert([5], np.array([[1.0, 0.0]]), box_a[None], tokens=np.array([[1.0, 0.0, 0.0]]))
    bank.upsert([5, 6], np.array([[0.0, 1.0], [3.0, 3.0]]), np.stack([box_a + 1, box_a]),
                tokens=np.array([[0.0, 1.0, 0.0], [0, 0, 1.0]]))
    q, t, b, c = bank.get([5, 6])
    assert np.allclose(q[0], [0.5, 0.5]) and np.allclose(q[1], [3, 3])
    assert np.allclose(t[0], [0.5, 0.5, 0])
    assert np.allclose(b[0], [[0, 0, 0], [2, 2, 2]]) and c.tolist() == [2, 1]
    # window 2: third observation still weighs 1/2 (exponential average)
    bank.upsert([5], np.array([[1.0, 0.0]]), box_a[None])
    assert np.allclose(bank.get([5])[0][0], [0.75, 0.25])
    bank.remove([6, 99])
    assert bank.get([5])[3].tolist() == [3] and 6 not in bank and len(bank) == 1
    with pytest.raises(KeyError, match="no id 6"):
        bank.get([6])
    with pytest.raises(ValueError, match="state tokens"):
        bank.upsert([5], np.ones((1, 2)), box_a[None], tokens=np.ones((1, 4)))


def test_voxel_hash_lookup_insert_growth_and_majority_helpers():
    rng = np.random.default_rng(4)
    keys = np.unique(rng.integers(0, 1 << 40, 5000))
    table = VoxelHash(capacity=16)
    table.insert(keys[:100], np.arange(100))
    table.insert(keys[100:], np.arange(100, keys.size))  # grows several times
    assert len(table) == keys.size
    assert np.array_equal(table.lookup(keys), np.arange(keys.size))
    missing = keys[:50] + 1
    missing = missing[~np.isin(missing, keys)]
    assert (table.lookup(missing) == -1).all()
    slots = rng.integers(0, 30, 400)
    unique, inverse = dense_groups(slots, 40)
    assert np.array_equal(unique, np.unique(slots)) and np.array_equal(unique[inverse], slots)
    ids = rng.integers(1, 4, 400)
    vote, count = majority_of_groups(inverse, ids, unique.size)
    groups, ref_vote, ref_count = majority_per_group(inverse, ids)
    assert np.array_equal(vote[groups], ref_vote) and np.array_equal(count[groups], ref_count)


def test_voxel_slots_number_new_keys_ascending_and_grow_like_their_stores():
    slots = VoxelSlots(capacity=4)
    first, new = slots.slots_for(np.array([30, 10, 30, 20], np.int64))
    assert first.tolist() == [2, 0, 2, 1] and new.tolist() == [0, 1, 2]  # new keys get slots in key order
    assert slots.keys.tolist() == [10, 20, 30] and len(slots) == 3 and slots.capacity == 4
    again, new = slots.slots_for(np.array([20, 5, 40], np.int64))
    assert again.tolist() == [1, 3, 4] and new.tolist() == [3, 4]
    assert slots.capacity == 8  # max(need 5, 2 x 4)
    assert slots.lookup(np.array([5, 6], np.int64)).tolist() == [3, -1]
    restored = VoxelSlots()
    restored.restore(slots.keys)
    assert restored.keys.tolist() == slots.keys.tolist() and restored.capacity == 1024
    assert np.array_equal(restored.lookup(slots.keys), np.arange(5))

"""core/occupancy: the grid built from a map of a generated scene matches the scene's ground truth cell by
cell (object footprints occupied with their instance ids, open floor free, nothing seen = unknown), and
the parts (ground plane, filters, grid layout, majority raster) do what the module docstring says."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from moonseg3r_ros.core.config import MapConfig, OccupancyConfig
from moonseg3r_ros.core.geometry import backproject, to_world
from moonseg3r_ros.core.instance_map import InstanceMap
from moonseg3r_ros.core.occupancy import (FREE, OCCUPIED, UNKNOWN, build_occupancy, check_config,
                                          fit_ground_plane, obstacle_mask, plane_from_normal,
                                          rotation_to_quaternion)
from moonseg3r_ros.data.synthetic import SceneSpec, _room_quads, generate_scene


def map_of(scene, stride: int = 1) -> InstanceMap:
    """The scene fused with ground-truth ids (what the pipeline builds from recorded geometry)."""
    fused = InstanceMap(MapConfig(voxel_size=0.02))
    for frame in scene.frames:
        world = to_world(backproject(frame.depth, frame.intrinsics), frame.pose_c2w)[::stride, ::stride]
        valid = frame.depth[::stride, ::stride] > 0
        fused.integrate(world[valid], frame.image[::stride, ::stride][valid],
                        frame.instance_ids[::stride, ::stride][valid].astype(np.int32), frame.stamp)
    return fused


def footprint_truth(scene, info) -> np.ndarray:
    """HxW instance id of the object above each cell centre (vertical rays cast at the meshes), 0 = none."""
    import open3d as o3d

    rays_scene = o3d.t.geometry.RaycastingScene()
    gid_to_instance = {}
    for obj in scene.objects:
        gid = rays_scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(obj.mesh))
        gid_to_instance[gid] = obj.instance_id
    centres = info.cell_centers().reshape(-1, 3)
    origins = centres + np.array([0.0, 0.0, 5.0])
    rays = np.concatenate([origins, np.tile([0.0, 0.0, -1.0], (len(origins), 1))], 1).astype(np.float32)
    hit = rays_scene.cast_rays(o3d.core.Tensor(rays))
    gids = hit["geometry_ids"].numpy().astype(np.int64)
    lookup = np.vectorize(lambda g: gid_to_instance.get(int(g), 0))
    truth = np.where(np.isfinite(hit["t_hit"].numpy()), lookup(gids), 0)
    return truth.reshape(info.height, info.width)


def eroded(mask: np.ndarray, cells: int = 1) -> np.ndarray:
    """Cells whose (2c+1)^2 neighbourhood lies entirely in mask (the boundary tolerance)."""
    out = mask.copy()
    padded = np.pad(mask, cells, constant_values=False)
    for dr in range(-cells, cells + 1):
        for dc in range(-cells, cells + 1):
            out &= padded[cells + dr:cells + dr + mask.shape[0], cells + dc:cells + dc + mask.shape[1]]
    return out


@pytest.fixture(scope="module")
def scene():
    return generate_scene(SceneSpec(seed=3, num_frames=24, width=160, height=120, num_objects=5))


@pytest.fixture(scope="module")
def scene_grid(scene):
    fused = map_of(scene)
    points, _, ids = fused.points()
    return build_occupancy(points, ids, OccupancyConfig(resolution=0.05))


def test_grid_matches_the_scene_cell_by_cell(scene, scene_grid):
    grid, info = scene_grid, scene_grid.info
    truth = footprint_truth(scene, info)
    sx, sy, _ = (s / 2 for s in scene.spec.room_size)
    centres = info.cell_centers()
    margin = 2 * info.resolution
    inside_room = (np.abs(centres[..., 0]) < sx - margin) & (np.abs(centres[..., 1]) < sy - margin)
    known = grid.data != UNKNOWN

    for obj in scene.objects:  # every object's footprint core: seen, occupied, carrying the object's id
        core = eroded(truth == obj.instance_id)
        assert core.sum() >= 4, f"object {obj.instance_id} footprint has too few cells for the test"
        assert known[core].mean() >= 0.9, f"object {obj.instance_id}: footprint mostly unseen"
        seen = core & known
        assert (grid.data[seen] == OCCUPIED).mean() >= 0.95, f"object {obj.instance_id} not occupied"
        assert (grid.instance_ids[seen] == obj.instance_id).mean() >= 0.95, f"object {obj.instance_id}: wrong ids"

    open_floor = eroded((truth == 0) & inside_room)  # floor one cell away from any footprint or wall
    seen_floor = open_floor & known
    assert seen_floor.sum() > 0.5 * open_floor.sum(), "the orbit should have seen most of the open floor"
    assert (grid.data[seen_floor] == FREE).mean() >= 0.97
    assert np.all(grid.instance_ids[grid.data != OCCUPIED] == 0)

    beyond_walls = (np.abs(centres[..., 0]) > sx + margin) | (np.abs(centres[..., 1]) > sy + margin)
    assert beyond_walls.any() and np.all(grid.data[beyond_walls] == UNKNOWN), "nothing is seen behind the walls"
    half = info.resolution / 2
    on_wall_x = (np.abs(np.abs(centres[..., 0]) - sx) <= half) & (np.abs(centres[..., 1]) < sy)
    on_wall_y = (np.abs(np.abs(centres[..., 1]) - sy) <= half) & (np.abs(centres[..., 0]) < sx)
    walls = (on_wall_x | on_wall_y) & known  # the cells the wall planes pass through
    assert walls.sum() > 100
    assert (grid.data[walls] == OCCUPIED).mean() >= 0.9, "walls are obstacles with obstacle_points 'all'"
    assert grid.floor_instances == [] and grid.cropped_points == 0


def test_obstacle_filters(scene):
    points, _, ids = map_of(scene, stride=2).points()
    base = OccupancyConfig(resolution=0.05)
    only_instances = build_occupancy(points, ids, dataclasses.replace(base, obstacle_points="instances"))
    occupied_ids = set(np.unique(only_instances.instance_ids[only_instances.data == OCCUPIED]).tolist())
    assert occupied_ids == set(scene.object_ids), "walls (id 0) are no obstacles with 'instances'"

    edge = {o.instance_id: float((np.asarray(o.mesh.get_max_bound()) - np.asarray(o.mesh.get_min_bound())).max())
            for o in scene.objects}
    sizes = sorted(edge.values())
    gap, cut = max((b - a, (a + b) / 2) for a, b in zip(sizes, sizes[1:]))
    assert gap >= 0.05, "the scene needs two size groups apart by more than the map's box error"
    large = {i for i, e in edge.items() if e > cut}

    def occupied_by(**bounds):
        grid = build_occupancy(points, ids, dataclasses.replace(base, obstacle_points="instances", **bounds))
        return set(np.unique(grid.instance_ids[grid.data == OCCUPIED]).tolist()), set(grid.ignored_instances)

    assert 0 < len(large) < len(edge)
    assert occupied_by(min_obstacle_size=cut) == (large, set(edge) - large)
    assert occupied_by(max_obstacle_size=cut) == (set(edge) - large, large)


def test_floor_instance_is_support_not_obstacle():
    rng = np.random.default_rng(0)
    floor = np.c_[rng.uniform(0, 2, (4000, 2)), rng.normal(0, 0.004, 4000)]
    bumps = np.array([[0.5, 0.5, 0.08], [1.5, 1.5, 0.09]])  # floor noise above band_min
    box = np.c_[rng.uniform(1.0, 1.2, (500, 2)), rng.uniform(0.0, 0.4, 500)]
    points = np.concatenate([floor, bumps, box])
    ids = np.concatenate([np.full(4002, 9), np.full(500, 4)])  # the floor segmented as instance 9
    grid = build_occupancy(points, ids, OccupancyConfig(resolution=0.1, margin=0.0))
    assert grid.floor_instances == [9] and grid.ignored_instances == [9]
    assert set(np.unique(grid.instance_ids).tolist()) == {0, 4}
    r, c = grid.info.cells_of(np.array([[0.55, 0.55, 0.0], [1.1, 1.1, 0.0]]))[0]
    assert grid.data.reshape(-1)[r] == FREE and grid.data.reshape(-1)[c] == OCCUPIED
    assert (grid.data == UNKNOWN).sum() == 0 and (grid.data == OCCUPIED).sum() == 4
    # without the support rule the floor's stray points become obstacles
    loose = build_occupancy(points, ids, OccupancyConfig(resolution=0.1, margin=0.0, floor_fraction=1.0))
    assert (loose.data == OCCUPIED).sum() == 6


def test_grid_layout_origin_and_stable_cells():
    points = np.array([[0.12, -0.31, 0.0], [0.52, 0.07, 0.3], [0.3, 0.2, 2.5]])  # floor, obstacle, ceiling
    config = OccupancyConfig(resolution=0.1, margin=0.0)
    grid = build_occupancy(points, np.zeros(3), config)
    assert (grid.info.width, grid.info.height) == (5, 5)
    np.testing.assert_allclose(grid.info.corner, [0.1, -0.4])
    position, quat = grid.info.origin_pose()
    np.testing.assert_allclose(position, [0.1, -0.4, 0.0])
    np.testing.assert_allclose(quat, [0, 0, 0, 1])
    assert grid.data[0, 0] == FREE and grid.data[4, 4] == OCCUPIED and (grid.data == UNKNOWN).sum() == 23
    more = build_occupancy(np.vstack([points, [[-0.27, 0.5, 0.0]]]), np.zeros(4), config)
    shift = np.round((grid.info.corner - more.info.corner) / 0.1).astype(int)
    np.testing.assert_array_equal(more.data[shift[1]:shift[1] + 5, shift[0]:shift[0] + 5], grid.data)


def test_max_cells_crops_around_the_median_and_counts():
    points = np.array([[0.0, 0.0, 0.0]] * 5 + [[0.3, 0.1, 0.0], [500.0, 0.0, 0.0]])
    grid = build_occupancy(points, np.zeros(7), OccupancyConfig(resolution=0.1, margin=0.0, max_cells=20))
    assert grid.info.width <= 20 and grid.cropped_points == 1
    assert (grid.data == FREE).sum() == 2


def test_majority_raster_prefers_instances_and_smaller_ids():
    cell_points = np.array([[0.05, 0.05, 0.5]] * 6)
    ids = np.array([0, 0, 0, 7, 3, 7])  # unassigned majority, then 7 twice, 3 once
    grid = build_occupancy(cell_points, ids, OccupancyConfig(resolution=0.1, margin=0.0))
    assert grid.instance_ids.tolist() == [[7]]
    tie = build_occupancy(cell_points[:4], np.array([8, 5, 8, 5]), OccupancyConfig(resolution=0.1, margin=0.0))
    assert tie.instance_ids.tolist() == [[5]]


def test_tilted_plane_and_fit():
    rng = np.random.default_rng(1)
    tilt = np.radians(10.0)
    normal = np.array([0.0, np.sin(tilt), np.cos(tilt)])
    plane = plane_from_normal(normal, 0.4)
    local = np.c_[rng.uniform(-1, 1, (3000, 2)), rng.normal(0, 0.005, 3000)]
    floor = plane.origin + local @ plane.rotation.T
    box_local = rng.uniform([0.4, 0.4, 0.2], [0.6, 0.6, 0.5], (400, 3))  # an object standing on the plane
    clutter = plane.origin + box_local @ plane.rotation.T
    config = OccupancyConfig(ground="fit", floor_tolerance=0.02, resolution=0.1, margin=0.0)
    fitted = fit_ground_plane(np.vstack([floor, clutter]), config)
    assert np.degrees(np.arccos(fitted.up @ normal)) < 1.0
    assert abs(fitted.up @ fitted.origin - 0.4) < 0.01
    q = rotation_to_quaternion(plane.rotation)
    np.testing.assert_allclose(np.linalg.norm(q), 1.0)
    np.testing.assert_allclose(q[:2], [-np.sin(tilt / 2), 0], atol=1e-9)
    grid = build_occupancy(np.vstack([floor, clutter]), np.zeros(3400), config)
    cells, inside = grid.info.cells_of(fitted.to_ground(clutter))
    assert inside.all() and np.all(grid.data.reshape(-1)[cells] == OCCUPIED)
    assert (grid.data == OCCUPIED).sum() <= 9 and (grid.data == FREE).sum() >= 0.9 * (grid.data != UNKNOWN).sum()
    flat = build_occupancy(np.vstack([floor, clutter]), np.zeros(3400), dataclasses.replace(config, ground="plane"))
    assert (flat.data == FREE).sum() < 0.5 * (grid.data == FREE).sum(), "the z-up plane misses the tilted floor"


def test_obstacle_mask_uses_the_maps_ignored_instances():
    plane = plane_from_normal(np.array([0.0, 0.0, 1.0]), 0.0)
    points = np.array([[0, 0, 0.0], [0, 0, 0.3], [0, 0, 0.3], [0, 0, 2.0], [0, 0, 0.5]])
    ids = np.array([0, 4, 9, 4, 0])
    config = OccupancyConfig()
    assert obstacle_mask(points, ids, config, plane).tolist() == [False, True, True, False, True]
    assert obstacle_mask(points, ids, config, plane, ignored_ids=[9]).tolist() == [False, True, False, False, True]
    only = dataclasses.replace(config, obstacle_points="instances")
    assert obstacle_mask(points, ids, only, plane).tolist() == [False, True, True, False, False]


@pytest.mark.parametrize("change,message", [({"band_min": 2.0}, "band_max"), ({"band_min": 0.01}, "floor_tolerance"),
                                            ({"up": [0.0, 0.0, 0.0]}, "up"), ({"up": [1.0, 2.0]}, "up"),
                                            ({"min_obstacle_size": 1.0, "max_obstacle_size": 0.5}, "max_obstacle")])
def test_invalid_combinations_are_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        check_config(dataclasses.replace(OccupancyConfig(), **change))


def test_room_quads_floor_is_z0():  # the ground truth's assumption: the generator's floor is the z = 0 plane
    floor, _ = _room_quads(SceneSpec())[0]
    assert np.all(floor[:, 2] == 0.0)

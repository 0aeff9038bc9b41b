"""Realistic scene generator (data/tabletop.py): format, ground truth, physics of the layout, camera model."""
import numpy as np
import pytest

pytest.importorskip("pybullet")

from moonseg3r_ros.data import tabletop_objects as to  # noqa: E402
from moonseg3r_ros.data.tabletop import TabletopSpec, camera_check, generate_tabletop  # noqa: E402

FRAMES, W, H = 6, 160, 120


@pytest.fixture(scope="module")
def scene():
    return generate_tabletop(TabletopSpec(seed=3, num_frames=FRAMES, width=W, height=H))


@pytest.fixture(scope="module")
def room():
    return generate_tabletop(TabletopSpec(seed=1, kind="room", num_frames=4, width=W, height=H))


def _support_top(scene, obj) -> float:
    if obj.support_id == 0:
        return 0.0
    support = scene.objects[obj.support_id - 1]
    if support.kind == "table":
        return float(support.aabb_max[2])
    # shelf: the board the object stands on is the highest board top not above the object's bottom
    return float(obj.aabb_min[2])


def test_frames_have_contract_types_and_shapes(scene):
    assert len(scene.frames) == FRAMES
    f = scene.frames[2]
    assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
    assert f.depth.shape == (H, W) and f.depth.dtype == np.float32
    assert f.instance_ids.shape == (H, W) and f.instance_ids.dtype == np.int32
    assert f.frame_index == 2 and f.stamp == pytest.approx(0.2)
    assert f.intrinsics[0, 0] == pytest.approx(0.85 * W) and f.intrinsics[0, 2] == pytest.approx((W - 1) / 2)
    assert (f.depth > 0).mean() > 0.9  # a closed room: almost every ray hits something
    assert f.image.std() > 20  # textured, not flat


def test_camera_model_reprojects_to_sub_millimetre(scene):
    check = camera_check(scene, 0, 3)
    assert check["points"] > 1000
    assert check["reprojection_mm_median"] < 0.5
    assert check["floor_mm_median"] < 0.5


def test_supports_annotated_floor_and_walls_not(scene):
    labels = scene.vertex_labels
    table = scene.objects[0]
    assert table.kind == "table" and table.instance_id == 1 and table.support_id == 0
    assert (labels == to.LABELS["table"] * 1000 + 1).sum() > 1000
    assert (labels == 0).sum() > 1000
    by_id = {o.instance_id: o for o in scene.objects}
    for value in np.unique(labels[labels > 0]):
        obj = by_id[int(value % 1000)]
        assert int(value // 1000) == obj.label_id
    seen = sum((labels % 1000 == o.instance_id).sum() >= 30 for o in scene.objects)
    assert seen >= 0.7 * len(scene.objects)


def test_labels_agree_with_rendered_ids(scene):
    from scipy.spatial import cKDTree

    from moonseg3r_ros.core.camera import backproject, to_world

    f = scene.frames[4]
    world = to_world(backproject(f.depth, f.intrinsics), f.pose_c2w)
    mask = f.instance_ids > 0
    dist, idx = cKDTree(scene.vertices).query(world[mask])
    assert np.median(dist) < 0.01
    assert np.mean(scene.vertex_labels[idx] % 1000 == f.instance_ids[mask]) > 0.95


def test_objects_rest_on_their_supports(scene):
    objects = [o for o in scene.objects if o.kind not in ("table", "shelf")]
    assert sum(o.support_id == 1 for o in objects) >= 3 and sum(o.support_id == 0 for o in objects) >= 2
    for obj in objects:
        assert abs(obj.aabb_min[2] - _support_top(scene, obj)) < 0.01, obj.kind
        support_bodies = scene.objects[obj.support_id - 1].bodies if obj.support_id else None
        if support_bodies:
            assert min(scene.world.distance(obj.bodies[0], b) for b in support_bodies) < 0.01, obj.kind
    for i, a in enumerate(objects):  # no two objects interpenetrate
        for b in objects[i + 1:]:
            assert scene.world.distance(a.bodies[0], b.bodies[0], within=0.01) > -0.003, (a.kind, b.kind)


def test_touching_pairs_and_hard_cases_exist(scene):
    objects = [o for o in scene.objects if o.kind not in ("table", "shelf")]
    touching = [(a.kind, b.kind) for i, a in enumerate(objects) for b in objects[i + 1:]
                if scene.world.distance(a.bodies[0], b.bodies[0], within=0.02) < 0.005]
    assert touching
    kinds = {o.kind for o in objects}
    assert kinds & set(to.THIN) and kinds & set(to.NEUTRAL) and kinds & set(to.SAME)
    assert any(o.aabb_max[2] - o.aabb_min[2] < 0.06 for o in objects)  # a thin object
    for o in objects:  # household sizes: 10-50 cm along the longest side (collision bounds, a little slack)
        assert 0.09 <= float(np.max(o.aabb_max - o.aabb_min)) <= 0.55, o.kind


def test_deterministic_in_seed(scene):
    again = generate_tabletop(TabletopSpec(seed=3, num_frames=FRAMES, width=W, height=H))
    other = generate_tabletop(TabletopSpec(seed=4, num_frames=FRAMES, width=W, height=H))
    assert np.array_equal(again.vertices, scene.vertices)
    assert np.array_equal(again.vertex_labels, scene.vertex_labels)
    assert np.array_equal(again.frames[5].image, scene.frames[5].image)
    assert np.array_equal(scene.frames[1].image, scene.frames[1].image)  # re-rendering is exact
    assert len(other.vertices) != len(scene.vertices) or not np.array_equal(other.vertices, scene.vertices)
    assert [o.kind for o in other.objects] != [o.kind for o in scene.objects]


def test_room_has_a_shelf_with_objects_on_it(room):
    shelves = [o for o in room.objects if o.kind == "shelf"]
    assert len(shelves) == 1 and len(shelves[0].bodies) > 4
    on_shelf = [o for o in room.objects if o.support_id == shelves[0].instance_id]
    assert len(on_shelf) >= 4
    assert camera_check(room, 0, 1)["floor_mm_median"] < 0.5


def test_save_writes_jpeg_scannet_folder(scene, tmp_path):
    import cv2

    from moonseg3r_ros.data.datasets import open_sequence
    from moonseg3r_ros.data.scannet_io import read_labels, read_vertex_ply

    out = scene.save(tmp_path / scene.name)
    assert sorted(p.name for p in (out / "color").iterdir()) == [f"{i}.jpg" for i in range(FRAMES)]
    assert (out / "color" / "0.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert np.array_equal(read_labels(out / f"{scene.name}.txt"), scene.vertex_labels)
    assert np.array_equal(read_vertex_ply(out / f"{scene.name}_vh_clean_2.ply"), scene.vertices)
    seq = open_sequence(out)
    assert len(seq) == FRAMES
    f, g = seq[3], scene.frames[3]
    assert np.abs(f.depth - g.depth).max() <= 0.0005 + 1e-6
    assert np.allclose(f.pose_c2w, g.pose_c2w, atol=1e-8) and np.allclose(f.intrinsics, g.intrinsics)
    assert np.abs(f.image.astype(int) - g.image).mean() < 6  # JPEG, quality 95
    ids = cv2.imread(str(out / "instance" / "3.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(ids.astype(np.int32), g.instance_ids)


def test_generate_cli_kind_prints_camera_check(tmp_path, capsys):
    from moonseg3r_ros.cli import main

    assert main(["generate", "--kind", "tabletop", "--out", str(tmp_path), "--frames", "3", "--width", "96",
                 "--height", "72", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "tabletop_0000" in out and "reprojection disagreement median" in out
    assert (tmp_path / "tabletop_0000" / "color" / "2.jpg").is_file()
    with pytest.raises(SystemExit) as err:
        main(["generate", "--kind", "castle", "--out", str(tmp_path)])
    assert err.value.code == 2


def test_invalid_spec_raises():
    with pytest.raises(ValueError, match="kind"):
        generate_tabletop(TabletopSpec(kind="castle"))
    with pytest.raises(ValueError, match="num_frames"):
        generate_tabletop(TabletopSpec(num_frames=0))

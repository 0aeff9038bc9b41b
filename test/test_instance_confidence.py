"""Instance confidence = mean voxel confidence x observation score (core/instance_map.observation_score):
spurious fragments rank below real objects on a generated scene; the counts survive save/load and are
validated; exports carry the score."""
import numpy as np
import pytest

from moonseg3r_ros.core.config import PipelineConfig
from moonseg3r_ros.core.instance_map import InstanceMap, observation_score
from moonseg3r_ros.core.map_files import MapFileError, load_map, save_map
from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline

FRAGMENT_ID = 250


def test_observation_score_values():
    assert observation_score(0, 0) == 1.0  # never counted: plain voxel confidence
    assert observation_score(1, 1) == 0.5
    assert observation_score(4, 4) == pytest.approx(1 - 1 / 16)
    assert observation_score(1, 8) == pytest.approx(0.5 / 8)
    assert observation_score(3, 6) < observation_score(3, 3) < observation_score(6, 6)


def _floor_patch(ids: np.ndarray, depth: np.ndarray, size: int = 32) -> tuple[int, int]:
    """Top-left corner of a size x size patch of unannotated pixels (floor) with depth, in the lower half."""
    free = (ids == 0) & (depth > 0)
    h, w = free.shape
    for r in range(h - size - 2, h // 2, -4):
        for c in range(2, w - size - 2, 4):
            if free[r:r + size, c:c + size].all():
                return r, c
    raise AssertionError("no floor patch")


@pytest.fixture(scope="module")
def run():
    """GT masks on a tabletop scene, plus one spurious floor fragment in each of the first two keyframes."""
    pytest.importorskip("pybullet")
    from moonseg3r_ros.data.tabletop import TabletopSpec, generate_tabletop

    scene = generate_tabletop(TabletopSpec(seed=3, num_frames=30, width=320, height=240))
    config = PipelineConfig()
    config.device = "cpu"
    config.masks.source = "ground_truth"
    config.keyframe_interval = 3
    pipe = MoonSeg3RPipeline(config)
    fragments, real = [], {}
    for k, frame in enumerate(scene.frames):
        ids = frame.instance_ids.copy()
        if k in (0, 3):
            r, c = _floor_patch(ids, frame.depth)
            ids[r:r + 32, c:c + 32] = FRAGMENT_ID + k  # ~100 map voxels: above the prune size
        result = pipe.step(frame.image, frame.stamp, depth=frame.depth, intrinsics=frame.intrinsics,
                           pose_c2w=frame.pose_c2w, instance_ids=ids)
        if k in (0, 3):
            fragments.append(int(np.bincount(result.instance_ids_2d[ids == FRAGMENT_ID + k]).argmax()))
        if result.is_keyframe:  # real objects: the map instance covering most of each GT object's pixels
            for obj in np.unique(frame.instance_ids[frame.instance_ids > 0]):
                values = result.instance_ids_2d[frame.instance_ids == obj]
                if (values > 0).any():
                    real[int(obj)] = int(np.bincount(values[values > 0]).argmax())
    return scene, pipe, fragments, set(real.values())


def test_fragments_score_below_real_objects(run):
    scene, pipe, fragments, real = run
    records = {r.id: r for r in pipe.instance_map.instances()}
    assert all(f in records for f in fragments)
    assert len(real) >= 6 and not real & set(fragments)
    worst_real = min(records[i].confidence for i in real)
    best_fragment = max(records[i].confidence for i in fragments)
    assert best_fragment < 0.25 < 0.6 < worst_real, (best_fragment, worst_real)
    assert all(0.0 <= r.confidence <= 1.0 for r in records.values())


def test_scannet_export_carries_the_score(run, tmp_path):
    scene, pipe, fragments, _ = run
    records = {r.id: r for r in pipe.instance_map.instances()}
    written = pipe.instance_map.export_scannet(scene.vertices, tmp_path, "scene")
    lines = (tmp_path / "scene.txt").read_text().splitlines()
    scores = sorted(round(float(line.split()[2]), 6) for line in lines)
    assert scores == sorted(round(records[i].confidence, 6) for i in written)
    assert len(set(scores)) > 1  # the ranking carries information (not all 1.0)


def _small_map() -> InstanceMap:
    m = InstanceMap()
    pts = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], np.float32)
    m.integrate(pts, np.zeros((3, 3), np.uint8), np.array([1, 2, 3]), 1.0)
    for visible in ([1, 2, 3], [1, 2], [2, 3]):
        m.count_keyframe([1, 3], visible)
    return m


def test_counts_survive_save_and_load(tmp_path):
    m = _small_map()
    conf = {r.id: r.confidence for r in m.instances()}
    assert conf[1] == pytest.approx(observation_score(3, 3)) and conf[2] == pytest.approx(observation_score(0, 3))
    assert conf[3] == pytest.approx(observation_score(3, 3))
    m.save(tmp_path / "m.npz")
    again = InstanceMap.load(tmp_path / "m.npz")
    assert {r.id: r.confidence for r in again.instances()} == conf
    assert again.instances() == m.instances()


def test_counts_are_validated_and_old_files_read_as_uncounted(tmp_path):
    m = _small_map()
    m.save(tmp_path / "m.npz")
    state = load_map(tmp_path / "m.npz")
    bad = load_map(tmp_path / "m.npz")
    bad.observed = bad.in_view + 1
    save_map(tmp_path / "bad.npz", bad)
    with pytest.raises(MapFileError, match="observed"):
        load_map(tmp_path / "bad.npz")
    with np.load(tmp_path / "m.npz") as data:  # a file written before the counts existed
        arrays = {k: data[k] for k in data.files if k not in ("meta_observed", "meta_in_view")}
    np.savez(tmp_path / "old.npz", **arrays)
    old = InstanceMap.load(tmp_path / "old.npz")
    assert [r.confidence for r in old.instances()] == [1.0, 1.0, 1.0]
    assert state.observed.tolist() == [3, 0, 3] and state.in_view.tolist() == [3, 3, 3]

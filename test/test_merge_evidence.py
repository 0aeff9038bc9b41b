"""Intra-frame merge evidence (core/merge_evidence.py) on realistic generated frames: parts of one object
rejoin; an object on its table and touching distinct objects stay apart; the pipeline merges no GT masks."""
import numpy as np
import pytest

pytest.importorskip("pybullet")

from moonseg3r_ros.core import merge_evidence as me  # noqa: E402
from moonseg3r_ros.core.association import merge_within_frame  # noqa: E402
from moonseg3r_ros.core.config import PipelineConfig  # noqa: E402
from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline  # noqa: E402
from moonseg3r_ros.data.tabletop import TabletopSpec, generate_tabletop  # noqa: E402

FRAMES, W, H = 10, 320, 240


@pytest.fixture(scope="module")
def scene():
    return generate_tabletop(TabletopSpec(seed=3, num_frames=FRAMES, width=W, height=H))


def _evidence(frame, labels, n):
    k = frame.intrinsics
    ev = me.boundary_evidence(labels, n, frame.depth, frame.depth > 0, (k[0, 0], k[1, 1]))
    return ev, me.merge_allowed(ev)


def _dense_labels(frame):
    """GT ids -> (labels HxW with 1..n, ids n: the GT id of each label)."""
    ids = np.unique(frame.instance_ids[frame.instance_ids > 0])
    table = np.zeros(int(frame.instance_ids.max()) + 1, np.int32)
    table[ids] = np.arange(1, ids.size + 1)
    return table[frame.instance_ids], ids


def _pairs(scene, wanted):
    """(frame, ev, allowed, gt a, gt b, i, j) for GT pairs (a, b) that share a boundary of >= 10 pixel pairs."""
    for frame in scene.frames:
        labels, ids = _dense_labels(frame)
        ev, allowed = _evidence(frame, labels, ids.size)
        for i, j in np.argwhere(np.triu(ev.shared >= 10, 1)):
            a, b = int(ids[i]), int(ids[j])
            if wanted(a, b):
                yield frame, ev, allowed, a, b, i, j


def _objects(scene):
    return {o.instance_id: o for o in scene.objects}


def test_object_resting_on_its_table_stays_apart(scene):
    objs = _objects(scene)
    tables = {o.instance_id for o in scene.objects if o.kind == "table"}
    checked = 0
    for _, ev, allowed, a, b, i, j in _pairs(scene, lambda a, b: (objs[a].support_id == b and b in tables)
                                             or (objs[b].support_id == a and a in tables)):
        checked += 1
        assert not allowed[i, j], (a, b, ev.shared[i, j], ev.smooth[i, j])
        assert ev.smooth[i, j] < 0.3 * ev.shared[i, j]  # occluding contour or concave contact, not smooth
    assert checked >= 5


def test_touching_distinct_objects_stay_apart(scene):
    objs = _objects(scene)
    touching = {(a.instance_id, b.instance_id) for a in scene.objects for b in scene.objects
                if a.instance_id < b.instance_id and a.kind not in ("table", "shelf")
                and b.kind not in ("table", "shelf")
                and scene.world.distance(a.bodies[0], b.bodies[0], within=0.02) < 0.005}
    assert touching
    checked = 0
    for _, ev, allowed, a, b, i, j in _pairs(scene, lambda a, b: (min(a, b), max(a, b)) in touching):
        checked += 1
        assert not allowed[i, j], (objs[a].kind, objs[b].kind, ev.shared[i, j], ev.smooth[i, j])
    assert checked >= 1
    # every pair of distinct GT masks in every frame: none allowed
    for frame in scene.frames:
        labels, ids = _dense_labels(frame)
        assert not _evidence(frame, labels, ids.size)[1].any()


@pytest.mark.parametrize("axis", [0, 1])
def test_parts_of_one_object_rejoin(scene, axis):
    """Split every GT mask of >= 400 px at its median row (axis 0) or column (axis 1): the halves may merge."""
    split = rejoined = 0
    for frame in scene.frames[::3]:
        labels, ids = _dense_labels(frame)
        n = ids.size
        for k in range(1, n + 1):
            where = np.nonzero(labels == k)
            if where[0].size < 400:
                continue
            coord = np.indices(labels.shape)[axis]
            halves = labels.copy()
            halves[(labels == k) & (coord > np.median(where[axis]))] = n + 1
            ev, allowed = _evidence(frame, halves, n + 1)
            split += 1
            rejoined += bool(allowed[k - 1, n])
            assert not allowed[:n, :n].any()  # the split never opens a merge between distinct objects
    assert split >= 10
    assert rejoined >= 0.9 * split, (rejoined, split)


def test_planes_jumps_and_creases_on_a_synthetic_depth():
    """A tilted plane split in two is smooth; a step in depth is a jump; a concave fold is a crease, a
    convex fold is smooth."""
    h, w, f = 40, 60, 50.0
    v = np.arange(h, dtype=np.float64)[:, None] * np.ones((1, w))
    inv = 0.5 + 0.004 * v  # inverse depth affine in the pixel grid: a plane
    labels = np.where(np.arange(w)[None, :] < 30, 1, 2) * np.ones((h, 1), np.int32)
    ok = np.ones((h, w), bool)
    ev = me.boundary_evidence(labels, 2, 1.0 / inv, ok, (f, f))
    assert ev.shared[0, 1] == h and ev.smooth[0, 1] == h
    step = inv.copy()
    step[:, 30:] *= 0.8  # the right part 25 % farther: an occluding contour
    ev = me.boundary_evidence(labels, 2, 1.0 / step, ok, (f, f))
    assert ev.shared[0, 1] == h and ev.smooth[0, 1] == 0
    u = np.arange(w, dtype=np.float64)[None, :] * np.ones((h, 1))
    for sign, smooth in ((+1, 0), (-1, h)):  # w'' > 0: a valley seen from the camera (concave)
        fold = 0.5 + sign * 0.02 * np.abs(u - 29.5)
        ev = me.boundary_evidence(labels, 2, 1.0 / fold, ok, (f, f))
        assert ev.smooth[0, 1] == smooth, sign


def test_merge_within_frame_honours_allowed():
    queries = np.ones((3, 4), np.float32)
    boxes = np.stack([np.array([[0, 0, 0], [1, 1, 1]], np.float32)] * 3)
    assert [g.tolist() for g in merge_within_frame(queries, boxes)] == [[0, 1, 2]]
    allowed = np.zeros((3, 3), bool)
    allowed[0, 1] = allowed[1, 0] = True
    assert [g.tolist() for g in merge_within_frame(queries, boxes, allowed=allowed)] == [[0, 1], [2]]


def _run(scene, evidence: str) -> MoonSeg3RPipeline:
    config = PipelineConfig()
    config.device = "cpu"
    config.masks.source = "ground_truth"
    config.keyframe_interval = 3
    config.association.merge_evidence = evidence
    pipe = MoonSeg3RPipeline(config)
    for frame in scene.frames:
        pipe.step(frame.image, frame.stamp, depth=frame.depth, intrinsics=frame.intrinsics,
                  pose_c2w=frame.pose_c2w, instance_ids=frame.instance_ids)
    return pipe


def test_pipeline_merges_no_ground_truth_masks(scene):
    assert _run(scene, "boundary").stats["masks_merged"] == 0
    assert _run(scene, "boxes").stats["masks_merged"] > 0  # the box-contact rule alone fuses distinct objects

"""State-distribution tokens, intra-frame merge and Hungarian cross-frame matching."""
import numpy as np
import pytest
import torch

from moonseg3r_ros.core.association import (association_scores, box_gap_matrix, box_iou_matrix, combine_groups,
                                            cosine_matrix, match_threshold, match_to_map, merge_within_frame,
                                            pool_masks_to_grid, state_distribution_tokens)
from moonseg3r_ros.core.config import AssociationConfig


def _box(lo, hi):
    return np.array([lo, hi], np.float32)


def test_box_iou_matrix_values():
    a = np.stack([_box([0, 0, 0], [2, 2, 2]), _box([0, 0, 0], [1, 1, 1])])
    b = np.stack([_box([1, 0, 0], [3, 2, 2]), _box([5, 5, 5], [6, 6, 6]), _box([0, 0, 0], [0, 0, 0])])
    iou = box_iou_matrix(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 0] == pytest.approx(4 / 12)
    assert iou[0, 1] == 0 and iou[0, 2] == 0 and iou[1, 2] == 0
    assert iou[1, 0] == 0  # touching faces: zero-volume intersection
    assert box_iou_matrix(a, a)[0, 0] == pytest.approx(1.0)
    assert box_gap_matrix(a, b)[1, 1] == pytest.approx(4.0)


def test_pool_masks_paths_agree():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 12, 16)) > 0.5
    fast = pool_masks_to_grid(masks, 3, 4)  # divisible: reshape-sum path
    blocks = masks.reshape(3, 3, 4, 4, 4).mean(axis=(2, 4)).reshape(3, -1)
    assert np.allclose(fast, blocks)
    general = pool_masks_to_grid(masks, 5, 7)  # non-divisible: box filter
    assert general.shape == (3, 35)
    assert np.allclose(general.mean(axis=1), masks.reshape(3, -1).mean(axis=1), atol=1e-5)
    assert np.allclose(pool_masks_to_grid(torch.from_numpy(masks), 3, 4), fast)


def _attention(rng, s=32, h=6, w=8):
    logits = rng.normal(0, 2.0, (s, h * w))
    att = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return att.reshape(s, h, w).astype(np.float32)


def test_state_tokens_same_mask_closer_than_different_masks():
    rng = np.random.default_rng(3)
    att = _attention(rng)
    masks = np.zeros((3, 48, 64), bool)
    masks[0, :24, :32] = True
    masks[1, 24:, 32:] = True
    masks[2, :24, 32:] = True
    tokens_t = state_distribution_tokens(att, masks)
    assert tokens_t.shape == (3, 32)
    assert np.allclose(tokens_t.sum(axis=1), 1.0, atol=1e-5)
    perturbed = att * np.exp(rng.normal(0, 0.1, att.shape)).astype(np.float32)
    tokens_t1 = state_distribution_tokens(torch.from_numpy(perturbed), masks)
    sim = cosine_matrix(tokens_t, tokens_t1)
    for i in range(3):
        assert sim[i, i] > 0.97
        assert sim[i, i] > np.delete(sim[i], i).max() + 0.05
    empty = state_distribution_tokens(att, np.zeros((1, 48, 64), bool))
    assert np.array_equal(empty, np.zeros((1, 32), np.float32))


def test_state_tokens_value_on_patch_grid():
    att = np.zeros((2, 2, 2), np.float32)
    att[0, 0, 0], att[0, 1, 1] = 0.5, 0.5  # token 0 attends two corners
    att[1, 0, 1] = 1.0  # token 1 attends the top-right patch
    mask = np.zeros((1, 4, 4), bool)
    mask[0, :2, :] = True  # top row of patches
    assert np.allclose(state_distribution_tokens(att, mask), [[0.5 / 1.5, 1.0 / 1.5]])


def test_merge_split_object_and_keep_touching_objects_apart():
    # masks 0, 1: two halves of one chair (similar queries, adjacent boxes)
    # mask 2: a different object touching half 1 (dissimilar query)
    # mask 3: same appearance as the chair but 3 m away
    chair = np.array([1.0, 0.2, 0.0, 0.1])
    queries = np.stack([chair, chair + [0.05, -0.05, 0.1, 0.0], [0.2, 1.0, 0.3, 0.0], chair])
    boxes = np.stack([_box([0, 0, 0], [0.5, 1, 1]), _box([0.5, 0, 0], [1, 1, 1]),
                      _box([1.0, 0, 0], [1.5, 1, 1]), _box([4, 0, 0], [4.5, 1, 1])])
    sim = cosine_matrix(queries, queries)
    assert sim[0, 1] > 0.8 and sim[1, 2] < 0.8 and sim[0, 3] > 0.99
    groups = merge_within_frame(queries, boxes, threshold=0.8, box_margin=0.05)
    assert [g.tolist() for g in groups] == [[0, 1], [2], [3]]
    # without the spatial condition (huge margin) the distant look-alike joins; the touching object never does
    loose = merge_within_frame(queries, boxes, threshold=0.8, box_margin=100.0)
    assert [g.tolist() for g in loose] == [[0, 1, 3], [2]]
    assert merge_within_frame(np.zeros((0, 4)), np.zeros((0, 2, 3))) == []


def test_combine_groups():
    masks = np.zeros((3, 4, 4), bool)
    masks[0, 0, :] = True  # area 4
    masks[1, 1:3, :2] = True  # area 4... make it 2 by shrinking
    masks[1, 2, :2] = False  # area 2
    masks[2, 3, 3] = True
    queries = np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    boxes = np.stack([_box([0, 0, 0], [1, 1, 1]), _box([1, 0, 0], [2, 2, 1]), _box([9, 9, 9], [10, 10, 10])])
    m, q, b, t = combine_groups([np.array([0, 1]), np.array([2])], masks, queries, boxes,
                                tokens=np.eye(3)[:, :2])
    assert m.shape == (2, 4, 4) and m[0].sum() == 6 and m[1].sum() == 1
    assert np.allclose(q[0], [4 / 6, 2 / 6]) and np.allclose(q[1], [5, 5])
    assert np.allclose(b[0], [[0, 0, 0], [2, 2, 1]])
    assert np.allclose(t[0], [4 / 6, 2 / 6])


def _unit(deg):
    return np.array([np.cos(np.radians(deg)), np.sin(np.radians(deg))])


def test_hungarian_beats_greedy():
    # directions on a circle: frame1 0 deg, map A 18, frame0 34, map B 54 (queries and tokens alike)
    frame_q = np.stack([_unit(34), _unit(0)])
    map_q = np.stack([_unit(18), _unit(54)])
    frame_b = np.stack([_box([0, 0, 0], [1, 1, 1])] * 2)
    map_b = np.stack([_box([5, 5, 5], [6, 6, 6])] * 2)  # IoU 0 everywhere
    score = association_scores(frame_q, frame_q, frame_b, map_q, map_q, map_b)
    assert score.argmax() == 0  # the single best pair is frame 0 -> A ...
    assert score[1, 1] < 1.5  # ... after which greedy could only offer frame 1 -> B, below threshold
    pairs = match_to_map(frame_q, frame_q, frame_b, map_q, map_q, map_b, threshold=1.5, map_ids=[10, 20])
    assert pairs == [(0, 20), (1, 10)]
    assert score[0, 1] + score[1, 0] > score[0, 0] + score[1, 1]


def test_hungarian_matches_brute_force():
    import itertools
    rng = np.random.default_rng(5)
    fq, mq = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    fb = np.sort(rng.uniform(0, 2, (4, 2, 3)), axis=1)
    mb = np.sort(rng.uniform(0, 2, (4, 2, 3)), axis=1)
    score = association_scores(fq, None, fb, mq, None, mb)
    best = max(sum(score[i, p[i]] for i in range(4)) for p in itertools.permutations(range(4)))
    pairs = match_to_map(fq, None, fb, mq, None, mb, threshold=-10.0)
    assert sum(score[i, j] for i, j in pairs) == pytest.approx(best, rel=1e-6)


def test_threshold_respected_and_without_state():
    frame_q = np.array([[1.0, 0.0], [0.0, 1.0]])
    map_q = np.array([[1.0, 0.0], [0.6, 0.8]])
    boxes = np.stack([_box([0, 0, 0], [1, 1, 1])] * 2)
    far = np.stack([_box([5, 5, 5], [6, 6, 6])] * 2)
    tokens = np.array([[1.0, 0.0], [0.0, 1.0]])
    # frame 1 vs map 1: cos 0.8 + token 1 + IoU 1 = 2.8; frame 0 vs map 0: 3.0
    assert match_to_map(frame_q, tokens, boxes, map_q, tokens, boxes, 1.8) == [(0, 0), (1, 1)]
    # boxes apart: frame 1 -> map 1 scores 1.8, not > 1.8
    assert match_to_map(frame_q, tokens, boxes, map_q, tokens, far, 1.8) == [(0, 0)]
    cfg = AssociationConfig()
    assert match_threshold(cfg, True) == 1.8 and match_threshold(cfg, False) == cfg.match_threshold_without_state
    # no tokens: score = cos + IoU; 1.0 + 1.0 and 0.8 + 1.0
    assert match_to_map(frame_q, None, boxes, map_q, None, boxes, 1.2) == [(0, 0), (1, 1)]
    assert match_to_map(frame_q, None, boxes, map_q, None, boxes, 1.9) == [(0, 0)]
    assert match_to_map(np.zeros((0, 2)), None, np.zeros((0, 2, 3)), map_q, None, boxes, 1.2) == []
    with pytest.raises(ValueError, match="map ids"):
        match_to_map(frame_q, None, boxes, map_q, None, boxes, 1.2, map_ids=[1])


def test_visible_part_raises_the_iou_term_and_never_lowers_it():
    q = np.array([[1.0, 0.0]])
    frame_b = _box([0, 0, 0], [1, 1, 1])[None]
    map_b = _box([0, 0, 0], [4, 1, 1])[None]  # the stored box: IoU 0.25 with the frame's cut-off view
    assert match_to_map(q, None, frame_b, q, None, map_b, 1.5, map_ids=[7]) == []  # 1 + 0.25
    seen = {7: _box([0, 0, 0], [1, 1, 1])}
    score = association_scores(q, None, frame_b, q, None, map_b, [7], seen)
    assert score[0, 0] == pytest.approx(2.0)
    assert match_to_map(q, None, frame_b, q, None, map_b, 1.5, map_ids=[7], visible_boxes=seen) == [(0, 7)]
    far = {7: _box([5, 5, 5], [6, 6, 6])}
    assert association_scores(q, None, frame_b, q, None, map_b, [7], far)[0, 0] == pytest.approx(1.25)
    assert association_scores(q, None, frame_b, q, None, map_b, [8], seen)[0, 0] == pytest.approx(1.25)


def test_hungarian_with_visible_parts_matches_brute_force():
    import itertools
    rng = np.random.default_rng(6)
    fq, mq = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    fb = np.sort(rng.uniform(0, 2, (5, 2, 3)), axis=1)
    mb = np.sort(rng.uniform(0, 2, (5, 2, 3)), axis=1)
    ids = [3, 9, 4, 12, 20]
    seen = {9: np.sort(rng.uniform(0, 2, (2, 3)), axis=0), 12: fb[1] + 0.05}
    score = association_scores(fq, None, fb, mq, None, mb, ids, seen)
    assert not np.allclose(score, association_scores(fq, None, fb, mq, None, mb))
    best = max(sum(score[i, p[i]] for i in range(5)) for p in itertools.permutations(range(5)))
    pairs = match_to_map(fq, None, fb, mq, None, mb, threshold=-10.0, map_ids=ids, visible_boxes=seen)
    column = {i: j for j, i in enumerate(ids)}
    assert len(pairs) == 5
    assert sum(score[i, column[m]] for i, m in pairs) == pytest.approx(best, rel=1e-6)

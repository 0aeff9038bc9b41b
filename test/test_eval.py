"""ScanNet-protocol class-agnostic AP on cases worked out by hand (see comments for the arithmetic)."""
import json
import math

import numpy as np
import pytest

from moonseg3r_ros.eval.scannet_ap import EvalError, OVERLAPS, average_precision, evaluate, write_predictions


def gt_layout(sizes: dict, void: int = 500) -> np.ndarray:
    """Per-vertex GT: `void` zeros first, then each id repeated its size."""
    return np.concatenate([np.zeros(void, np.int64)] + [np.full(n, i, np.int64) for i, n in sizes.items()])


def write_case(tmp_path, gt: np.ndarray, preds: list, scene: str = "scene0000_00"):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir(exist_ok=True)
    np.savetxt(gt_dir / f"{scene}.txt", gt, fmt="%d")
    write_predictions(pred_dir, scene, [m for m, _ in preds], [c for _, c in preds])
    return gt_dir, pred_dir


def test_overlaps_match_official_thresholds():
    assert len(OVERLAPS) == 10 and OVERLAPS[-1] == 0.25
    assert np.allclose(OVERLAPS[:9], [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9])


def test_perfect_prediction(tmp_path):
    gt = gt_layout({1001: 200, 1002: 300})
    r = evaluate(*write_case(tmp_path, gt, [(gt == 1001, 0.9), (gt == 1002, 0.8)]))
    assert r["ap"] == pytest.approx(1.0) and r["ap50"] == pytest.approx(1.0) and r["ap25"] == pytest.approx(1.0)
    assert r["scenes"]["scene0000_00"]["ap"] == pytest.approx(1.0)


def test_empty_prediction_counts_misses(tmp_path):
    gt = gt_layout({1001: 200, 1002: 300})
    r = evaluate(*write_case(tmp_path, gt, []))
    assert (r["ap"], r["ap50"], r["ap25"]) == (0.0, 0.0, 0.0)


def test_under_segmentation(tmp_path):
    # one prediction over both objects: IoU 200/500 = 0.4 with 1001, 300/500 = 0.6 with 1002.
    # t = 0.5, 0.55: matches 1002, 1001 missed -> p = 1, r = 0.5 -> AP 0.5; t >= 0.6: FP only -> 0.
    # t = 0.25: the greedy pass visits 1001 first (IoU 0.4) -> 1002 missed -> 0.5.
    gt = gt_layout({1001: 200, 1002: 300})
    r = evaluate(*write_case(tmp_path, gt, [(gt > 0, 0.7)]))
    assert r["ap"] == pytest.approx(1.0 / 9) and r["ap50"] == pytest.approx(0.5) and r["ap25"] == pytest.approx(0.5)


def test_over_segmentation(tmp_path):
    # 1002 split into B (200 verts, IoU 2/3, conf .8) and C (100 verts, IoU 1/3, conf .7); A = 1001 exact (.9).
    # t <= 0.65: TP .9, TP .8, FP .7 -> AP 1 (the FP has the lowest score).
    # t >= 0.7 (5 thresholds): TP .9, FP .8, FP .7, one miss -> curve p=(1/3,1/2,1,1) r=(.5,.5,.5,0) -> 0.5.
    gt = gt_layout({1001: 200, 1002: 300})
    b = gt == 1002
    c = b.copy()
    idx = np.flatnonzero(b)
    b[idx[200:]] = False
    c[idx[:200]] = False
    r = evaluate(*write_case(tmp_path, gt, [(gt == 1001, 0.9), (b, 0.8), (c, 0.7)]))
    assert r["ap"] == pytest.approx(6.5 / 9) and r["ap50"] == pytest.approx(1.0)
    # t = 0.25: C also matches 1002 -> lower-scored duplicate is a FP at .7 -> still AP 1
    assert r["ap25"] == pytest.approx(1.0)


@pytest.mark.parametrize("fp_conf, expected", [(0.8, 19 / 36), (0.1, 2 / 3)])
def test_confidence_ordering(tmp_path, fp_conf, expected):
    # TP .9, TP .5, FP (half of 1003, IoU 0.5 = not > 0.5), 1003 missed.
    # FP at .8: p=(2/3,1/2,1,1), r=(2/3,1/3,1/3,0) -> 19/36; FP at .1: p=(2/3,1,1,1), r=(2/3,2/3,1/3,0) -> 2/3.
    gt = gt_layout({1001: 200, 1002: 300, 1003: 200})
    half = gt == 1003
    half[np.flatnonzero(half)[100:]] = False
    r = evaluate(*write_case(tmp_path, gt, [(gt == 1001, 0.9), (gt == 1002, 0.5), (half, fp_conf)]))
    assert r["ap"] == pytest.approx(expected) and r["ap50"] == pytest.approx(expected)
    assert r["ap25"] == pytest.approx(1.0)


def test_ignore_rule_void_and_small_gt(tmp_path):
    # E: 100 void + 60 on small GT 1003 (60 verts, dropped) + 40 on 1002 -> ignored share 160/200 = 0.8.
    # t <= 0.75 (6 thresholds): E ignored -> TP .9 and a miss -> 0.5.
    # t >= 0.8 (3): E is a FP at .95 -> p=(1/2,0,1) r=(1/2,0,0) -> 0.125.   AP = (6*.5 + 3*.125)/9 = 0.375
    gt = gt_layout({1001: 200, 1002: 300, 1003: 60})
    e = np.zeros(len(gt), bool)
    e[:100] = True
    e[gt == 1003] = True
    e[np.flatnonzero(gt == 1002)[:40]] = True
    r = evaluate(*write_case(tmp_path, gt, [(gt == 1001, 0.9), (e, 0.95)]))
    assert r["ap"] == pytest.approx(0.375) and r["ap50"] == pytest.approx(0.5) and r["ap25"] == pytest.approx(0.5)


def test_ignore_rule_boundary_share_equal_to_threshold_is_a_false_positive(tmp_path):
    # E: 100 void + 100 on 1002 -> ignored share exactly 0.5, IoU with 1002 = 100/400 = 0.25 (never > t).
    # The official rule is "FP when share <= t": at t = 0.5 E is a FP at .95 -> 0.125 (as above); at t = 0.25
    # it is ignored -> TP .9 and a miss -> 0.5.
    gt = gt_layout({1001: 200, 1002: 300})
    e = np.zeros(len(gt), bool)
    e[:100] = True
    e[np.flatnonzero(gt == 1002)[:100]] = True
    r = evaluate(*write_case(tmp_path, gt, [(gt == 1001, 0.9), (e, 0.95)]))
    assert r["ap50"] == pytest.approx(0.125) and r["ap25"] == pytest.approx(0.5)


def test_two_predictions_on_one_gt_lower_score_is_fp(tmp_path):
    # P1 = 1001 (.6), P2 = 180 of its 200 verts (IoU 0.9, .9). t < 0.9: GT keeps .9, FP at .6 -> AP 1.
    # t = 0.9: P2 is not > 0.9 -> TP .6, FP .9 -> p=(.5,0,1) r=(1,0,0) -> 0.25.   AP = (8 + .25)/9
    gt = gt_layout({1001: 200})
    p2 = gt == 1001
    p2[np.flatnonzero(p2)[:20]] = False
    r = evaluate(*write_case(tmp_path, gt, [(gt == 1001, 0.6), (p2, 0.9)]))
    assert r["ap"] == pytest.approx(8.25 / 9) and r["ap50"] == pytest.approx(1.0)


def test_small_predictions_are_dropped(tmp_path):
    gt = gt_layout({1001: 200})
    tiny = np.zeros(len(gt), bool)
    tiny[np.flatnonzero(gt == 1001)[:99]] = True  # 99 < 100 vertices: not a prediction at all
    r = evaluate(*write_case(tmp_path, gt, [(gt == 1001, 0.5), (tiny, 0.99)]))
    assert r["ap"] == pytest.approx(1.0)


def test_matches_pool_over_scenes(tmp_path):
    # scene a perfect (2 TP), scene b empty (2 misses): p=(1,1,1) r=(.5,.25,0) -> pooled AP 0.5
    gt = gt_layout({1001: 200, 1002: 300})
    write_case(tmp_path, gt, [(gt == 1001, 0.9), (gt == 1002, 0.8)], scene="a")
    gt_dir, pred_dir = write_case(tmp_path, gt, [], scene="b")
    r = evaluate(gt_dir, pred_dir)
    assert r["ap"] == pytest.approx(0.5)
    assert r["scenes"]["a"]["ap"] == pytest.approx(1.0) and r["scenes"]["b"]["ap"] == 0.0


def test_missing_prediction_file_is_listed_or_counted(tmp_path):
    gt = gt_layout({1001: 200})
    gt_dir, pred_dir = write_case(tmp_path, gt, [(gt == 1001, 0.9)], scene="a")
    np.savetxt(gt_dir / "b.txt", gt, fmt="%d")
    assert evaluate(gt_dir, pred_dir)["missing_scenes"] == ["b"]
    assert evaluate(gt_dir, pred_dir)["ap"] == pytest.approx(1.0)
    assert evaluate(gt_dir, pred_dir, missing_as_empty=True)["ap"] == pytest.approx(0.5)


def test_no_gt_gives_nan(tmp_path):
    gt = np.zeros(300, np.int64)
    r = evaluate(*write_case(tmp_path, gt, [(np.arange(300) < 150, 0.9)]))
    assert math.isnan(r["ap"])


def test_average_precision_direct():
    # two TPs and a miss: p=(1,1,1) r=(2/3,1/3,0) -> 1/6+1/3+1/6 = 2/3
    assert average_precision(np.array([1.0, 1.0]), np.array([0.9, 0.8]), 1) == pytest.approx(2 / 3)


def test_bad_inputs_raise(tmp_path):
    gt = gt_layout({1001: 200})
    gt_dir, pred_dir = write_case(tmp_path, gt, [(gt == 1001, 0.9)])
    np.savetxt(pred_dir / "pred_mask" / "scene0000_00_0.txt", np.ones(10, int), fmt="%d")
    with pytest.raises(EvalError, match="vertices"):
        evaluate(gt_dir, pred_dir)
    (pred_dir / "other.txt").write_text("")
    with pytest.raises(EvalError, match="without ground truth"):
        evaluate(gt_dir, pred_dir)
    (pred_dir / "other.txt").unlink()
    (pred_dir / "scene0000_00.txt").write_text("pred_mask/x.txt 1\n")
    with pytest.raises(EvalError, match="expected"):
        evaluate(gt_dir, pred_dir)
    (pred_dir / "scene0000_00.txt").write_text("../../etc/passwd 1 0.5\n")
    with pytest.raises(EvalError, match="outside"):
        evaluate(gt_dir, pred_dir)
    with pytest.raises(EvalError, match="not found"):
        evaluate(tmp_path / "nope", pred_dir)


def test_json_safe_turns_nan_into_null_at_any_depth():
    from moonseg3r_ros.eval.scannet_ap import json_safe

    out = json_safe({"ap": math.nan, "per_scene": [{"ap50": math.nan, "n": 3}], "ap25": 0.5})
    assert json.dumps(out) == '{"ap": null, "per_scene": [{"ap50": null, "n": 3}], "ap25": 0.5}'

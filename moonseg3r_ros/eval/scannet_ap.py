"""Class-agnostic 3D instance segmentation AP in the ScanNet benchmark protocol.

Our own implementation of the rules of the official ScanNet script
(BenchmarkScripts/3d_evaluation/evaluate_semantic_instance.py), with every instance in one class.

Files
- Ground truth: `<scene>.txt` in GT_DIR (or `GT_DIR/<scene>/<scene>.txt`, the folder layout written by
  `moonseg3r generate`): one integer per mesh vertex, `label_id * 1000 + instance_id`.
- Predictions: `<scene>.txt` in PRED_DIR, one line per predicted instance
  `<relative path to mask .txt> <label_id> <confidence>`; the mask file has one integer per vertex,
  non-zero = in the instance. Mask paths must stay inside PRED_DIR.

Rules (as in the official script, class-agnostic)
- GT instances: every distinct non-zero GT value whose label_id = value // 1000 is non-zero (the official
  script keeps values whose label is a valid class; class-agnostic, every non-zero label is valid).
  GT instances with fewer than 100 vertices are dropped (not counted as misses).
- Unannotated ("void") vertices: GT value // 1000 == 0 (label 0, e.g. walls/floor of our synthetic
  scenes, or unlabelled ScanNet vertices).
- Predictions with fewer than 100 non-zero vertices are dropped. The label_id of a prediction is ignored
  (the official script would drop labels outside its class list). A mask file named twice in one scene
  file counts once (last line's label/confidence, first line's position), as the official script's dict.
- For each IoU threshold t in np.append(np.arange(0.5, 0.95, 0.05), 0.25), a GT matches a prediction when
  IoU > t (strictly). GT instances are visited in increasing id order, their overlapping predictions in
  prediction-file order; a prediction already taken by another GT is skipped; when a second prediction
  matches an already-matched GT, the GT keeps the higher confidence and the lower one is a false positive.
  A GT without a match is a miss ("hard false negative").
- A prediction that overlaps no GT with IoU > t is a false positive unless the share of its vertices on
  void vertices plus on dropped (small) GT instances is > t.
- Precision/recall at every unique confidence (plus the artificial point recall 0, precision 1),
  integrated with the script's step widths (half-differences of neighbouring recalls).
- AP = mean over the 9 thresholds 0.50..0.90; AP50 at 0.5; AP25 at 0.25. Matches are pooled over all
  scenes. With GT but no prediction anywhere AP is 0; with no GT, NaN (None in JSON).
- Scenes: as the official script, the scenes evaluated are the prediction files found in PRED_DIR (a
  prediction file without GT is an error). An empty prediction file still counts its GT as misses. GT
  scenes without a prediction file are listed under "missing_scenes" and skipped, unless
  `missing_as_empty=True` evaluates them as empty predictions.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

OVERLAPS = np.append(np.arange(0.5, 0.95, 0.05), 0.25)  # identical floats to the official script
MIN_REGION_SIZE = 100


class EvalError(ValueError):
    """Malformed or missing ground-truth / prediction files."""


@dataclass
class GtInstance:
    instance_id: int  # label_id * 1000 + instance_id
    vert_count: int
    matched_pred: list = field(default_factory=list)  # [(pred, intersection)] in prediction order


@dataclass
class PredInstance:
    key: str  # absolute mask file path (the official script's 'filename')
    confidence: float
    vert_count: int
    void_intersection: int
    matched_gt: list = field(default_factory=list)  # [(GtInstance, intersection)]


@dataclass
class SceneMatches:
    gt: list[GtInstance]  # all annotated GT instances (small ones included; filtered at evaluation)
    pred: list[PredInstance]


# ----------------------------------------------------------------------------------------------------
# Reading files


def load_ids(path: Path) -> np.ndarray:
    """One integer per line -> N int64 (clear EvalError on a missing or malformed file)."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"file not found: {path}")
    try:
        text = path.read_text().split()
        return np.array(text, dtype=np.int64) if text else np.zeros(0, np.int64)
    except ValueError as e:
        raise EvalError(f"{path}: expected one integer per line ({e})") from None


def load_mask(path: Path) -> np.ndarray:
    """A prediction mask file: one 0 or 1 per vertex -> N int64 (EvalError on any other value)."""
    values = load_ids(path)
    bad = values[(values != 0) & (values != 1)]
    if bad.size:
        raise EvalError(f"{path}: mask values must be 0 or 1, found {int(bad[0])} "
                        f"({bad.size} of {values.size} lines)")
    return values


def read_prediction_file(path: Path, pred_root: Path) -> dict[str, tuple[int, float]]:
    """{absolute mask path: (label_id, confidence)} in file order (duplicates collapse like a dict)."""
    info: dict[str, tuple[int, float]] = {}
    root = os.path.abspath(pred_root)
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise EvalError(f"{path}:{number}: expected '<mask path> <label id> <confidence>', got {line!r}")
        if os.path.isabs(parts[0]):
            raise EvalError(f"{path}:{number}: the mask path must be relative, got {parts[0]!r}")
        mask = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(path)), parts[0]))
        if os.path.commonpath([mask, root]) != root:
            raise EvalError(f"{path}:{number}: mask {parts[0]!r} points outside the prediction folder")
        try:
            info[mask] = (int(float(parts[1])), float(parts[2]))
        except ValueError:
            raise EvalError(f"{path}:{number}: label id and confidence must be numbers, got {line!r}") from None
        if not math.isfinite(info[mask][1]):
            raise EvalError(f"{path}:{number}: the confidence must be a finite number, got {parts[2]!r}")
    return info


def find_gt_files(gt_dir: Path) -> dict[str, Path]:
    """{scene: path} from GT_DIR/<scene>.txt and GT_DIR/<scene>/<scene>.txt."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise EvalError(f"ground-truth folder not found: {gt_dir}")
    files = {p.stem: p for p in sorted(gt_dir.glob("*.txt"))}
    for sub in sorted(p for p in gt_dir.iterdir() if p.is_dir()):
        candidate = sub / f"{sub.name}.txt"
        if candidate.is_file():
            files.setdefault(sub.name, candidate)
    return files


def find_prediction_files(pred_dir: Path) -> dict[str, Path]:
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise EvalError(f"prediction folder not found: {pred_dir}")
    return {p.stem: p for p in sorted(pred_dir.glob("*.txt")) if p.name != "semantic_instance_evaluation.txt"}


# ----------------------------------------------------------------------------------------------------
# Matching one scene


def gt_instances(gt_ids: np.ndarray) -> list[GtInstance]:
    """Annotated GT instances (label_id != 0) in increasing id order, all sizes."""
    ids, counts = np.unique(gt_ids, return_counts=True)
    return [GtInstance(int(i), int(c)) for i, c in zip(ids, counts) if i != 0 and i // 1000 != 0]


def match_scene(gt_ids: np.ndarray, masks: Sequence[tuple[str, np.ndarray, float]]) -> SceneMatches:
    """Intersections of every prediction with every GT instance of one scene.

    gt_ids: N int64 per-vertex GT; masks: [(key, N mask values (non-zero = in), confidence)] in file order.
    """
    gts = gt_instances(gt_ids)
    compact = np.full(len(gt_ids), len(gts), np.int64)  # len(gts) = not an annotated instance
    for k, g in enumerate(gts):
        compact[gt_ids == g.instance_id] = k
    void = (gt_ids // 1000) == 0
    preds: list[PredInstance] = []
    for key, values, confidence in masks:
        if len(values) != len(gt_ids):
            raise EvalError(f"{key}: {len(values)} lines but the mesh has {len(gt_ids)} vertices")
        mask = values != 0
        count = int(np.count_nonzero(mask))
        if count < MIN_REGION_SIZE:
            continue
        pred = PredInstance(key, float(confidence), count, int(np.count_nonzero(void & mask)))
        inter = np.bincount(compact[mask], minlength=len(gts) + 1)[: len(gts)]
        for k in np.flatnonzero(inter):
            pred.matched_gt.append((gts[k], int(inter[k])))
            gts[k].matched_pred.append((pred, int(inter[k])))
        preds.append(pred)
    return SceneMatches(gts, preds)


def load_scene(gt_file: Path, pred_file: Optional[Path], pred_root: Path) -> SceneMatches:
    """Read and match one scene; pred_file None = an empty prediction."""
    gt_ids = load_ids(gt_file)
    masks = []
    if pred_file is not None:
        for key, (_label, confidence) in read_prediction_file(pred_file, pred_root).items():
            masks.append((key, load_mask(Path(key)), confidence))
    return match_scene(gt_ids, masks)


# ----------------------------------------------------------------------------------------------------
# Average precision


def _scene_scores(scene: SceneMatches, th: float, visited: dict[str, bool]) -> tuple[list, list, int, bool, bool]:
    """(y_true, y_score, hard false negatives, has_gt, has_pred) of one scene at IoU threshold th."""
    gts = [g for g in scene.gt if g.vert_count >= MIN_REGION_SIZE]
    y_true = [1.0] * len(gts)
    y_score = [-math.inf] * len(gts)
    matched = [False] * len(gts)
    misses = 0
    for gi, gt in enumerate(gts):
        found = False
        for pred, inter in gt.matched_pred:
            if visited[pred.key]:
                continue
            if inter / (gt.vert_count + pred.vert_count - inter) > th:
                if matched[gi]:  # the lower-scored of two matches is a false positive
                    y_score[gi], low = max(y_score[gi], pred.confidence), min(y_score[gi], pred.confidence)
                    y_true.append(0.0), y_score.append(low), matched.append(True)
                else:
                    found, matched[gi], y_score[gi] = True, True, pred.confidence
                    visited[pred.key] = True
        misses += not found
    y_true = [t for t, m in zip(y_true, matched) if m]
    y_score = [s for s, m in zip(y_score, matched) if m]
    for pred in scene.pred:
        if _is_false_positive(pred, th):
            y_true.append(0.0)
            y_score.append(pred.confidence)
    return y_true, y_score, misses, bool(gts), bool(scene.pred)


def _is_false_positive(pred: PredInstance, th: float) -> bool:
    """No GT with IoU > th, and at most a share th of the prediction on void or small GT vertices."""
    for gt, inter in pred.matched_gt:
        if inter / (gt.vert_count + pred.vert_count - inter) > th:
            return False
    ignored = pred.void_intersection + sum(inter for gt, inter in pred.matched_gt
                                           if gt.vert_count < MIN_REGION_SIZE)
    return ignored / pred.vert_count <= th


def average_precision(y_true: np.ndarray, y_score: np.ndarray, hard_false_negatives: int) -> float:
    """Area under the precision/recall curve at unique scores, integrated as the ScanNet script does."""
    order = np.argsort(y_score)
    scores, trues = y_score[order], y_true[order]
    cumsum = np.cumsum(trues)
    _, unique_idx = np.unique(scores, return_index=True)
    n, n_true = len(scores), cumsum[-1]
    precision = np.zeros(len(unique_idx) + 1)
    recall = np.zeros(len(unique_idx) + 1)
    cumsum = np.append(cumsum, 0)  # index -1 -> 0 for the first score
    for k, idx in enumerate(unique_idx):
        below = cumsum[idx - 1]  # true positives with a lower score
        tp = n_true - below
        fp = n - idx - tp
        fn = below + hard_false_negatives
        precision[k], recall[k] = tp / (tp + fp), tp / (tp + fn)
    precision[-1], recall[-1] = 1.0, 0.0  # artificial first point of the curve
    padded = np.concatenate([[recall[0]], recall, [0.0]])
    step = (padded[:-2] - padded[2:]) / 2.0  # = np.convolve(padded, [-0.5, 0, 0.5], 'valid')
    return float(np.dot(precision, step))


def ap_at_threshold(scenes: Sequence[SceneMatches], th: float) -> float:
    """Class-agnostic AP over pooled scenes at one IoU threshold (NaN without GT)."""
    visited = {p.key: False for s in scenes for p in s.pred}
    y_true, y_score, misses, has_gt, has_pred = [], [], 0, False, False
    for scene in scenes:
        t, s, m, g, p = _scene_scores(scene, th, visited)
        y_true += t
        y_score += s
        misses += m
        has_gt, has_pred = has_gt or g, has_pred or p
    if has_gt and has_pred:
        if not y_true:  # only ignored predictions, nothing matched (the official script crashes here)
            return 0.0
        return average_precision(np.array(y_true), np.array(y_score), misses)
    return 0.0 if has_gt else math.nan


def summarize(scenes: Sequence[SceneMatches]) -> dict[str, float]:
    """{'ap', 'ap50', 'ap25'} from the 10 thresholds (AP = nanmean over 0.50..0.90)."""
    aps = np.array([ap_at_threshold(scenes, float(th)) for th in OVERLAPS])
    main = aps[~np.isclose(OVERLAPS, 0.25)]
    ap = float(np.nanmean(main)) if np.any(~np.isnan(main)) else math.nan
    return {"ap": ap, "ap50": float(aps[np.isclose(OVERLAPS, 0.5)][0]),
            "ap25": float(aps[np.isclose(OVERLAPS, 0.25)][0])}


def evaluate(gt_dir, pred_dir, missing_as_empty: bool = False) -> dict:
    """Evaluate a prediction folder against a GT folder (layouts in the module docstring).

    Returns {"ap", "ap50", "ap25", "scenes": {scene: {"ap", "ap50", "ap25"}}, "missing_scenes": [...]}
    (values are floats, NaN where undefined; per-scene numbers use that scene alone).
    """
    gt_files = find_gt_files(Path(gt_dir))
    pred_files = find_prediction_files(Path(pred_dir))
    if pred_files and not set(pred_files) & set(gt_files):
        raise EvalError(not_a_prediction_folder(Path(pred_dir), sorted(pred_files), sorted(gt_files)))
    unknown = sorted(set(pred_files) - set(gt_files))
    if unknown:
        raise EvalError(f"prediction file(s) without ground truth in {gt_dir}: {', '.join(unknown)}")
    missing = sorted(set(gt_files) - set(pred_files))
    names = sorted(set(pred_files) | (set(missing) if missing_as_empty else set()))
    if not names:
        raise EvalError(f"no prediction files (<scene>.txt) found in {pred_dir}")
    scenes = {n: load_scene(gt_files[n], pred_files.get(n), Path(pred_dir)) for n in names}
    result = summarize(list(scenes.values()))
    result["scenes"] = {n: summarize([s]) for n, s in scenes.items()}
    result["missing_scenes"] = [] if missing_as_empty else missing
    return result


def not_a_prediction_folder(pred_dir: Path, found: list[str], scenes: list[str]) -> str:
    """Why PRED_DIR holds no prediction of any GT scene (a replay's run folder, most often)."""
    message = f"{pred_dir} holds no prediction of the ground-truth scene(s) {', '.join(scenes)} " \
              f"(it has {', '.join(f + '.txt' for f in found)})"
    if (pred_dir / "pred").is_dir():
        return f"{message}; the predictions are in its pred/ folder: --pred {pred_dir / 'pred'}"
    if (pred_dir / "node_command.txt").is_file() or (pred_dir / "metrics.json").is_file():
        return (f"{message}; it is a `moonseg3r replay` output folder without pred/: the replay wrote no "
                "predictions (it printed why; ScanNet predictions need the sequence's mesh vertices)")
    return message


def json_safe(value):
    """A result of `evaluate` (or any dict/list of numbers) with NaN (no GT) as None, for JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------------
# Writing predictions


def write_predictions(pred_dir, scene: str, masks: Sequence[np.ndarray], confidences: Sequence[float],
                      label_ids: Optional[Sequence[int]] = None) -> Path:
    """Write `<scene>.txt` + `pred_mask/<scene>_<k>.txt` (0/1 per vertex) in the official format."""
    pred_dir = Path(pred_dir)
    (pred_dir / "pred_mask").mkdir(parents=True, exist_ok=True)
    if len(masks) != len(confidences):
        raise ValueError(f"{len(masks)} masks but {len(confidences)} confidences")
    labels = list(label_ids) if label_ids is not None else [1] * len(masks)
    lines = []
    for k, (mask, conf, label) in enumerate(zip(masks, confidences, labels)):
        rel = f"pred_mask/{scene}_{k}.txt"
        np.savetxt(pred_dir / rel, (np.asarray(mask) != 0).astype(np.int64), fmt="%d")
        lines.append(f"{rel} {int(label)} {float(conf):.6f}")
    path = pred_dir / f"{scene}.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def write_instance_predictions(pred_dir, scene: str, vertex_instance_ids: np.ndarray,
                               confidences: Optional[dict[int, float]] = None) -> Path:
    """Per-vertex instance ids (0 = none) -> one mask per id, confidence from `confidences` (default 1)."""
    ids = np.asarray(vertex_instance_ids)
    keys = [int(i) for i in np.unique(ids) if i != 0]
    conf = confidences or {}
    return write_predictions(pred_dir, scene, [ids == k for k in keys], [conf.get(k, 1.0) for k in keys])


def format_table(result: dict) -> str:
    """Fixed-width table: one row per scene and the pooled mean."""
    def fmt(v: float) -> str:
        return f"{v:8.3f}" if v == v else f"{'nan':>8}"

    lines = [f"{'scene':<28}{'AP':>8}{'AP50':>8}{'AP25':>8}", "-" * 52]
    for name, r in result["scenes"].items():
        lines.append(f"{name:<28}{fmt(r['ap'])}{fmt(r['ap50'])}{fmt(r['ap25'])}")
    lines.append("-" * 52)
    lines.append(f"{'average (pooled)':<28}{fmt(result['ap'])}{fmt(result['ap50'])}{fmt(result['ap25'])}")
    return "\n".join(lines)

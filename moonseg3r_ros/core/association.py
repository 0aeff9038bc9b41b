"""Instance association at inference (block (d) of the paper's Figure 2).

State-distribution token (`state_distribution_tokens`)
    A_t (S x h x w) is the attention of CUT3R's S state tokens to the image patches. For a mask m the
    token is d_m[s] = sum_{patches p} w_m(p) A_t[s, p], normalised to a unit-sum distribution over s.
    Resolution: masks (image grid HxW) are area-averaged onto the attention grid (h x w): w_m(p) is the
    fraction of patch p covered by the mask (exact box filter; a reshape-sum when H, W are multiples of
    h, w). Tokens are compared with cosine similarity. An empty mask gives an all-zero token.

Intra-frame merge (`merge_within_frame`)
    Masks i, j are linked when cos(q_i, q_j) > merge_threshold (paper: 0.8) AND their 3D boxes touch
    (gap along every axis <= box_margin) AND (AssociationConfig.merge_evidence 'boundary', the default)
    the boundary evidence allows it: the two masks share a 2D boundary of meaningful length along which
    depth goes on smoothly, neither jumping (occluding contour) nor folding into a concave crease (an
    object's contact with its support) -- core/merge_evidence.py. Groups are the connected components of
    the links (a chain a-b-c merges all three). Appearance alone never merges two distant masks, and an
    object resting on its table or two touching objects stay apart. `combine_groups` then fuses masks
    (union), queries/tokens (area-weighted mean) and boxes (union).

Cross-frame matching (`match_to_map`)
    score(i, j) = cos(q_i, Q_j) + cos(d_i, D_j) + IoU3D(box_i, box_j) (axis-aligned); when either side has
    no state tokens the token term is dropped (use AssociationConfig.match_threshold_without_state, see
    `match_threshold`). The Hungarian algorithm (scipy linear_sum_assignment) maximises the total score
    over a one-to-one assignment; assigned pairs with score > threshold are kept (paper: 1.8). Which map
    instances are candidates (e.g. those visible in the query index memory) is the caller's choice.
    Visible part (`visible_boxes`, AssociationConfig.box_overlap 'visible_iou'; empty with 'iou', the paper's
    plain IoU): the IoU term of a map instance is the larger of its bank box's and the box of the part of it
    seen now (this frame's valid points that fall in its memory cells, boxed like the masks: `label_boxes`),
    so an object cut by the image edge or seen from one side still overlaps the part of the map instance
    seen from this viewpoint. This is the one matcher: the pipeline runs it.

All inputs may be numpy arrays or torch tensors; outputs are numpy.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .config import AssociationConfig
from .lifting import grouped_percentile
from .query_bank import QueryBank
from .types import MaskSet


def _numpy(x, dtype=np.float32) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu").numpy()
    return np.asarray(x, dtype=dtype)


# ----------------------------------------------------------------------------------------------------------
# state-distribution tokens


def pool_masks_to_grid(masks, grid_h: int, grid_w: int) -> np.ndarray:
    """NxHxW bool masks (or a MaskSet) -> Nx(grid_h*grid_w) float32 covered fraction of each cell (area average)."""
    if isinstance(masks, MaskSet):
        if masks.labels is not None:
            return _pool_labels_to_grid(masks.labels, len(masks), grid_h, grid_w)
        masks = masks.masks
    masks = np.asarray(masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be NxHxW, got shape {masks.shape}")
    n, height, width = masks.shape
    if (height, width) == (grid_h, grid_w):
        return masks.reshape(n, -1).astype(np.float32)
    if height % grid_h == 0 and width % grid_w == 0:
        ph, pw = height // grid_h, width // grid_w
        pixels = np.ascontiguousarray(masks.view(np.uint8) if masks.dtype == bool else masks != 0)
        acc = np.uint16 if ph < 65536 else np.int64
        rows = np.add.reduce(pixels.reshape(n * grid_h, ph, width), axis=1, dtype=acc)  # outer-axis adds
        sums = rows.reshape(n * grid_h, grid_w, pw).sum(axis=2, dtype=np.int64)
        return sums.reshape(n, -1).astype(np.float32) / float(ph * pw)
    rows = _area_matrix(height, grid_h)  # grid_h x H
    cols = _area_matrix(width, grid_w)  # grid_w x W
    m = torch.from_numpy(masks.astype(np.float32))
    pooled = torch.einsum("ah,nhw,bw->nab", torch.from_numpy(rows), m, torch.from_numpy(cols))
    return pooled.reshape(n, -1).numpy()


def _pool_labels_to_grid(labels: np.ndarray, n: int, grid_h: int, grid_w: int) -> np.ndarray:
    """Label image HxW (k+1 = mask k) -> Nx(grid_h*grid_w) float32 covered fraction of each cell: one bincount
    of (mask, cell) pairs when H, W are multiples of the grid; else the exact box filter on the dense masks."""
    height, width = labels.shape
    if height % grid_h or width % grid_w:
        return pool_masks_to_grid(labels[None] == np.arange(1, n + 1)[:, None, None], grid_h, grid_w)
    ph, pw = height // grid_h, width // grid_w
    cell = (np.arange(height) // ph)[:, None] * grid_w + (np.arange(width) // pw)[None, :]
    hit = labels > 0
    pairs = (labels[hit].astype(np.int64) - 1) * (grid_h * grid_w) + cell[hit]
    sums = np.bincount(pairs, minlength=n * grid_h * grid_w).reshape(n, -1)
    return sums.astype(np.float32) / float(ph * pw)


def _area_matrix(size: int, cells: int) -> np.ndarray:
    """cells x size matrix: fraction of pixel k inside cell a, divided by the cell's length (box filter)."""
    edges = np.linspace(0.0, size, cells + 1)
    lo = np.maximum(edges[:-1, None], np.arange(size)[None, :])
    hi = np.minimum(edges[1:, None], np.arange(size)[None, :] + 1)
    overlap = np.clip(hi - lo, 0.0, None)
    return (overlap / (size / cells)).astype(np.float32)


def state_distribution_tokens(state_attention, masks) -> np.ndarray:
    """A_t SxHaxWa (torch or numpy) and masks NxHxW bool -> NxS float32 unit-sum tokens (zeros if empty)."""
    attention = _numpy(state_attention)
    if attention.ndim != 3:
        raise ValueError(f"state_attention must be SxHxW, got shape {attention.shape}")
    s, grid_h, grid_w = attention.shape
    weights = pool_masks_to_grid(masks, grid_h, grid_w)  # N x hw
    tokens = weights @ attention.reshape(s, -1).T  # N x S
    total = tokens.sum(axis=1, keepdims=True)
    return np.where(total > 0, tokens / np.where(total > 0, total, 1.0), 0.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# similarities


def cosine_matrix(a, b, eps: float = 1e-8) -> np.ndarray:
    """NxD, MxD -> NxM float32 cosine similarity (0 where a vector is zero)."""
    a, b = _numpy(a), _numpy(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"cosine_matrix needs NxD and MxD, got {a.shape} and {b.shape}")
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), eps)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), eps)
    return an @ bn.T


def box_iou_matrix(boxes_a, boxes_b) -> np.ndarray:
    """Axis-aligned 3D IoU: Nx2x3, Mx2x3 (min, max) -> NxM float32 (0 where the union is empty).

    Computed in float64 one axis at a time on NxM planes (the same operations in the same order as a
    reduction over NxMx3, so bit-identical, but ~7x faster than reducing over a 3-long last axis)."""
    a, b = _numpy(boxes_a, np.float64), _numpy(boxes_b, np.float64)
    if a.shape[1:] != (2, 3) or b.shape[1:] != (2, 3):
        raise ValueError(f"boxes must be Nx2x3, got {a.shape} and {b.shape}")
    inter = np.ones((a.shape[0], b.shape[0]))
    for axis in range(3):
        side = np.minimum(a[:, 1, axis, None], b[None, :, 1, axis])
        side -= np.maximum(a[:, 0, axis, None], b[None, :, 0, axis])
        np.maximum(side, 0.0, out=side)
        inter *= side
    vol_a = np.clip(a[:, 1] - a[:, 0], 0.0, None).prod(axis=1)
    vol_b = np.clip(b[:, 1] - b[:, 0], 0.0, None).prod(axis=1)
    union = vol_a[:, None] + vol_b[None, :]
    union -= inter
    positive = union > 0
    np.divide(inter, union, out=inter, where=positive)
    inter[~positive] = 0.0
    return inter.astype(np.float32)


def label_boxes(points, labels, percentile: float = 0.02, padding: float = 0.0,
                min_points: int = 1) -> dict[int, np.ndarray]:
    """Points Nx3 with labels N (0 = none) -> {label: 2x3 float32 box}: per axis the [percentile,
    1 - percentile] quantiles (lower, as the query lifter's boxes) of the label's points, grown by `padding`;
    labels with fewer than `min_points` points are left out.

    The pipeline's visible-part box of a map instance: the current frame's valid points (on the lifter's
    statistics sub-grid) labelled by the memory cell they fall in -> the part of the instance seen now,
    measured exactly like the frame's mask boxes."""
    pts = _numpy(points, None).reshape(-1, 3)
    if pts.dtype != np.float32:  # float32 points stay float32 (exact; grouped_percentile's fast path)
        pts = pts.astype(np.float64)
    labels = np.asarray(labels).reshape(-1)
    keep = labels != 0
    pts, labels = pts[keep], labels[keep]
    if labels.size == 0:
        return {}
    if labels.min() > 0 and labels.max() < 1 << 24:  # small positive ids: counting instead of sorting
        per_id = np.bincount(labels)
        ids = np.flatnonzero(per_id)
        counts = per_id[ids]
        rank = np.zeros(per_id.size, np.int64)
        rank[ids] = np.arange(ids.size)
        group = rank[labels]
    else:
        ids, counts = np.unique(labels, return_counts=True)
        group = np.searchsorted(ids, labels)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    boxes = np.zeros((ids.size, 2, 3), np.float64)
    for axis in range(3):  # lower quantiles, one sort per axis (same values as a lexsort by (group, value))
        boxes[:, :, axis] = grouped_percentile(pts[:, axis], group, starts, counts, (percentile, 1.0 - percentile)).T
    boxes[:, 0] -= padding
    boxes[:, 1] += padding
    boxes = boxes.astype(np.float32)  # one cast; the dict holds read-only rows of it
    boxes.setflags(write=False)
    return {int(i): boxes[k] for k, i in enumerate(ids.tolist()) if counts[k] >= min_points}


def box_gap_matrix(boxes_a, boxes_b) -> np.ndarray:
    """Nx2x3, Mx2x3 -> NxM float32 largest per-axis gap between boxes (0 when they overlap or touch)."""
    a, b = _numpy(boxes_a, np.float64), _numpy(boxes_b, np.float64)
    gap = np.zeros((a.shape[0], b.shape[0]))
    for axis in range(3):  # one NxM plane per axis (faster than reducing an NxMx3 array over its last axis)
        np.maximum(gap, a[:, 0, axis, None] - b[None, :, 1, axis], out=gap)
        np.maximum(gap, b[None, :, 0, axis] - a[:, 1, axis, None], out=gap)
    return gap.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# intra-frame merge


def merge_within_frame(queries, boxes, threshold: float = 0.8, box_margin: float = 0.05,
                       allowed: Optional[np.ndarray] = None) -> list[np.ndarray]:
    """queries NxD, boxes Nx2x3 (, allowed NxN bool: the boundary evidence of merge_evidence.merge_allowed)
    -> groups: list of sorted index arrays, ordered by their smallest index."""
    q = _numpy(queries)
    n = q.shape[0]
    if n == 0:
        return []
    linked = (cosine_matrix(q, q) > threshold) & (box_gap_matrix(boxes, boxes) <= box_margin)
    if allowed is not None:
        linked &= np.asarray(allowed, bool)
    rows, cols = np.nonzero(np.triu(linked, 1))
    graph = coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    order = np.argsort(labels, kind="stable")
    splits = np.flatnonzero(np.diff(labels[order])) + 1
    groups = np.split(order, splits)
    return sorted(groups, key=lambda g: int(g[0]))


def combine_groups(groups: Sequence[np.ndarray], masks, queries, boxes,
                   tokens=None) -> tuple[Any, np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Fuse each group: masks GxHxW (union), queries GxD and tokens GxS (pixel-area weighted mean), boxes Gx2x3.

    `masks` may be a MaskSet; the fused masks are then a MaskSet too (given as labels when the input was)."""
    q, b = _numpy(queries), _numpy(boxes)
    t = None if tokens is None else _numpy(tokens)
    n_groups = len(groups)
    # every mask's group, without a Python loop over the groups (each mask is in exactly one group)
    members = np.concatenate([np.asarray(g, np.int64) for g in groups]) if n_groups else np.zeros(0, np.int64)
    group_of = np.repeat(np.arange(n_groups), [len(g) for g in groups])
    fused_masks: Any  # a MaskSet when `masks` is one, else a GxHxW bool array
    if isinstance(masks, MaskSet) and masks.labels is not None:
        area = masks.areas().astype(np.float32)  # counted once by the mask source when it gave labels
        table = np.zeros(len(masks) + 1, np.int32)
        table[members + 1] = group_of + 1
        fused_masks = MaskSet(None, np.ones(len(groups), np.float32), labels=table.take(masks.labels))
    else:
        as_set = isinstance(masks, MaskSet)
        dense = np.asarray(masks.masks if as_set else masks, bool)
        area = dense.reshape(dense.shape[0], -1).sum(axis=1).astype(np.float32)
        shape = (0,) + dense.shape[1:]
        fused = np.stack([dense[g].any(axis=0) for g in groups]) if len(groups) else np.zeros(shape, bool)
        fused_masks = MaskSet(fused, np.ones(len(groups), np.float32)) if as_set else fused
    member = np.zeros((n_groups, q.shape[0]), bool)  # G x N group membership
    member[group_of, members] = True
    weights = np.where(member, area[None, :], 0.0).astype(np.float32)
    no_area = weights.sum(axis=1) <= 0
    weights[no_area] = member[no_area]  # a group of empty masks: plain mean
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-30)
    fused_boxes = np.stack([np.where(member[:, :, None], b[None, :, 0], np.inf).min(axis=1),
                            np.where(member[:, :, None], b[None, :, 1], -np.inf).max(axis=1)], axis=1)
    return (fused_masks,
            (weights @ q).astype(np.float32) if n_groups else np.zeros((0, q.shape[1]), np.float32),
            fused_boxes.astype(np.float32) if n_groups else np.zeros((0, 2, 3), np.float32),
            None if t is None else ((weights @ t).astype(np.float32) if n_groups
                                    else np.zeros((0, t.shape[1]), np.float32)))


# ----------------------------------------------------------------------------------------------------------
# cross-frame matching


def match_threshold(config: AssociationConfig, has_state_tokens: bool) -> float:
    """The configured threshold for score with (1.8) or without (cos + IoU) the state-token term."""
    return config.match_threshold if has_state_tokens else config.match_threshold_without_state


def association_scores(frame_queries, frame_tokens, frame_boxes, map_queries, map_tokens, map_boxes,
                       map_ids: Optional[Sequence[int] | np.ndarray] = None,
                       visible_boxes: Optional[Mapping[int, np.ndarray]] = None) -> np.ndarray:
    """NxM score = cos(query) + cos(state token) [if both given] + 3D box IoU, where the IoU of a map instance
    whose id (map_ids[j]) is in `visible_boxes` is the larger of its box's and its visible part's (see the
    module docstring)."""
    iou = box_iou_matrix(frame_boxes, map_boxes)  # computed once: the score's term and the visible-part raise
    score = cosine_matrix(frame_queries, map_queries) + iou
    if frame_tokens is not None and map_tokens is not None:
        score = score + cosine_matrix(frame_tokens, map_tokens)
    if visible_boxes and map_ids is not None:
        rows = [j for j, i in enumerate(np.asarray(map_ids).tolist()) if i in visible_boxes]
        if rows:
            part = np.stack([visible_boxes[int(map_ids[j])] for j in rows])
            iou_part = box_iou_matrix(frame_boxes, part)
            score[:, rows] += np.maximum(iou_part - iou[:, rows], 0.0)
    return score


def match_to_map(frame_queries, frame_tokens, frame_boxes, map_queries, map_tokens, map_boxes,
                 threshold: float, map_ids: Optional[Sequence[int] | np.ndarray] = None,
                 visible_boxes: Optional[Mapping[int, np.ndarray]] = None) -> list[tuple[int, int]]:
    """Hungarian matching of N frame instances to M map instances on `association_scores`.

    Returns [(frame_index, map_id)] sorted by frame_index, only pairs with score > threshold; map_id is
    map_ids[j] (or the map row j when map_ids is None). `visible_boxes` {map_id: 2x3 box of the part of that
    instance seen now} needs map_ids.
    """
    n, m = _numpy(frame_queries).shape[0], _numpy(map_queries).shape[0]
    if map_ids is not None and len(map_ids) != m:
        raise ValueError(f"{len(map_ids)} map ids for {m} map queries")
    if n == 0 or m == 0:
        return []
    ids = np.arange(m) if map_ids is None else np.asarray(map_ids)
    score = association_scores(frame_queries, frame_tokens, frame_boxes, map_queries, map_tokens, map_boxes,
                               ids, visible_boxes)
    rows, cols = linear_sum_assignment(score, maximize=True)
    keep = score[rows, cols] > threshold
    return sorted((int(r), int(ids[c])) for r, c in zip(rows[keep], cols[keep]))


def match_to_bank(queries, tokens, boxes, bank: QueryBank, visible_boxes: Mapping[int, np.ndarray],
                  config: AssociationConfig) -> list[tuple[int, int]]:
    """`match_to_map` of frame instances (queries GxD, tokens GxS or None, boxes Gx2x3) against every bank
    instance; the token term only when both sides have tokens, with the matching threshold (`match_threshold`)."""
    bank_ids = bank.ids()
    if bank_ids.size == 0:
        return []
    bank_q, bank_t, bank_b, _ = bank.get(bank_ids)
    use_tokens = tokens is not None and bank_t is not None
    return match_to_map(queries, tokens if use_tokens else None, boxes, bank_q, bank_t if use_tokens else None,
                        bank_b, match_threshold(config, use_tokens), bank_ids, visible_boxes)

"""Keyframe stages of the pipeline that read the map state but never write it (ROS-free).

- `checked_features_3d`, `build_lifter`: F3d as the lifter takes it, and the lifter built at the first keyframe;
- `contextual_queries`: (c) P_t rasterises the query index memory -> the visible bank instances' queries
  (the decoder's context) and the boxes of the parts of those instances seen now;
- `associate`: (d) state-distribution tokens, intra-frame merge, Hungarian matching to the bank, new ids.

The result, a `KeyframeDraft`, is written to the map, memory and bank by the pipeline's commit stage.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from moonseg3r_ros.core import association as assoc
from moonseg3r_ros.core import merge_evidence
from moonseg3r_ros.core.camera import estimate_intrinsics
from moonseg3r_ros.core.config import AssociationConfig, MemoryConfig, PipelineConfig
from moonseg3r_ros.core.instance_map import InstanceMap
from moonseg3r_ros.core.lifting import QueryLifter, stats_stride
from moonseg3r_ros.core.masks import paint_labels
from moonseg3r_ros.core.query_bank import QueryBank
from moonseg3r_ros.core.query_memory import QueryIndexMemory
from moonseg3r_ros.core.types import FrameGeometry, MaskSet


@dataclass
class KeyframeDraft:
    """What a keyframe computed before it is committed to the map."""

    labels: np.ndarray  # HxW int32 map ids (0 = none)
    ids: np.ndarray  # G int64 ids of the frame's instances
    queries: np.ndarray  # GxD refined queries
    boxes: np.ndarray  # Gx2x3
    tokens: Optional[np.ndarray]  # GxS or None
    new_ids: list[int]
    matched_ids: list[int]
    merged: int
    in_view: list[int] = dataclasses.field(default_factory=list)  # ids seen now (the visible-part boxes' ids)


def contextual_queries(geometry: FrameGeometry, memory: QueryIndexMemory, bank: QueryBank,
                       lifter: Optional[QueryLifter], memory_cfg: MemoryConfig, box_overlap: str,
                       device: torch.device) -> tuple[Optional[torch.Tensor], dict[int, np.ndarray]]:
    """P_t rasterises the memory: (queries VxD of the visible bank instances or None,
    {id: 2x3 box of the part of that instance seen now} (box_overlap 'visible_iou'; else empty))."""
    if len(memory) == 0:
        return None, {}
    height, width = geometry.valid.shape
    k = geometry.intrinsics
    if k is None:
        k = estimate_intrinsics(geometry.points_cam, geometry.valid)
    # depth = the camera z where valid: read only at the pixels of the projected cells (no HxW image built)
    view = memory.retrieve(geometry.pose_c2w, k, height, width, depth_map=geometry.points_cam[..., 2],
                           depth_valid=geometry.valid, max_ids=memory_cfg.max_contextual_queries)
    ids = [int(i) for i in view.ids if int(i) in bank]
    if not ids:
        return None, {}
    visible_boxes: dict[int, np.ndarray] = {}
    if box_overlap == "visible_iou" and lifter is not None:
        # the part of each instance seen now: valid points of this frame in its memory cells, boxed as masks are
        s = stats_stride(height, width, lifter.stats_pixels)
        points = geometry.points_world[::s, ::s][geometry.valid[::s, ::s]]
        seen = assoc.label_boxes(points, memory.ids_at(points), lifter.box_percentile, lifter.box_padding,
                                 min_points=3)
        visible_boxes = {i: seen[i] for i in ids if i in seen}
    if memory_cfg.max_contextual_queries == 0:
        return None, visible_boxes
    queries, _, _, _ = bank.get(ids)
    return torch.from_numpy(queries).to(device), visible_boxes


def associate(masks: MaskSet, queries: np.ndarray, boxes: np.ndarray, geometry: FrameGeometry,
              visible_boxes: dict[int, np.ndarray], bank: QueryBank, instance_map: InstanceMap,
              cfg: AssociationConfig) -> KeyframeDraft:
    """(d): state tokens, intra-frame merge, Hungarian matching; new ids (from `instance_map`) for the unmatched.

    masks N on the HxW grid, queries NxD, boxes Nx2x3; nothing but the map's id counter is modified."""
    tokens = None
    if geometry.state_attention is not None:
        tokens = assoc.state_distribution_tokens(geometry.state_attention, masks)
    allowed = merge_evidence.allowed_merges(masks, geometry, cfg) if cfg.merge_evidence == "boundary" else None
    groups = assoc.merge_within_frame(queries, boxes, cfg.merge_threshold, cfg.merge_box_margin, allowed)
    if len(groups) < len(masks):
        masks, queries, boxes, tokens = assoc.combine_groups(groups, masks, queries, boxes, tokens)
    matched = dict(assoc.match_to_bank(queries, tokens, boxes, bank, visible_boxes, cfg))
    ids = np.zeros(len(masks), np.int64)
    new_ids: list[int] = []
    for g in range(len(masks)):
        if g in matched:
            ids[g] = matched[g]
        else:
            ids[g] = instance_map.next_id()
            new_ids.append(int(ids[g]))
    labels = paint_labels(masks, ids, geometry.valid)
    return KeyframeDraft(labels, ids, queries, boxes, tokens, new_ids, sorted(matched.values()),
                         int(sum(len(g) - 1 for g in groups)))


def checked_features_3d(geometry: FrameGeometry, lifter: Optional[QueryLifter], device: torch.device,
                        warn_once: Callable[[str, str], None]) -> Optional[torch.Tensor]:
    """F3d CxhxW' as a float32 tensor on `device`, or None (absent, not finite, or not the lifter's width)."""
    f3d = geometry.features_3d
    if f3d is None:
        return None
    f3d = torch.as_tensor(f3d).to(device, torch.float32)
    if f3d.ndim != 3 or not torch.isfinite(f3d).all():
        warn_once("f3d", "geometric features F3d are not a finite CxHxW tensor; ignored")
        return None
    if lifter is not None and f3d.shape[0] != lifter.geometric_dim:
        warn_once("f3d_dim", f"F3d has {f3d.shape[0]} channels, the lifter expects {lifter.geometric_dim}; ignored")
        return None
    return f3d


def build_lifter(config: PipelineConfig, semantic_dim: int, features_3d: Optional[torch.Tensor],
                 decoder_extras: dict, device: torch.device) -> QueryLifter:
    """The query lifter for F2d of `semantic_dim` channels and F3d as the first keyframe has it (or none);
    the trained lifter's weights when the refinement file has them (`decoder_extras['lifter']`)."""
    cfg = config.features
    geometric_dim = 0 if features_3d is None else int(features_3d.shape[0])
    lifter = QueryLifter(cfg.dim, semantic_dim, geometric_dim, cfg.pos_frequencies, cfg.pos_scale, seed=config.seed,
                         box_padding=0.5 * config.memory.voxel_size).to(device).eval()
    lifter_state = decoder_extras.get("lifter")
    if lifter_state is not None:
        lifter.load_state_dict(lifter_state)
    return lifter

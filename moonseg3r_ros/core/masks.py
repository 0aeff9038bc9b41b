"""2D mask sources M_t (the VFM masks of the paper's Figure 2 (b)).

Sources (`MaskConfig.source`)
- 'sam': segment-anything's `SamAutomaticMaskGenerator` on a local checkpoint (model type, points per side,
  IoU and stability thresholds from the config).
- 'fastsam': FastSAM through ultralytics (optional, AGPL-3.0) on a local checkpoint (core/masks_fastsam.py).
- 'sam2': SAM 2's automatic mask generator through transformers on a local model folder (core/masks_sam2.py).
- 'precomputed': masks read from `MaskConfig.precomputed_dir` (e.g. CropFormer output, as in the paper's
  evaluation). One file per frame, named by the frame index, first match wins:
      <index>.npz / <index:06d>.npz   key 'masks' NxHxW bool (or uint8), optional key 'scores' N float
      <index>.png / <index:06d>.png   8- or 16-bit id image HxW: every non-zero id is one mask (score 1)
  Masks of another size than the frame are resized (nearest neighbour).
- 'ground_truth': one mask per non-zero id of `frame.instance_ids` (evaluation).
- 'rgbd': no weights; support planes, depth jumps, concave creases and colour (core/masks_rgbd.py).
- 'weight_free': no weights at all. A pixel graph whose 4-neighbour edges are cut where the
  shading-invariant chromaticity changes (colour edges) or, when geometry is given, where depth jumps
  relative to depth, or where geometry is invalid; its connected components are the masks.

All sources return a `MaskSet` (NxHxW bool on the frame grid, N scores in [0, 1]) filtered by
`filter_masks`: masks smaller than `min_mask_area` dropped, at most `max_masks` kept (highest score, then
largest area, first). Problems (missing files, missing ground truth, missing checkpoint) raise `MaskError`.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np
import torch

from moonseg3r_ros.core.config import MaskConfig
from moonseg3r_ros.core.preload import preload
from moonseg3r_ros.core.types import Frame, FrameGeometry, MaskSet
from moonseg3r_ros.core.untrusted_files import load_torch_file

LOGGER = logging.getLogger("moonseg3r")


class MaskError(RuntimeError):
    """Masks cannot be produced for a frame (missing file/ground truth/checkpoint, malformed data)."""


@runtime_checkable
class MaskSource(Protocol):
    """`generate(frame, geometry=None) -> MaskSet` (NxHxW bool on the frame grid)."""

    def generate(self, frame: Frame, geometry: Optional[FrameGeometry] = None) -> MaskSet: ...


# ----------------------------------------------------------------------------------------------------------
# shared helpers


def filter_masks(masks: np.ndarray, scores: np.ndarray, min_area: int, max_masks: int) -> MaskSet:
    """NxHxW bool masks, N scores -> MaskSet without masks under min_area, best max_masks first."""
    masks = np.asarray(masks, bool)
    scores = np.clip(np.nan_to_num(np.asarray(scores, np.float32), nan=0.0), 0.0, 1.0)
    if masks.ndim != 3 or scores.shape != (masks.shape[0],):
        raise MaskError(f"masks must be NxHxW with N scores, got {masks.shape} and {scores.shape}")
    areas = masks.reshape(masks.shape[0], -1).sum(axis=1)
    keep = np.flatnonzero(areas >= max(min_area, 1))
    order = keep[np.lexsort((-areas[keep], -scores[keep]))][:max_masks]
    return MaskSet(masks[order], scores[order])


def masks_from_labels(labels: np.ndarray, min_area: int, max_masks: int) -> MaskSet:
    """HxW int label image (0 = none) -> MaskSet of the largest labels (score 1), fast path via bincount.

    The set is returned as `labels` (mask k = the pixels of the k-th kept id, ascending); `masks` is only
    materialised when someone reads it."""
    labels = np.asarray(labels)
    flat = labels.reshape(-1).astype(np.int64)
    if flat.size == 0 or flat.min() < 0:
        raise MaskError("label image must be non-empty with non-negative ids")
    counts = np.bincount(flat)
    counts[0] = 0
    ids = np.flatnonzero(counts >= max(min_area, 1))
    ids = ids[np.argsort(-counts[ids], kind="stable")][:max_masks]
    ids = np.sort(ids)
    table = np.zeros(counts.size, np.int32)
    table[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return MaskSet(None, np.ones(ids.size, np.float32), labels=table.take(flat).reshape(labels.shape),
                   areas=counts[ids].astype(np.int64))


def select_masks(masks: MaskSet, keep: np.ndarray) -> MaskSet:
    """The masks whose N-bool `keep` is True (labels renumbered when the set is given as labels)."""
    keep = np.asarray(keep, bool)
    if masks.labels is None:
        return MaskSet(masks.masks[keep], masks.scores[keep])
    table = np.zeros(keep.size + 1, np.int32)
    table[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    areas = None if masks._areas is None else masks._areas[keep]
    return MaskSet(None, masks.scores[keep], labels=table.take(masks.labels), areas=areas)


def as_mask_set(masks) -> MaskSet:
    """A MaskSet as is, or NxHxW bool masks (numpy or torch) wrapped in one (scores 1)."""
    if isinstance(masks, MaskSet):
        return masks
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks, bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be NxHxW, got shape {masks.shape}")
    return MaskSet(masks, np.ones(masks.shape[0], np.float32))


def subgrid_members(masks: MaskSet, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask index, row, col) of every (mask, pixel) pair on the sub-grid [::stride, ::stride] (sub-grid
    coordinates). Label sets cost O(H*W / stride^2); mask stacks O(N*H*W / stride^2)."""
    if masks.labels is not None:
        sub = masks.labels[::stride, ::stride]
        rows, cols = np.nonzero(sub)
        return sub[rows, cols].astype(np.int64) - 1, rows, cols
    index, rows, cols = np.nonzero(masks.masks[:, ::stride, ::stride])
    return index, rows, cols


def resize_nearest(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """...xhxw -> ...xHxW nearest-neighbour (pixel-centre aligned)."""
    rows = ((np.arange(height) + 0.5) * array.shape[-2] / height).astype(np.int64)
    cols = ((np.arange(width) + 0.5) * array.shape[-1] / width).astype(np.int64)
    return array[..., rows[:, None], cols[None, :]]


# ----------------------------------------------------------------------------------------------------------
# sources


class GroundTruthMasks:
    """One mask per non-zero id of frame.instance_ids (evaluation)."""

    def __init__(self, min_area: int = 100, max_masks: int = 100):
        self.min_area, self.max_masks = min_area, max_masks

    def generate(self, frame: Frame, geometry: Optional[FrameGeometry] = None) -> MaskSet:
        if frame.instance_ids is None:
            raise MaskError("masks.source is 'ground_truth' but the frame has no instance_ids")
        ids = np.asarray(frame.instance_ids)
        if ids.ndim == 3 and ids.shape[2] == 1:
            ids = ids[..., 0]
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise MaskError(f"instance_ids must be an HxW integer image, got {ids.shape} {ids.dtype}")
        if ids.shape != (frame.height, frame.width):
            ids = resize_nearest(ids, frame.height, frame.width)
        return masks_from_labels(ids, self.min_area, self.max_masks)


class PrecomputedMasks:
    """Masks read from a folder, one file per frame index (format in the module docstring)."""

    def __init__(self, folder: str, min_area: int = 100, max_masks: int = 100):
        if not folder:
            raise MaskError("masks.source is 'precomputed' but masks.precomputed_dir is empty")
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise MaskError(f"precomputed mask folder '{folder}' does not exist")
        self.min_area, self.max_masks = min_area, max_masks
        preload("cv2")

    def path_for(self, index: int) -> Path:
        for name in (f"{index}.npz", f"{index:06d}.npz", f"{index}.png", f"{index:06d}.png"):
            if (self.folder / name).is_file():
                return self.folder / name
        raise MaskError(f"no precomputed masks for frame {index} in '{self.folder}' "
                        f"(expected {index}.npz, {index:06d}.npz, {index}.png or {index:06d}.png)")

    def generate(self, frame: Frame, geometry: Optional[FrameGeometry] = None) -> MaskSet:
        path = self.path_for(frame.frame_index)
        try:
            if path.suffix == ".png":
                return self._from_png(path, frame)
            return self._from_npz(path, frame)
        except MaskError:
            raise
        except Exception as err:
            raise MaskError(f"cannot read precomputed masks '{path}': {err}") from err

    def _from_png(self, path: Path, frame: Frame) -> MaskSet:
        import cv2

        labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if labels is None or labels.ndim != 2:
            raise MaskError(f"'{path}' is not a single-channel 8/16-bit id image")
        labels = resize_nearest(labels, frame.height, frame.width)
        return masks_from_labels(labels, self.min_area, self.max_masks)

    def _from_npz(self, path: Path, frame: Frame) -> MaskSet:
        with np.load(path, allow_pickle=False) as data:  # an object array (pickle) is refused
            if "masks" not in data:
                raise MaskError(f"'{path}' has no 'masks' array (keys: {list(data.keys())})")
            masks = np.asarray(data["masks"]).astype(bool)
            scores = np.asarray(data["scores"], np.float32) if "scores" in data else np.ones(len(masks), np.float32)
        if masks.ndim != 3:
            raise MaskError(f"'{path}': masks must be NxHxW, got shape {masks.shape}")
        if masks.shape[1:] != (frame.height, frame.width):
            masks = resize_nearest(masks, frame.height, frame.width)
        return filter_masks(masks, scores, self.min_area, self.max_masks)


class WeightFreeMasks:
    """Graph-based masks from colour and (optional) depth discontinuities; needs no weights."""

    def __init__(self, min_area: int = 100, max_masks: int = 100, chroma_threshold: float = 0.03,
                 depth_threshold: float = 0.04):
        self.min_area, self.max_masks = min_area, max_masks
        self.chroma_threshold = chroma_threshold
        self.depth_threshold = depth_threshold
        preload("scipy.sparse.csgraph")

    def generate(self, frame: Frame, geometry: Optional[FrameGeometry] = None) -> MaskSet:
        labels = self.labels(frame.image, geometry)
        return masks_from_labels(labels, self.min_area, self.max_masks)

    def labels(self, image: np.ndarray, geometry: Optional[FrameGeometry] = None) -> np.ndarray:
        """HxWx3 uint8 (+ geometry) -> HxW int32 component labels (0 = invalid pixel)."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        height, width = image.shape[:2]
        chroma = self._chromaticity(image)
        node_ok = np.ones((height, width), bool)
        depth = None
        if geometry is not None:
            node_ok = geometry.valid
            depth = geometry.points_cam[..., 2]
        right = self._similar(chroma[:, :-1], chroma[:, 1:], depth, np.s_[:, :-1], np.s_[:, 1:])
        right &= node_ok[:, :-1] & node_ok[:, 1:]
        down = self._similar(chroma[:-1], chroma[1:], depth, np.s_[:-1], np.s_[1:])
        down &= node_ok[:-1] & node_ok[1:]
        index = np.arange(height * width).reshape(height, width)
        src = np.concatenate([index[:, :-1][right], index[:-1][down]])
        dst = np.concatenate([index[:, 1:][right], index[1:][down]])
        graph = coo_matrix((np.ones(src.size, np.int8), (src, dst)), shape=(height * width,) * 2)
        _, components = connected_components(graph, directed=False)
        labels = components.reshape(height, width).astype(np.int32) + 1
        labels[~node_ok] = 0
        return labels

    @staticmethod
    def _chromaticity(image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> HxWx2 float32 (r, g) / (r + g + b), regularised for dark pixels."""
        rgb = image.astype(np.float32) + 8.0
        return rgb[..., :2] / rgb.sum(axis=2, keepdims=True)

    def _similar(self, chroma_a: np.ndarray, chroma_b: np.ndarray, depth: Optional[np.ndarray],
                 slice_a: Any, slice_b: Any) -> np.ndarray:
        same = np.abs(chroma_a - chroma_b).max(axis=2) < self.chroma_threshold
        if depth is not None:
            za, zb = depth[slice_a], depth[slice_b]
            same &= np.abs(za - zb) <= self.depth_threshold * np.maximum(np.minimum(za, zb), 1e-6)
        return same


class SamMasks:
    """segment-anything automatic mask generator on a local checkpoint."""

    def __init__(self, config: MaskConfig, device: torch.device, model: Optional[torch.nn.Module] = None):
        from segment_anything import SamAutomaticMaskGenerator

        self.config = config
        self.device = torch.device(device)
        if model is None:
            model = build_sam(config.sam_model_type, config.sam_checkpoint, self.device)
        self.model: Optional[torch.nn.Module] = model.to(self.device).eval()
        self.generator = SamAutomaticMaskGenerator(
            self.model, points_per_side=config.points_per_side, pred_iou_thresh=config.pred_iou_thresh,
            stability_score_thresh=config.stability_score_thresh)

    def generate(self, frame: Frame, geometry: Optional[FrameGeometry] = None) -> MaskSet:
        with torch.inference_mode():
            records = self.generator.generate(frame.image)
        if not records:
            return MaskSet.empty(frame.height, frame.width)
        masks = np.stack([r["segmentation"] for r in records]).astype(bool)
        scores = np.array([r["predicted_iou"] for r in records], np.float32)
        return filter_masks(masks, scores, self.config.min_mask_area, self.config.max_masks)

    def close(self) -> None:
        self.generator = None
        self.model = None


def build_sam(model_type: str, checkpoint: str, device: torch.device) -> torch.nn.Module:
    """segment-anything model of `model_type` with weights from `checkpoint`; MaskError on any problem."""
    from segment_anything import sam_model_registry

    if not checkpoint:
        raise MaskError("masks.source is 'sam' but masks.sam_checkpoint is empty: give the path of a "
                        "segment-anything checkpoint (e.g. sam_vit_b_01ec64.pth) or use masks.source 'weight_free'")
    if not Path(checkpoint).is_file():
        raise MaskError(f"SAM checkpoint '{checkpoint}' does not exist")
    if model_type not in sam_model_registry:
        raise MaskError(f"unknown SAM model type '{model_type}' (use one of {sorted(sam_model_registry)})")
    model = sam_model_registry[model_type](checkpoint=None)
    try:
        state = load_torch_file(checkpoint, map_location=device)  # runs nothing from the file
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        model.load_state_dict(state)
    except Exception as err:
        raise MaskError(f"SAM checkpoint '{checkpoint}' does not load into a '{model_type}' model: {err}") from err
    return model


def make_mask_source(config: Any, device: torch.device) -> MaskSource:
    """MaskSource for `config.masks` (a PipelineConfig or a MaskConfig)."""
    masks = getattr(config, "masks", config)
    if masks.network_device and masks.source in ("sam", "fastsam", "sam2"):
        from moonseg3r_ros.core.devices import resolve_device

        device = resolve_device(masks.network_device)
    if masks.source == "sam":
        return SamMasks(masks, device)
    if masks.source == "fastsam":
        from moonseg3r_ros.core.masks_fastsam import FastSamMasks

        return FastSamMasks(masks, device)
    if masks.source == "sam2":
        from moonseg3r_ros.core.masks_sam2 import Sam2Masks

        return Sam2Masks(masks, device)
    if masks.source == "precomputed":
        return PrecomputedMasks(masks.precomputed_dir, masks.min_mask_area, masks.max_masks)
    if masks.source == "ground_truth":
        return GroundTruthMasks(masks.min_mask_area, masks.max_masks)
    if masks.source == "rgbd":
        from moonseg3r_ros.core.masks_rgbd import RgbdSegmentMasks

        return RgbdSegmentMasks.from_config(masks)
    if masks.source == "weight_free":
        return WeightFreeMasks(masks.min_mask_area, masks.max_masks, masks.weight_free_color_threshold,
                               masks.weight_free_depth_threshold)
    raise MaskError(f"unknown mask source '{masks.source}'")


def paint_labels(masks, ids: np.ndarray, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """Masks GxHxW bool (or a MaskSet), ids G (, valid HxW) -> HxW int32 ids; overlaps go to the smallest
    mask; 0 = none. A MaskSet given as labels (no overlaps) is painted with one table look-up."""
    masks = as_mask_set(masks)
    if masks.labels is not None:
        table = np.zeros(len(masks) + 1, np.int32)
        table[1:] = ids
        labels = table.take(masks.labels)
        if valid is not None:
            np.multiply(labels, valid, out=labels)  # 0 where not valid (one pass, no boolean indexing)
        return labels
    masks = masks.masks
    labels = np.zeros(masks.shape[1:], np.int32)
    if len(masks) == 0:
        return labels
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    for g in np.argsort(-areas, kind="stable"):  # largest first, smaller masks painted over them
        np.copyto(labels, np.int32(ids[g]), where=masks[g])
    if valid is not None:
        labels[~valid] = 0
    return labels


def drop_masks_without_geometry(masks: MaskSet, valid: np.ndarray, min_valid_points: int) -> tuple[MaskSet, int]:
    """Masks NxHxW, valid HxW -> (the masks with >= min_valid_points pixels of valid geometry, counted on a
    sub-grid of about 20k pixels; how many were dropped). MaskError when the masks are not on valid's grid."""
    if len(masks) == 0:
        return masks, 0
    if masks.shape != valid.shape:
        raise MaskError(f"mask source returned masks of size {masks.shape}, frame is {valid.shape}")
    stride = max(1, int(math.sqrt(valid.size / 20_000)))
    index, rows, cols = subgrid_members(masks, stride)
    counts = np.bincount(index[valid[::stride, ::stride][rows, cols]], minlength=len(masks))
    keep = counts * stride * stride >= min_valid_points
    if keep.all():
        return masks, 0
    return select_masks(masks, keep), int((~keep).sum())

"""Data passed between the blocks of the pipeline (the arrows of the paper's Figure 2).

Conventions used everywhere in the core:
- Images are HxWx3 uint8 RGB numpy arrays on the input camera's pixel grid.
- Camera frames are optical frames (REP 103): x right, y down, z forward. Poses are camera-to-world
  4x4 float64 matrices; the world frame is the `map` frame of the instance map.
- Distances are metres (or CUT3R's own scale for monocular input, which has no metric scale).
- Stamps are float seconds.
- Instance id 0 means "no instance"; real ids start at 1 and are never reused within a map.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:  # annotations only: data and tools import these types without loading torch
    import torch


@dataclass
class Frame:
    """One camera frame plus the optional side inputs that some sources need."""

    image: np.ndarray  # HxWx3 uint8 RGB
    stamp: float  # seconds
    depth: Optional[np.ndarray] = None  # HxW float32 metres; 0 or non-finite = invalid (recorded geometry)
    intrinsics: Optional[np.ndarray] = None  # 3x3 float64 pinhole K (recorded geometry)
    pose_c2w: Optional[np.ndarray] = None  # 4x4 float64 camera-to-world (recorded geometry)
    instance_ids: Optional[np.ndarray] = None  # HxW int32 ground-truth instance ids, 0 = none
    frame_index: int = 0  # position in the stream, filled in by the pipeline

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class FrameGeometry:
    """Output of a geometry source for one frame, on the input image's pixel grid (HxW)."""

    pose_c2w: np.ndarray  # 4x4 float64 camera-to-world (P_t)
    points_world: np.ndarray  # HxWx3 float32 world pointmap (X_t)
    points_cam: np.ndarray  # HxWx3 float32 camera-frame pointmap; channel 2 is depth
    confidence: np.ndarray  # HxW float32, larger is more confident
    valid: np.ndarray  # HxW bool: finite points with confidence above the configured threshold
    features_3d: Optional[torch.Tensor] = None  # C3 x h x w geometric features F3d (patch grid)
    state_attention: Optional[torch.Tensor] = None  # S x h x w attention of state tokens to image patches (A_t)
    intrinsics: Optional[np.ndarray] = None  # 3x3, when known or estimated


class MaskSet:
    """2D masks of one frame (M_t).

    masks: NxHxW bool; scores: N float32 in [0, 1]. Sources whose masks do not overlap (ground truth, id
    images, weight-free components) may give `labels` instead: an HxW int32 image with k+1 on the pixels of
    mask k and 0 elsewhere. `masks` is then built from it on first access only; the pipeline works on
    `labels` directly (O(H*W) instead of O(N*H*W) per pass).
    """

    def __init__(self, masks: Optional[np.ndarray], scores: np.ndarray, labels: Optional[np.ndarray] = None,
                 areas: Optional[np.ndarray] = None):
        if masks is None and labels is None:
            raise ValueError("MaskSet needs masks or labels")
        self._masks = masks
        self.scores = scores
        self.labels = labels
        self._areas = areas  # N int64 pixels per mask when known (labels sources count them anyway)

    def areas(self) -> np.ndarray:
        """N int64 pixel count of each mask (cached; one bincount of `labels`, or a sum over `masks`)."""
        if self._areas is None:
            n = len(self)
            if self.labels is not None:
                self._areas = np.bincount(self.labels.reshape(-1), minlength=n + 1)[1:n + 1].astype(np.int64)
            else:
                self._areas = self.masks.reshape(n, -1).sum(axis=1).astype(np.int64)
        return self._areas

    @property
    def masks(self) -> np.ndarray:
        if self._masks is None:
            labels = self._labels_set()
            n = int(np.asarray(self.scores).shape[0])
            self._masks = labels[None] == np.arange(1, n + 1, dtype=labels.dtype)[:, None, None]
        return self._masks

    @masks.setter
    def masks(self, value: np.ndarray) -> None:
        self._masks = value
        self.labels = None
        self._areas = None

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the frame grid."""
        shape = self._labels_set().shape if self._masks is None else self._masks.shape[1:]
        return (int(shape[0]), int(shape[1]))

    def _labels_set(self) -> np.ndarray:
        """`labels` where a MaskSet has no dense masks (a MaskSet always holds one of the two)."""
        if self.labels is None:
            raise ValueError("MaskSet has neither masks nor labels")
        return self.labels

    @staticmethod
    def empty(height: int, width: int) -> "MaskSet":
        return MaskSet(np.zeros((0, height, width), bool), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return int(np.asarray(self.scores).shape[0])

    def __repr__(self) -> str:
        return f"MaskSet({len(self)} masks on {self.shape}, labels={'yes' if self.labels is not None else 'no'})"


@dataclass
class FrameResult:
    """What `MoonSeg3RPipeline.step` reports about one frame."""

    stamp: float
    frame_index: int
    is_keyframe: bool
    skipped_reason: Optional[str] = None  # set when the frame was dropped (counted in pipeline.stats)
    pose_c2w: Optional[np.ndarray] = None  # 4x4, None when skipped
    num_masks: int = 0
    instance_ids_2d: Optional[np.ndarray] = None  # HxW int32 map instance id per pixel (keyframes), 0 = none
    points_cam: Optional[np.ndarray] = None  # HxWx3 float32 camera-frame pointmap (keyframes), e.g. obstacle clouds
    valid: Optional[np.ndarray] = None  # HxW bool: pixels of points_cam with usable geometry (keyframes)
    new_instance_ids: list[int] = field(default_factory=list)
    matched_instance_ids: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # stage name -> seconds
    # masks.asynchronous: results of earlier keyframes committed to the map during this step, in frame order
    # (each completed in place: the object that keyframe's step returned)
    committed: list["FrameResult"] = field(default_factory=list)

    @property
    def skipped(self) -> bool:
        return self.skipped_reason is not None

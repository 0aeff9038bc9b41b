"""Cut3rStream: the streaming front end that the pipeline's geometry source wraps.

`reset()`, then `step(rgb)` per frame -> FrameGeometry on the INPUT image's pixel grid: camera-to-world pose,
world and camera pointmaps, confidence and a valid mask (nearest-neighbour mapping from the model grid; pixels
outside the official centre crop are invalid), plus F3d (C x h x w) and the state attention A_t (S x h x w) on
the model's patch grid (which covers the crop region `last_info` of the input).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..types import FrameGeometry
from .modeling.cut3r import Cut3r
from .preprocess import PreprocessInfo, preprocess_image, to_input_grid


class Cut3rStream:
    """One CUT3R stream (one camera). Memory stays constant whatever the sequence length."""

    def __init__(self, model: Cut3r, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 image_long_side: int = 512, attention_layer: Optional[int] = -1, head_pool: str = "mean",
                 min_confidence: float = 0.0, max_depth: float = math.inf):
        if head_pool not in ("mean", "max"):
            raise ValueError(f"head_pool must be 'mean' or 'max', got {head_pool!r}")
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.amp_dtype = None if dtype == torch.float32 else dtype
        self.image_long_side = int(image_long_side)
        self.attention_layer = attention_layer
        self.head_pool = head_pool
        self.min_confidence = float(min_confidence)
        self.max_depth = float(max_depth)
        self.last_info: Optional[PreprocessInfo] = None
        self.reset()

    def reset(self) -> None:
        """Start a new sequence (new world frame)."""
        self.model.reset()

    @property
    def frame_index(self) -> int:
        return self.model.frame_index

    def step(self, rgb: np.ndarray) -> FrameGeometry:
        """HxWx3 uint8 RGB (other encodings are converted) -> FrameGeometry on the HxW input grid."""
        img, info = preprocess_image(rgb, self.image_long_side, self.device)
        layers = None if self.attention_layer is None else [self.attention_layer]
        out = self.model.step(img, attention_layers=layers, amp_dtype=self.amp_dtype)
        self.last_info = info
        points_world = to_input_grid(out["pts3d_in_other_view"][0].float().cpu().numpy(), info)
        points_cam = to_input_grid(out["pts3d_in_self_view"][0].float().cpu().numpy(), info)
        confidence = to_input_grid(out["conf"][0].float().cpu().numpy(), info, fill=0.0)
        depth = points_cam[..., 2]
        with np.errstate(invalid="ignore"):
            valid = (np.isfinite(points_world).all(-1) & np.isfinite(points_cam).all(-1) & (depth > 0)
                     & (depth <= self.max_depth) & (confidence > self.min_confidence))
        attention = None
        if layers is not None:
            attention = self._pool_attention(next(iter(out["state_attention"].values()))[0], out["features_3d"].shape)
        return FrameGeometry(
            pose_c2w=out["camera_pose_c2w"][0].double().cpu().numpy(),
            points_world=points_world, points_cam=points_cam, confidence=confidence, valid=valid,
            features_3d=out["features_3d"][0].float().cpu(), state_attention=attention)

    def _pool_attention(self, weights: torch.Tensor, feature_shape: torch.Size) -> torch.Tensor:
        """HeadsxSx(1+N) weights -> SxHxW over the image patches (pose-token column dropped), heads pooled."""
        patches = weights[..., 1:]
        pooled = patches.mean(0) if self.head_pool == "mean" else patches.amax(0)
        h, w = feature_shape[-2:]
        return pooled.reshape(pooled.shape[0], h, w).float().cpu()

"""The downstream head (`downstream_head.*`): self-view points (dpt_self), colours (dpt_rgb), the pose head,
and world points (dpt_cross) computed from the image tokens after two pose-conditioned `final_transform`
blocks."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .blocks import ConditionModulationBlock
from .dpt_head import DPTAdapter, colours, points_and_confidence
from .pose_head import PoseHead, postprocess_pose
from .rope import RoPE2D


class DownstreamHead(nn.Module):
    """Heads of CUT3R; runs in float32 (the official code disables autocast here)."""

    def __init__(self, enc_dim: int, dec_dim: int, dec_num_heads: int, mlp_ratio: float, eps: float, rope: RoPE2D,
                 depth_mode, conf_mode, pose_mode, rgb_head: bool = True, layer_dims=(96, 192, 384, 768),
                 feature_dim: int = 256, final_transform_depth: int = 2):
        super().__init__()
        dims = (enc_dim, dec_dim, dec_dim, dec_dim)
        self.depth_mode, self.conf_mode, self.pose_mode = depth_mode, conf_mode, pose_mode
        self.dpt_self = DPTAdapter(dims, 4, layer_dims, feature_dim, feature_dim // 2)
        self.final_transform = nn.ModuleList([ConditionModulationBlock(dec_dim, dec_num_heads, mlp_ratio, eps, rope)
                                              for _ in range(final_transform_depth)])
        self.dpt_cross = DPTAdapter(dims, 4, layer_dims, feature_dim, feature_dim // 2)
        self.dpt_rgb = DPTAdapter(dims, 3, layer_dims, feature_dim, feature_dim // 2) if rgb_head else None
        self.pose_head = PoseHead(dec_dim)

    def forward(self, tokens: Sequence[torch.Tensor], image_pos: torch.Tensor, grid_hw: tuple[int, int],
                debug: bool = False) -> dict[str, torch.Tensor]:
        """tokens: [enc BxNxDe, layer L/2 BxNxDd, layer 3L/4 BxNxDd, final Bx(1+N)xDd (pose token first)].

        Returns the official outputs: pts3d_in_self_view BxHxWx3, conf_self BxHxW, rgb BxHxWx3,
        camera_pose Bx7, pts3d_in_other_view BxHxWx3, conf BxHxW (plus raw tensors when `debug`).
        """
        tokens = [t.float() for t in tokens]
        pose_token = tokens[-1][:, 0]
        image_tokens = tokens[-1][:, 1:]
        pose_raw = self.pose_head(pose_token)
        transformed = image_tokens
        for block in self.final_transform:
            transformed = block(transformed, pose_token, image_pos)
        self_tokens = list(tokens[:-1]) + [image_tokens]
        cross_tokens = list(tokens[:-1]) + [transformed]
        self_raw = self.dpt_self(self_tokens, grid_hw)
        cross_raw = self.dpt_cross(cross_tokens, grid_hw)
        out = {}
        out["pts3d_in_self_view"], out["conf_self"] = points_and_confidence(self_raw, self.depth_mode, self.conf_mode)
        if self.dpt_rgb is not None:
            rgb_raw = self.dpt_rgb(self_tokens, grid_hw)
            out["rgb"] = colours(rgb_raw)
        out["camera_pose"] = postprocess_pose(pose_raw, self.pose_mode)
        out["pts3d_in_other_view"], out["conf"] = points_and_confidence(cross_raw, self.depth_mode, self.conf_mode)
        if debug:
            out.update(pose_head_raw=pose_raw, dpt_self_raw=self_raw, dpt_cross_raw=cross_raw,
                       final_transform_tokens=transformed)
            if self.dpt_rgb is not None:
                out["dpt_rgb_raw"] = rgb_raw
        return out

"""Pose retriever: a small memory of 256 tokens that is read to get the pose token of frame t > 0 and written
with the final pose token after every frame (official `LocalMemory`, no RoPE)."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import DecoderBlock


class PoseRetriever(nn.Module):
    """Parameters: `masked_token` 1x1xDd, `mem` 1xMx2Dd (initial memory), `proj_q` De->Dd, read/write blocks."""

    def __init__(self, mem_size: int, key_dim: int, value_dim: int, num_heads: int, mlp_ratio: float, eps: float,
                 depth: int = 2):
        super().__init__()
        self.value_dim = value_dim
        self.masked_token = nn.Parameter(torch.zeros(1, 1, value_dim))
        self.mem = nn.Parameter(torch.zeros(1, mem_size, 2 * value_dim))
        self.proj_q = nn.Linear(key_dim, value_dim)
        self.write_blocks = nn.ModuleList(
            [DecoderBlock(2 * value_dim, num_heads, mlp_ratio, eps, None) for _ in range(depth)])
        self.read_blocks = nn.ModuleList(
            [DecoderBlock(2 * value_dim, num_heads, mlp_ratio, eps, None) for _ in range(depth)])

    def initial_memory(self, batch: int) -> torch.Tensor:
        """BxMx2Dd copy of the learned initial memory."""
        return self.mem.expand(batch, -1, -1).clone()

    def inquire(self, image_feature: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        """image_feature: Bx1xDe (mean encoder token), mem: BxMx2Dd -> Bx1xDd pose token."""
        x = self.proj_q(image_feature)
        x = torch.cat([x, self.masked_token.expand(x.shape[0], -1, -1)], dim=-1)
        for block in self.read_blocks:
            x, _ = block(x, mem, None, None)
        return x[..., -self.value_dim:]

    def update(self, mem: torch.Tensor, image_feature: torch.Tensor, pose_token: torch.Tensor) -> torch.Tensor:
        """mem: BxMx2Dd, image_feature: Bx1xDe, pose_token: Bx1xDd -> new BxMx2Dd memory."""
        feature = torch.cat([self.proj_q(image_feature), pose_token], dim=-1)
        for block in self.write_blocks:
            mem, _ = block(mem, feature, None, None)
        return mem

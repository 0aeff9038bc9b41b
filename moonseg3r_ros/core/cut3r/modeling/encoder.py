"""Image encoder (ViT with 2D RoPE, no absolute position embedding, no cls token) and the ray-map encoder.

The modules live directly on the model (official names `patch_embed`, `enc_blocks`, `enc_norm`,
`patch_embed_ray_map`, `enc_blocks_ray_map`, `enc_norm_ray_map`); this file builds them and runs them.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import EncoderBlock
from .rope import RoPE2D


class PatchEmbed(nn.Module):
    """Non-overlapping PxP patches -> tokens in row-major order, with their (row, col) positions."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image: BxCxHxW (H, W multiples of the patch size) -> (BxNxD tokens, BxNx2 int64 positions)."""
        b, _, h, w = image.shape
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        x = self.proj(image)
        positions = patch_positions(b, h // self.patch_size, w // self.patch_size, image.device)
        return x.flatten(2).transpose(1, 2), positions


def patch_positions(batch: int, rows: int, cols: int, device: torch.device) -> torch.Tensor:
    """Bx(rows*cols)x2 int64 (row, col) positions of a patch grid in row-major order."""
    grid = torch.cartesian_prod(torch.arange(rows, device=device), torch.arange(cols, device=device))
    return grid.reshape(1, rows * cols, 2).expand(batch, -1, -1).contiguous()


def build_encoder_blocks(dim: int, depth: int, num_heads: int, mlp_ratio: float, eps: float,
                         rope: RoPE2D) -> nn.ModuleList:
    """`depth` pre-norm ViT blocks sharing one RoPE."""
    return nn.ModuleList([EncoderBlock(dim, num_heads, mlp_ratio, eps, rope) for _ in range(depth)])


def run_encoder(patch_embed: PatchEmbed, blocks: nn.ModuleList, norm: nn.LayerNorm,
                image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BxCxHxW -> (BxNxD normalised tokens, BxNx2 positions)."""
    x, pos = patch_embed(image)
    for block in blocks:
        x = block(x, pos)
    return norm(x), pos

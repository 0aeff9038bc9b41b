"""Transformer blocks shared by the encoder, the paired decoders, the pose retriever and the heads.

Parameter names follow the official checkpoint (CroCo/DUSt3R blocks): `norm1`, `attn.qkv`, `attn.proj`,
`cross_attn.projq/projk/projv/proj`, `norm2`, `norm3`, `norm_y`, `mlp.fc1`, `mlp.fc2`.
Attention runs through `scaled_dot_product_attention`; cross attention can also return its softmax weights
(recomputed explicitly, only when asked for).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .rope import RoPE2D


class Mlp(nn.Module):
    """Linear -> exact GELU -> Linear."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: Optional[int] = None):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim or in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """BxNxC -> BxHxNx(C/H)."""
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """BxHxNxD -> BxNx(H*D)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class SelfAttention(nn.Module):
    """Multi-head self attention with a fused qkv projection and optional 2D RoPE."""

    def __init__(self, dim: int, num_heads: int, rope: Optional[RoPE2D] = None):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
        """x: BxNxC, pos: BxNx2 -> BxNxC."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.rope is not None:
            q, k = self.rope(qkv[:2], pos).unbind(0)  # q and k rotated together: half the kernel launches
        else:
            q, k = qkv[0], qkv[1]
        out = F.scaled_dot_product_attention(q, k, qkv[2], scale=self.scale)
        return self.proj(_merge_heads(out))


class CrossAttention(nn.Module):
    """Multi-head cross attention (queries from x, keys/values from y) with optional 2D RoPE."""

    def __init__(self, dim: int, num_heads: int, rope: Optional[RoPE2D] = None):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.projq = nn.Linear(dim, dim, bias=True)
        self.projk = nn.Linear(dim, dim, bias=True)
        self.projv = nn.Linear(dim, dim, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor, y: torch.Tensor, xpos: Optional[torch.Tensor], ypos: Optional[torch.Tensor],
                return_weights: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x: BxNqxC, y: BxNkxC -> (BxNqxC, BxHxNqxNk softmax weights or None)."""
        q = _split_heads(self.projq(x), self.num_heads)
        k = _split_heads(self.projk(y), self.num_heads)
        v = _split_heads(self.projv(y), self.num_heads)
        if self.rope is not None:
            if xpos is not None:
                q = self.rope(q, xpos)
            if ypos is not None:
                k = self.rope(k, ypos)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        weights = None
        if return_weights:
            logits = torch.matmul(q.float(), k.float().transpose(-2, -1)) * self.scale
            weights = logits.softmax(dim=-1)
        return self.proj(_merge_heads(out)), weights


class EncoderBlock(nn.Module):
    """Pre-norm ViT block: x += SA(norm1 x); x += MLP(norm2 x)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float, rope: Optional[RoPE2D]):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, num_heads, rope)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x: BxNxC, pos: BxNx2 -> BxNxC."""
        x = x + self.attn(self.norm1(x), pos)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """Pre-norm decoder block: x += SA(norm1 x); x += CA(norm2 x, norm_y y); x += MLP(norm3 x)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float, rope: Optional[RoPE2D]):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, num_heads, rope)
        self.cross_attn = CrossAttention(dim, num_heads, rope)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor, xpos: Optional[torch.Tensor], ypos: Optional[torch.Tensor],
                return_weights: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x: BxNxC queries, y: BxMxC memory -> (BxNxC, BxHxNxM cross-attention weights or None)."""
        x = x + self.attn(self.norm1(x), xpos)
        attended, weights = self.cross_attn(self.norm2(x), self.norm_y(y), xpos, ypos, return_weights)
        x = x + attended
        return x + self.mlp(self.norm3(x)), weights


class ModulatedLayerNorm(nn.Module):
    """adaLN: LayerNorm(x) * (1 + scale) + shift, with [shift, scale] = Linear(SiLU(cond))."""

    def __init__(self, dim: int, cond_dim: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, dim * 2))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x: BxNxC, cond: BxC -> BxNxC."""
        shift, scale = self.mlp(cond).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None]


class ConditionModulationBlock(nn.Module):
    """Self-attention block whose norms are modulated by a condition vector (the pose token)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float, rope: Optional[RoPE2D]):
        super().__init__()
        self.norm1 = ModulatedLayerNorm(dim, dim, eps)
        self.attn = SelfAttention(dim, num_heads, rope)
        self.norm2 = ModulatedLayerNorm(dim, dim, eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x: BxNxC, cond: BxC, pos: BxNx2 -> BxNxC."""
        x = x + self.attn(self.norm1(x, cond), pos)
        return x + self.mlp(self.norm2(x, cond))

"""2D rotary position embedding (RoPE2D, as the cuRoPE kernel computes it).

Per head of width D: Q = D/4 frequencies `inv_freq[j] = 1 / base**(j/Q)`. Channels [0, D/2) are rotated by
the row position and [D/2, D) by the column position; within each half, channel c is paired with c+Q
("rotate half" layout). The arithmetic is float32 and negative positions (the pose token at (-1, -1)) work.

Computed as `x * C + swap(x) * S`, where swap exchanges the two quarters of each half and the tables hold
C = [cos_r, cos_r, cos_c, cos_c] and S = [-sin_r, sin_r, -sin_c, sin_c]: the same float32 products and sums as
`u cos - v sin, v cos + u sin`, in 4 passes over x. The tables are cached per positions tensor (the same
positions serve every layer of a step).
"""
from __future__ import annotations

import torch
from torch import nn

_CACHE_SIZE = 8  # distinct (positions, head width) pairs of one step: encoder, state, image+pose, x 2 widths


class RoPE2D(nn.Module):
    """Applies 2D RoPE to ...xNxD query/key tensors (e.g. BxHxNxD, or 2xBxHxNxD for q and k stacked) given
    BxNx2 integer (row, col) positions.

    `storage_dtype`: when set (float16 in the CroCo image encoder), the input is rounded to that dtype before
    the rotation and the rotated result is stored in it, as the official encoder does; the computation itself
    is float32. The output is returned in the input's dtype.
    """

    def __init__(self, base: float = 100.0, storage_dtype: torch.dtype | None = None):
        super().__init__()
        self.base = float(base)
        self.storage_dtype = storage_dtype
        self._tables: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]] = []

    def _cos_sin(self, positions: torch.Tensor, quarter: int) -> tuple[torch.Tensor, torch.Tensor]:
        """BxN positions -> Bx1xNxQ cos and sin (float32)."""
        exponents = torch.arange(quarter, device=positions.device, dtype=torch.float32) / quarter
        inv_freq = 1.0 / torch.pow(torch.tensor(self.base, dtype=torch.float32, device=positions.device), exponents)
        angles = positions.to(torch.float32)[:, None, :, None] * inv_freq
        return torch.cos(angles), torch.sin(angles)

    def tables(self, positions: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """BxNx2 positions -> (C, S) Bx1xNxD float32 tables, computed once per distinct positions and width."""
        for cached_pos, cached_dim, c, s in self._tables:
            if (cached_dim == head_dim and cached_pos.shape == positions.shape
                    and cached_pos.device == positions.device and torch.equal(cached_pos, positions)):
                return c, s
        cos_r, sin_r = self._cos_sin(positions[..., 0], head_dim // 4)
        cos_c, sin_c = self._cos_sin(positions[..., 1], head_dim // 4)
        c = torch.cat([cos_r, cos_r, cos_c, cos_c], dim=-1)
        s = torch.cat([-sin_r, sin_r, -sin_c, sin_c], dim=-1)
        self._tables = [(positions.clone(), head_dim, c, s)] + self._tables[:_CACHE_SIZE - 1]
        return c, s

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x: ...xBxHxNxD, positions: BxNx2 (row, col) -> same shape, rotated."""
        out_dtype = x.dtype
        head_dim = x.shape[-1]
        if head_dim % 4 != 0:
            raise ValueError(f"RoPE2D needs a head width divisible by 4, got {head_dim}")
        c, s = self.tables(positions, head_dim)
        if self.storage_dtype is not None:
            x = x.to(self.storage_dtype)
        xf = x.to(torch.float32)
        swapped = xf.unflatten(-1, (2, 2, head_dim // 4)).flip(-2).flatten(-3)
        out = torch.addcmul(xf * c, swapped, s)
        if self.storage_dtype is not None:
            out = out.to(self.storage_dtype)
        return out.to(out_dtype)

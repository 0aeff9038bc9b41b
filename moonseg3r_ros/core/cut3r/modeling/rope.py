"""2D rotary position embedding (RoPE2D, as the cuRoPE kernel computes it).

Per head of width D: Q = D/4 frequencies `inv_freq[j] = 1 / base**(j/Q)`. Channels [0, D/2) are rotated by
the row position and [D/2, D) by the column position; within each half, channel c is paired with c+Q
("rotate half" layout). The arithmetic is float32 and negative positions (the pose token at (-1, -1)) work.
"""
from __future__ import annotations

import torch
from torch import nn


class RoPE2D(nn.Module):
    """Applies 2D RoPE to BxHxNxD query/key tensors given BxNx2 integer (row, col) positions.

    `storage_dtype`: when set (float16 in the CroCo image encoder), the input is rounded to that dtype before
    the rotation and the rotated result is stored in it, as the official encoder does; the computation itself
    is float32. The output is returned in the input's dtype.
    """

    def __init__(self, base: float = 100.0, storage_dtype: torch.dtype | None = None):
        super().__init__()
        self.base = float(base)
        self.storage_dtype = storage_dtype

    def _cos_sin(self, positions: torch.Tensor, quarter: int) -> tuple[torch.Tensor, torch.Tensor]:
        """BxN positions -> Bx1xNxQ cos and sin (float32)."""
        exponents = torch.arange(quarter, device=positions.device, dtype=torch.float32) / quarter
        inv_freq = 1.0 / torch.pow(torch.tensor(self.base, dtype=torch.float32, device=positions.device), exponents)
        angles = positions.to(torch.float32)[:, None, :, None] * inv_freq
        return torch.cos(angles), torch.sin(angles)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        quarter = x.shape[-1] // 2
        u, v = x[..., :quarter], x[..., quarter:]
        return torch.cat([u * cos - v * sin, v * cos + u * sin], dim=-1)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x: BxHxNxD, positions: BxNx2 (row, col) -> BxHxNxD rotated."""
        out_dtype = x.dtype
        head_dim = x.shape[-1]
        if head_dim % 4 != 0:
            raise ValueError(f"RoPE2D needs a head width divisible by 4, got {head_dim}")
        if self.storage_dtype is not None:
            x = x.to(self.storage_dtype)
        xf = x.to(torch.float32)
        half = head_dim // 2
        cos_y, sin_y = self._cos_sin(positions[..., 0], head_dim // 4)
        cos_x, sin_x = self._cos_sin(positions[..., 1], head_dim // 4)
        out = torch.cat([self._rotate(xf[..., :half], cos_y, sin_y), self._rotate(xf[..., half:], cos_x, sin_x)],
                        dim=-1)
        if self.storage_dtype is not None:
            out = out.to(self.storage_dtype)
        return out.to(out_dtype)

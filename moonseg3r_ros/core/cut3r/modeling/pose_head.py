"""Pose head: MLP on the final pose token -> [tx, ty, tz, qw, qx, qy, qz] (camera-to-world), and the
conversions of that 7-vector."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Mlp


class PoseHead(nn.Module):
    """`mlp`: Dd -> 4Dd -> 7 (GELU)."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = Mlp(dim, dim * 4, 7)

    def forward(self, pose_token: torch.Tensor) -> torch.Tensor:
        """pose_token: BxDd -> Bx7 raw."""
        return self.mlp(pose_token)


def postprocess_pose(raw: torch.Tensor, mode: tuple[str, float, float]) -> torch.Tensor:
    """Bx7 raw -> Bx7 [t, q]: t scaled by expm1(|t|)/|t| ('exp'), q unit-normalised with qw >= 0."""
    kind, vmin, vmax = mode
    if not (vmin == -math.inf and vmax == math.inf):
        raise ValueError(f"bounded pose modes are not supported: {mode}")
    trans, quat = raw[..., 0:3], raw[..., 3:7]
    if kind == "linear":
        return trans
    norm = trans.norm(dim=-1, keepdim=True)
    if kind == "exp":
        scale = torch.expm1(norm) / norm.clip(min=1e-8)
    elif kind == "square":
        scale = norm.square() / norm.clip(min=1e-8)
    else:
        raise ValueError(f"unknown pose mode {kind!r}")
    quat = F.normalize(quat, p=2, dim=-1)
    quat = torch.where(quat[..., 0:1] < 0, -quat, quat)
    return torch.cat([trans * scale, quat], dim=-1)


def quaternion_to_matrix(quat: torch.Tensor) -> torch.Tensor:
    """...x4 quaternions (real part first) -> ...x3x3 rotation matrices."""
    r, i, j, k = torch.unbind(quat, -1)
    two_s = 2.0 / (quat * quat).sum(-1)
    rows = torch.stack((
        1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
        two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
        two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j),
    ), -1)
    return rows.reshape(quat.shape[:-1] + (3, 3))


def pose_to_matrix(pose: torch.Tensor) -> torch.Tensor:
    """Bx7 [t, q] -> Bx4x4 camera-to-world matrices."""
    out = torch.zeros(pose.shape[:-1] + (4, 4), dtype=pose.dtype, device=pose.device)
    out[..., :3, :3] = quaternion_to_matrix(pose[..., 3:7])
    out[..., :3, 3] = pose[..., 0:3]
    out[..., 3, 3] = 1
    return out

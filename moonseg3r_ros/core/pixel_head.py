"""psi: the small MLP that refines per-pixel (per-patch) features for mask prediction (paper's Figure 2 (b)).

Input F is the frozen frame features on the F2d patch grid: [F2d, F3d resampled onto that grid] (C2 + C3
channels; F3d's grid is resampled with nearest-neighbour sampling at the F2d cell centres, so a patch of F2d
reads the F3d patch it lies in). Output G = psi(F) is D x h x w:
    G = W2 GELU(W1 F + b1) + b2         (applied to every patch independently, a 1x1 MLP)
The trained pipeline uses G twice: as the frame tokens the query decoder phi cross-attends to, and as the
per-pixel embeddings of the mask logits  sigmoid(q' . G / sqrt(D))  that the training losses supervise.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def resample_to_grid(features: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """C x h' x w' -> C x height x width, nearest sample at the cell centres (identity when sizes agree)."""
    if tuple(features.shape[1:]) == (height, width):
        return features
    return F.interpolate(features[None].float(), size=(height, width), mode="nearest")[0]


def frame_features(features_2d: torch.Tensor, features_3d: Optional[torch.Tensor]) -> torch.Tensor:
    """F2d C2 x h x w, F3d C3 x h3 x w3 or None -> F = (C2 [+ C3]) x h x w on the F2d grid."""
    if features_3d is None:
        return features_2d.float()
    _, height, width = features_2d.shape
    f3d = resample_to_grid(features_3d.to(features_2d.device), height, width)
    return torch.cat([features_2d.float(), f3d.float()], dim=0)


class PixelHead(nn.Module):
    """psi: F ((C2 + C3) x h x w) -> G (D x h x w); see the module docstring."""

    def __init__(self, semantic_dim: int, geometric_dim: int, dim: int, hidden: int = 128, seed: int = 0):
        super().__init__()
        self.semantic_dim, self.geometric_dim, self.dim, self.hidden = semantic_dim, geometric_dim, dim, hidden
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 7)
            self.mlp = nn.Sequential(nn.Linear(semantic_dim + geometric_dim, hidden), nn.GELU(),
                                     nn.Linear(hidden, dim))

    @property
    def in_channels(self) -> int:
        return self.semantic_dim + self.geometric_dim

    def forward(self, features_2d: torch.Tensor, features_3d: Optional[torch.Tensor] = None) -> torch.Tensor:
        """F2d C2 x h x w, F3d C3 x h3 x w3 (required when geometric_dim > 0) -> G D x h x w."""
        if self.geometric_dim and features_3d is None:
            raise ValueError(f"this pixel head was built for F3d with {self.geometric_dim} channels; none given")
        features = frame_features(features_2d, features_3d if self.geometric_dim else None)
        if features.shape[0] != self.in_channels:
            raise ValueError(f"pixel head expects {self.in_channels} feature channels "
                             f"({self.semantic_dim} F2d + {self.geometric_dim} F3d), got {features.shape[0]}")
        channels, height, width = features.shape
        weight = self.mlp[0].weight
        tokens = features.reshape(channels, -1).T.to(weight.device, weight.dtype)  # (h*w) x C
        return self.mlp(tokens).T.reshape(self.dim, height, width)


def mask_logits(queries: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """queries NxD, G D x h x w -> N x h x w logits q . G / sqrt(D)."""
    dim, height, width = pixels.shape
    return (queries @ pixels.reshape(dim, -1) / math.sqrt(dim)).reshape(-1, height, width)

"""psi: the small MLP that refines per-pixel (per-patch) features for mask prediction (paper's Figure 2 (b)).

Input F is the frozen frame features on the F2d patch grid: [F2d, F3d resampled onto that grid, PE(x)] (C2 + C3
+ 2L channels; F3d's grid is resampled with nearest-neighbour sampling at the F2d cell centres, so a patch of F2d
reads the F3d patch it lies in). PE(x) (when `pos_frequencies` L > 0) is a Fourier encoding [sin, cos](B x) /
sqrt(L) of the patch's mean world point x (its valid pixels; zero for a patch without valid geometry), seeded
bands B ~ N(0, 1/pos_scale^2) as in the lifter: without it, G could not tell apart two objects of the same colour
and shape, and neither could the queries trained to predict masks through G. Output G = psi(F) is D x h x w:
    G = W2 GELU(W1 F + b1) + b2         (applied to every patch independently, a 1x1 MLP)
The trained pipeline uses G twice: as the frame tokens the query decoder phi cross-attends to, and as the
per-pixel embeddings of the mask logits that the training losses supervise: sigmoid(s cos(q', G) + b) with a
learnt scale s (initially 10) and bias b (`cosine`, default), or sigmoid(q' . G / sqrt(D)).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from moonseg3r_ros.core.lifting import fourier_encoding


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


def patch_positions(points_world: np.ndarray, valid: np.ndarray, height: int, width: int) -> torch.Tensor:
    """X_t HxWx3, valid HxW -> 3 x height x width mean world point of the valid pixels of each cell of a
    height x width grid over the image (NaN where a cell has no valid pixel)."""
    image_h, image_w = valid.shape
    rows = np.minimum(np.arange(image_h) * height // image_h, height - 1)
    cols = np.minimum(np.arange(image_w) * width // image_w, width - 1)
    cell = (rows[:, None] * width + cols[None, :])[valid]
    counts = np.bincount(cell, minlength=height * width).astype(np.float64)
    points = points_world[valid].astype(np.float64)
    sums = np.stack([np.bincount(cell, points[:, axis], height * width) for axis in range(3)])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / counts, np.nan)
    return torch.from_numpy(mean.reshape(3, height, width).astype(np.float32))


class PixelHead(nn.Module):
    """psi: F ((C2 + C3 + 2L) x h x w) -> G (D x h x w); see the module docstring."""

    def __init__(self, semantic_dim: int, geometric_dim: int, dim: int, hidden: int = 128, seed: int = 0,
                 pos_frequencies: int = 0, pos_scale: float = 0.5, cosine: bool = True):
        super().__init__()
        self.semantic_dim, self.geometric_dim, self.dim, self.hidden = semantic_dim, geometric_dim, dim, hidden
        self.pos_frequencies = pos_frequencies
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 7)
            self.mlp = nn.Sequential(nn.Linear(self.in_channels, hidden), nn.GELU(), nn.Linear(hidden, dim))
        generator = torch.Generator().manual_seed(seed + 11)
        self.register_buffer("pos_bands", torch.randn(3, pos_frequencies, generator=generator) / pos_scale)
        self.cosine = cosine
        self.logit_scale = nn.Parameter(torch.tensor(10.0))  # used with cosine logits only
        self.logit_bias = nn.Parameter(torch.tensor(0.0))

    def logits(self, queries: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """Mask logits N x h x w of queries NxD on G (D x h x w): scale * cos(q, G) + bias (`cosine`, default),
        or the plain q . G / sqrt(D). The cosine keeps a component shared by all queries from carrying the mask
        prediction, so the queries' cosines (what merging and matching use) separate instances."""
        if self.cosine:
            return cosine_logits(queries, pixels, self.logit_scale, self.logit_bias)
        return mask_logits(queries, pixels)

    @property
    def in_channels(self) -> int:
        return self.semantic_dim + self.geometric_dim + 2 * self.pos_frequencies

    def forward(self, features_2d: torch.Tensor, features_3d: Optional[torch.Tensor] = None,
                positions: Optional[torch.Tensor] = None) -> torch.Tensor:
        """F2d C2 x h x w, F3d C3 x h3 x w3 (required when geometric_dim > 0), positions 3 x h x w patch world
        points (`patch_positions`; required when pos_frequencies > 0) -> G D x h x w."""
        if self.geometric_dim and features_3d is None:
            raise ValueError(f"this pixel head was built for F3d with {self.geometric_dim} channels; none given")
        features = frame_features(features_2d, features_3d if self.geometric_dim else None)
        if self.pos_frequencies:
            if positions is None:
                raise ValueError("this pixel head encodes patch positions; none given")
            features = torch.cat([features, self._encode(positions.to(features.device))], dim=0)
        if features.shape[0] != self.in_channels:
            raise ValueError(f"pixel head expects {self.in_channels} feature channels "
                             f"({self.semantic_dim} F2d + {self.geometric_dim} F3d + {2 * self.pos_frequencies} "
                             f"position), got {features.shape[0]}")
        channels, height, width = features.shape
        first = self.mlp[0]
        assert isinstance(first, nn.Linear)
        weight = first.weight
        tokens = features.reshape(channels, -1).T.to(weight.device, weight.dtype)  # (h*w) x C
        return self.mlp(tokens).T.reshape(self.dim, height, width)

    def _encode(self, positions: torch.Tensor) -> torch.Tensor:
        """3 x h x w points (NaN = none) -> 2L x h x w Fourier encoding (zero where NaN)."""
        _, height, width = positions.shape
        flat = positions.reshape(3, -1).T.float()
        known = torch.isfinite(flat).all(dim=1, keepdim=True)
        bands = self.pos_bands
        assert isinstance(bands, torch.Tensor)
        encoded = fourier_encoding(torch.where(known, flat, torch.zeros_like(flat)), bands) * known
        return encoded.T.reshape(-1, height, width)


def mask_logits(queries: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """queries NxD, G D x h x w -> N x h x w logits q . G / sqrt(D)."""
    dim, height, width = pixels.shape
    return (queries @ pixels.reshape(dim, -1) / math.sqrt(dim)).reshape(-1, height, width)


def cosine_logits(queries: torch.Tensor, pixels: torch.Tensor, scale: torch.Tensor,
                  bias: torch.Tensor) -> torch.Tensor:
    """queries NxD, G D x h x w -> N x h x w logits scale * cos(q, G) + bias."""
    dim, height, width = pixels.shape
    cosine = F.normalize(queries, dim=1) @ F.normalize(pixels.reshape(dim, -1), dim=0)
    return (scale * cosine + bias).reshape(-1, height, width)

"""DPT adapter (official `DPTOutputAdapter_fix`): 4 token maps -> dense BxCxHxW prediction, plus the output
postprocessing of points, confidences and colours.

Stages: token maps at 1/16 go through `act_postprocess[k]` (1x1 conv then ConvT 4x4/4, ConvT 2x2/2, nothing,
3x3/2 conv), `scratch.layer{k}_rn` (bias-free 3x3 to `feature_dim`), then the fusion blocks refinenet4..1
(each: + RCU(skip), RCU, bilinear x2 with align_corners=True, 1x1 out_conv) and the head (3x3, x2, 3x3, ReLU,
1x1). `scratch.layer_rn` is a list that aliases `layer{1..4}_rn` (both name sets are in the state_dict).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x))))."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class FusionBlock(nn.Module):
    """(x [+ RCU1(skip)]) -> RCU2 -> bilinear x2 (align_corners) -> 1x1 out_conv.

    The 1x1 out_conv runs before the upsampling: a 1x1 convolution mixes channels per pixel and bilinear
    interpolation mixes pixels per channel with weights summing to 1 (so the bias passes through), hence
    they commute; at the low resolution the convolution costs 4x less. Equal up to float rounding.
    """

    def __init__(self, features: int):
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1, bias=True)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.out_conv(self.resConfUnit2(x))
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class Upsample2x(nn.Module):
    """Bilinear x2 upsampling with align_corners=True (a parameter-free entry of the head)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class Scratch(nn.Module):
    """Holds `layer{1..4}_rn`, their alias list `layer_rn` and the fusion blocks `refinenet{1..4}`."""

    def __init__(self, layer_dims: Sequence[int], features: int):
        super().__init__()
        self.layer1_rn = nn.Conv2d(layer_dims[0], features, 3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(layer_dims[1], features, 3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(layer_dims[2], features, 3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(layer_dims[3], features, 3, padding=1, bias=False)
        self.layer_rn = nn.ModuleList([self.layer1_rn, self.layer2_rn, self.layer3_rn, self.layer4_rn])
        self.refinenet1 = FusionBlock(features)
        self.refinenet2 = FusionBlock(features)
        self.refinenet3 = FusionBlock(features)
        self.refinenet4 = FusionBlock(features)


class DPTAdapter(nn.Module):
    """Four BxNxC_k token maps on an hxw patch grid -> BxC_outx(16h)x(16w) (channels-last memory layout).

    The convolution weights are kept channels-last (converted in place before a forward whenever they are
    not, e.g. after a checkpoint was assigned): the token maps are channels-last already (a transposed
    BxNxC view) and oneDNN then runs NHWC kernels without reordering; about 15% less convolution time on CPU.
    Values, names and shapes of the parameters are unchanged.
    """

    def __init__(self, token_dims: Sequence[int], out_channels: int, layer_dims: Sequence[int] = (96, 192, 384, 768),
                 feature_dim: int = 256, last_dim: int = 128):
        super().__init__()
        self.scratch = Scratch(layer_dims, feature_dim)
        self.head = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim // 2, 3, padding=1),
            Upsample2x(),
            nn.Conv2d(feature_dim // 2, last_dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(last_dim, out_channels, 1),
        )
        d = layer_dims
        self.act_postprocess = nn.ModuleList([
            nn.Sequential(nn.Conv2d(token_dims[0], d[0], 1), nn.ConvTranspose2d(d[0], d[0], 4, stride=4)),
            nn.Sequential(nn.Conv2d(token_dims[1], d[1], 1), nn.ConvTranspose2d(d[1], d[1], 2, stride=2)),
            nn.Sequential(nn.Conv2d(token_dims[2], d[2], 1)),
            nn.Sequential(nn.Conv2d(token_dims[3], d[3], 1), nn.Conv2d(d[3], d[3], 3, stride=2, padding=1)),
        ])

    def forward(self, tokens: Sequence[torch.Tensor], grid_hw: tuple[int, int]) -> torch.Tensor:
        """tokens: 4 x BxNxC_k (N = h*w, row-major) -> BxC_outx16hx16w."""
        self._channels_last_weights()
        h, w = grid_hw
        maps = [t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w) for t in tokens]
        maps = [post(m) for post, m in zip(self.act_postprocess, maps)]
        maps = [conv(m) for conv, m in zip(self.scratch.layer_rn, maps)]
        path = self.scratch.refinenet4(maps[3])[:, :, :maps[2].shape[2], :maps[2].shape[3]]
        path = self.scratch.refinenet3(path, maps[2])
        path = self.scratch.refinenet2(path, maps[1])
        path = self.scratch.refinenet1(path, maps[0])
        return self.head(path)

    def _channels_last_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                weight = module.weight
                if weight.device.type != "meta" and not weight.is_contiguous(memory_format=torch.channels_last):
                    weight.data = weight.data.contiguous(memory_format=torch.channels_last)


def dense_points(raw: torch.Tensor, mode: tuple[str, float, float]) -> torch.Tensor:
    """BxHxWx3 raw -> points; 'exp': xyz/|xyz| * expm1(|xyz|); 'linear': unchanged."""
    kind, vmin, vmax = mode
    if not (vmin == -math.inf and vmax == math.inf):
        raise ValueError(f"bounded depth modes are not supported: {mode}")
    if kind == "linear":
        return raw
    norm = raw.norm(dim=-1, keepdim=True)
    direction = raw / norm.clip(min=1e-8)
    if kind == "square":
        return direction * norm.square()
    if kind == "exp":
        return direction * torch.expm1(norm)
    raise ValueError(f"unknown depth mode {kind!r}")


def dense_confidence(raw: torch.Tensor, mode: tuple[str, float, float]) -> torch.Tensor:
    """BxHxW raw -> confidence; 'exp': vmin + exp(x) (clipped at vmax - vmin); 'sigmoid' in [vmin, vmax]."""
    kind, vmin, vmax = mode
    if kind == "exp":
        return vmin + raw.exp().clip(max=vmax - vmin)
    if kind == "sigmoid":
        return (vmax - vmin) * torch.sigmoid(raw) + vmin
    raise ValueError(f"unknown confidence mode {kind!r}")


def points_and_confidence(raw: torch.Tensor, depth_mode, conf_mode) -> tuple[torch.Tensor, torch.Tensor]:
    """Bx4xHxW DPT output -> (BxHxWx3 points, BxHxW confidence)."""
    fmap = raw.permute(0, 2, 3, 1)
    return dense_points(fmap[..., 0:3], depth_mode), dense_confidence(fmap[..., 3], conf_mode)


def colours(raw: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Bx3xHxW DPT output -> BxHxWx3 colours in [-1, 1]."""
    rgb = torch.sigmoid(raw.permute(0, 2, 3, 1)) * (1 - 2 * eps) + eps
    return (rgb - 0.5) * 2

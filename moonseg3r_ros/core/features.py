"""Semantic 2D features F2d (the frozen VFM backbone of the paper's Figure 2 (b)).

Backbones (`FeatureConfig.backbone`)
- 'dino': a DINO-family ViT (DINOv2, DINOv2 with registers, DINOv3, ...) loaded with `transformers`
  `AutoModel.from_pretrained(<local folder>, local_files_only=True)`; nothing is downloaded and nothing from the
  folder runs (no remote code; safetensors weights when present, otherwise weights_only pickles). The image is
  resized so its long side is `input_long_side` and both sides are multiples of the patch size,
  normalised with the ImageNet mean/std; the patch tokens of the last layer (CLS and register tokens
  removed) form F2d, C2 x h x w.
- 'none': `ColorFeatures`, weight-free: CIE Lab colour (centred, scaled to about [-1, 1]) and the Sobel
  gradient magnitude of L, weighted (0.5 L, 2 a, 2 b, 0.25 |grad|: shading-stable chroma dominates) and
  average-pooled over `color_patch` x `color_patch` pixels -> 4 x h x w.
- 'texture': `TextureFeatures`, weight-free and richer: the 4 colour channels above, the per-patch standard
  deviation of L, a, b (how much the colour varies inside the patch) and a histogram of oriented gradients per
  patch (scikit-image `hog`, `texture_orientations` unsigned bins, one cell per block, L2-Hys normalised: the
  patch's texture direction independent of its contrast) -> (7 + orientations) x h x w. Why: the colour set
  has rank <= 4, so Gram targets and mask-pooled queries cannot tell two objects of similar colour apart;
  printed textures (wood, fabric, labels) differ in variation and orientation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from moonseg3r_ros.core.geometry import block_mean
from moonseg3r_ros.core.preload import preload

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureError(RuntimeError):
    """The backbone cannot be built or loaded."""


@runtime_checkable
class SemanticBackbone(Protocol):
    """`extract(image_rgb_uint8 HxWx3) -> C2 x h x w float32 tensor` on `device`; `out_channels` = C2."""

    out_channels: int

    def extract(self, image: np.ndarray) -> torch.Tensor: ...


class ColorFeatures:
    """Weight-free F2d: Lab colour + gradient magnitude pooled to a patch grid (see module docstring)."""

    out_channels = 4
    channel_weights = np.array([0.5, 2.0, 2.0, 0.25], np.float32)  # L, a, b, |grad L|: chroma dominates

    def __init__(self, patch: int = 8, device: torch.device = torch.device("cpu")):
        if patch < 1:
            raise FeatureError(f"colour feature patch must be >= 1, got {patch}")
        self.patch = int(patch)
        self.device = torch.device(device)
        preload("cv2")

    def extract(self, image: np.ndarray) -> torch.Tensor:
        weighted, _ = self._weighted_channels(image)
        return self._to_tensor(block_mean(weighted, self.patch))

    def _weighted_channels(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """HxWx3 uint8 RGB -> (HxWx4 weighted L, a, b, |grad L|; HxWx3 the centred Lab they come from)."""
        import cv2

        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
        lab = (lab - 128.0) / 128.0  # L, a, b centred on mid-grey, about [-1, 1]
        grad_x = cv2.Sobel(lab[..., 0], cv2.CV_32F, 1, 0, ksize=3)
        grad_y = cv2.Sobel(lab[..., 0], cv2.CV_32F, 0, 1, ksize=3)
        grad = np.sqrt(grad_x * grad_x + grad_y * grad_y)[..., None]
        return np.concatenate([lab * self.channel_weights[:3], grad * self.channel_weights[3]], axis=2), lab

    def _to_tensor(self, pooled: np.ndarray) -> torch.Tensor:
        """h x w x C patch grid -> C x h x w float32 tensor on the device."""
        return torch.from_numpy(np.ascontiguousarray(pooled.transpose(2, 0, 1))).to(self.device)


class DinoBackbone:
    """Frozen DINO-family ViT from a local `transformers` folder (see module docstring)."""

    def __init__(self, weights: str, device: torch.device, input_long_side: int = 448,
                 dtype: torch.dtype = torch.float32, model: Any = None):
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = (model if model is not None else load_dino(weights)).to(self.device, dtype).eval()
        self.patch = int(_config_value(self.model.config, "patch_size"))
        self.out_channels = int(_config_value(self.model.config, "hidden_size"))
        self.input_long_side = max(self.patch, int(input_long_side) // self.patch * self.patch)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(3, 1, 1)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the network input: long side `input_long_side`, both multiples of the patch size."""
        scale = self.input_long_side / max(height, width)
        return (max(self.patch, round(height * scale / self.patch) * self.patch),
                max(self.patch, round(width * scale / self.patch) * self.patch))

    @torch.inference_mode()
    def extract(self, image: np.ndarray) -> torch.Tensor:
        height, width = self.input_size(image.shape[0], image.shape[1])
        pixels = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1).float() / 255.0
        pixels = F.interpolate(pixels[None], size=(height, width), mode="bilinear", align_corners=False,
                               antialias=True)[0]
        pixels = ((pixels - self._mean) / self._std)[None].to(self.dtype)
        tokens = self.model(pixel_values=pixels).last_hidden_state[0]  # (prefix + h*w) x C
        grid_h, grid_w = height // self.patch, width // self.patch
        patches = tokens[tokens.shape[0] - grid_h * grid_w:]
        return patches.float().T.reshape(self.out_channels, grid_h, grid_w).contiguous()

    def close(self) -> None:
        self.model = None


def _config_value(config: Any, name: str) -> Any:
    value = getattr(config, name, None)
    if value is None:  # composite configs (e.g. a vision sub-config)
        value = getattr(getattr(config, "vision_config", None), name, None)
    if value is None:
        raise FeatureError(f"backbone config has no '{name}'")
    return value


def load_dino(weights: str) -> torch.nn.Module:
    """transformers model from a local folder; FeatureError when missing or unloadable (never downloads)."""
    if not weights:
        raise FeatureError("features.backbone is 'dino' but features.weights is empty: give a local folder with "
                           "a transformers DINO model (config.json + weights) or use features.backbone 'none'")
    if not Path(weights).is_dir():
        raise FeatureError(f"DINO weights folder '{weights}' does not exist (a transformers model folder is needed)")
    try:
        from transformers import AutoModel

        # Nothing from the folder may run: no remote code, safetensors when present, else weights_only pickles.
        safetensors = any(Path(weights).glob("*.safetensors"))
        return AutoModel.from_pretrained(weights, local_files_only=True, trust_remote_code=False,
                                         use_safetensors=True if safetensors else None, weights_only=True)
    except Exception as err:
        raise FeatureError(f"DINO backbone in '{weights}' could not be loaded: {err}") from err


class TextureFeatures(ColorFeatures):
    """Weight-free F2d: ColorFeatures + per-patch Lab std + oriented-gradient histograms (see module docstring)."""

    std_weight = 2.0  # std of centred Lab (about 0-0.3) to the scale of the colour channels
    hog_weight = 0.5  # L2-Hys cells: entries 0-0.2, up to ~0.5 for one dominant direction

    def __init__(self, patch: int = 8, orientations: int = 8, device: torch.device = torch.device("cpu")):
        super().__init__(patch, device)
        if orientations < 2:
            raise FeatureError(f"texture orientations must be >= 2, got {orientations}")
        self.orientations = int(orientations)
        self.out_channels = ColorFeatures.out_channels + 3 + self.orientations
        try:
            preload("skimage.feature")
        except ImportError as err:
            raise FeatureError("features.backbone 'texture' needs scikit-image (pinned in requirements/python.txt: "
                               f"pip install -r requirements/python.txt): {err}") from err

    def extract(self, image: np.ndarray) -> torch.Tensor:
        weighted, lab = self._weighted_channels(image)  # one Lab conversion for all channels
        moments = block_mean(np.concatenate([lab, lab * lab], axis=2), self.patch)
        mean, square = moments[..., :3], moments[..., 3:]
        spread = np.sqrt(np.maximum(square - mean * mean, 0.0)) * self.std_weight
        cells = self._orientation_cells(lab[..., 0]) * self.hog_weight
        return self._to_tensor(np.concatenate([block_mean(weighted, self.patch), spread, cells], axis=2))

    def _orientation_cells(self, lightness: np.ndarray) -> np.ndarray:
        """HxW -> ceil(H/patch) x ceil(W/patch) x orientations HOG cells (edge-padded to whole patches)."""
        from skimage.feature import hog

        height, width = lightness.shape
        grid_h, grid_w = -(-height // self.patch), -(-width // self.patch)
        padded = np.pad(lightness, ((0, grid_h * self.patch - height), (0, grid_w * self.patch - width)), "edge")
        cells = hog(padded, orientations=self.orientations, pixels_per_cell=(self.patch, self.patch),
                    cells_per_block=(1, 1), block_norm="L2-Hys", feature_vector=False)
        return cells.reshape(grid_h, grid_w, self.orientations).astype(np.float32)


def make_backbone(config: Any, device: torch.device) -> SemanticBackbone:
    """SemanticBackbone for `config.features` (a PipelineConfig or a FeatureConfig)."""
    features = getattr(config, "features", config)
    if features.backbone == "dino":
        return DinoBackbone(features.weights, device, features.input_long_side)
    if features.backbone == "none":
        return ColorFeatures(features.color_patch, device)
    if features.backbone == "texture":
        return TextureFeatures(features.color_patch, features.texture_orientations, device)
    raise FeatureError(f"unknown backbone '{features.backbone}' (use 'dino', 'none' or 'texture')")

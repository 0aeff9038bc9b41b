import dataclasses

import numpy as np
import pytest
import torch

from moonseg3r_ros.core.config import PipelineConfig
from moonseg3r_ros.core.features import ColorFeatures, DinoBackbone, FeatureError, make_backbone


def test_color_features_grid_and_values():
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, :15] = (255, 0, 0)
    image[:, 15:] = (0, 0, 255)
    f = ColorFeatures(patch=5).extract(image)
    assert f.shape == (4, 4, 6) and f.dtype == torch.float32
    # Lab a* (channel 1) is strongly positive for red, b* (channel 2) strongly negative for blue
    assert f[1, 0, 0] > 0.5 and f[2, 0, -1] < -0.5
    assert torch.allclose(f[:, 0, 0], f[:, 3, 1])


def _tiny_dino(path):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          patch_size=8, image_size=32)
    Dinov2Model(config).save_pretrained(path)


def test_dino_backbone_from_a_local_folder(tmp_path):
    _tiny_dino(tmp_path / "dino")
    config = PipelineConfig()
    config.features.backbone = "dino"
    config.features.weights = str(tmp_path / "dino")
    config.features.input_long_side = 64
    backbone = make_backbone(config, torch.device("cpu"))
    assert isinstance(backbone, DinoBackbone) and backbone.out_channels == 32
    image = np.random.default_rng(0).integers(0, 255, (30, 60, 3), dtype=np.uint8)
    f = backbone.extract(image)
    assert backbone.input_size(30, 60) == (32, 64)
    assert f.shape == (32, 4, 8) and torch.isfinite(f).all()
    assert not torch.allclose(f[:, 0, 0], f[:, 3, 7])


def test_dino_errors(tmp_path):
    config = PipelineConfig()
    config.features.backbone = "dino"
    with pytest.raises(FeatureError, match="weights is empty"):
        make_backbone(config, torch.device("cpu"))
    config.features.weights = str(tmp_path)
    with pytest.raises(FeatureError, match="could not be loaded"):
        make_backbone(config, torch.device("cpu"))


def stripes(vertical: bool, size: int = 32, period: int = 4) -> np.ndarray:
    ramp = (np.arange(size) // (period // 2)) % 2 * 200 + 20
    grey = np.tile(ramp, (size, 1)) if vertical else np.tile(ramp[:, None], (1, size))
    return np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)


def test_texture_features_extend_the_colour_channels():
    config = PipelineConfig()
    config.features.backbone, config.features.color_patch = "texture", 8
    backbone = make_backbone(config, torch.device("cpu"))
    image = np.random.default_rng(1).integers(0, 255, (30, 45, 3), dtype=np.uint8)
    f = backbone.extract(image)
    assert backbone.out_channels == 4 + 3 + config.features.texture_orientations == f.shape[0]
    assert f.shape[1:] == (4, 6) and f.dtype == torch.float32  # ceil(30/8) x ceil(45/8), like the colour grid
    assert torch.equal(f[:4], ColorFeatures(8).extract(image))
    flat = backbone.extract(np.full((32, 32, 3), 90, np.uint8))
    assert torch.allclose(flat[4:], torch.zeros(1)), "no colour spread and no gradients on a flat image"


def test_texture_features_tell_stripe_directions_apart():
    """Same colours, same spread: only the oriented-gradient cells differ, and they point 90 degrees apart."""
    backbone = make_backbone(PipelineConfig(features=dataclasses.replace(PipelineConfig().features,
                                                                         backbone="texture")), torch.device("cpu"))
    vertical, horizontal = (backbone.extract(stripes(v))[:, 1, 1] for v in (True, False))
    assert torch.allclose(vertical[:7], horizontal[:7], atol=1e-5)
    hog_v, hog_h = vertical[7:], horizontal[7:]
    bins = hog_v.numel()
    assert int(torch.argmax(hog_v)) == (int(torch.argmax(hog_h)) + bins // 2) % bins
    assert float(torch.nn.functional.cosine_similarity(hog_v, hog_h, dim=0)) < 0.5


def test_weights_know_which_weight_free_backbone_they_were_trained_for():
    from moonseg3r_ros.core.refiner_weights import RefinerWeightsError, check_features, feature_signature

    colour, texture = PipelineConfig(), PipelineConfig()
    texture.features.backbone = "texture"
    with pytest.raises(RefinerWeightsError, match="backbone"):
        check_features({"features": feature_signature(colour)}, texture)
    fewer_bins = PipelineConfig()
    fewer_bins.features.backbone, fewer_bins.features.texture_orientations = "texture", 4
    with pytest.raises(RefinerWeightsError, match="texture_orientations"):
        check_features({"features": feature_signature(texture)}, fewer_bins)
    check_features({"features": feature_signature(texture)}, texture)
    assert "input_long_side" not in feature_signature(texture)


def test_texture_backbone_without_scikit_image_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "skimage.feature", None)  # import raises ImportError
    config = PipelineConfig()
    config.features.backbone = "texture"
    with pytest.raises(FeatureError, match="needs scikit-image"):
        make_backbone(config, torch.device("cpu"))

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

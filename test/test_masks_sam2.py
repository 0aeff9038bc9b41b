"""SAM 2 mask source (core/masks_sam2.py) on a small randomly initialised transformers Sam2Model (no downloads):
masks equal transformers' own mask-generation pipeline for the same model folder and image, checkpoint errors
name the parameter in one line, pickled weights are never read."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from moonseg3r_ros.core.config import MaskConfig, PipelineConfig
from moonseg3r_ros.core.masks import MaskError, filter_masks, make_mask_source
from moonseg3r_ros.core.model_files import missing_files
from moonseg3r_ros.core.types import Frame

from mask_network_inputs import TouchMarker, two_block_image  # test/mask_network_inputs.py

SIZE = 128  # network input of the tiny model (the released ones: 1024)


@pytest.fixture(scope="module")
def transformers():
    module = pytest.importorskip("transformers", reason="transformers is not installed")
    if not hasattr(module, "Sam2Model"):
        pytest.skip(f"transformers {module.__version__} has no Sam2Model (needs >= 4.56)")
    return module


def tiny_sam2(transformers, seed=0):
    """A SAM 2 with a 4-stage Hiera of widths 16-128 at 128x128, from transformers' own config classes; weights
    drawn at a larger scale than the library's init so that different prompts give different masks."""
    S = SIZE
    config = transformers.Sam2Config(
        vision_config=dict(
            backbone_config=dict(hidden_size=16, image_size=[S, S], blocks_per_stage=[1, 1, 2, 1],
                                 embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=[1, 1, 2, 2],
                                 window_size_per_stage=[8, 4, 8, 4], global_attention_blocks=[3],
                                 window_positional_embedding_background_size=[4, 4]),
            backbone_channel_list=[128, 64, 32, 16], backbone_feature_sizes=[[S // 4] * 2, [S // 8] * 2, [S // 16] * 2],
            fpn_hidden_size=32),
        prompt_encoder_config=dict(hidden_size=32, image_size=S, patch_size=16),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32))
    torch.manual_seed(seed)
    model = transformers.Sam2Model(config).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                fan_in = parameter[0].numel()
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 2.0 / math.sqrt(fan_in))
    return model


@pytest.fixture(scope="module")
def model_folder(transformers, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sam2") / "sam2-tiny"
    tiny_sam2(transformers).save_pretrained(folder)  # config.json + model.safetensors
    return str(folder)


def config_for(folder, **kwargs):
    config = PipelineConfig()
    config.device = "cpu"
    fields = dict(source="sam2", sam2_checkpoint=folder, points_per_side=4, pred_iou_thresh=0.0,
                  stability_score_thresh=0.0, sam2_nms_iou=0.95, min_mask_area=0, max_masks=50)
    config.masks = MaskConfig(**{**fields, **kwargs})
    return config


def test_sam2_masks_equal_the_library_output(transformers, model_folder):
    from PIL import Image

    image = two_block_image()
    ours = make_mask_source(config_for(model_folder), torch.device("cpu")).generate(Frame(image, 0.0))
    # transformers' own path: the model and image processor from the folder, its mask-generation pipeline
    model = transformers.Sam2Model.from_pretrained(model_folder)
    processor = transformers.Sam2ImageProcessorFast(size={"height": SIZE, "width": SIZE})
    generator = transformers.pipeline("mask-generation", model=model, image_processor=processor, device="cpu")
    output = generator(Image.fromarray(image), points_per_crop=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                       crops_nms_thresh=0.95, points_per_batch=16)
    theirs = filter_masks(torch.stack(output["masks"]).numpy(), np.asarray(output["scores"]), 0, 50)
    assert ours.masks.shape == (len(theirs), 96, 128) and ours.masks.dtype == bool
    assert len(ours) >= 3 and len(np.unique(ours.masks.reshape(len(ours), -1).sum(axis=1))) >= 3
    np.testing.assert_array_equal(ours.masks, theirs.masks)
    np.testing.assert_allclose(ours.scores, theirs.scores, atol=1e-6)


def test_sam2_batch_divides_the_points():
    from moonseg3r_ros.core.masks_sam2 import generator_kwargs

    assert generator_kwargs(MaskConfig(points_per_side=6, sam2_points_per_batch=64))["points_per_batch"] == 36
    assert generator_kwargs(MaskConfig(points_per_side=16, sam2_points_per_batch=64))["points_per_batch"] == 64
    assert generator_kwargs(MaskConfig(points_per_side=10, sam2_points_per_batch=64))["points_per_batch"] == 50


def test_sam2_network_device_is_its_own(model_folder):
    source = make_mask_source(config_for(model_folder, network_device="cpu"), torch.device("meta"))
    assert source.device == torch.device("cpu") and next(source.model.parameters()).device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            make_mask_source(config_for(model_folder, network_device="cuda"), torch.device("cpu"))


def _error(config) -> str:
    with pytest.raises(MaskError) as info:
        make_mask_source(config, torch.device("cpu"))
    message = str(info.value)
    assert "\n" not in message and "masks.sam2_checkpoint" in message
    return message


def test_sam2_checkpoint_errors(transformers, model_folder, tmp_path):
    assert "empty" in _error(config_for(""))
    assert "'masks.sam2_checkpoint' is empty" in missing_files(config_for(""))
    assert "does not exist" in _error(config_for(str(tmp_path / "sam2.1-hiera-tiny")))
    meta = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, meta)
    assert "is a file" in _error(config_for(str(meta)))
    (tmp_path / "empty").mkdir()
    assert "no config.json" in _error(config_for(str(tmp_path / "empty")))
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (other / "model.safetensors").write_bytes(b"")
    assert "not SAM 2" in _error(config_for(str(other))) or "not a SAM 2 config" in _error(config_for(str(other)))
    partial = tmp_path / "partial"
    model = tiny_sam2(transformers)
    state = {k: v for k, v in model.state_dict().items() if "mask_decoder" not in k}
    model.save_pretrained(partial, state_dict=state)
    assert "do not fit" in _error(config_for(str(partial)))


def test_sam2_pickled_weights_are_never_read(transformers, model_folder, tmp_path):
    marker = tmp_path / "marker"
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((Path(model_folder) / "config.json").read_text())
    torch.save({"weight": TouchMarker(marker)}, folder / "pytorch_model.bin")
    assert "no model.safetensors" in _error(config_for(str(folder)))
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")  # not the weights
    assert "does not load" in _error(config_for(str(folder))) or "do not fit" in _error(config_for(str(folder)))
    assert not marker.exists()

"""CUT3R streaming: official preprocessing, FrameGeometry on the input grid, state attention pooling, and
no growth of memory with the sequence length."""
import gc
import tracemalloc

import numpy as np
import pytest
import torch

from moonseg3r_ros.core.cut3r import (Cut3r, Cut3rConfig, Cut3rStream, official_geometry, preprocess_image,
                                      to_input_grid)
from moonseg3r_ros.core.types import FrameGeometry

MICRO = dict(enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=32, dec_depth=4, dec_num_heads=2,
             state_size=6, state_dec_num_heads=2, local_mem_size=8, ray_enc_num_heads=2, dpt_feature_dim=16,
             dpt_layer_dims=(8, 8, 8, 8), rgb_head=True)


@pytest.fixture(scope="module")
def micro_model():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return Cut3r(Cut3rConfig.from_official(MICRO)).eval()


@pytest.mark.parametrize("hw, resized, crop_top_left, crop", [
    ((480, 640), (384, 512), (0, 0), (384, 512)),
    ((640, 480), (512, 384), (0, 0), (512, 384)),      # portrait stays portrait
    ((1000, 1000), (512, 512), (64, 0), (384, 512)),   # square -> 4:3 landscape
    ((75, 100), (384, 512), (0, 0), (384, 512)),       # enlarged
    ((333, 500), (341, 512), (2, 0), (336, 512)),      # cropped to multiples of 16
    ((1080, 1920), (288, 512), (0, 0), (288, 512)),
])
def test_official_geometry(hw, resized, crop_top_left, crop):
    info = official_geometry(*hw)
    assert info.resized_hw == resized and (info.crop_top, info.crop_left) == crop_top_left and info.crop_hw == crop


def test_preprocess_normalises_like_imgnorm_and_accepts_encodings():
    rgb = np.random.default_rng(0).integers(0, 256, (384, 512, 3), dtype=np.uint8)
    img, info = preprocess_image(rgb)
    assert img.shape == (1, 3, 384, 512) and info.crop_hw == (384, 512)
    expected = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)[None]
    assert torch.equal(img, expected)  # no resize needed: exact
    assert img.min() >= -1 and img.max() <= 1
    gray16 = rgb[..., 0].astype(np.uint16) * 257  # the one uint16 rule: round(x / 257)
    img16, _ = preprocess_image(gray16)
    assert torch.equal(img16[0, 0], expected[0, 0]) and torch.equal(img16[0, 1], expected[0, 0])
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    assert torch.equal(preprocess_image(rgba)[0], expected)
    with pytest.raises(ValueError, match="image"):
        preprocess_image(np.zeros((4, 4, 2), np.uint8))


def test_to_input_grid_inverts_resize_and_crop():
    info = official_geometry(1000, 1000)  # model grid 384x512 covers input rows 125..875
    rows = np.arange(384, dtype=np.float32)[:, None].repeat(512, 1)
    back = to_input_grid(rows, info)
    assert back.shape == (1000, 1000)
    assert np.isnan(back[:120]).all() and np.isnan(back[-120:]).all()
    centre = back[500, 500]
    assert abs(centre - ((500.5 * 512 / 1000 - 0.5) - 64)) <= 0.5
    assert np.all(np.diff(back[130:870, 0]) >= 0)


def test_stream_step_gives_frame_geometry_on_input_grid(micro_model):
    stream = Cut3rStream(micro_model, device="cpu", image_long_side=64, attention_layer=-1, head_pool="mean")
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (3, 60, 80, 3), dtype=np.uint8)  # -> 48x64 model input, 3x4 patches
    outputs = [stream.step(f) for f in frames]
    geometry = outputs[-1]
    assert isinstance(geometry, FrameGeometry)
    assert geometry.pose_c2w.shape == (4, 4) and geometry.pose_c2w.dtype == np.float64
    rotation = geometry.pose_c2w[:3, :3]
    assert np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-5) and np.allclose(geometry.pose_c2w[3], [0, 0, 0, 1])
    assert geometry.points_world.shape == geometry.points_cam.shape == (60, 80, 3)
    assert geometry.confidence.shape == geometry.valid.shape == (60, 80)
    assert geometry.points_world.dtype == np.float32 and geometry.valid.dtype == bool
    assert np.array_equal(geometry.valid, np.isfinite(geometry.points_world).all(-1) & (geometry.points_cam[..., 2] > 0)
                          & (geometry.confidence > 0))
    assert (geometry.confidence > 1).all()  # conf_mode ('exp', 1, inf)
    assert geometry.features_3d.shape == (32, 3, 4)
    attention = geometry.state_attention
    assert attention.shape == (6, 3, 4)
    assert (attention >= 0).all() and (attention.sum((1, 2)) <= 1 + 1e-5).all()
    assert stream.frame_index == 3
    # the same frames through the model directly give the same pose
    micro_model.reset()
    for f in frames:
        direct = micro_model.step(preprocess_image(f, 64)[0])
    assert np.allclose(direct["camera_pose_c2w"][0].double().numpy(), geometry.pose_c2w)
    stream.reset()
    assert stream.frame_index == 0
    with pytest.raises(ValueError, match="head_pool"):
        Cut3rStream(micro_model, head_pool="median")


def test_state_attention_max_pooling_and_no_attention(micro_model):
    frame = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    mean = Cut3rStream(micro_model, image_long_side=64, attention_layer=0, head_pool="mean").step(frame)
    peak = Cut3rStream(micro_model, image_long_side=64, attention_layer=0, head_pool="max").step(frame)
    assert (peak.state_attention >= mean.state_attention - 1e-7).all()
    none = Cut3rStream(micro_model, image_long_side=64, attention_layer=None).step(frame)
    assert none.state_attention is None
    np.testing.assert_allclose(none.points_world, mean.points_world, rtol=1e-6, atol=1e-7)


def _live_tensors():
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def test_memory_does_not_grow_with_sequence_length(micro_model):
    stream = Cut3rStream(micro_model, image_long_side=32, attention_layer=-1)
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)  # 1x2 patches after the 4:3 crop (16x32)
    model = stream.model
    for i in range(50):
        geometry = stream.step(frames[i % 4])  # held in both counts
    shapes = (tuple(model.state_feat.shape), tuple(model.mem.shape))
    tensors_at_50 = _live_tensors()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(50, 250):
        geometry = stream.step(frames[i % 4])
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert model.frame_index == 250
    assert (tuple(model.state_feat.shape), tuple(model.mem.shape)) == shapes == ((1, 6, 32), (1, 8, 64))
    assert _live_tensors() == tensors_at_50
    assert growth < 256 * 1024, f"python heap grew by {growth} bytes over 200 frames"
    assert np.isfinite(geometry.pose_c2w).all()
    held = [name for name, value in vars(model).items() if isinstance(value, (list, dict)) and value
            and name not in ("_parameters", "_modules", "_buffers")]
    assert not any(name for name in held if not name.startswith("_")), held

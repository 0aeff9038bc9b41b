"""Monocular mode: MoonSeg3RPipeline with geometry.source = 'cut3r' on a real checkpoint file (a micro CUT3R with
random weights, saved in the official layout), ground-truth masks on a tiny synthetic scene.

The random model is made geometrically usable by two deterministic edits of its point heads' last layer: the
z bias is raised by 1 (points in front of the camera) and, if the camera pointmap's x/y fall with the pixel
coordinates, the x/y rows are negated (so that a pinhole K with a positive focal can be fitted to it). The
last state-decoder layer's cross-attention q/k weights are scaled by SHARPEN: random weights otherwise give
an almost uniform A_t (all state tokens' cosine ~0.999)."""
import argparse

import numpy as np
import pytest
import torch

from moonseg3r_ros.core import association as assoc
from moonseg3r_ros.core.config import PipelineConfig
from moonseg3r_ros.core.cut3r import Cut3r, Cut3rConfig, Cut3rStream
from moonseg3r_ros.core.geometry import (Cut3rGeometry, GeometryError, estimate_camera, make_geometry_source,
                                         patch_grid_on_input)
from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline
from moonseg3r_ros.core.types import Frame
from moonseg3r_ros.data.synthetic import SceneSpec, generate_scene

MICRO = dict(enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=32, dec_depth=4, dec_num_heads=2,
             state_size=16, state_dec_num_heads=2, local_mem_size=8, ray_enc_num_heads=2, dpt_feature_dim=16,
             dpt_layer_dims=(8, 8, 8, 8), rgb_head=True, img_size=(64, 64))
WIDTH, HEIGHT = 64, 48
SHARPEN = 6.0


def model_string(kwargs: dict) -> str:
    """The official `args.model` constructor string for these ARCroco3DStereoConfig kwargs."""
    parts = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
    return (f"ARCroco3DStereo(ARCroco3DStereoConfig({parts}, pos_embed='RoPE100', head_type='dpt', "
            "state_pe='2d', output_mode='pts3d+pose', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
            "pose_mode=('exp', -inf, inf)))")


@pytest.fixture(scope="module")
def scene():
    return generate_scene(SceneSpec(seed=0, num_frames=6, width=WIDTH, height=HEIGHT, num_objects=4,
                                    orbit_degrees=10))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, scene):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Cut3r(Cut3rConfig.from_official(MICRO)).eval()
    heads = (model.downstream_head.dpt_self, model.downstream_head.dpt_cross)
    with torch.no_grad():
        for head in heads:
            head.head[4].bias[2] += 1.0
        cross = model.dec_blocks_state[-1].cross_attn  # sharper (less uniform) A_t, as a trained model's
        cross.projq.weight *= SHARPEN
        cross.projk.weight *= SHARPEN
        points = Cut3rStream(model, image_long_side=WIDTH, attention_layer=None).step(scene.frames[0].image).points_cam
        u = np.arange(WIDTH) - (WIDTH - 1) / 2
        v = np.arange(HEIGHT)[:, None] - (HEIGHT - 1) / 2
        if np.nansum(u * points[..., 0] / points[..., 2] + v * points[..., 1] / points[..., 2]) < 0:
            for head in heads:
                head.head[4].weight[:2] *= -1
                head.head[4].bias[:2] *= -1
    path = tmp_path_factory.mktemp("cut3r") / "cut3r_micro.pth"
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(model=model_string(MICRO), lr=1e-4)}, path)
    return path


def mono_config(path, **geometry) -> PipelineConfig:
    config = PipelineConfig()
    config.device = "cpu"
    config.geometry.source = "cut3r"
    config.geometry.cut3r_checkpoint = str(path)
    config.geometry.image_long_side = WIDTH
    for key, value in geometry.items():
        setattr(config.geometry, key, value)
    config.masks.source = "ground_truth"
    config.masks.min_mask_area = 5
    config.masks.min_valid_points = 3
    config.map.min_instance_points = 1
    config.keyframe_interval = 1
    return config


def test_monocular_pipeline_runs_on_a_real_checkpoint_file(checkpoint, scene, monkeypatch):
    seen_tokens = []
    original = assoc.state_distribution_tokens

    def spy(attention, masks):
        tokens = original(attention, masks)
        seen_tokens.append((tuple(attention.shape), tokens))
        return tokens

    monkeypatch.setattr(assoc, "state_distribution_tokens", spy)
    pipe = MoonSeg3RPipeline(mono_config(checkpoint))
    source = pipe.geometry_source
    assert isinstance(source, Cut3rGeometry) and source.has_state_attention
    assert source.stream.image_long_side == WIDTH and source.stream.head_pool == "mean"
    results = []
    for frame in scene.frames:
        results.append(pipe.step(frame.image, frame.stamp, instance_ids=frame.instance_ids))
    assert [r.skipped_reason for r in results] == [None] * len(scene.frames)
    assert pipe.stats["frames"] == pipe.stats["keyframes"] == len(scene.frames)
    assert pipe.stats["skipped_no_geometry"] == pipe.stats["skipped_errors"] == 0
    for result in results:
        pose = result.pose_c2w
        assert pose.shape == (4, 4) and np.isfinite(pose).all()
        np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-5)
        np.testing.assert_allclose(pose[3], [0, 0, 0, 1])
        assert result.instance_ids_2d.shape == (HEIGHT, WIDTH) and (result.instance_ids_2d > 0).any()
    assert len(results[0].new_instance_ids) >= 1 and pipe.stats["instances_matched"] >= 1
    xyz, _, ids = pipe.instance_map.points()
    assert len(xyz) > 0 and np.isfinite(xyz).all() and (ids > 0).any()
    # A_t reached the association on the input-aligned patch grid (16 state tokens, 3x4 patches of 16 px)
    assert len(seen_tokens) == len(scene.frames)
    for shape, tokens in seen_tokens:
        assert shape == (16, 3, 4)
        assert tokens.shape[1] == 16 and np.allclose(tokens.sum(axis=1), 1.0, atol=1e-5)
    _, bank_tokens, _, _ = pipe.bank.get(pipe.bank.ids())
    assert bank_tokens is not None and bank_tokens.shape[1] == 16
    # CUT3R gives no intrinsics: a pinhole K was fitted to the camera pointmap
    geometry = source.compute(Frame(scene.frames[0].image, 99.0))
    k = geometry.intrinsics
    assert k is not None and k[0, 0] > 0 and k[0, 0] == k[1, 1]
    assert (k[0, 2], k[1, 2]) == ((WIDTH - 1) / 2, (HEIGHT - 1) / 2)
    assert geometry.features_3d.shape == (32, 3, 4) and geometry.state_attention.shape == (16, 3, 4)


def test_state_attention_follows_the_threshold_with_tokens(checkpoint, scene, monkeypatch):
    """With state attention the match uses cos(q) + cos(state) + box overlap against match_threshold (1.8)."""
    used = []
    original = assoc.match_threshold
    monkeypatch.setattr(assoc, "match_threshold", lambda cfg, has: used.append(has) or original(cfg, has))
    pipe = MoonSeg3RPipeline(mono_config(checkpoint))
    for frame in scene.frames[:3]:
        pipe.step(frame.image, frame.stamp, instance_ids=frame.instance_ids)
    assert used == [True, True]  # frames 1 and 2 match against a non-empty bank, with state tokens


def test_min_confidence_and_max_depth_reach_the_source(checkpoint, scene):
    pipe = MoonSeg3RPipeline(mono_config(checkpoint, min_confidence=1e5))  # random confidences are ~2.4
    result = pipe.step(scene.frames[0].image, 0.0, instance_ids=scene.frames[0].instance_ids)
    assert result.skipped and "valid geometry" in result.skipped_reason
    assert pipe.stats["skipped_no_geometry"] == 1
    near = make_geometry_source(mono_config(checkpoint, min_confidence=0.0, max_depth=0.5), torch.device("cpu"))
    geometry = near.compute(Frame(scene.frames[0].image, 0.0))
    depth = geometry.points_cam[..., 2]
    assert not geometry.valid[depth > 0.5].any()


def test_checkpoint_errors_are_clear(checkpoint, tmp_path):
    with pytest.raises(GeometryError, match="does not exist"):
        MoonSeg3RPipeline(mono_config(tmp_path / "missing.pth"))
    with pytest.raises(GeometryError, match="is not a file"):
        MoonSeg3RPipeline(mono_config(tmp_path))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(checkpoint.read_bytes()[:4096])
    with pytest.raises(GeometryError, match="truncated or corrupt"):
        MoonSeg3RPipeline(mono_config(truncated))
    other = tmp_path / "other_architecture.pth"
    torch.save({"model": {"image_encoder.patch_embed.proj.weight": torch.zeros(8, 3, 16, 16)}}, other)
    with pytest.raises(GeometryError, match="does not match the CUT3R architecture"):
        MoonSeg3RPipeline(mono_config(other))
    with pytest.raises(GeometryError, match="state_attention_layer 7 is out of range"):
        MoonSeg3RPipeline(mono_config(checkpoint, state_attention_layer=7))


def test_estimate_camera_recovers_a_pinhole():
    k = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    depth = 1.0 + 0.01 * u
    points = np.stack([(u - 31.5) / 50.0 * depth, (v - 23.5) / 50.0 * depth, depth], axis=2).astype(np.float32)
    valid = np.ones((HEIGHT, WIDTH), bool)
    np.testing.assert_allclose(estimate_camera(points, valid), k, rtol=1e-4)
    points[..., :2] *= -1  # mirrored pointmap: no pinhole camera
    with pytest.raises(GeometryError, match="no intrinsics"):
        estimate_camera(points, valid)


def test_patch_grid_on_input_aligns_the_crop():
    from moonseg3r_ros.core.cut3r import official_geometry

    grid = torch.arange(2 * 24 * 32, dtype=torch.float32).reshape(2, 24, 32)
    same = official_geometry(480, 640)  # 384x512 model input, no crop: cells of 20 input pixels, identity
    assert patch_grid_on_input(grid, same, 16) is not None
    assert torch.equal(patch_grid_on_input(grid, same, 16), grid)
    square = official_geometry(1000, 1000)  # crop rows 64..448 of the 512x512 resized image
    values = torch.ones(1, 24, 32)
    out = patch_grid_on_input(values, square, 16)
    assert out.shape == (1, 32, 32)
    assert (out[0, :4] == 0).all() and (out[0, -4:] == 0).all() and (out[0, 4:28] == 1).all()


def test_state_tokens_of_the_same_mask_agree_across_near_identical_frames(checkpoint, scene):
    """Same recurrent state (reset before each frame), a view shifted by one pixel: each mask's state token is
    closer to its own token than to any other mask's.

    Weaker than the paper's use (consecutive frames of one stream): with random weights the state update
    between frames reshuffles which state token attends where, and on this scene the consecutive-frame
    similarity of the same mask (0.05..0.71) is not above that of different masks (up to 0.61); a trained
    CUT3R keeps its state tokens anchored to scene regions, which is what the association relies on."""
    source = make_geometry_source(mono_config(checkpoint), torch.device("cpu"))
    frame = scene.frames[0]
    masks = np.zeros((4, HEIGHT, WIDTH), bool)  # the four 16-pixel columns of the 3x4 patch grid
    for column in range(4):
        masks[column, :, 16 * column:16 * (column + 1)] = True
    shifted = frame.image.copy()
    shifted[1:] = frame.image[:-1]  # a one-pixel shift of the same view
    first = assoc.state_distribution_tokens(source.compute(Frame(frame.image, 0.0)).state_attention, masks)
    source.reset()
    second = assoc.state_distribution_tokens(source.compute(Frame(shifted, 0.1)).state_attention, masks)
    similarity = assoc.cosine_matrix(first, second)
    off_diagonal = similarity[~np.eye(len(masks), dtype=bool)]
    assert np.diag(similarity).min() > off_diagonal.max(), similarity

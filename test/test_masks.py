from functools import partial

import cv2
import numpy as np
import pytest
import torch

from moonseg3r_ros.core.config import MaskConfig, PipelineConfig
from moonseg3r_ros.core.masks import (GroundTruthMasks, MaskError, PrecomputedMasks, SamMasks, WeightFreeMasks,
                                      filter_masks, make_mask_source)
from moonseg3r_ros.core.types import Frame, FrameGeometry


def _two_squares(h=40, w=60):
    image = np.full((h, w, 3), 120, np.uint8)
    image[5:20, 5:25] = (200, 30, 30)
    image[22:38, 30:55] = (30, 40, 200)
    ids = np.zeros((h, w), np.int32)
    ids[5:20, 5:25] = 3
    ids[22:38, 30:55] = 9
    return image, ids


def test_filter_masks_area_and_count():
    masks = np.zeros((3, 10, 10), bool)
    masks[0, :2, :2] = True  # 4 px
    masks[1, :5, :5] = True  # 25 px
    masks[2, :6, :6] = True  # 36 px
    out = filter_masks(masks, np.array([0.9, 0.5, 0.5]), min_area=5, max_masks=1)
    assert len(out) == 1 and out.masks[0].sum() == 36  # tie in score -> larger area first
    out = filter_masks(masks, np.array([0.9, 0.8, 0.5]), min_area=5, max_masks=5)
    assert [m.sum() for m in out.masks] == [25, 36]


def test_ground_truth_masks():
    image, ids = _two_squares()
    out = GroundTruthMasks(min_area=10, max_masks=10).generate(Frame(image, 0.0, instance_ids=ids))
    assert len(out) == 2
    np.testing.assert_array_equal(out.masks[0], ids == 3)
    np.testing.assert_array_equal(out.masks[1], ids == 9)
    with pytest.raises(MaskError, match="no instance_ids"):
        GroundTruthMasks().generate(Frame(image, 0.0))


def test_weight_free_masks_find_coloured_objects():
    image, ids = _two_squares()
    out = WeightFreeMasks(min_area=50, max_masks=10).generate(Frame(image, 0.0))
    for object_id in (3, 9):
        target = ids == object_id
        ious = [(m & target).sum() / (m | target).sum() for m in out.masks]
        assert max(ious) > 0.95


def test_weight_free_masks_split_equal_colours_at_depth_steps():
    image = np.full((20, 30, 3), 90, np.uint8)
    depth = np.full((20, 30), 2.0, np.float32)
    depth[:, 15:] = 3.0
    points = np.zeros((20, 30, 3), np.float32)
    points[..., 2] = depth
    geometry = FrameGeometry(np.eye(4), points, points, np.ones((20, 30), np.float32), np.ones((20, 30), bool))
    source = WeightFreeMasks(min_area=10)
    assert len(source.generate(Frame(image, 0.0))) == 1
    out = source.generate(Frame(image, 0.0), geometry)
    assert len(out) == 2 and sorted(m.sum() for m in out.masks) == [300, 300]


def test_precomputed_npz_and_png(tmp_path):
    image, ids = _two_squares()
    np.savez(tmp_path / "000003.npz", masks=np.stack([ids == 3, ids == 9]), scores=np.array([0.2, 0.9]))
    cv2.imwrite(str(tmp_path / "4.png"), ids.astype(np.uint16))
    source = PrecomputedMasks(str(tmp_path), min_area=10, max_masks=10)
    out = source.generate(Frame(image, 0.0, frame_index=3))
    assert len(out) == 2 and out.scores.tolist() == pytest.approx([0.9, 0.2])
    np.testing.assert_array_equal(out.masks[0], ids == 9)
    out = source.generate(Frame(image, 0.0, frame_index=4))
    assert len(out) == 2 and out.masks[0].sum() == (ids == 3).sum()
    with pytest.raises(MaskError, match="no precomputed masks for frame 5"):
        source.generate(Frame(image, 0.0, frame_index=5))
    with pytest.raises(MaskError, match="does not exist"):
        PrecomputedMasks(str(tmp_path / "nope"))


def tiny_sam(seed=0):
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    dim, size, patch = 32, 64, 16
    return Sam(
        image_encoder=ImageEncoderViT(img_size=size, patch_size=patch, embed_dim=dim, depth=1, num_heads=2,
                                      mlp_ratio=2, out_chans=dim, qkv_bias=True,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=False,
                                      window_size=0, global_attn_indexes=()),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(size // patch, size // patch),
                                     input_image_size=(size, size), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=1, embedding_dim=dim,
                                 mlp_dim=64, num_heads=2), transformer_dim=dim, iou_head_depth=2,
                                 iou_head_hidden_dim=16),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).eval()


def test_sam_masks_with_a_tiny_random_model():
    image, _ = _two_squares()
    config = MaskConfig(source="sam", points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                        min_mask_area=1, max_masks=5)
    out = SamMasks(config, torch.device("cpu"), model=tiny_sam()).generate(Frame(image, 0.0))
    assert out.masks.shape[1:] == (40, 60) and out.masks.dtype == bool
    assert len(out) <= 5 and ((out.scores >= 0) & (out.scores <= 1)).all()
    assert all(m.sum() >= 1 for m in out.masks)


def test_sam_checkpoint_errors(tmp_path):
    config = PipelineConfig()
    config.masks.source = "sam"
    with pytest.raises(MaskError, match="sam_checkpoint is empty"):
        make_mask_source(config, torch.device("cpu"))
    bad = tmp_path / "sam.pth"
    torch.save({"nothing": torch.zeros(1)}, bad)
    config.masks.sam_checkpoint = str(bad)
    with pytest.raises(MaskError, match="does not load"):
        make_mask_source(config, torch.device("cpu"))


def test_factory_default_is_rgbd_and_weight_free_stays_selectable():
    from moonseg3r_ros.core.masks_rgbd import RgbdSegmentMasks

    config = PipelineConfig()
    assert isinstance(make_mask_source(config, torch.device("cpu")), RgbdSegmentMasks)
    config.masks.source = "weight_free"
    assert isinstance(make_mask_source(config, torch.device("cpu")), WeightFreeMasks)


def test_label_mask_sets_match_dense_masks():
    """A MaskSet given as a label image gives the same results as the same masks as an NxHxW stack."""
    from moonseg3r_ros.core.association import combine_groups, pool_masks_to_grid
    from moonseg3r_ros.core.lifting import coverage_weights, mask_point_stats
    from moonseg3r_ros.core.masks import masks_from_labels, select_masks
    from moonseg3r_ros.core.masks import paint_labels
    from moonseg3r_ros.core.types import MaskSet

    rng = np.random.default_rng(3)
    ids = np.kron(rng.integers(0, 9, (6, 8)), np.ones((8, 8), np.int64))  # 48x64, blocky ids 0..8
    ids[rng.random(ids.shape) < 0.05] = 0
    labelled = masks_from_labels(ids, min_area=1, max_masks=6)
    assert labelled.labels is not None and len(labelled) == 6
    dense = MaskSet(labelled.masks.copy(), labelled.scores.copy())
    assert dense.labels is None and dense.masks.sum() == (labelled.labels > 0).sum()
    points = rng.normal(size=(48, 64, 3)).astype(np.float32)
    valid = rng.random((48, 64)) > 0.2
    for stride in (1, 3):
        for a, b in zip(mask_point_stats(labelled, points, valid, stride, 0.1),
                        mask_point_stats(dense.masks, points, valid, stride, 0.1)):
            np.testing.assert_array_equal(a, b)
    centres = np.zeros((6, 2), np.float32)
    for v in (None, valid):
        np.testing.assert_array_equal(coverage_weights(labelled, 6, 8, 4, centres, v),
                                      coverage_weights(dense.masks, 6, 8, 4, centres, v))
    for grid in ((6, 8), (5, 7)):  # divisible (bincount) and general (box filter) cases
        np.testing.assert_allclose(pool_masks_to_grid(labelled, *grid), pool_masks_to_grid(dense.masks, *grid),
                                   atol=1e-6)
    groups = [np.array([0, 2]), np.array([1]), np.array([3, 4, 5])]
    queries = rng.normal(size=(6, 4)).astype(np.float32)
    boxes = np.sort(rng.normal(size=(6, 2, 3)), axis=1).astype(np.float32)
    fused_l = combine_groups(groups, labelled, queries, boxes, queries)
    fused_d = combine_groups(groups, dense.masks, queries, boxes, queries)
    np.testing.assert_array_equal(fused_l[0].masks, fused_d[0])
    for a, b in zip(fused_l[1:], fused_d[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    map_ids = np.array([11, 12, 13, 14, 15, 16])
    np.testing.assert_array_equal(paint_labels(labelled, map_ids, valid), paint_labels(dense.masks, map_ids, valid))
    keep = np.array([True, False, True, True, False, True])
    np.testing.assert_array_equal(select_masks(labelled, keep).masks, dense.masks[keep])


def test_paint_labels_smallest_on_top():
    from moonseg3r_ros.core.masks import paint_labels
    masks = np.zeros((2, 4, 4), bool)
    masks[0] = True
    masks[1, :2, :2] = True
    labels = paint_labels(masks, np.array([5, 7]))
    assert labels[0, 0] == 7 and labels[3, 3] == 5
    valid = np.ones((4, 4), bool)
    valid[0, 0] = False
    assert paint_labels(masks, np.array([5, 7]), valid)[0, 0] == 0

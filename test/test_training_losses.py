"""The training losses with hand-checkable values (moonseg3r_ros/training/losses.py)."""
import math

import numpy as np

import pytest
import torch

from moonseg3r_ros.core.pixel_head import PixelHead, frame_features, mask_logits
from moonseg3r_ros.training.losses import (LossConfig, association_loss, bce_dice, distillation_loss, logits_at,
                                           mask_loss, normalized_gram, total_loss)


def block_masks() -> torch.Tensor:
    """2 x 8 x 8: left half, right half."""
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :, :4] = True
    masks[1, :, 4:] = True
    return masks


def perfect_pixels(masks: torch.Tensor, margin: float = 40.0) -> torch.Tensor:
    """G (N x H x W) whose one-hot queries give logits +-margin exactly on the masks."""
    dim = masks.shape[0]
    return margin * math.sqrt(dim) * (2 * masks.float() - 1)


def test_perfect_prediction_gives_zero_seg_loss_and_wrong_is_large():
    masks = block_masks()
    queries = torch.eye(2)
    pixels = perfect_pixels(masks)
    dense = LossConfig(points=0)
    assert mask_loss(mask_logits(queries, pixels), masks, dense).item() < 1e-6
    # point sampling on a grid of the same size: the sampled logits are bilinear mixes only across the boundary
    sampled = mask_loss(mask_logits(queries, pixels), masks, LossConfig(points=512), torch.Generator().manual_seed(0))
    assert sampled.item() < 0.2
    inverted = mask_loss(mask_logits(queries, -pixels), masks, dense)
    assert inverted.item() > 30  # BCE ~ 40 per pixel, Dice ~ 1


def test_bce_and_dice_values_by_hand():
    logits = torch.zeros(1, 4)
    targets = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    bce, dice = bce_dice(logits, targets)
    assert bce.item() == pytest.approx(math.log(2), abs=1e-6)  # sigmoid(0) = 1/2 everywhere
    assert dice.item() == pytest.approx(1 - (2 * 1.0 + 1) / (2.0 + 2.0 + 1), abs=1e-6)  # sum p t = 1, sum p = 2
    bce_w, dice_w = bce_dice(logits, targets, bce_weight=2.0, dice_weight=0.5)
    assert bce_w.item() == pytest.approx(2 * math.log(2), abs=1e-6)
    assert dice_w.item() == pytest.approx(0.5 * 0.4, abs=1e-6)


def test_logits_are_sampled_bilinearly_at_pixel_positions():
    logits = torch.tensor([[[0.0, 2.0], [4.0, 6.0]]])  # 1 x 2 x 2 patch grid over a 4 x 4 image
    points = torch.tensor([[1.0, 1.0], [3.0, 3.0], [2.0, 2.0]])  # (row, col): two patch centres and the middle
    values = logits_at(logits, points, 4, 4)
    torch.testing.assert_close(values, torch.tensor([[0.0, 6.0, 3.0]]))


def test_mask_logits_are_dot_products_scaled_by_sqrt_dim():
    queries = torch.tensor([[1.0, 2.0, 0.0, 0.0]])
    pixels = torch.ones(4, 1, 3)
    torch.testing.assert_close(mask_logits(queries, pixels), torch.full((1, 1, 3), 3.0 / 2.0))


def test_identical_gram_matrices_give_zero_distillation():
    torch.manual_seed(0)
    f2d = torch.randn(5, 3, 4)
    rotation, _ = torch.linalg.qr(torch.randn(5, 5))
    rotated = (rotation @ f2d.reshape(5, -1)).reshape(5, 3, 4)  # same cosines between patches
    config = LossConfig(center=False)
    assert distillation_loss(f2d, f2d, f2d, config).item() < 1e-10
    assert distillation_loss(3.0 * rotated, f2d, f2d, config).item() < 1e-10
    centred = LossConfig(center=True)
    assert distillation_loss(rotated + 0.0, f2d, None, centred).item() < 1e-10
    assert distillation_loss(torch.randn(5, 3, 4), f2d, f2d, config).item() > 0.05


def test_distillation_value_by_hand_and_undefined_f3d_patches_left_out():
    config = LossConfig(center=False)
    f2d = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(2, 1, 2)  # two orthogonal patches: Gram = I
    g = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).reshape(2, 1, 2)  # two equal patches: Gram = all ones
    # || ones - I ||_F^2 / 4 entries = 2 / 4
    assert distillation_loss(g, f2d, None, config).item() == pytest.approx(0.5, abs=1e-6)
    f3d_undefined = torch.zeros(3, 1, 2)  # no valid geometry anywhere: the 3D term is left out
    assert distillation_loss(g, f2d, f3d_undefined, config).item() == pytest.approx(0.5, abs=1e-6)
    f3d = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]).reshape(3, 1, 2)  # the 3D Gram equals G's
    assert distillation_loss(g, f2d, f3d, config).item() == pytest.approx(0.5, abs=1e-6)
    f3d_orth = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]).reshape(3, 1, 2)
    assert distillation_loss(g, f2d, f3d_orth, config).item() == pytest.approx(1.0, abs=1e-6)


def test_normalized_gram_is_cosine_matrix():
    x = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    gram = normalized_gram(x, center=False)
    torch.testing.assert_close(gram, torch.tensor([[1.0, 1 / math.sqrt(2)], [1 / math.sqrt(2), 1.0]]))


def test_total_uses_the_configured_weights():
    config = LossConfig()
    assert (config.seg_weight, config.dist_weight, config.xseg_weight) == (1.0, 0.1, 0.5)  # the paper's
    total = total_loss(torch.tensor(2.0), torch.tensor(3.0), torch.tensor(4.0), config)
    assert total.item() == pytest.approx(2.0 + 0.3 + 2.0)
    other = LossConfig(seg_weight=0.0, dist_weight=1.0, xseg_weight=0.0)
    assert total_loss(torch.tensor(2.0), torch.tensor(3.0), torch.tensor(4.0), other).item() == pytest.approx(3.0)


def test_total_adds_the_association_term_with_its_weight():
    assert LossConfig().assoc_weight == 0.0  # not in the paper: off unless configured
    config = LossConfig(assoc_weight=0.25)
    total = total_loss(torch.tensor(2.0), torch.tensor(3.0), torch.tensor(4.0), config, torch.tensor(8.0))
    assert total.item() == pytest.approx(2.0 + 0.3 + 2.0 + 2.0)


def test_association_loss_values_by_hand():
    context = torch.eye(3)[:2]  # two retrieved instances along x and y
    queries = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # mask 0 is instance 0, mask 1 is new (along z)
    targets = torch.tensor([0, -1])
    # logits / T: row 0 [1, 0, 0.5] / T, row 1 [0, 0, 0.5] / T
    t = 0.1
    row0 = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 1 + math.exp(0.5 / t)))
    row1 = -math.log(math.exp(0.5 / t) / (2 + math.exp(0.5 / t)))
    got = association_loss(queries, context, targets, temperature=t, new_cosine=0.5)
    assert got.item() == pytest.approx((row0 + row1) / 2, rel=1e-5)
    # the right answers with a sharp softmax -> ~0; swapping the targets -> large
    assert association_loss(queries, context, targets, temperature=0.01).item() < 1e-6
    assert association_loss(queries, context, torch.tensor([1, 0]), temperature=0.01).item() > 40


def test_association_loss_pulls_a_query_to_its_instance():
    context = torch.eye(4)[:3]
    query = torch.tensor([[0.2, 1.0, 0.1, 0.3]], requires_grad=True)
    association_loss(query, context, torch.tensor([0])).backward()
    step = -query.grad[0]
    assert step[0] > 0 and step[1] < 0  # towards instance 0, away from the instance it is closest to now
    assert association_loss(query[:0], context, torch.tensor([], dtype=torch.int64)).item() == 0.0


def test_pixel_head_reads_f3d_resampled_onto_the_f2d_grid():
    f2d = torch.zeros(2, 4, 4)
    f3d = torch.arange(4.0).reshape(1, 2, 2)  # coarser grid: each F3d cell covers 2x2 F2d cells
    features = frame_features(f2d, f3d)
    assert features.shape == (3, 4, 4)
    torch.testing.assert_close(features[2], torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]))
    head = PixelHead(2, 1, 8, hidden=16)
    assert head(f2d, f3d).shape == (8, 4, 4)
    with pytest.raises(ValueError, match="F3d"):
        head(f2d, None)


def test_patch_positions_average_valid_pixels_and_encode_none_as_zero():
    from moonseg3r_ros.core.pixel_head import patch_positions

    points = np.zeros((4, 4, 3), np.float32)
    points[..., 0] = np.arange(4)[None, :]  # x = column
    valid = np.ones((4, 4), bool)
    valid[:2, :2] = False  # the top-left cell has no valid pixel
    valid[2, 3] = False
    pos = patch_positions(points, valid, 2, 2)
    assert torch.isnan(pos[:, 0, 0]).all()
    assert pos[0, 0, 1].item() == pytest.approx(2.5) and pos[0, 1, 0].item() == pytest.approx(0.5)
    assert pos[0, 1, 1].item() == pytest.approx((2 + 2 + 3) / 3)  # the invalid pixel (2, 3) is left out
    head = PixelHead(1, 0, 4, hidden=8, pos_frequencies=3)
    encoded = head._encode(pos)
    assert encoded.shape == (6, 2, 2) and torch.all(encoded[:, 0, 0] == 0) and torch.isfinite(encoded).all()
    assert encoded[:, 1, 1].norm().item() == pytest.approx(1.0, abs=1e-5)  # [sin, cos] / sqrt(L): unit norm

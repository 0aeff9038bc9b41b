import numpy as np
import torch

from moonseg3r_ros.core.lifting import QueryLifter, coverage_weights, fourier_encoding, mask_point_stats
from moonseg3r_ros.core.masks import masks_from_labels


def _scene(h=40, w=40):
    """Two masks over a world pointmap whose x = column/10, y = row/10, z = 1."""
    rows, cols = np.mgrid[:h, :w].astype(np.float32)
    points = np.stack([cols / 10, rows / 10, np.ones_like(rows)], axis=2)
    masks = np.zeros((2, h, w), bool)
    masks[0, :20, :20] = True
    masks[1, 20:, 10:30] = True
    return masks, points, np.ones((h, w), bool)


def test_point_stats_boxes_centroids_counts():
    masks, points, valid = _scene()
    valid[0, 0] = False
    boxes, centroids, counts, centres = mask_point_stats(masks, points, valid, stride=1, percentile=0.0)
    np.testing.assert_allclose(boxes[1], [[1.0, 2.0, 1.0], [2.9, 3.9, 1.0]], atol=1e-6)
    np.testing.assert_allclose(centroids[1], [1.95, 2.95, 1.0], atol=1e-5)
    assert counts.tolist() == [399, 400]
    np.testing.assert_allclose(centres[0], [9.5, 9.5])


def test_point_stats_robust_percentiles_ignore_outliers():
    masks, points, valid = _scene()
    points[0, 0] = (100.0, 100.0, 100.0)
    boxes, _, _, _ = mask_point_stats(masks, points, valid, stride=1, percentile=0.02)
    assert boxes[0, 1].max() < 2.0


def test_mask_without_valid_points():
    masks, points, valid = _scene()
    valid[:20, :20] = False
    boxes, centroids, counts, _ = mask_point_stats(masks, points, valid, stride=2, percentile=0.02)
    assert counts[0] == 0 and (boxes[0] == 0).all() and counts[1] == 400


def test_coverage_weights():
    masks, _, _ = _scene()
    w = coverage_weights(masks, 2, 2, samples=4, fallback_pixels=np.zeros((2, 2), np.float32))
    np.testing.assert_allclose(w[0], [1, 0, 0, 0])
    np.testing.assert_allclose(w[1], [0, 0, 0.5, 0.5])
    tiny = np.zeros((1, 40, 40), bool)
    tiny[0, 31, 31] = True  # missed by the sampling grid: falls back to the mask's pixel centre
    w = coverage_weights(tiny, 2, 2, samples=2, fallback_pixels=np.array([[31.0, 31.0]]))
    np.testing.assert_allclose(w[0], [0, 0, 0, 1])


def test_fourier_encoding_is_a_position_kernel():
    bands = torch.randn(3, 512, generator=torch.Generator().manual_seed(0)) / 0.5
    enc = fourier_encoding(torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [1.0, 0, 0]]), bands)
    np.testing.assert_allclose(enc.norm(dim=1).numpy(), 1.0, atol=1e-5)
    near, far = float(enc[0] @ enc[1]), float(enc[0] @ enc[2])
    assert abs(near - np.exp(-0.01 / 0.5)) < 0.1 and abs(far - np.exp(-1 / 0.5)) < 0.1


def test_lifter_queries_separate_objects():
    masks, points, valid = _scene()
    f2d = torch.zeros(4, 4, 4)
    f2d[0, :2] = 1.0  # top half: semantic feature channel 0
    f2d[1, 2:] = 1.0  # bottom half: channel 1
    lifter = QueryLifter(dim=32, semantic_dim=4, geometric_dim=2, seed=0)
    f3d = torch.ones(2, 4, 4)
    out = lifter(masks, f2d, f3d, points, valid)
    assert out.queries.shape == (2, 32) and out.boxes.shape == (2, 2, 3)
    again = lifter(masks[::-1].copy(), f2d, f3d, points, valid)
    torch.testing.assert_close(again.queries[0], out.queries[1])
    cos = torch.nn.functional.cosine_similarity(out.queries[0], out.queries[1], dim=0)
    assert cos < 0.7
    same = QueryLifter(dim=32, semantic_dim=4, geometric_dim=2, seed=0)(masks, f2d, f3d, points, valid)
    torch.testing.assert_close(same.queries, out.queries)  # seeded


def test_lifter_no_masks():
    _, points, valid = _scene()
    out = QueryLifter(16, 4)(np.zeros((0, 40, 40), bool), torch.zeros(4, 4, 4), None, points, valid)
    assert out.queries.shape == (0, 16) and out.boxes.shape == (0, 2, 3)


def test_coverage_weights_count_only_valid_pixels():
    masks, _, valid = _scene()
    valid[:, :20] = False  # mask 1 (rows 20.., cols 10..30) keeps only its right half: cell 3
    labels = np.zeros((40, 40), np.int32)
    labels[masks[0]], labels[masks[1]] = 1, 2
    fallback = np.zeros((2, 2), np.float32)
    for given in (masks, masks_from_labels(labels, 1, 10)):  # mask stack and label image paths
        w = coverage_weights(given, 2, 2, samples=4, fallback_pixels=fallback, valid=valid)
        np.testing.assert_allclose(w[1], [0, 0, 0, 1])
        np.testing.assert_allclose(w[0], [1, 0, 0, 0])  # no valid pixel: one-hot at the fallback pixel's cell

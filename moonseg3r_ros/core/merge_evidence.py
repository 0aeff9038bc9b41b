"""Boundary evidence for the intra-frame merge: may masks i and j be parts of ONE object?

The merge exists to rejoin an over-segmented object. Two parts of one surface meet along a boundary where
the surface goes on smoothly; an object resting on its support, or two touching objects, meet along an
occluding contour (depth jumps) or a concave crease (the contact line). So the evidence is measured on the
pixel pairs (p, q) of the label image with p in mask i and q in mask j, horizontal and vertical neighbours:

    inverse depth w = 1/z (affine in pixel coordinates on any plane, so planes give exact zero residuals);
    along the pair's direction take a = p - d, p, q, b = q + d and the one-sided slopes
        s1 = w_p - w_a,  s_m = w_q - w_p,  s2 = w_b - w_q;
    jump   |s_m - (s1 + s2) / 2| > depth_step * w_p          -> the pair is discontinuous;
    crease slope angles t = atan(f * s / w) (f the focal length along d; t is the angle of the surface
           normal to the viewing ray in the plane of d), concave when t2 - t1 > concave_angle
           (a valley seen from the camera: w'' > 0; convex edges and smooth bends are fine).

A pair is smooth when it is neither discontinuous nor concave (its four pixels need valid depth; pairs at the
image border or with invalid depth count as not smooth). `merge_allowed` links i, j when they share at least
`min_shared` pairs and `min_shared_fraction` of the smaller mask's boundary pairs, and at least
`min_smooth_fraction` of the shared pairs are smooth. The pipeline ANDs this with the query similarity and the
box contact of `association.merge_within_frame`.

Cost: a few passes over HxW plus work on the boundary pixels only; no Python loop over masks or pairs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class BoundaryEvidence:
    """Pair counts of one frame's label image (N masks)."""

    shared: np.ndarray  # NxN int64 neighbour pixel pairs between masks i and j (symmetric, 0 diagonal)
    smooth: np.ndarray  # NxN int64 of those, pairs where depth goes on smoothly (no jump, no concave crease)
    perimeter: np.ndarray  # N int64 neighbour pairs of each mask with any other label (0 = none included)


def boundary_evidence(labels: np.ndarray, n: int, depth: np.ndarray, valid: np.ndarray,
                      focal: tuple[float, float], depth_step: float = 0.01,
                      concave_angle: float = 20.0) -> BoundaryEvidence:
    """labels HxW int (k+1 = mask k, 0 = none), depth HxW camera z, valid HxW bool, focal (fx, fy) in pixels
    -> BoundaryEvidence (see the module docstring; concave_angle in degrees)."""
    labels = np.asarray(labels)
    z = np.asarray(depth)
    ok = np.asarray(valid, bool)
    shared = np.zeros(n * n, np.int64)
    smooth = np.zeros(n * n, np.int64)
    perimeter = np.zeros(n + 1, np.int64)
    limit = math.radians(concave_angle)
    for axis, f in ((1, focal[0]), (0, focal[1])):
        lab = labels.T if axis else labels  # pairs along the first axis: rows r, r + 1 (a view, no copy)
        near, far = lab[:-1], lab[1:]
        rows, cols = np.nonzero(near != far)
        li, lj = near[rows, cols].astype(np.int64), far[rows, cols].astype(np.int64)
        perimeter += np.bincount(li, minlength=n + 1)[: n + 1] + np.bincount(lj, minlength=n + 1)[: n + 1]
        both = (li > 0) & (lj > 0)
        rows, cols, li, lj = rows[both], cols[both], li[both] - 1, lj[both] - 1
        code = np.minimum(li, lj) * n + np.maximum(li, lj)
        shared += np.bincount(code, minlength=n * n)
        good = _smooth_pairs(z.T if axis else z, ok.T if axis else ok, rows, cols, f, depth_step, limit)
        smooth += np.bincount(code[good], minlength=n * n)
    shared_nn = shared.reshape(n, n)
    smooth_nn = smooth.reshape(n, n)
    return BoundaryEvidence(shared_nn + shared_nn.T, smooth_nn + smooth_nn.T, perimeter[1:])


def _smooth_pairs(z: np.ndarray, ok: np.ndarray, rows: np.ndarray, cols: np.ndarray, focal: float,
                  depth_step: float, limit: float) -> np.ndarray:
    """Depth LxM, valid LxM, pairs (rows[k], cols[k]) - (rows[k] + 1, cols[k]) -> K bool smooth.
    Only the four pixels of each pair are read (inverse depth computed on them, not on the image)."""
    length = z.shape[0]
    inside = (rows >= 1) & (rows + 2 < length)
    r = np.clip(rows, 1, max(length - 3, 1))
    around = np.stack([r - 1, r, r + 1, r + 2])  # 4xK rows of a, p, q, b
    depth = z[around, cols[None, :]].astype(np.float64)
    fine = ok[around, cols[None, :]].all(axis=0) & np.isfinite(depth).all(axis=0) & (depth > 0).all(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        wa, wp, wq, wb = 1.0 / depth
        s1, sm, s2 = wp - wa, wq - wp, wb - wq
        jump = np.abs(sm - 0.5 * (s1 + s2)) > depth_step * wp
        crease = np.arctan(focal * s2 / wq) - np.arctan(focal * s1 / wp) > limit
    return inside & fine & ~jump & ~crease


def merge_allowed(evidence: BoundaryEvidence, min_shared: int = 5, min_shared_fraction: float = 0.05,
                  min_smooth_fraction: float = 0.6) -> np.ndarray:
    """NxN bool: pairs whose shared boundary is long enough and mostly smooth (see the module docstring)."""
    shared = evidence.shared
    smaller = np.minimum(evidence.perimeter[:, None], evidence.perimeter[None, :])
    long_enough = (shared >= min_shared) & (shared >= min_shared_fraction * smaller)
    smooth = evidence.smooth >= min_smooth_fraction * np.maximum(shared, 1)
    allowed = long_enough & smooth
    np.fill_diagonal(allowed, False)
    return allowed


def label_image(masks, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """A MaskSet (or NxHxW bool masks) -> HxW int32 label image k+1 = mask k (overlaps: the smaller mask)."""
    from .masks import paint_labels  # masks imports much of core; keep this module light to import

    n = len(masks)
    return paint_labels(masks, np.arange(1, n + 1, dtype=np.int32), valid)


def allowed_merges(masks, geometry, config) -> np.ndarray:
    """The pipeline's call: MaskSet (N masks), FrameGeometry, AssociationConfig -> NxN bool `merge_allowed`."""
    from .camera import estimate_intrinsics

    k = geometry.intrinsics
    if k is None:
        k = estimate_intrinsics(geometry.points_cam, geometry.valid)
    labels = masks.labels if getattr(masks, "labels", None) is not None else label_image(masks, geometry.valid)
    evidence = boundary_evidence(labels, len(masks), geometry.points_cam[..., 2], geometry.valid,
                                 (float(k[0, 0]), float(k[1, 1])), config.merge_depth_step,
                                 config.merge_concave_angle)
    return merge_allowed(evidence, config.merge_min_shared, config.merge_min_shared_fraction,
                         config.merge_min_smooth_fraction)

"""The three self-supervised losses of MoonSeg3R's query refinement (paper's Figure 2 (b) and (c)).

L_seg   Each refined query q'_m predicts its own 2D mask: BCE + Dice between sigmoid(logit(q'_m, psi(F))) and
        mask m (logits: `PixelHead.logits`, a scaled cosine by default). With point sampling (`points` > 0)
        both are evaluated at `points` random pixel positions
        shared by all masks of the frame (logits bilinearly sampled from the patch grid, targets read at the
        pixel); with `points` = 0 at every pixel (logits bilinearly upsampled to HxW).
        BCE is the mean over masks and points; Dice = mean over masks of 1 - (2 sum(p t) + 1) / (sum p + sum t + 1).
L_dist  Spatial-semantic distillation: || Gram(G) - Gram(F2d) ||^2 + || Gram(G) - Gram(F3d) ||^2 where Gram(X) =
        X_n X_n^T over the P patches of the frame and X_n are the per-patch feature vectors, centred (minus the
        frame's mean patch vector, `center`) and L2-normalised: entries are cosine similarities in [-1, 1]. The
        squared Frobenius norms are divided by the number of entries (a mean over patch pairs), so the value
        does not grow with the image size. Patches without F3d (no valid geometry: an all-zero vector) are left
        out of the 3D term. `patches` > 0 evaluates both on a random subset of that many patches.
L_xseg  Cross-frame segmentation: the queries retrieved from the query index memory for frame t predict, through
        psi(F_t), the frame-t masks that their memory cells project into (same BCE + Dice as L_seg).
L_assoc Query association (ours; the paper has no such term, `assoc_weight` 0 = the paper's recipe): the refined
        query q'_m of a frame mask is classified among the clip's bank queries retrieved for that frame plus a
        "new instance" option, by softmax cross-entropy over [cos(q'_m, ctx_k) / T for each retrieved k,
        `assoc_new_cosine` / T]; the target is the id the mask's 3D points were assigned to (geometry only, as for
        L_xseg) or "new" for a mask no retrieved id claims. It trains what the pipeline's Hungarian matching and
        intra-frame merge compare: the cosine of the queries of the same instance across frames.
Total = w_seg L_seg + w_dist L_dist + w_xseg L_xseg + w_assoc L_assoc (paper: 1, 0.1, 0.5; no L_assoc).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F



@dataclass
class LossConfig:
    seg_weight: float = 1.0  # paper: 1.0
    dist_weight: float = 0.1  # paper: 0.1
    xseg_weight: float = 0.5  # paper: 0.5
    assoc_weight: float = 0.0  # L_assoc (not in the paper: 0 = the paper's losses)
    assoc_temperature: float = 0.1  # T of L_assoc's softmax over cosines
    assoc_new_cosine: float = 0.5  # cosine of L_assoc's "new instance" option (a match must beat it)
    assoc_new_targets: bool = True  # masks no retrieved id claims are L_assoc samples with the target "new"
    bce_weight: float = 1.0  # L_seg / L_xseg = bce_weight * BCE + dice_weight * Dice
    dice_weight: float = 1.0
    points: int = 2048  # sampled pixels per frame for L_seg / L_xseg (0 = every pixel)
    dist_patches: int = 0  # patches for L_dist (0 = all)
    center: bool = True  # centre the patch vectors before normalising them (Gram of L_dist)


def sample_points(height: int, width: int, count: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """count x 2 float (row, col) pixel positions, uniform over the HxW image (continuous coordinates)."""
    unit = torch.rand(count, 2, generator=generator)
    return unit * torch.tensor([float(height), float(width)])


def logits_at(logits: torch.Tensor, points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Patch-grid logits N x h x w, pixel positions K x 2 (row, col) on an HxW image -> N x K (bilinear)."""
    grid = torch.stack([points[:, 1] / width * 2 - 1, points[:, 0] / height * 2 - 1], dim=1)  # x, y in [-1, 1]
    grid = grid.to(logits.device, logits.dtype)[None, None]  # 1 x 1 x K x 2
    return F.grid_sample(logits[:, None], grid.expand(logits.shape[0], -1, -1, -1), mode="bilinear",
                         padding_mode="border", align_corners=False)[:, 0, 0]


def targets_at(masks: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Masks N x H x W bool, positions K x 2 -> N x K float (the mask value at the pixel containing each point)."""
    height, width = masks.shape[1:]
    rows = points[:, 0].long().clamp(0, height - 1).to(masks.device)
    cols = points[:, 1].long().clamp(0, width - 1).to(masks.device)
    return masks[:, rows, cols].float()


def bce_dice(logits: torch.Tensor, targets: torch.Tensor, bce_weight: float = 1.0,
             dice_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """logits N x K, targets N x K in [0, 1] -> (BCE mean, Dice mean over the N rows)."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="mean")
    prob = logits.sigmoid()
    dice = 1 - (2 * (prob * targets).sum(1) + 1) / (prob.sum(1) + targets.sum(1) + 1)
    return bce_weight * bce, dice_weight * dice.mean()


def mask_loss(logits: torch.Tensor, masks: torch.Tensor, config: LossConfig,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """L_seg (or L_xseg): patch-grid mask logits N x h x w (`PixelHead.logits`) against masks N x H x W bool."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    height, width = masks.shape[1:]
    if config.points > 0:
        points = sample_points(height, width, config.points, generator)
        predicted, target = logits_at(logits, points, height, width), targets_at(masks, points)
    else:
        predicted = F.interpolate(logits[:, None], size=(height, width), mode="bilinear",
                                  align_corners=False)[:, 0].reshape(len(masks), -1)
        target = masks.reshape(len(masks), -1).float().to(predicted.device)
    bce, dice = bce_dice(predicted, target, config.bce_weight, config.dice_weight)
    return bce + dice


def normalized_gram(features: torch.Tensor, center: bool = True,
                    keep: Optional[torch.Tensor] = None) -> torch.Tensor:
    """P x C patch vectors -> P x P Gram matrix of the centred (optional), L2-normalised vectors (cosines).

    `keep` (P bool) restricts the centring mean to those patches (the others still get rows)."""
    features = features.float()
    if center:
        reference = features if keep is None else features[keep]
        features = features - reference.mean(dim=0, keepdim=True)
    unit = F.normalize(features, dim=1, eps=1e-8)
    return unit @ unit.T


def distillation_loss(pixels: torch.Tensor, features_2d: torch.Tensor, features_3d: Optional[torch.Tensor],
                      config: LossConfig, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """L_dist for G D x h x w against F2d C2 x h x w and F3d C3 x h x w (on the same grid) or None."""
    dim = pixels.shape[0]
    g = pixels.reshape(dim, -1).T  # P x D
    f2d = features_2d.reshape(features_2d.shape[0], -1).T.to(g.device)
    count = g.shape[0]
    if 0 < config.dist_patches < count:
        chosen = torch.randperm(count, generator=generator)[: config.dist_patches].to(g.device)
        g, f2d = g[chosen], f2d[chosen]
    else:
        chosen = None
    gram = normalized_gram(g, config.center)
    loss = (gram - normalized_gram(f2d, config.center)).pow(2).mean()
    if features_3d is not None:
        f3d = features_3d.reshape(features_3d.shape[0], -1).T.to(g.device)
        if chosen is not None:
            f3d = f3d[chosen]
        defined = f3d.abs().sum(dim=1) > 0
        if int(defined.sum()) >= 2:
            g3 = normalized_gram(g[defined], config.center)
            loss = loss + (g3 - normalized_gram(f3d[defined], config.center)).pow(2).mean()
    return loss


def association_loss(queries: torch.Tensor, context: torch.Tensor, targets: torch.Tensor,
                     temperature: float = 0.1, new_cosine: float = 0.5) -> torch.Tensor:
    """L_assoc: refined queries N x D, retrieved bank queries K x D, targets N int64 (index into context, or -1 =
    a new instance) -> mean over the N masks of the cross-entropy of the softmax over
    [cos(q_n, ctx_k) / T, new_cosine / T]."""
    if queries.shape[0] == 0:
        return queries.sum() * 0.0
    cosines = F.normalize(queries.float(), dim=1, eps=1e-8) @ F.normalize(context.float(), dim=1, eps=1e-8).T
    new = cosines.new_full((cosines.shape[0], 1), new_cosine)
    logits = torch.cat([cosines, new], dim=1) / temperature
    classes = torch.where(targets < 0, torch.full_like(targets, context.shape[0]), targets).to(logits.device)
    return F.cross_entropy(logits, classes)


def total_loss(seg: torch.Tensor, dist: torch.Tensor, xseg: torch.Tensor, config: LossConfig,
               assoc: Optional[torch.Tensor] = None) -> torch.Tensor:
    """w_seg L_seg + w_dist L_dist + w_xseg L_xseg (+ w_assoc L_assoc)."""
    total = config.seg_weight * seg + config.dist_weight * dist + config.xseg_weight * xseg
    return total if assoc is None else total + config.assoc_weight * assoc

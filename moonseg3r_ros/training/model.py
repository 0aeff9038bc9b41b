"""The trainable refiner (eta, phi, psi) and its forward pass over a clip with the query index memory.

Per frame t of a clip (in order), mirroring the pipeline's keyframe:
    G_t   = psi(F2d_t, F3d_t)                                   D x h x w
    q_t   = eta(mask-pooled F2d, F3d, centroids)                N x D
    ctx_t = queries of the clip's bank for the ids visible in the memory from P_t (written by frames < t)
    q'_t  = phi(q_t, G_t, ctx_t)
    L_seg  += BCE+Dice(sigmoid(q'_t . G_t), M_t)
    L_dist += Gram distillation of G_t against F2d_t and F3d_t
    L_xseg += BCE+Dice(sigmoid(ctx_t . G_t), frame-t masks the retrieved ids' memory cells project into)
    L_assoc += softmax CE of each q'_t row over [cos to ctx_t, "new"], target: the id its mask was assigned to
then the memory and bank are updated with X_t and q'_t.

Which frame-t masks a retrieved id "projects into" (`plan_clip`, geometry only, computed once per clip): the id
claiming the memory cell of each valid pixel's 3D point (`QueryIndexMemory.ids_at`; that point is what the camera
sees, so occluded cells claim nothing); mask m is assigned to the visible id that claims the most of its valid
pixels that hit a visible id's cell when that is at least `assign_fraction` of them (and at least MIN_CLAIMED of
the mask's valid pixels hit such a cell: the memory holds points of a sub-grid only, so not every pixel's cell is
claimed). The id's target is the union of its assigned masks.
Assigned masks inherit the id (their cells and bank entry continue it); the others start new ids. The bank entry
of an id is the running mean of the q' of its masks (the pipeline's QueryBank rule); `detach_memory` stops the
gradient at the bank (the pipeline's bank holds plain arrays).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

from moonseg3r_ros.core.config import PipelineConfig
from moonseg3r_ros.core.lifting import fourier_encoding
from moonseg3r_ros.core.pixel_head import patch_positions, resample_to_grid
from moonseg3r_ros.core.query_memory import QueryIndexMemory
from moonseg3r_ros.core.refiner_weights import new_refiner_modules
from moonseg3r_ros.training.data import FrameRecord, make_lifter
from moonseg3r_ros.training.losses import LossConfig, association_loss, distillation_loss, mask_loss, total_loss


MIN_CLAIMED = 0.1  # share of a mask's valid pixels that must fall in visible claimed cells to be assigned


@dataclass
class ModelConfig:
    pixel_hidden: int = 128  # hidden width of psi
    detach_memory: bool = False  # stop gradients at the clip's query bank
    assign_fraction: float = 0.5  # share of a mask's claimed pixels an id must hold to be its target
    use_context: bool = True  # feed the retrieved queries to phi (False: ablation without memory context)
    pixel_positions: bool = True  # psi also sees a Fourier encoding of each patch's world point
    cosine_logits: bool = True  # mask logits = s cos(q', G) + b (False: q' . G / sqrt(D))


@dataclass
class FramePlan:
    """Geometry-only bookkeeping of one clip frame (see the module docstring)."""

    visible: list  # ids retrieved from the memory, ascending
    targets: dict  # id -> indices of the frame's masks assigned to it
    mask_ids: np.ndarray  # N int64 id of each mask (inherited or new)


class Refiner(nn.Module):
    """eta (QueryLifter), phi (QueryDecoder), psi (PixelHead) for one feature configuration."""

    def __init__(self, config: PipelineConfig, semantic_dim: int, geometric_dim: int, model: ModelConfig):
        super().__init__()
        dim = config.features.dim
        self.config, self.model_config = config, model
        self.lifter = make_lifter(config, semantic_dim, geometric_dim)
        frequencies = config.features.pos_frequencies if model.pixel_positions else 0
        dims = {"dim": dim, "semantic_dim": semantic_dim, "geometric_dim": geometric_dim,
                "pixel_hidden": model.pixel_hidden, "num_layers": config.refinement.num_layers,
                "num_heads": config.refinement.num_heads, "pixel_pos_frequencies": frequencies,
                "pixel_pos_scale": config.features.pos_scale, "cosine_logits": model.cosine_logits}
        self.pixel_head, self.decoder = new_refiner_modules(dims, config.seed)

    def lift(self, record: FrameRecord) -> torch.Tensor:
        """q_t N x D from the record's pooled inputs (= QueryLifter.forward's queries)."""
        lifter = self.lifter
        device = lifter.semantic_proj.weight.device
        query = lifter.semantic_proj(torch.from_numpy(record.pooled_2d).to(device))
        if lifter.geometric_proj is not None and record.pooled_3d is not None:
            query = query + lifter.geometric_proj(torch.from_numpy(record.pooled_3d).to(device))
        position = torch.from_numpy(record.centroids).to(device)
        return query + lifter.position_proj(fourier_encoding(position, lifter.pos_bands))

    def frame_tensors(self, record: FrameRecord) -> tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        """(F2d, F3d or None, patch world points 3 x h x w) of a record on the model's device."""
        device = self.lifter.semantic_proj.weight.device
        f2d = torch.from_numpy(record.features_2d).to(device)
        f3d = None
        if record.features_3d is not None and self.pixel_head.geometric_dim:
            f3d = torch.from_numpy(record.features_3d).to(device)
        if record.positions is None:
            record.positions = patch_positions(record.points_world, record.valid, f2d.shape[1], f2d.shape[2])
        return f2d, f3d, record.positions.to(device)

    def clip_losses(self, clip: list[FrameRecord], plans: list[FramePlan], loss: LossConfig,
                    generator: Optional[torch.Generator] = None) -> dict[str, torch.Tensor]:
        """Mean L_seg, L_dist, L_xseg over the clip's frames (L_xseg over frames with targets) and the total."""
        bank: dict[int, tuple[torch.Tensor, int]] = {}
        seg, dist, xseg, assoc = [], [], [], []
        window = self.config.memory.bank_average_window
        for record, plan in zip(clip, plans):
            f2d, f3d, positions = self.frame_tensors(record)
            pixels = self.pixel_head(f2d, f3d, positions)
            queries = self.lift(record)
            context_ids = [i for i in plan.visible if i in bank]
            context = torch.stack([bank[i][0] for i in context_ids]) if context_ids else None
            if context is not None and self.model_config.detach_memory:
                context = context.detach()
            refined = self.decoder(queries, pixels, context if self.model_config.use_context else None).queries
            masks = record.mask_tensor()
            seg.append(mask_loss(self.pixel_head.logits(refined, pixels), masks, loss, generator))
            f3d_grid = None if f3d is None else resample_to_grid(f3d, f2d.shape[1], f2d.shape[2])
            dist.append(distillation_loss(pixels, f2d, f3d_grid, loss, generator))
            targeted = [k for k, i in enumerate(context_ids) if i in plan.targets]
            if targeted:
                target = torch.stack([masks[plan.targets[context_ids[k]]].any(dim=0) for k in targeted])
                xseg.append(mask_loss(self.pixel_head.logits(context[targeted], pixels), target, loss, generator))
            if context is not None and loss.assoc_weight > 0:
                classes = assignment_targets(plan, context_ids)
                rows = torch.arange(len(classes)) if loss.assoc_new_targets else torch.nonzero(classes >= 0)[:, 0]
                if len(rows):  # a frame without samples would pull the clip's mean towards 0
                    assoc.append(association_loss(refined[rows], context, classes[rows], loss.assoc_temperature,
                                                  loss.assoc_new_cosine))
            for instance_id in np.unique(plan.mask_ids).tolist():
                members = torch.from_numpy(np.flatnonzero(plan.mask_ids == instance_id))
                observed = refined[members].mean(dim=0)
                old, count = bank.get(instance_id, (None, 0))
                weight = 1.0 / min(count + 1, window)
                bank[instance_id] = (observed if old is None else (1 - weight) * old + weight * observed, count + 1)
        zero = seg[0] * 0.0
        out = {"seg": torch.stack(seg).mean(), "dist": torch.stack(dist).mean(),
               "xseg": torch.stack(xseg).mean() if xseg else zero,
               "assoc": torch.stack(assoc).mean() if assoc else zero}
        out["total"] = total_loss(out["seg"], out["dist"], out["xseg"], loss, out["assoc"])
        return out


def assignment_targets(plan: FramePlan, context_ids: list) -> torch.Tensor:
    """N int64: per mask of the frame, the index in `context_ids` of the id it was assigned to, or -1 (new)."""
    column = {instance_id: k for k, instance_id in enumerate(context_ids)}
    return torch.tensor([column.get(int(i), -1) for i in plan.mask_ids], dtype=torch.int64)


def plan_clip(clip: list[FrameRecord], config: PipelineConfig, assign_fraction: float) -> list[FramePlan]:
    """FramePlans of a clip (module docstring): memory retrieval, mask-to-id assignment and new ids."""
    memory = QueryIndexMemory(config.memory.voxel_size, config.memory.occlusion_tolerance)
    next_id, plans = 1, []
    for record in clip:
        height, width = record.shape
        visible: list = []
        if len(memory):
            view = memory.retrieve(record.pose_c2w, record.intrinsics, height, width, depth_map=record.depth,
                                   depth_valid=record.valid, max_ids=config.memory.max_contextual_queries)
            visible = sorted(int(i) for i in view.ids)
        labels = mask_labels(record)  # HxW int32 mask index + 1 (0 none), overlaps to the smaller mask
        n = len(record.masks)
        mask_ids = np.zeros(n, np.int64)
        targets: dict = {}
        if visible:
            claimed = memory.ids_at(record.points_world[record.valid]).astype(np.int64)
            owner = labels[record.valid].astype(np.int64)
            hit = (owner > 0) & np.isin(claimed, visible)
            span = int(claimed.max(initial=0)) + 1
            keys, counts = np.unique((owner[hit] - 1) * span + claimed[hit], return_counts=True)
            pairs = np.stack([keys // span, keys % span])  # (mask, id) pairs in ascending order, as unique(axis=1)
            totals = np.bincount(owner[owner > 0] - 1, minlength=n)
            claimed_total = np.bincount(pairs[0], counts, minlength=n)
            for m in range(n):
                mine = pairs[0] == m
                if not mine.any() or claimed_total[m] < MIN_CLAIMED * totals[m]:
                    continue
                best = int(np.argmax(np.where(mine, counts, -1)))
                if counts[best] >= assign_fraction * claimed_total[m]:
                    mask_ids[m] = int(pairs[1, best])
                    targets.setdefault(int(pairs[1, best]), []).append(m)
        for m in np.flatnonzero(mask_ids == 0):
            mask_ids[m] = next_id
            next_id += 1
        next_id = max(next_id, int(mask_ids.max(initial=0)) + 1)
        plans.append(FramePlan(visible, {k: torch.tensor(v) for k, v in targets.items()}, mask_ids))
        stride = config.integrate_stride
        sub_valid = record.valid[::stride, ::stride]
        table = np.r_[0, mask_ids]
        memory.update(record.points_world[::stride, ::stride][sub_valid],
                      table[labels[::stride, ::stride][sub_valid]])
    return plans


def mask_labels(record: FrameRecord) -> np.ndarray:
    """HxW int32: index + 1 of the mask covering each pixel (smallest mask on overlaps), 0 = none."""
    masks = record.masks
    if masks.labels is not None:
        return masks.labels.astype(np.int32)
    stack = masks.masks
    labels = np.zeros(stack.shape[1:], np.int32)
    for m in np.argsort(-masks.areas(), kind="stable"):
        labels[stack[m]] = m + 1
    return labels

"""Randomly initialised networks for `moonseg3r bench e2e` (speed only: no weights are downloaded).

- CUT3R: `full` = the released 512 DPT architecture, `small` = the reference test configuration (`tiny`: with
  narrow DPT heads, for CI); it runs on every frame, but the scene's recorded pointmaps, pose and K replace
  its random ones (`Cut3rWithSceneGeometry`), so the later stages work on real geometry.
- Mask networks, written as random checkpoints in the released formats to a scratch folder and then built by
  the pipeline's own mask-source factory (so the loading path is the user's): `fastsam` FastSAM-x (`full`,
  YOLOv8x-seg, one class) or a YOLOv8n-seg (`small`); `sam2` SAM 2.1 Hiera-tiny in transformers format
  (`full`; `small`: one block per stage, narrower); `sam` vit_b (`full`; `small`: a 2-block ViT handed to
  the SAM wrapper directly, segment-anything's registry knowing only the released sizes).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from moonseg3r_ros.core.config import PipelineConfig

NETWORK_MASKS = ("fastsam", "sam2", "sam")
PACKAGES = {"fastsam": ("ultralytics", "ultralytics-opencv-headless==8.4.190 (AGPL-3.0)"),
            "sam2": ("transformers", "transformers"), "sam": ("segment_anything", "segment-anything")}


class MissingPackage(RuntimeError):
    """An optional package that a chosen mask network needs is not installed."""


def require_package(masks: str) -> None:
    """MissingPackage with the pip command when the optional package of mask network `masks` is absent."""
    if masks not in PACKAGES:
        return
    import importlib.util

    module, pip_name = PACKAGES[masks]
    if importlib.util.find_spec(module) is None:
        raise MissingPackage(f"--masks {masks} needs the optional package {module}, which is not installed "
                             f"(.venv/bin/pip install {pip_name}); the weight-free sources rgbd / weight_free "
                             "need nothing")


# ---------------------------------------------------------------------------------------------------- CUT3R
def random_cut3r(size: str, device: torch.device) -> torch.nn.Module:
    """A randomly initialised CUT3R: `full` (released 512 DPT), `small` (reference test config) or `tiny`."""
    from moonseg3r_ros.core.cut3r import Cut3rConfig
    from moonseg3r_ros.tools.bench_cut3r import random_model

    config = Cut3rConfig.full_512() if size == "full" else Cut3rConfig.small_test()
    if size == "tiny":  # CI: the small configuration with narrow DPT heads
        config = dataclasses.replace(config, dpt_feature_dim=16, dpt_layer_dims=(8, 8, 8, 8))
    return random_model(config, device)


class Cut3rWithSceneGeometry:
    """The pipeline's CUT3R geometry step on every frame (the cost measured: resize, network, F3d and A_t on the
    input's patch grid), whose pointmaps, pose and K are then replaced by the scene's recorded ones: a random
    model's points are noise (no K can be fitted to many of them), so masks, association and the map would
    not do the work they do on real geometry. F3d and A_t stay CUT3R's."""

    has_state_attention = True

    def __init__(self, cut3r_geometry: Any, recorded: Any):
        self.cut3r, self.recorded = cut3r_geometry, recorded

    def reset(self) -> None:
        self.cut3r.reset()

    def compute(self, frame: Any) -> Any:
        from moonseg3r_ros.core.geometry import patch_grid_on_input

        with torch.inference_mode():
            raw = self.cut3r.stream.step(frame.image)
        info, patch = self.cut3r.stream.last_info, self.cut3r.patch
        features, attention = raw.features_3d, raw.state_attention
        if info is not None:
            features = None if features is None else patch_grid_on_input(features, info, patch)
            attention = None if attention is None else patch_grid_on_input(attention, info, patch)
        return dataclasses.replace(self.recorded.compute(frame), features_3d=features, state_attention=attention)

    def close(self) -> None:
        self.cut3r.close()


# ---------------------------------------------------------------------------------------------------- masks
def configure_mask_network(config: PipelineConfig, masks: str, size: str, folder: Path) -> Any:
    """Write a random `masks` network (fastsam | sam2 | sam; `size` tiny = small) under `folder`, point `config`
    at it.

    Returns a ready model for sources whose factory cannot build that size from a file (sam small), else None.
    """
    require_package(masks)
    cfg = config.masks
    cfg.source = masks
    # random SAM weights score every mask low: quality thresholds at 0 so the network gives masks (up to
    # max_masks) as a trained one does on a cluttered view, and their post-processing is timed too
    cfg.pred_iou_thresh = cfg.stability_score_thresh = 0.0
    if masks == "fastsam":
        cfg.fastsam_checkpoint = str(_fastsam_checkpoint(folder / f"fastsam_{size}.pt", size))
        if size != "full":
            cfg.fastsam_image_size = 320
        return None
    if masks == "sam2":
        cfg.sam2_checkpoint = str(_sam2_folder(folder / f"sam2_{size}", size))
        if size != "full":
            cfg.points_per_side = 4
        return None
    if size == "full":
        cfg.sam_model_type = "vit_b"
        cfg.sam_checkpoint = str(_sam_checkpoint(folder / "sam_vit_b.pth"))
        return None
    cfg.points_per_side = 4
    return _tiny_sam()


def _fastsam_checkpoint(path: Path, size: str) -> Path:
    """FastSAM-x (YOLOv8x-seg, one class) or a YOLOv8n-seg, saved as ultralytics saves a checkpoint."""
    from moonseg3r_ros.core.masks_fastsam import random_fastsam

    model = random_fastsam("x" if size == "full" else "n")
    with torch.no_grad():  # class logits ~0 (scores ~0.5, above fastsam_conf) instead of the training prior's
        for branch in model.model[-1].cv3:  # 0.01, so the random network detects (and its masks are timed)
            branch[-1].bias.zero_()
    model.names = {0: "object"}
    torch.save({"model": model, "train_args": {}}, path)
    return path


def _sam2_folder(folder: Path, size: str) -> Path:
    """SAM 2.1 Hiera-tiny (transformers' default Sam2Config) or a narrower one-block-per-stage Hiera."""
    from transformers import Sam2Config

    from moonseg3r_ros.core.masks_sam2 import random_sam2

    config = Sam2Config()
    if size != "full":
        backbone = config.vision_config.backbone_config
        backbone.hidden_size, backbone.embed_dim_per_stage = 32, [32, 64, 128, 256]
        backbone.blocks_per_stage, backbone.num_attention_heads_per_stage = [1, 1, 2, 1], [1, 1, 2, 2]
        backbone.global_attention_blocks = [3]  # not a stage's first block (that one pools, windowed)
        config.vision_config.backbone_channel_list = [256, 128, 64, 32]
    random_sam2(config=config).save_pretrained(folder, safe_serialization=True)
    return folder


def _sam_checkpoint(path: Path) -> Path:
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    torch.save(sam_model_registry["vit_b"](checkpoint=None).state_dict(), path)
    return path


def _tiny_sam() -> torch.nn.Module:
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(0)
    return _build_sam(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1])

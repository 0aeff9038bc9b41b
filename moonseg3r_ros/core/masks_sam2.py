"""SAM 2 masks (`masks.source` 'sam2'): transformers' SAM 2 and its automatic mask generator.

Path chosen: transformers (`Sam2Model` + the "mask-generation" pipeline, which grids `points_per_side`^2 point
prompts, keeps masks above `pred_iou_thresh` and `stability_score_thresh` and removes duplicates by box NMS at
`sam2_nms_iou`), not Meta's `sam2` package: transformers is already a dependency of this package, is released
every few weeks and keeps SAM 2 under its test suite, while `sam2` 1.1.0 (December 2024) has had no release
since, pulls hydra-core/iopath in and compiles an optional CUDA extension at install. transformers also reads
weights from safetensors only (no pickle at all).

Checkpoint: a transformers-format folder (config.json + model.safetensors, as published for
sam2.1-hiera-tiny/-small/-base-plus/-large; preprocessor_config.json is used when present). A file (Meta's
sam2.1_hiera_tiny.pt, a pickle) or a folder with only pytorch_model.bin is refused with a message; a folder
whose weights do not fill the model its config.json describes is refused too (transformers would otherwise
initialise the missing weights at random). The network's input size is the checkpoint's (1024 for the
released models).
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
import torch

from moonseg3r_ros.core.config import MaskConfig
from moonseg3r_ros.core.masks import MaskError, filter_masks
from moonseg3r_ros.core.types import Frame, FrameGeometry, MaskSet

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def check_sam2_folder(folder: str) -> None:
    """MaskError naming masks.sam2_checkpoint unless `folder` is a transformers SAM 2 folder with safetensors."""
    if not folder:
        raise MaskError("masks.source is 'sam2' but masks.sam2_checkpoint is empty: give a SAM 2 model folder in "
                        "transformers format (config.json + model.safetensors, e.g. sam2.1-hiera-tiny)")
    if os.path.isfile(folder):
        raise MaskError(f"masks.sam2_checkpoint '{folder}' is a file: give the transformers-format folder "
                        "(config.json + model.safetensors); a Meta .pt checkpoint converts with transformers' "
                        "SAM 2 conversion script (convert_sam2_to_hf.py)")
    if not os.path.isdir(folder):
        raise MaskError(f"masks.sam2_checkpoint '{folder}' does not exist")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise MaskError(f"masks.sam2_checkpoint '{folder}' has no config.json (not a transformers model folder)")
    if not any(os.path.isfile(os.path.join(folder, name)) for name in WEIGHT_FILES):
        raise MaskError(f"masks.sam2_checkpoint '{folder}' has no model.safetensors (pickled pytorch_model.bin "
                        "weights are not read)")


def load_sam2(folder: str, device: torch.device) -> torch.nn.Module:
    """transformers-format SAM 2 folder -> float32 eval Sam2Model on `device`; MaskError on any problem."""
    from transformers import Sam2Config, Sam2Model

    check_sam2_folder(folder)
    try:
        config = Sam2Config.from_pretrained(folder, local_files_only=True)
    except Exception as err:
        raise MaskError(f"masks.sam2_checkpoint '{folder}': config.json is not a SAM 2 config: {err}") from err
    if getattr(config, "model_type", "") not in ("sam2", "sam2_video"):
        raise MaskError(f"masks.sam2_checkpoint '{folder}' is a '{config.model_type}' model, not SAM 2")
    try:
        model, info = Sam2Model.from_pretrained(folder, config=config, local_files_only=True, use_safetensors=True,
                                                output_loading_info=True)
    except Exception as err:
        raise MaskError(f"masks.sam2_checkpoint '{folder}' does not load: {err}") from err
    wrong = [f"{kind}: {', '.join(sorted(map(str, info[kind]))[:3])}"
             for kind in ("missing_keys", "mismatched_keys") if info.get(kind)]
    if wrong:
        raise MaskError(f"masks.sam2_checkpoint '{folder}': the weights do not fit the model its config.json "
                        f"describes ({'; '.join(wrong)})")
    return model.float().eval().to(device)


def sam2_image_processor(folder: str, model: Any) -> Any:
    """The folder's image processor (preprocessor_config.json) or the default one at the model's input size."""
    from transformers import Sam2ImageProcessorFast

    if folder and os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
        return Sam2ImageProcessorFast.from_pretrained(folder, local_files_only=True)
    size = int(model.config.prompt_encoder_config.image_size)
    return Sam2ImageProcessorFast(size={"height": size, "width": size})


def generator_kwargs(config: MaskConfig) -> dict[str, Any]:
    """Arguments of transformers' mask-generation pipeline for `config`.

    The pipeline only ends its chunks when the batch divides the number of points (points_per_side^2; else it
    stops with StopIteration), so the batch is the largest divisor of it up to `sam2_points_per_batch`."""
    points = config.points_per_side ** 2
    batch = max(d for d in range(1, min(points, config.sam2_points_per_batch) + 1) if points % d == 0)
    return {"points_per_crop": config.points_per_side, "pred_iou_thresh": config.pred_iou_thresh,
            "stability_score_thresh": config.stability_score_thresh, "crops_nms_thresh": config.sam2_nms_iou,
            "points_per_batch": batch}


class Sam2Masks:
    """SAM 2 automatic masks on the frame grid (NxHxW bool, N predicted IoUs)."""

    def __init__(self, config: MaskConfig, device: torch.device, model: Optional[torch.nn.Module] = None,
                 image_processor: Any = None):
        from transformers import pipeline

        self.config = config
        self.device = torch.device(device)
        network: Any = model or load_sam2(config.sam2_checkpoint, self.device)
        processor = image_processor or sam2_image_processor(config.sam2_checkpoint, network)
        self.model: Optional[torch.nn.Module] = network
        self.generator: Any = pipeline("mask-generation", model=network, image_processor=processor,
                                       device=self.device)

    def generate(self, frame: Frame, geometry: Optional[FrameGeometry] = None) -> MaskSet:
        from PIL import Image

        output = self.generator(Image.fromarray(np.ascontiguousarray(frame.image)), **generator_kwargs(self.config))
        if len(output["masks"]) == 0:
            return MaskSet.empty(frame.height, frame.width)
        masks = torch.stack([torch.as_tensor(np.asarray(m)) if not isinstance(m, torch.Tensor) else m
                             for m in output["masks"]]).bool().cpu().numpy()
        scores = torch.as_tensor(output["scores"]).float().cpu().numpy().reshape(-1)
        if masks.shape[1:] != (frame.height, frame.width):
            raise MaskError(f"SAM 2 returned masks of size {masks.shape[1:]} for a {frame.height}x{frame.width} frame")
        return filter_masks(masks, scores, self.config.min_mask_area, self.config.max_masks)

    def close(self) -> None:
        self.generator = None
        self.model = None


def random_sam2(seed: int = 0, config: Any = None) -> torch.nn.Module:
    """SAM 2 with random weights and `config` (a transformers Sam2Config; default: transformers' default, the
    Hiera-tiny image encoder at 1024x1024) (benchmarks of the network's cost; its masks are not meaningful)."""
    from transformers import Sam2Config, Sam2Model

    torch.manual_seed(seed)
    return Sam2Model(config if config is not None else Sam2Config()).eval()

"""FastSAM masks (`masks.source` 'fastsam'): ultralytics' FastSAM predictor on a checkpoint the user gives.

FastSAM is a YOLOv8-seg network with one class ("object") trained on SA-1B; it segments everything in one
forward pass (the paper's training masks). It runs through the maintained `ultralytics` package, installed as
`ultralytics-opencv-headless` (the same code, with the headless OpenCV this package uses). ultralytics is
AGPL-3.0 and optional: it is imported here only, only when this source is chosen.

Checkpoints (FastSAM-s.pt, FastSAM-x.pt) are pickles of the whole ultralytics model object, which ultralytics'
own loader reads with `torch.load(weights_only=False)` (that runs whatever the file names). We never call it:
`load_torch_file` reads the file weights-only, every ultralytics/torch module in it becoming a plain attribute
record (nothing of the file is imported or called); the architecture is rebuilt by ultralytics'
`SegmentationModel` from the `yaml` dict the record carries, and the parameters and buffers gathered from the
records' `_parameters`/`_buffers` are loaded into it with strict=True.

Masks: ultralytics' `FastSAMPredictor` (letterbox to `fastsam_image_size`, confidence `fastsam_conf`, NMS at
`fastsam_iou`, at most 300 detections (ultralytics' default) or `max_masks` if more, masks at the frame's
resolution: retina masks), scores = the detection confidence; then `filter_masks` (min area, then the best
`max_masks`) like every source.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
import torch

from moonseg3r_ros.core.config import MaskConfig
from moonseg3r_ros.core.masks import MaskError, filter_masks
from moonseg3r_ros.core.types import Frame, FrameGeometry, MaskSet
from moonseg3r_ros.core.untrusted_files import RefusedFileError, load_torch_file

PACKAGE = "ultralytics-opencv-headless==8.4.190"
MAX_DETECTIONS = 300  # ultralytics' default: masks are kept by score only after the min-area filter


def import_ultralytics() -> Any:
    """The ultralytics package, offline (no update checks, no usage events); MaskError when not installed."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    try:
        import ultralytics
    except ImportError as err:
        raise MaskError(f"masks.source 'fastsam' needs the optional package ultralytics (AGPL-3.0), which is not "
                        f"installed: run 'make setup' or '.venv/bin/pip install {PACKAGE}' ({err})") from err
    return ultralytics


def record_state_dict(record: Any, prefix: str = "", out: Optional[dict] = None) -> dict[str, torch.Tensor]:
    """The state dict (persistent parameters and buffers, dotted names) of an nn.Module read as attribute records
    (or of a real nn.Module: the same walk over its `_modules`, `_parameters`, `_buffers`)."""
    out = {} if out is None else out
    attrs = vars(record)
    skip = attrs.get("_non_persistent_buffers_set") or set()
    for name, value in list((attrs.get("_parameters") or {}).items()) + list((attrs.get("_buffers") or {}).items()):
        if value is not None and name not in skip:
            out[prefix + name] = value.detach() if isinstance(value, torch.Tensor) else value
    for name, child in (attrs.get("_modules") or {}).items():
        if child is not None:
            record_state_dict(child, f"{prefix}{name}.", out)
    return out


def load_fastsam(checkpoint: str, device: torch.device) -> torch.nn.Module:
    """FastSAM-s/-x (any ultralytics segmentation checkpoint) -> float32 eval SegmentationModel on `device`.

    Reads nothing but tensors and attribute records from the file (module docstring); MaskError naming
    `masks.fastsam_checkpoint` on any problem."""
    if not checkpoint:
        raise MaskError("masks.source is 'fastsam' but masks.fastsam_checkpoint is empty: give the path of a "
                        "FastSAM checkpoint (FastSAM-s.pt or FastSAM-x.pt) or use masks.source 'rgbd'")
    if not os.path.isfile(checkpoint):
        raise MaskError(f"masks.fastsam_checkpoint '{checkpoint}' does not exist")
    import_ultralytics()
    from ultralytics.nn.tasks import SegmentationModel

    try:
        state = load_torch_file(checkpoint)
    except RefusedFileError as err:
        raise MaskError(f"masks.fastsam_checkpoint: {err}") from err
    except Exception as err:
        raise MaskError(f"masks.fastsam_checkpoint '{checkpoint}' is not a torch checkpoint: {err}") from err
    record = _model_record(state, checkpoint)
    try:
        model: Any = SegmentationModel(cfg=dict(record.yaml), verbose=False)
        weights = record_state_dict(record)
        problem = state_mismatch(model.state_dict(), weights)
        if not problem:
            model.load_state_dict(weights, strict=True)
    except Exception as err:
        problem = " ".join(str(err).split())
    if problem:
        raise MaskError(f"masks.fastsam_checkpoint '{checkpoint}' does not load into the FastSAM architecture its "
                        f"yaml describes: {problem}")
    model.names = dict(getattr(record, "names", None) or {0: "object"})
    model.args = dict(state.get("train_args") or {})
    return model.float().eval().to(device)


def state_mismatch(expected: dict[str, torch.Tensor], given: dict[str, Any]) -> str:
    """One line naming missing, unexpected and wrongly shaped entries of `given` ('' when it fits)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in given and tuple(getattr(given[k], "shape", ())) != tuple(v.shape)]
    parts = [f"{len(names)} {kind} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
             for kind, names in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes))
             if names]
    return "; ".join(parts)


def _model_record(state: Any, checkpoint: str) -> Any:
    """The model record of an ultralytics checkpoint dict ('ema' first, then 'model', as ultralytics does)."""
    if not isinstance(state, dict):
        raise MaskError(f"masks.fastsam_checkpoint '{checkpoint}' is not an ultralytics checkpoint (a dict with "
                        f"'model'), got {type(state).__name__}")
    record = state.get("ema") or state.get("model")
    if record is None or isinstance(record, dict) or not isinstance(getattr(record, "yaml", None), dict):
        raise MaskError(f"masks.fastsam_checkpoint '{checkpoint}' holds no ultralytics model with its architecture "
                        f"(keys: {sorted(state)}): give FastSAM-s.pt / FastSAM-x.pt as released")
    if record.yaml.get("nc", 1) != 1 or "Segment" not in str(record.yaml.get("head")):
        raise MaskError(f"masks.fastsam_checkpoint '{checkpoint}' is not a FastSAM (one-class segmentation) model "
                        f"(nc={record.yaml.get('nc')})")
    return record


def predictor_overrides(config: MaskConfig, device: torch.device) -> dict[str, Any]:
    """ultralytics predictor arguments for `config` (the same as `FastSAM(...).predict(...)` would use)."""
    return {"task": "segment", "mode": "predict", "batch": 1, "rect": True, "save": False, "verbose": False,
            "conf": config.fastsam_conf, "iou": config.fastsam_iou, "imgsz": config.fastsam_image_size,
            "max_det": max(config.max_masks, MAX_DETECTIONS), "retina_masks": True, "device": _device_name(device)}


def _device_name(device: torch.device) -> str:
    """torch device -> ultralytics' device string ('cpu', '0', '1', ...)."""
    if device.type == "cuda":
        return str(device.index or 0)
    return device.type


class FastSamMasks:
    """FastSAM everything-masks on the frame grid (NxHxW bool, N detection confidences)."""

    def __init__(self, config: MaskConfig, device: torch.device, model: Optional[torch.nn.Module] = None):
        import_ultralytics()
        from ultralytics.models.fastsam import FastSAMPredictor

        self.config = config
        self.device = torch.device(device)
        self.model: Optional[torch.nn.Module] = model or load_fastsam(config.fastsam_checkpoint, self.device)
        self.predictor: Any = FastSAMPredictor(overrides=predictor_overrides(config, self.device))
        self.predictor.setup_model(self.model, verbose=False)

    def generate(self, frame: Frame, geometry: Optional[FrameGeometry] = None) -> MaskSet:
        bgr = np.ascontiguousarray(frame.image[..., ::-1])  # ultralytics reads numpy images as OpenCV BGR
        with torch.inference_mode():
            result = self.predictor(source=bgr, stream=False)[0]
        if result.masks is None or len(result.masks) == 0:
            return MaskSet.empty(frame.height, frame.width)
        masks = (result.masks.data > 0.5).cpu().numpy()
        scores = result.boxes.conf.float().cpu().numpy()
        if masks.shape[1:] != (frame.height, frame.width):
            raise MaskError(f"FastSAM returned masks of size {masks.shape[1:]} for a "
                            f"{frame.height}x{frame.width} frame")
        return filter_masks(masks, scores, self.config.min_mask_area, self.config.max_masks)

    def close(self) -> None:
        self.predictor = None
        self.model = None


def random_fastsam(scale: str = "s", seed: int = 0) -> torch.nn.Module:
    """FastSAM-s (scale 's': YOLOv8s-seg, one class) or FastSAM-x ('x') with ultralytics' random initialisation
    (benchmarks of the network's cost; its detections are not meaningful)."""
    import_ultralytics()
    from ultralytics.nn.tasks import SegmentationModel

    torch.manual_seed(seed)
    return SegmentationModel(f"yolov8{scale}-seg.yaml", nc=1, verbose=False).eval()

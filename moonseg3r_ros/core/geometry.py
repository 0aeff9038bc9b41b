"""Block (a) of the paper's Figure 2: per-frame geometry (P_t, X_t, confidence, F3d, A_t).

Sources
- `RecordedGeometry`: depth + intrinsics + camera-to-world pose given with each frame (datasets, bags, RGB-D
  users). No state attention (A_t is None). F3d is a cheap geometric descriptor on a patch grid: world-frame
  surface normals (3) and log depth (1), average-pooled over `patch` x `patch` pixels.
- `Cut3rGeometry`: the CUT3R re-implementation (`moonseg3r_ros.core.cut3r`), monocular, gives A_t and F3d on a
  patch grid aligned with the input image, and K fitted to its camera pointmap (CUT3R predicts no intrinsics).

Every source returns a sanitised `FrameGeometry` on the input image grid: non-finite points are zeroed and
marked invalid, `valid` = finite & 0 < depth <= max_depth (& confidence >= min_confidence for CUT3R), and
the pose is a finite rigid 4x4. Anything else raises `GeometryError` with a clear message.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Protocol, cast, runtime_checkable

import numpy as np
import torch

from moonseg3r_ros.core.camera import backproject, estimate_intrinsics, to_world
from moonseg3r_ros.core.config import GeometryConfig
from moonseg3r_ros.core.types import Frame, FrameGeometry

LOGGER = logging.getLogger("moonseg3r")


class GeometryError(RuntimeError):
    """The geometry of a frame cannot be computed (missing inputs, bad shapes, non-finite pose, bad weights)."""


@runtime_checkable
class GeometrySource(Protocol):
    """`compute(frame) -> FrameGeometry` (raises GeometryError); `reset()` starts a new sequence."""

    has_state_attention: bool

    def compute(self, frame: Frame) -> FrameGeometry: ...

    def reset(self) -> None: ...


# ----------------------------------------------------------------------------------------------------------
# helpers shared by the sources


def check_pose(pose: Any, what: str = "pose_c2w") -> np.ndarray:
    """4x4 finite rigid transform (rotation orthonormal within 1e-3) -> float64 copy, else GeometryError."""
    if pose is None:
        raise GeometryError(f"{what} is missing")
    pose = np.asarray(pose, np.float64)
    if pose.shape != (4, 4):
        raise GeometryError(f"{what} must be 4x4, got shape {pose.shape}")
    if not np.isfinite(pose).all():
        raise GeometryError(f"{what} contains NaN or inf")
    rot = pose[:3, :3]
    if np.abs(rot @ rot.T - np.eye(3)).max() > 1e-3 or np.abs(pose[3] - [0, 0, 0, 1]).max() > 1e-6:
        raise GeometryError(f"{what} is not a rigid transform (rotation not orthonormal or last row != 0 0 0 1)")
    return pose.copy()


def check_intrinsics(k: Any) -> np.ndarray:
    """3x3 pinhole K with positive finite focal lengths -> float64 copy, else GeometryError."""
    if k is None:
        raise GeometryError("intrinsics are missing")
    k = np.asarray(k, np.float64)
    if k.shape == (4, 4):
        k = k[:3, :3]
    if k.shape != (3, 3) or not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise GeometryError(f"intrinsics must be a finite 3x3 K with positive focal lengths, got {k.tolist()}")
    return k.copy()


def depth_to_metres(depth: Any, height: int, width: int, depth_scale: float = 1000.0) -> np.ndarray:
    """HxW depth (float metres, or integer units of 1/depth_scale m) -> HxW float32 metres on the image grid.

    A depth map of another size is resized with nearest-neighbour sampling (intrinsics refer to the image grid).
    """
    if depth is None:
        raise GeometryError("recorded geometry needs a depth map with every frame")
    depth = np.asarray(depth)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.ndim != 2 or depth.size == 0:
        raise GeometryError(f"depth must be a non-empty HxW array, got shape {depth.shape}")
    if np.issubdtype(depth.dtype, np.integer):
        metres = depth.astype(np.float32) / np.float32(depth_scale)
    elif np.issubdtype(depth.dtype, np.floating):
        metres = depth.astype(np.float32)
    else:
        raise GeometryError(f"depth dtype {depth.dtype} is not supported (float metres or uint16 millimetres)")
    if metres.shape != (height, width):
        rows = (np.arange(height) * metres.shape[0] // height).astype(np.int64)
        cols = (np.arange(width) * metres.shape[1] // width).astype(np.int64)
        metres = metres[rows[:, None], cols[None, :]]
    return metres


def sanitize(points_cam: np.ndarray, points_world: np.ndarray, confidence: np.ndarray, max_depth: float,
             min_confidence: Optional[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Zero non-finite points/confidences and compute `valid` (HxW bool). Returns new arrays."""
    finite = np.isfinite(points_cam).all(axis=2) & np.isfinite(points_world).all(axis=2) & np.isfinite(confidence)
    depth = points_cam[..., 2]
    valid = finite & (depth > 0) & (depth <= max_depth)
    if min_confidence is not None:
        valid &= confidence >= min_confidence
    points_cam = np.where(finite[..., None], points_cam, 0).astype(np.float32)
    points_world = np.where(finite[..., None], points_world, 0).astype(np.float32)
    confidence = np.where(finite, confidence, 0).astype(np.float32)
    return points_cam, points_world, confidence, valid


def surface_normals(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """HxWx3 points -> HxWx3 unit normals from central differences (zero where undefined)."""
    dx = np.zeros_like(points)
    dy = np.zeros_like(points)
    dx[:, 1:-1] = points[:, 2:] - points[:, :-2]
    dy[1:-1] = points[2:] - points[:-2]
    normals = np.cross(dx, dy)
    norm = np.linalg.norm(normals, axis=2, keepdims=True)
    ok = (norm[..., 0] > 1e-12) & valid
    return np.where(ok[..., None], normals / np.maximum(norm, 1e-12), 0).astype(np.float32)


def block_mean(values: np.ndarray, patch: int, weight: Optional[np.ndarray] = None) -> np.ndarray:
    """HxWxC values (, HxW weights) -> ceil(H/patch) x ceil(W/patch) x C weighted block means (numpy, float32)."""
    height, width, channels = values.shape
    grid_h, grid_w = -(-height // patch), -(-width // patch)
    w = np.ones((height, width), np.float32) if weight is None else weight.astype(np.float32)
    padded = np.zeros((grid_h * patch, grid_w * patch, channels + 1), np.float32)
    padded[:height, :width, :channels] = values * w[..., None]
    padded[:height, :width, channels] = w
    sums = padded.reshape(grid_h, patch, grid_w, patch, channels + 1).sum(axis=(1, 3))
    return sums[..., :channels] / np.maximum(sums[..., channels:], 1e-6)


def geometric_features(points_cam: np.ndarray, points_world: np.ndarray, valid: np.ndarray,
                       patch: int) -> torch.Tensor:
    """Weight-free F3d: world normals (3) + log depth (1) pooled over valid pixels of each patch -> 4 x h x w."""
    normals = surface_normals(points_world, valid)
    log_depth = np.where(valid, np.log(np.maximum(points_cam[..., 2], 1e-6)), 0)[..., None]
    defined = valid & (np.abs(normals).sum(axis=2) > 0)
    pooled = block_mean(np.concatenate([normals, log_depth], axis=2), patch, defined)
    return torch.from_numpy(np.ascontiguousarray(pooled.transpose(2, 0, 1)))


# ----------------------------------------------------------------------------------------------------------
# sources


class RecordedGeometry:
    """Geometry from recorded depth + K + pose (no state attention). See the module docstring."""

    has_state_attention = False

    def __init__(self, max_depth: float = 10.0, patch: int = 16, depth_scale: float = 1000.0,
                 with_features: bool = False):
        self.max_depth = float(max_depth)
        self.patch = int(patch)
        self.depth_scale = float(depth_scale)
        self.with_features = with_features

    def reset(self) -> None:
        """Stateless."""

    def compute(self, frame: Frame) -> FrameGeometry:
        pose = check_pose(frame.pose_c2w)
        k = check_intrinsics(frame.intrinsics)
        depth = depth_to_metres(frame.depth, frame.height, frame.width, self.depth_scale)
        finite = np.isfinite(depth)
        points_cam = backproject(np.where(finite, depth, 0).astype(np.float32), k)
        points_cam[~finite] = np.nan
        points_world = to_world(points_cam, pose)
        confidence = np.ones(depth.shape, np.float32)
        points_cam, points_world, confidence, valid = sanitize(points_cam, points_world, confidence,
                                                               self.max_depth, None)
        confidence *= valid
        features = geometric_features(points_cam, points_world, valid, self.patch) if self.with_features else None
        return FrameGeometry(pose, points_world, points_cam, confidence, valid, features, None, k)


class Cut3rGeometry:
    """Monocular geometry from CUT3R (wraps `moonseg3r_ros.core.cut3r.Cut3rStream`).

    The model is loaded from `config.cut3r_checkpoint` (official `.pth`, plain state_dict or safetensors; the
    architecture is read from the official file's `args.model`) in float32; `cut3r_dtype` float16/bfloat16
    runs the encoder and decoders under autocast (the heads stay float32). Per frame:
    - pointmaps, confidence and `valid` on the input grid (pixels outside CUT3R's centre crop are invalid;
      `valid` also needs confidence >= min_confidence and 0 < depth <= max_depth);
    - K: CUT3R predicts no intrinsics, so K is fitted to the camera pointmap (`camera.estimate_intrinsics`:
      principal point at the image centre, one focal); memory retrieval and box visibility need it;
    - A_t (S x gh x gw) and F3d (C x gh x gw) on a patch grid ALIGNED WITH THE INPUT IMAGE: the model's patch
      grid covers only the centre crop of the resized image, so both are resampled (nearest) onto a grid of
      cells of one model patch's size in input pixels that spans the whole input; cells outside the crop are
      zero (a mask's part outside the crop adds nothing to its state-distribution token).
    """

    has_state_attention = True

    def __init__(self, config: GeometryConfig, device: torch.device, dtype: torch.dtype = torch.float32,
                 model: Optional[torch.nn.Module] = None):
        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype
        cut3r = _import_cut3r()
        if model is None:
            model = load_cut3r(config.cut3r_checkpoint, self.device, cut3r)
        self.model: Any = cast(Any, model.to(self.device, torch.float32).eval())  # a Cut3r (its .config)
        layer = config.state_attention_layer
        depth = int(self.model.config.dec_depth)
        if layer is not None and not -depth <= int(layer) < depth:
            raise GeometryError(f"geometry.state_attention_layer {layer} is out of range for a CUT3R model with "
                                f"{depth} state-decoder layers (use -{depth}..{depth - 1}; -1 = last)")
        self.has_state_attention = layer is not None
        try:
            self.stream = cut3r.Cut3rStream(self.model, self.device, dtype, config.image_long_side, layer,
                                            config.state_attention_heads, min_confidence=0.0,
                                            max_depth=config.max_depth)
        except ValueError as err:
            raise GeometryError(f"CUT3R stream: {err}") from err
        self.patch = int(self.model.config.patch_size)

    def reset(self) -> None:
        self.stream.reset()

    def compute(self, frame: Frame) -> FrameGeometry:
        try:
            with torch.inference_mode():
                raw = self.stream.step(frame.image)
        except ValueError as err:  # e.g. an image too small for the model's patch grid
            raise GeometryError(f"CUT3R cannot process frame {frame.frame_index}: {err}") from err
        pose = check_pose(raw.pose_c2w, "CUT3R pose")
        points_cam = np.asarray(raw.points_cam, np.float32)
        points_world = np.asarray(raw.points_world, np.float32)
        expected = (frame.height, frame.width, 3)
        if points_cam.shape != expected or points_world.shape != expected:
            raise GeometryError(f"CUT3R pointmaps have shape {points_cam.shape}/{points_world.shape}, "
                                f"expected {expected}")
        confidence = np.asarray(raw.confidence, np.float32)
        points_cam, points_world, confidence, valid = sanitize(
            points_cam, points_world, confidence, self.config.max_depth, self.config.min_confidence)
        intrinsics = raw.intrinsics
        if intrinsics is None and valid.sum() >= 2:
            intrinsics = estimate_camera(points_cam, valid)
        info = self.stream.last_info
        features = raw.features_3d
        attention = raw.state_attention
        if info is not None:
            features = None if features is None else patch_grid_on_input(features, info, self.patch)
            attention = None if attention is None else patch_grid_on_input(attention, info, self.patch)
        return FrameGeometry(pose, points_world, points_cam, confidence, valid, features, attention, intrinsics)

    def close(self) -> None:
        self.stream = None
        self.model = None


def estimate_camera(points_cam: np.ndarray, valid: np.ndarray, max_pixels: int = 20_000) -> np.ndarray:
    """K fitted to an HxWx3 camera pointmap (`camera.estimate_intrinsics`, on a regular sub-grid of about
    `max_pixels` of the valid pixels, in the pixel coordinates of the full grid). GeometryError when the
    pointmap admits no pinhole camera (non-positive focal: x/y do not grow with the pixel coordinates)."""
    stride = max(1, int(np.sqrt(valid.size / max_pixels)))
    sub_valid = np.zeros_like(valid)
    sub_valid[::stride, ::stride] = valid[::stride, ::stride]
    if sub_valid.sum() < 2:
        sub_valid = valid
    try:
        return estimate_intrinsics(points_cam, sub_valid)
    except ValueError as err:
        raise GeometryError(f"no intrinsics can be fitted to the CUT3R pointmap: {err}") from err


def patch_grid_on_input(values: Any, info: Any, patch: int) -> torch.Tensor:
    """C x h x w values on the model's patch grid (covering the crop `info` of the resized input) ->
    C x gh x gw float32 on a grid spanning the whole HxW input, cells of one model patch in input pixels
    (gh = round(H / cell_h)); nearest sampling at each cell centre, zero outside the crop. When the crop is
    the whole resized image and the sizes divide, this is the identity."""
    values = torch.as_tensor(values).float().cpu()
    channels, grid_h, grid_w = values.shape
    (in_h, in_w), (rs_h, rs_w) = info.input_hw, info.resized_hw
    cell_h, cell_w = patch * in_h / rs_h, patch * in_w / rs_w  # one model patch, in input pixels
    out_h, out_w = max(1, int(round(in_h / cell_h))), max(1, int(round(in_w / cell_w)))
    ys = ((np.arange(out_h) + 0.5) * in_h / out_h) * rs_h / in_h - info.crop_top  # cell centres, model pixels
    xs = ((np.arange(out_w) + 0.5) * in_w / out_w) * rs_w / in_w - info.crop_left
    rows, cols = np.floor(ys / patch).astype(np.int64), np.floor(xs / patch).astype(np.int64)
    inside_r, inside_c = (rows >= 0) & (rows < grid_h), (cols >= 0) & (cols < grid_w)
    if (out_h, out_w) == (grid_h, grid_w) and inside_r.all() and inside_c.all() and \
            (rows == np.arange(grid_h)).all() and (cols == np.arange(grid_w)).all():
        return values
    rr = torch.from_numpy(np.clip(rows, 0, grid_h - 1))
    cc = torch.from_numpy(np.clip(cols, 0, grid_w - 1))
    out = values[:, rr][:, :, cc]
    mask = torch.from_numpy(np.logical_and.outer(inside_r, inside_c))
    return out * mask[None]


def _import_cut3r():
    try:
        from moonseg3r_ros.core import cut3r
    except ImportError as err:
        raise GeometryError(f"the CUT3R module cannot be imported: {err}") from err
    return cut3r


def load_cut3r(path: str, device: torch.device, cut3r: Any = None) -> torch.nn.Module:
    """CUT3R model from a checkpoint path; GeometryError when the path is empty, missing or unloadable."""
    if not path:
        raise GeometryError("geometry.source is 'cut3r' but geometry.cut3r_checkpoint is empty: give the path "
                            "of a CUT3R checkpoint (e.g. cut3r_512_dpt_4_64.pth) or use geometry.source "
                            "'recorded' with depth + pose input")
    if not Path(path).expanduser().exists():
        raise GeometryError(f"CUT3R checkpoint '{path}' does not exist (download cut3r_512_dpt_4_64.pth from "
                            "the official CUT3R repository and give its path)")
    if not Path(path).expanduser().is_file():
        raise GeometryError(f"CUT3R checkpoint '{path}' is not a file")
    cut3r = cut3r or _import_cut3r()
    try:
        return cut3r.load_checkpoint(path, device=device)
    except cut3r.CheckpointError as err:  # truncated/corrupt file or another architecture: says which
        raise GeometryError(f"CUT3R checkpoint '{path}' could not be loaded: {err}") from err
    except Exception as err:  # any other loader failure (unsupported options, out of memory) is one clear error
        raise GeometryError(f"CUT3R checkpoint '{path}' could not be loaded "
                            f"({type(err).__name__}: {err})") from err


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def make_geometry_source(config: Any, device: torch.device) -> GeometrySource:
    """GeometrySource for `config.geometry` (a PipelineConfig or a GeometryConfig)."""
    geometry = getattr(config, "geometry", config)
    if geometry.source == "recorded":
        return RecordedGeometry(max_depth=geometry.max_depth, patch=geometry.feature_patch,
                                with_features=geometry.recorded_features)
    if geometry.source == "cut3r":
        return Cut3rGeometry(geometry, device, _DTYPES[geometry.cut3r_dtype])
    raise GeometryError(f"unknown geometry source '{geometry.source}' (use 'cut3r' or 'recorded')")

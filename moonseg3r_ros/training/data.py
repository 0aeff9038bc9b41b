"""Training data: the frozen per-frame outputs of the pipeline's sources, and clips of adjacent frames.

A `FrameRecord` holds everything the trainable parts (eta, phi, psi) need from one frame, computed ONCE by the
frozen sources of a `PipelineConfig` (the same factories the pipeline uses):
    geometry  P_t (4x4), K (3x3), X_t (HxWx3), depth (HxW), valid (HxW)    recorded depth+pose or CUT3R
    F2d       C2 x h x w                                                  configured semantic backbone
    F3d       C3 x h3 x w3 or None, A_t S x ha x wa or None              geometry source
    masks     M_t (labels HxW int32 for non-overlapping sources, else NxHxW bool), with the pipeline's rule:
              masks with fewer than masks.min_valid_points pixels of valid geometry are dropped
and, derived from those on load, the lifter's inputs (normalised mask-pooled F2d/F3d, mask centroids), so that
eta's forward is three matrix products. Nothing here carries gradients: CUT3R and the backbone stay frozen.

Frames are taken every `frame_stride`-th frame of a sequence (the keyframes of a pipeline run with that interval;
CUT3R still sees every frame, it is recurrent). A clip is `clip_length` consecutive records of one sequence;
clip starts advance by `clip_stride` records.

Cache (opt-in, `cache_dir`): one `<sequence>-<key>.npz` per sequence with plain arrays only, read back with
`allow_pickle=False` (loading never executes code). The key hashes the sequence path and frame count, the
stride and every geometry/mask/feature setting, so a changed source or setting never reads a stale cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from moonseg3r_ros.core.atomic_files import replaced_atomically
from moonseg3r_ros.core.config import PipelineConfig, flatten
from moonseg3r_ros.core.lifting import QueryLifter, mask_point_stats, stats_stride
from moonseg3r_ros.core.masks import select_masks, subgrid_members
from moonseg3r_ros.core.types import FrameGeometry, MaskSet

LOGGER = logging.getLogger("moonseg3r")
CACHE_VERSION = 1
_ARRAYS = ("pose_c2w", "intrinsics", "points_world", "depth", "valid", "features_2d", "features_3d",
           "state_attention", "labels", "masks")


@dataclass
class DataConfig:
    train: list = field(default_factory=list)  # sequence folders / bags (glob patterns allowed)
    val: list = field(default_factory=list)  # held-out sequences: validation losses and pipeline AP
    frame_stride: int = 5  # training frames = every N-th frame (the pipeline's keyframe interval)
    clip_length: int = 4  # frames per clip (paper: 16)
    clip_stride: int = 2  # records between clip starts
    max_frames: int = 0  # per sequence, 0 = all
    cache_dir: str = ""  # opt-in on-disk cache of the frozen outputs ("" = off)


@dataclass
class FrameRecord:
    """Frozen outputs of one frame (see the module docstring); numpy arrays, never with gradients."""

    pose_c2w: np.ndarray  # 4x4 float64
    intrinsics: np.ndarray  # 3x3 float64
    points_world: np.ndarray  # HxWx3 float32
    depth: np.ndarray  # HxW float32 (camera z)
    valid: np.ndarray  # HxW bool
    features_2d: np.ndarray  # C2 x h x w float32
    features_3d: Optional[np.ndarray]  # C3 x h3 x w3 float32
    state_attention: Optional[np.ndarray]  # S x ha x wa float32
    masks: MaskSet
    pooled_2d: Optional[np.ndarray] = None  # N x C2 (lifter inputs, filled by `attach_lifter_inputs`)
    pooled_3d: Optional[np.ndarray] = None  # N x C3 or None
    centroids: Optional[np.ndarray] = None  # N x 3
    positions: Optional[torch.Tensor] = None  # 3 x h x w patch world points (psi's input, filled on first use)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.valid.shape)

    def mask_tensor(self) -> torch.Tensor:
        """N x H x W bool."""
        return torch.from_numpy(np.ascontiguousarray(self.masks.masks))


def usable_masks(masks: MaskSet, valid: np.ndarray, min_valid_points: int) -> MaskSet:
    """The pipeline's rule: drop masks with fewer than min_valid_points pixels of valid geometry (sub-grid count)."""
    if len(masks) == 0:
        return masks
    stride = max(1, int(math.sqrt(valid.size / 20_000)))
    index, rows, cols = subgrid_members(masks, stride)
    counts = np.bincount(index[valid[::stride, ::stride][rows, cols]], minlength=len(masks))
    keep = counts * stride * stride >= min_valid_points
    return masks if keep.all() else select_masks(masks, keep)


def record_from(geometry: FrameGeometry, masks: MaskSet, features_2d: torch.Tensor) -> FrameRecord:
    """One FrameRecord from the sources' outputs (copied to numpy float32)."""
    def host(value):
        return None if value is None else torch.as_tensor(value).detach().float().cpu().numpy()

    k = geometry.intrinsics
    if k is None:
        from moonseg3r_ros.core.camera import estimate_intrinsics
        k = estimate_intrinsics(geometry.points_cam, geometry.valid)
    return FrameRecord(np.asarray(geometry.pose_c2w, np.float64), np.asarray(k, np.float64),
                       np.asarray(geometry.points_world, np.float32),
                       np.asarray(geometry.points_cam[..., 2], np.float32), np.asarray(geometry.valid, bool),
                       host(features_2d), host(geometry.features_3d), host(geometry.state_attention), masks)


def build_records(sequence: Sequence, config: PipelineConfig, frame_stride: int, max_frames: int = 0,
                  sources: Optional[tuple] = None) -> list[FrameRecord]:
    """Run the frozen sources of `config` over a sequence of Frames -> records of every frame_stride-th frame.

    `sources` = (geometry_source, mask_source, backbone) overrides the factories (tests)."""
    from moonseg3r_ros.core.features import make_backbone
    from moonseg3r_ros.core.geometry import GeometryError, make_geometry_source
    from moonseg3r_ros.core.masks import MaskError, make_mask_source
    from moonseg3r_ros.core.pipeline import resolve_device

    device = resolve_device(config.device)
    geometry_source, mask_source, backbone = sources or (make_geometry_source(config, device),
                                                          make_mask_source(config, device),
                                                          make_backbone(config, device))
    geometry_source.reset()
    recurrent = config.geometry.source == "cut3r"
    count = len(sequence) if max_frames <= 0 else min(len(sequence), max_frames)
    records = []
    with torch.no_grad():
        for index in range(count):
            if index % frame_stride and not recurrent:
                continue
            frame = sequence[index]
            try:
                geometry = geometry_source.compute(frame)
            except GeometryError as err:
                LOGGER.warning("training data: frame %d skipped: %s", index, err)
                continue
            if index % frame_stride:
                continue
            try:
                masks = usable_masks(mask_source.generate(frame, geometry), geometry.valid,
                                     config.masks.min_valid_points)
            except MaskError as err:
                LOGGER.warning("training data: frame %d has no masks: %s", index, err)
                continue
            if len(masks) == 0:
                continue
            records.append(record_from(geometry, masks, backbone.extract(frame.image)))
    return records


def make_lifter(config: PipelineConfig, semantic_dim: int, geometric_dim: int) -> QueryLifter:
    """The QueryLifter (eta) exactly as the pipeline builds it for this config."""
    cfg = config.features
    return QueryLifter(cfg.dim, semantic_dim, geometric_dim, cfg.pos_frequencies, cfg.pos_scale, seed=config.seed,
                       box_padding=0.5 * config.memory.voxel_size)


def attach_lifter_inputs(record: FrameRecord, lifter: QueryLifter) -> FrameRecord:
    """Fill pooled_2d (N x C2), pooled_3d (N x C3) and centroids (N x 3) as QueryLifter.forward computes them."""
    height, width = record.shape
    stride = stats_stride(height, width, lifter.stats_pixels)
    _, centroids, _, pixel_centres = mask_point_stats(record.masks, record.points_world, record.valid, stride,
                                                      lifter.box_percentile)
    f2d = torch.from_numpy(record.features_2d)
    record.pooled_2d = lifter._pool(record.masks, f2d, pixel_centres).cpu().numpy()
    if record.features_3d is not None and lifter.geometric_dim:
        f3d = torch.from_numpy(record.features_3d)
        record.pooled_3d = lifter._pool(record.masks, f3d, pixel_centres, record.valid).cpu().numpy()
    record.centroids = centroids
    return record


# ---------------------------------------------------------------------------------------------------- cache
# The code the frozen outputs come from (geometry, CUT3R, features, masks, image and sequence reading): its source
# is part of the cache key, so a changed mask rule never reads frames cached by the old one.
FROZEN_OUTPUT_SOURCES = ("core/geometry.py", "core/features.py", "core/masks*.py", "core/images.py",
                         "core/image_buffers.py", "core/camera.py", "core/rotations.py", "core/types.py",
                         "core/cut3r/**/*.py", "data/datasets.py", "data/lazy.py", "data/scannet_io.py", "data/bag.py")


def frozen_code_digest(root: Optional[Path] = None) -> str:
    """sha256 over the source files FROZEN_OUTPUT_SOURCES name (relative path + bytes, in sorted order)."""
    root = root or Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    files = sorted({f for pattern in FROZEN_OUTPUT_SOURCES for f in root.glob(pattern) if f.is_file()})
    for f in files:
        digest.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_key(sequence_path: str, length: int, config: PipelineConfig, frame_stride: int, max_frames: int) -> str:
    """Hash of everything the frozen outputs depend on: settings, sequence, stride, and the code (above)."""
    flat = flatten(config)
    settings = {k: v for k, v in flat.items() if k.split(".")[0] in ("geometry", "masks", "features")}
    settings.update(path=str(Path(sequence_path).resolve()), length=length, stride=frame_stride,
                    max_frames=max_frames, version=CACHE_VERSION, seed=config.seed, code=frozen_code_digest())
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_cache(path: Path, records: list[FrameRecord]) -> None:
    """Records -> one npz of plain arrays (core/atomic_files.py: a temporary file of this writer, then renamed)."""
    arrays: dict[str, np.ndarray] = {"count": np.array(len(records), np.int64)}
    for i, record in enumerate(records):
        values = {"pose_c2w": record.pose_c2w, "intrinsics": record.intrinsics, "points_world": record.points_world,
                  "depth": record.depth, "valid": record.valid, "features_2d": record.features_2d,
                  "features_3d": record.features_3d, "state_attention": record.state_attention,
                  "labels": record.masks.labels,
                  "masks": None if record.masks.labels is not None else record.masks.masks}
        for name, value in values.items():
            if value is not None:
                arrays[f"{i}/{name}"] = np.ascontiguousarray(value)
        arrays[f"{i}/scores"] = np.asarray(record.masks.scores, np.float32)
    with replaced_atomically(path, suffix=".npz") as partial:  # two trainings may share one cache_dir
        np.savez(partial, **arrays)


def load_cache(path: Path) -> list[FrameRecord]:
    """npz written by save_cache -> records (allow_pickle=False: object arrays are refused, never unpickled)."""
    with np.load(path, allow_pickle=False) as data:
        records = []
        for i in range(int(data["count"])):
            get = {name: (data[f"{i}/{name}"] if f"{i}/{name}" in data.files else None) for name in _ARRAYS}
            scores = data[f"{i}/scores"]
            masks = MaskSet(get["masks"], scores, labels=get["labels"])
            records.append(FrameRecord(get["pose_c2w"], get["intrinsics"], get["points_world"], get["depth"],
                                       get["valid"].astype(bool), get["features_2d"], get["features_3d"],
                                       get["state_attention"], masks))
    return records


def sequence_records(path: str, config: PipelineConfig, data: DataConfig,
                     sources: Optional[tuple] = None) -> list[FrameRecord]:
    """Records of one sequence folder/bag, from the cache when enabled and present (written when absent)."""
    from moonseg3r_ros.data.datasets import open_sequence

    sequence = open_sequence(path)
    cache = None
    if data.cache_dir:
        key = cache_key(path, len(sequence), config, data.frame_stride, data.max_frames)
        cache = Path(data.cache_dir) / f"{Path(path).name}-{key}.npz"
        if cache.is_file():
            return load_cache(cache)
    records = build_records(sequence, config, data.frame_stride, data.max_frames, sources)
    if cache is not None:
        save_cache(cache, records)
    return records


def expand_paths(patterns: Iterable[str]) -> list[str]:
    """Glob patterns / paths -> sorted existing paths (a pattern matching nothing is an error)."""
    import glob

    paths: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(str(pattern)))
        if not found:
            raise FileNotFoundError(f"training data: '{pattern}' matches no sequence")
        paths.extend(found)
    return paths


# ---------------------------------------------------------------------------------------------------- clips
def clip_index(record_counts: Sequence[int], clip_length: int, clip_stride: int) -> list[tuple[int, int]]:
    """[(sequence, first record)] of every clip; sequences shorter than clip_length give one shorter clip."""
    clips = []
    for seq, count in enumerate(record_counts):
        if count == 0:
            continue
        last = max(count - clip_length, 0)
        clips.extend((seq, start) for start in range(0, last + 1, max(clip_stride, 1)))
    return clips


class ClipSampler:
    """Deterministic clip order: a permutation per epoch from torch.Generator(seed + epoch); position =
    (epoch, offset), saved in checkpoints so a resumed run draws exactly the clips it would have drawn."""

    def __init__(self, num_clips: int, seed: int, epoch: int = 0, offset: int = 0):
        if num_clips <= 0:
            raise ValueError("no training clips (are the training sequences empty or shorter than a clip?)")
        self.num_clips, self.seed = num_clips, seed
        self.epoch, self.offset = epoch, offset
        self._order = self._permutation(epoch)

    def _permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.num_clips, generator=generator).tolist()

    def next(self) -> int:
        if self.offset >= self.num_clips:
            self.epoch, self.offset = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        clip = self._order[self.offset]
        self.offset += 1
        return clip

    def state(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

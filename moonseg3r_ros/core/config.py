"""Typed configuration of the pipeline.

Every field carries a description (and a numeric range where one applies) in its metadata, so that the
ROS layer declares one parameter per field with a proper descriptor, and `config/moonseg3r.yaml`
mirrors these defaults. Parameter names are the dotted paths, e.g. `association.match_threshold`.
Defaults follow the paper (see ../shared/paper/facts.md) where it gives a value.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional


def param(default: Any, description: str, low: Optional[float] = None, high: Optional[float] = None,
          choices: Optional[tuple] = None):
    """A dataclass field with a parameter description, an optional [low, high] range and choices (a list default
    is copied for every instance)."""
    metadata = {"description": description, "range": (low, high), "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class GeometryConfig:
    source: str = param("recorded", "Geometry source: 'cut3r' (monocular) or 'recorded' (depth+pose input).",
                        choices=("cut3r", "recorded"))
    cut3r_checkpoint: str = param("", "Path to the CUT3R checkpoint (e.g. cut3r_512_dpt_4_64.pth).")
    image_long_side: int = param(512, "Long side, in pixels, of the image fed to CUT3R.", 64, 2048)
    min_confidence: float = param(1.5, "Pixels whose geometry confidence is below this are ignored.", 0.0, 1e6)
    max_depth: float = param(10.0, "Points farther than this from the camera are ignored (metres or model units).",
                             0.01, 1e4)
    state_attention_layer: int = param(-1, "State-decoder layer whose cross-attention gives A_t (-1 = last).",
                                       -64, 64)
    state_attention_heads: str = param("mean", "How heads of A_t are pooled: 'mean' or 'max'.",
                                       choices=("mean", "max"))
    cut3r_dtype: str = param("float32", "Torch dtype CUT3R runs in.", choices=("float32", "float16", "bfloat16"))
    recorded_features: bool = param(False, "Recorded geometry: compute weight-free F3d (world normals + log "
                                           "depth); off = no F3d.")
    feature_patch: int = param(16, "Recorded geometry: patch size (pixels) of the geometric features F3d.", 1, 256)


@dataclass
class MaskConfig:
    source: str = param("rgbd", "2D mask source: 'sam', 'fastsam' (ultralytics, optional, AGPL-3.0), 'sam2' "
                                "(transformers), 'precomputed', 'ground_truth', 'rgbd' (weight-free, planes + "
                                "depth/crease/colour edges) or 'weight_free' (colour/depth edges).",
                        choices=("sam", "fastsam", "sam2", "precomputed", "ground_truth", "rgbd", "weight_free"))
    sam_checkpoint: str = param("", "Path to a segment-anything checkpoint (sam_vit_b_01ec64.pth, ...).")
    sam_model_type: str = param("vit_b", "segment-anything model type.", choices=("vit_b", "vit_l", "vit_h"))
    points_per_side: int = param(16, "SAM / SAM 2 automatic mask generator: points per side.", 1, 128)
    pred_iou_thresh: float = param(0.86, "SAM / SAM 2 automatic mask generator: predicted IoU threshold.", 0.0, 1.0)
    stability_score_thresh: float = param(0.92, "SAM / SAM 2 automatic mask generator: stability threshold.",
                                          0.0, 1.0)
    fastsam_checkpoint: str = param("", "Path to a FastSAM checkpoint (FastSAM-s.pt or FastSAM-x.pt, ultralytics "
                                        "format; read without running code from it).")
    fastsam_image_size: int = param(640, "FastSAM: long side, in pixels, of the network input (multiple of 32).",
                                    32, 4096)
    fastsam_conf: float = param(0.4, "FastSAM: detection confidence threshold.", 0.0, 1.0)
    fastsam_iou: float = param(0.9, "FastSAM: NMS IoU threshold between detections.", 0.0, 1.0)
    sam2_checkpoint: str = param("", "SAM 2 model folder in transformers format (config.json + model.safetensors, "
                                     "e.g. sam2.1-hiera-tiny); its image size is the checkpoint's (1024).")
    sam2_nms_iou: float = param(0.7, "SAM 2 automatic mask generator: box NMS IoU threshold between masks.", 0.0, 1.0)
    sam2_points_per_batch: int = param(64, "SAM 2 automatic mask generator: prompt points per decoder batch.",
                                       1, 4096)
    network_device: str = param("", "Device of the mask network (sam, fastsam, sam2): '' = the pipeline's device, "
                                    "or 'auto', 'cpu', 'cuda', 'cuda:1'.")
    precomputed_dir: str = param("", "Folder of precomputed masks (one file per frame).")
    min_mask_area: int = param(100, "Masks with fewer pixels are dropped.", 0, 10_000_000)
    max_masks: int = param(100, "At most this many masks per frame (largest scores first).", 1, 10_000)
    weight_free_color_threshold: float = param(0.03, "Weight-free masks: chromaticity step that separates "
                                                     "neighbouring pixels.", 0.0, 1.0)
    min_valid_points: int = param(20, "Masks with fewer pixels of valid geometry are dropped.", 1, 10_000_000)
    asynchronous: bool = param(False, "Keyframe masks (and 2D features) on a worker thread: the geometry of the "
                                      "following frames does not wait; keyframes are committed in frame order.")
    max_pending: int = param(2, "Asynchronous masks: keyframes waiting for masks at most; a keyframe beyond "
                                "this is dropped (counted in keyframes_dropped_pending).", 1, 64)
    weight_free_depth_threshold: float = param(0.04, "Weight-free masks: relative depth step that separates "
                                                     "neighbouring pixels.", 0.0, 10.0)
    rgbd_depth_threshold: float = param(0.02, "RGB-D masks: relative depth step that separates neighbouring "
                                              "pixels.", 0.0, 10.0)
    rgbd_concave_degrees: float = param(20.0, "RGB-D masks: concave crease angle that separates an object from "
                                              "its support or a touching object.", 0.0, 180.0)
    rgbd_color_threshold: float = param(30.0, "RGB-D masks: CIELAB step that separates neighbours across a "
                                              "slight crease (touching objects of different colour).", 0.0, 500.0)
    rgbd_max_planes: int = param(4, "RGB-D masks: support planes (RANSAC) looked for per keyframe.", 0, 32)
    rgbd_plane_distance: float = param(0.012, "RGB-D masks: plane inlier distance relative to the median depth.",
                                       0.0, 1.0)
    rgbd_work_long_side: int = param(320, "RGB-D masks: long side, in pixels, of the grid they are computed on.",
                                     16, 8192)


@dataclass
class FeatureConfig:
    backbone: str = param("none", "2D semantic backbone: 'dino' (local weights), 'none' (weight-free colour "
                                  "features) or 'texture' (weight-free colour + colour spread + oriented-gradient "
                                  "histograms).", choices=("dino", "none", "texture"))
    weights: str = param("", "Local folder or file with the DINO backbone weights (transformers format).")
    dim: int = param(64, "Width of the queries after lifting.", 8, 4096)
    input_long_side: int = param(448, "DINO backbone: long side of its input image (rounded to the patch size).",
                                 14, 4096)
    color_patch: int = param(8, "Weight-free colour features: patch size in pixels.", 1, 256)
    texture_orientations: int = param(8, "Texture features: orientation bins of the per-patch gradient histogram.",
                                      2, 64)
    pos_frequencies: int = param(32, "Random Fourier frequencies of the 3D positional encoding of each mask.",
                                 1, 1024)
    pos_scale: float = param(0.5, "Length scale (scene units) of the positional encoding: centroids this far "
                                  "apart have encoding cosine exp(-1/2).", 1e-4, 1e6)


@dataclass
class RefinementConfig:
    mode: str = param("trained", "'trained': the refiner (lifter, decoder, pixel head) in refinement.weights, or when "
                                 "that is empty the shipped weights trained for the configured features (none: "
                                 "identity); 'identity': q' = q, no trained weights used.",
                      choices=("trained", "identity"))
    weights: str = param("", "Refiner weights written by `moonseg3r train` (refiner.safetensors; a decoder-only torch "
                             "state dict is also read); empty = the shipped weights for these features, if any.")
    num_layers: int = param(3, "Query decoder layers (paper: 3).", 0, 32)
    num_heads: int = param(4, "Attention heads of the query decoder.", 1, 64)
    run_untrained: bool = param(False, "Without weights, run the randomly initialised decoder instead of the "
                                       "identity (for benchmarking its cost only).")


@dataclass
class MemoryConfig:
    voxel_size: float = param(0.05, "Cell size of the 3D query index memory.", 1e-4, 10.0)
    max_contextual_queries: int = param(256, "At most this many historical queries are retrieved per frame.",
                                        0, 100_000)
    occlusion_tolerance: float = param(0.1, "Memory retrieval: a cell is visible when its depth <= observed depth + "
                                            "this (scene units).", 0.0, 1e4)
    bank_average_window: int = param(20, "Query bank: running mean over the first N observations, then an "
                                         "exponential average with weight 1/N.", 1, 1_000_000)


@dataclass
class AssociationConfig:
    merge_threshold: float = param(0.8, "Intra-frame merge: query cosine similarity above this merges masks.",
                                   -1.0, 1.0)
    match_threshold: float = param(1.8, "Cross-frame match: cos(query)+cos(state)+box IoU must exceed this.",
                                   -3.0, 3.0)
    match_threshold_without_state: float = param(
        1.2, "Match threshold used when the geometry source has no state attention (cos(query)+box IoU).",
        -2.0, 2.0)
    merge_box_margin: float = param(0.05, "Intra-frame merge: 3D boxes closer than this (scene units) count as "
                                          "touching; only touching masks merge.", 0.0, 1e4)
    box_overlap: str = param("visible_iou", "Box term of the match score: 'visible_iou' (IoU with the map instance's "
                             "box or with the box of its memory cells seen from the current view, whichever is "
                             "larger) or 'iou' (the paper's plain 3D box IoU).", choices=("visible_iou", "iou"))
    merge_evidence: str = param("boundary", "Intra-frame merge evidence besides query similarity and touching boxes: "
                                "'boundary' (the masks share a boundary along which depth goes on smoothly: no "
                                "depth jump, no concave crease; core/merge_evidence.py) or 'boxes' (box contact "
                                "only).", choices=("boundary", "boxes"))
    merge_depth_step: float = param(0.01, "Merge evidence: a neighbour pair across the shared boundary is a depth "
                                          "jump when its inverse-depth step departs from the surface's slope by "
                                          "more than this fraction.", 0.0, 10.0)
    merge_concave_angle: float = param(20.0, "Merge evidence: a pair on a concave crease sharper than this "
                                             "(degrees; e.g. an object's contact with its support) is not smooth.",
                                       0.0, 180.0)
    merge_min_shared: int = param(5, "Merge evidence: masks must share at least this many neighbour pixel pairs.",
                                  0, 1_000_000)
    merge_min_shared_fraction: float = param(0.05, "Merge evidence: and at least this fraction of the smaller "
                                                   "mask's boundary pairs.", 0.0, 1.0)
    merge_min_smooth_fraction: float = param(0.6, "Merge evidence: at least this fraction of the shared pairs must "
                                                  "be smooth (no depth jump, no concave crease).", 0.0, 1.0)


@dataclass
class MapConfig:
    voxel_size: float = param(0.02, "Voxel size of the fused instance-map points.", 1e-4, 10.0)
    min_instance_points: int = param(50, "Instances with fewer map points are pruned.", 0, 10_000_000)
    stale_after_s: float = param(0.0, "Prune instances unseen for this long (seconds, 0 = never).", 0.0, 1e9)
    max_point_weight: int = param(100, "Per-voxel running means (xyz, rgb, confidence) weigh the past at most "
                                       "this many observations.", 1, 1_000_000_000)
    export_max_distance: float = param(0.0, "ScanNet export: mesh vertices farther than this from a map voxel stay "
                                            "unassigned (0 = 2 x voxel_size).", 0.0, 1e4)


@dataclass
class OccupancyConfig:
    """The 2D navigation outputs derived from the map (core/occupancy.py): an occupancy grid on the ground."""

    rate: float = param(1.0, "OccupancyGrid publishing rate in Hz (0 = after every keyframe).", 0.0, 1000.0)
    resolution: float = param(0.05, "Grid cell size (m or scene units).", 1e-3, 100.0)
    band_min: float = param(0.05, "Lowest height above the ground plane of an obstacle point.", -1e3, 1e3)
    band_max: float = param(1.5, "Highest height above the ground plane of an obstacle point.", -1e3, 1e3)
    floor_tolerance: float = param(0.03, "Points within this height of the ground plane are floor: their cells "
                                         "are free unless an obstacle is there.", 0.0, 1e3)
    obstacle_points: str = param("all", "Which points in the band are obstacles: 'all' (instances and unassigned "
                                        "geometry such as walls) or 'instances' (only points with an instance id).",
                                 choices=("all", "instances"))
    min_obstacle_size: float = param(0.0, "Instances whose largest box edge is below this are not obstacles "
                                          "(0 = no lower bound).", 0.0, 1e4)
    max_obstacle_size: float = param(0.0, "Instances whose largest box edge is above this are not obstacles "
                                          "(0 = no upper bound).", 0.0, 1e4)
    floor_fraction: float = param(0.8, "An instance with at least this fraction of its points on the floor is the "
                                       "floor/support plane: its points mark free cells, never obstacles.", 0.0, 1.0)
    min_cell_points: int = param(1, "Obstacle points a cell needs to be occupied.", 1, 1_000_000)
    ground: str = param("plane", "Ground plane: 'plane' (normal 'up' at height 'ground_height') or 'fit' (the "
                                 "largest plane within fit_max_tilt of 'up', fitted to the map's points).",
                        choices=("plane", "fit"))
    up: list = param([0.0, 0.0, 1.0], "Up direction of the map frame [x, y, z] (REP 103 maps: z up).")
    ground_height: float = param(0.0, "Height of the ground plane along 'up' (ground 'plane').", -1e4, 1e4)
    fit_max_tilt: float = param(20.0, "Ground 'fit': largest angle between the fitted plane's normal and 'up' "
                                      "(degrees).", 0.0, 90.0)
    margin: float = param(0.25, "Unknown border added around the observed area.", 0.0, 1e3)
    max_cells: int = param(4000, "Largest grid side in cells; a larger observed area is cropped around the "
                                 "median point (cropped points are counted).", 1, 100_000)


@dataclass
class PipelineConfig:
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    refinement: RefinementConfig = field(default_factory=RefinementConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    association: AssociationConfig = field(default_factory=AssociationConfig)
    map: MapConfig = field(default_factory=MapConfig)
    occupancy: OccupancyConfig = field(default_factory=OccupancyConfig)
    keyframe_interval: int = param(10, "Masks and association run every N-th frame (paper: 10 ScanNet, "
                                       "20 SceneNN); geometry runs every frame.", 1, 10_000)
    device: str = param("auto", "Torch device: 'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...")
    seed: int = param(0, "Seed for randomly initialised parts.", 0, 2**31 - 1)
    max_image_pixels: int = param(50_000_000, "Input images with more pixels are rejected (counted skip).",
                                  1, 2**40)
    integrate_stride: int = param(2, "Keyframes integrate every N-th pixel (per axis) into the map and the "
                                     "query index memory.", 1, 64)
    prune_interval: int = param(10, "Prune small/stale instances every N keyframes (0 = never).", 0, 1_000_000)
    min_valid_fraction: float = param(0.01, "Frames whose fraction of valid geometry pixels is below this are "
                                            "skipped (counted as skipped_no_geometry).", 0.0, 1.0)


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dataclass -> {'a.b': value} with dotted names."""
    flat: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def field_specs(config_type: type = PipelineConfig, prefix: str = "") -> dict[str, dataclasses.Field]:
    """{'a.b': dataclasses.Field} for every leaf field (carries description/range/choices metadata)."""
    specs: dict[str, dataclasses.Field] = {}
    for f in dataclasses.fields(config_type):
        name = f"{prefix}{f.name}"
        sub_type = f.type if isinstance(f.type, type) else _resolve(config_type, f.name)
        if dataclasses.is_dataclass(sub_type):
            specs.update(field_specs(sub_type, name + "."))
        else:
            specs[name] = f
    return specs


def _resolve(owner: type, name: str) -> Any:
    return _type_hints(owner)[name]


@functools.lru_cache(maxsize=None)
def _type_hints(owner: type) -> dict[str, Any]:
    """typing.get_type_hints of a config class, once per class (evaluating the string annotations of every
    field for every field made declaring the node's parameters take ~1.7 s)."""
    import typing
    return typing.get_type_hints(owner)


def from_flat(values: dict[str, Any], base: Optional[PipelineConfig] = None) -> PipelineConfig:
    """Build a config from {'a.b': value}; unknown names raise KeyError, wrong types and ranges ValueError."""
    config = dataclasses.replace(base) if base is not None else PipelineConfig()
    config = _deep_copy(config)
    specs = field_specs(PipelineConfig)
    for name, value in values.items():
        if name not in specs:
            raise KeyError(f"unknown configuration key '{name}'")
        target = config
        *parents, leaf = name.split(".")
        for p in parents:
            target = getattr(target, p)
        current = getattr(target, leaf)
        setattr(target, leaf, _coerce(name, value, type(current)))
    validate(config)
    return config


def copy_fields(source: Any, target: Any, names: Iterable[str]) -> None:
    """Set the dotted fields `names` ("association.match_threshold", ...) of `target` to `source`'s values, in
    place (section objects stay the same objects); ValueError for a name that is not a field of both."""
    for name in names:
        *parents, leaf = name.split(".")
        src, dst = source, target
        for part in parents:
            src, dst = getattr(src, part, None), getattr(dst, part, None)
        if src is None or dst is None or not hasattr(dst, leaf):
            raise ValueError(f"'{name}' is not a pipeline configuration field")
        setattr(dst, leaf, getattr(src, leaf))


def _deep_copy(config: Any) -> Any:
    changes = {f.name: _deep_copy(getattr(config, f.name)) for f in dataclasses.fields(config)
               if dataclasses.is_dataclass(getattr(config, f.name))}
    return dataclasses.replace(config, **changes)


def type_error(name: str, value: Any, kind: type) -> Optional[str]:
    """Why `value` is not of the parameter type `kind` (bool, int, finite float, str, list of numbers)."""
    if kind is bool and not isinstance(value, bool):
        return f"'{name}' must be a bool, got {value!r}"
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        return f"'{name}' must be an integer, got {value!r}"
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
        return f"'{name}' must be a finite number, got {value!r}"
    if kind is str and not isinstance(value, str):
        return f"'{name}' must be a string, got {value!r}"
    if kind is list and (not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        return f"'{name}' must be a list of numbers, got {value!r}"
    return None


def range_error(name: str, value: Any, f: dataclasses.Field) -> Optional[str]:
    """Why `value` is outside the choices or the [low, high] range in the metadata of field `f`."""
    low, high = f.metadata.get("range", (None, None))
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        return f"'{name}' must be one of {list(choices)}, got {value!r}"
    if low is not None and value < low:
        return f"'{name}' must be >= {low}, got {value!r}"
    if high is not None and value > high:
        return f"'{name}' must be <= {high}, got {value!r}"
    return None


def value_error(name: str, value: Any, f: dataclasses.Field, kind: type) -> Optional[str]:
    """Why `value` is not acceptable for field `f` of type `kind`, or None (shared with the ROS parameters)."""
    return type_error(name, value, kind) or range_error(name, value, f)


def _coerce(name: str, value: Any, kind: type) -> Any:
    reason = type_error(name, value, kind)
    if reason:
        raise ValueError(reason)
    return float(value) if kind is float else value


def validate(config: PipelineConfig) -> None:
    """Raise ValueError naming the first field outside its range or choices."""
    flat = flatten(config)
    for name, f in field_specs(PipelineConfig).items():
        reason = range_error(name, flat[name], f)
        if reason:
            raise ValueError(reason)

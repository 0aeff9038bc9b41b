"""Trained refiner weights: one safetensors file with eta (lifter), phi (decoder) and psi (pixel head).

File layout (written by `moonseg3r train`, read by the pipeline through `refinement.weights`):
    tensors   "lifter.<name>", "decoder.<name>", "pixel_head.<name>"  (the modules' state_dicts)
    metadata  {"moonseg3r_refiner": JSON}  with
              format "moonseg3r-refiner", version 1,
              dims {dim, semantic_dim, geometric_dim, pixel_hidden, num_layers, num_heads, pos_frequencies,
                    pixel_pos_frequencies, pixel_pos_scale, cosine_logits},
              features  the feature configuration the weights were trained for (`feature_signature`),
              training  free-form facts about the run (steps, seed, data, losses).
safetensors holds raw tensors and a JSON header only: loading never executes code.

A file trained for another feature configuration (other backbone or F3d source, other widths, patch sizes or
positional encoding) is refused with a message naming each differing setting (`check_features`).
"""
from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from moonseg3r_ros.core.atomic_files import replaced_atomically

FORMAT = "moonseg3r-refiner"
VERSION = 1
META_KEY = "moonseg3r_refiner"
PARTS = ("lifter", "decoder", "pixel_head")
LOGGER = logging.getLogger("moonseg3r")
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "weights"  # weights that ship with the package


class RefinerWeightsError(RuntimeError):
    """Refiner weights missing, unreadable, of another format, or trained for another feature configuration."""


@dataclass
class RefinerWeights:
    states: dict  # part name -> state_dict
    meta: dict

    @property
    def dims(self) -> dict:
        return self.meta["dims"]


def geometric_feature_source(config: Any) -> str:
    """What F3d is for this PipelineConfig: 'cut3r', 'recorded-normals-logdepth' or 'none'."""
    geometry = config.geometry
    if geometry.source == "cut3r":
        return "cut3r"
    return "recorded-normals-logdepth" if geometry.recorded_features else "none"


def feature_signature(config: Any) -> dict:
    """The settings of a PipelineConfig that trained weights depend on (compared on load)."""
    features, geometry = config.features, config.geometry
    signature = {"backbone": features.backbone, "dim": features.dim, "pos_frequencies": features.pos_frequencies,
                 "pos_scale": features.pos_scale, "seed": config.seed, "f3d": geometric_feature_source(config)}
    if features.backbone == "dino":
        signature["input_long_side"] = features.input_long_side
    else:  # the weight-free backbones
        signature["color_patch"] = features.color_patch
    if features.backbone == "texture":
        signature["texture_orientations"] = features.texture_orientations
    if signature["f3d"] == "recorded-normals-logdepth":
        signature["feature_patch"] = geometry.feature_patch
    return signature


def check_features(meta: dict, config: Any, path: str = "") -> None:
    """RefinerWeightsError naming every feature setting where `config` differs from what the file was trained for."""
    trained = meta.get("features", {})
    current = feature_signature(config)
    differ = [f"{k}: trained {trained.get(k)!r}, configured {current.get(k)!r}"
              for k in sorted(set(trained) | set(current)) if trained.get(k) != current.get(k)]
    if differ:
        raise RefinerWeightsError(f"refinement weights '{path}' were trained for another feature configuration "
                                  f"({'; '.join(differ)}); use weights trained for these features, change the "
                                  f"features to match, or set refinement.mode identity")


def save_refiner(path: str | Path, modules: dict, dims: dict, features: dict, training: Optional[dict] = None) -> Path:
    """modules {'lifter','decoder','pixel_head'} -> one safetensors file (a temporary file, then renamed)."""
    from safetensors.torch import save_file

    tensors = {f"{part}.{name}": value.detach().cpu().contiguous()
               for part in PARTS for name, value in modules[part].state_dict().items()}
    meta = {"format": FORMAT, "version": VERSION, "dims": dims, "features": features, "training": training or {}}
    path = Path(path)
    with replaced_atomically(path) as partial:
        save_file(tensors, str(partial), metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    return path


def is_refiner_file(path: str | Path) -> bool:
    """True when the file is a safetensors file carrying the refiner metadata."""
    from safetensors import SafetensorError

    try:
        return META_KEY in (_read_metadata(path) or {})
    except (OSError, ValueError, SafetensorError):  # e.g. a torch file: not a refiner file
        return False


def _read_metadata(path: str | Path) -> Optional[dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def load_refiner(path: str | Path) -> RefinerWeights:
    """Read a refiner file (see the module docstring); RefinerWeightsError with the reason when it cannot."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise RefinerWeightsError(f"refinement weights '{path}' do not exist")
    try:
        metadata = _read_metadata(path) or {}
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for truncated/corrupt headers
        raise RefinerWeightsError(f"refinement weights '{path}' cannot be read as safetensors: {err}") from err
    if META_KEY not in metadata:
        raise RefinerWeightsError(f"refinement weights '{path}' are safetensors without the '{META_KEY}' metadata "
                                  "(not written by `moonseg3r train`)")
    try:
        meta = json.loads(metadata[META_KEY])
    except ValueError as err:
        raise RefinerWeightsError(f"refinement weights '{path}': unreadable metadata: {err}") from err
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise RefinerWeightsError(f"refinement weights '{path}' have format {meta.get('format')!r} version "
                                  f"{meta.get('version')!r}; this release reads {FORMAT!r} version {VERSION}")
    states: dict = {part: {} for part in PARTS}
    for key, value in tensors.items():
        part, _, name = key.partition(".")
        if part not in states:
            raise RefinerWeightsError(f"refinement weights '{path}': unexpected tensor '{key}'")
        states[part][name] = value
    return RefinerWeights(states, meta)


def build_refiner_modules(weights: RefinerWeights, config: Any, semantic_dim: int, device: torch.device,
                          path: str = "") -> tuple[Any, Any, dict]:
    """(QueryDecoder in mode 'trained', PixelHead, lifter state_dict) from loaded weights, after checking that
    they were trained for `config`'s features and this backbone's width (semantic_dim channels)."""
    check_features(weights.meta, config, path)
    dims = weights.dims
    if int(dims["semantic_dim"]) != int(semantic_dim):
        raise RefinerWeightsError(f"refinement weights '{path}' were trained for F2d with {dims['semantic_dim']} "
                                  f"channels, the backbone gives {semantic_dim}")
    head, decoder = new_refiner_modules(dims)
    try:
        head.load_state_dict(weights.states["pixel_head"], strict=True)
        decoder.load_state_dict(weights.states["decoder"], strict=True)
    except RuntimeError as err:
        raise RefinerWeightsError(f"refinement weights '{path}' do not fit their own dims {dims}: {err}") from err
    return decoder.to(device).eval(), head.to(device).eval(), weights.states["lifter"]


def new_refiner_modules(dims: dict, seed: int = 0) -> tuple[Any, Any]:
    """(PixelHead psi, QueryDecoder phi in mode 'trained') with fresh weights for a refiner file's `dims` (see the
    module docstring): the one builder of loading (build_refiner_modules) and training (training/model.py)."""
    from moonseg3r_ros.core.pixel_head import PixelHead
    from moonseg3r_ros.core.refinement import QueryDecoder

    head = PixelHead(int(dims["semantic_dim"]), int(dims["geometric_dim"]), int(dims["dim"]), int(dims["pixel_hidden"]),
                     seed, int(dims.get("pixel_pos_frequencies", 0)), float(dims.get("pixel_pos_scale", 0.5)),
                     bool(dims.get("cosine_logits", False)))
    with _quiet():  # its "random decoder weights" warning does not apply: the weights are trained or loaded
        decoder = QueryDecoder(int(dims["dim"]), int(dims["dim"]), int(dims["num_layers"]), int(dims["num_heads"]),
                               run_untrained=True, seed=seed)
    decoder.mode = "trained"
    return head, decoder


@contextlib.contextmanager
def _quiet():
    level = LOGGER.level
    LOGGER.setLevel(logging.ERROR)
    try:
        yield
    finally:
        LOGGER.setLevel(level)


def shipped_weights_for(config: Any) -> str:
    """Path of a refiner file shipped in moonseg3r_ros/weights/ that was trained for `config`'s features, or ''."""
    signature = feature_signature(config)
    for path in sorted(SHIPPED_DIR.glob("*.safetensors")) if SHIPPED_DIR.is_dir() else []:
        try:
            metadata = _read_metadata(path) or {}
            if json.loads(metadata.get(META_KEY, "{}")).get("features") == signature:
                return str(path)
        except (OSError, ValueError):
            continue
    return ""


def build_refinement(config: Any, semantic_dim: int, device: torch.device) -> tuple[Any, Any]:
    """The pipeline's refinement for `config.refinement` -> (QueryDecoder, PixelHead or None).

    mode 'identity': the identity decoder (q' = q), whatever the weights. mode 'trained': the refiner file in
    `weights`, or when that is empty the shipped file trained for these features; with neither, the identity
    (logged once as "untrained refinement: identity"). A refiner file gives phi + psi, and eta's state in
    `decoder.extras['lifter']` (the pipeline loads it into its QueryLifter); any other file is read by
    QueryDecoder.load_weights (a decoder-only state dict on the F2d tokens, no psi)."""
    from moonseg3r_ros.core.refinement import QueryDecoder

    ref, dim = config.refinement, config.features.dim
    path = ref.weights if ref.mode == "trained" else ""
    if ref.mode == "trained" and not path:
        path = shipped_weights_for(config)
        if path:
            LOGGER.info("refinement: shipped weights %s (trained for these features)", path)
    if path and is_refiner_file(path):
        weights = load_refiner(path)
        decoder, head, lifter_state = build_refiner_modules(weights, config, semantic_dim, device, path)
        decoder.extras = {"lifter": lifter_state}
        LOGGER.info("refinement weights loaded from %s", path)
        return decoder, head
    decoder = QueryDecoder(dim, semantic_dim, ref.num_layers, ref.num_heads, path, ref.run_untrained, config.seed)
    return decoder.to(device).eval(), None


def frame_tokens(pixel_head: Any, features_2d: torch.Tensor, features_3d: Optional[torch.Tensor],
                 geometry: Any) -> torch.Tensor:
    """The decoder's frame tokens: F2d (C2 x h x w) without a pixel head, else psi(F2d, F3d, patch world points of
    `geometry` (a FrameGeometry)) D x h x w."""
    if pixel_head is None:
        return features_2d
    from moonseg3r_ros.core.pixel_head import patch_positions

    positions = None
    if pixel_head.pos_frequencies:
        positions = patch_positions(geometry.points_world, geometry.valid, features_2d.shape[1], features_2d.shape[2])
    return pixel_head(features_2d, features_3d, positions)

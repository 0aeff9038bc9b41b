"""Checks of a saved instance map's content before it replaces the running map (pure functions, no I/O).

`config_from_json(text)` builds the saved MapConfig strictly: a JSON object; every known field of the type of
its default (an int for a float field is fine, a bool is never a number), finite, inside the field's
documented range. Unknown keys are ignored (they are listed by `unknown_config_keys`).

`validate_state(state)` checks a parsed map (map_files.MapState, duck-typed):
    slots      consistent lengths; keys unique and >= 0; xyz and confidence finite; rgb finite in [0, 255];
               weight finite and > 0 (not bounded by max_point_weight: that may have changed while running);
               vote_id >= 0; vote_count >= 0
    instances  ids >= 1, strictly ascending; stamps float64 (finite or NaN = never seen, first <= last);
               descriptor lengths >= 0 summing to the data, which is finite float32; keyframe counts
               integers with 0 <= observed <= in_view
    next_id    > every id (records and voxel votes) and <= MAX_INSTANCE_ID
Ids index dense per-id tables in InstanceMap (its per-frame work grows with the largest id and next_id), so
ids are limited to MAX_INSTANCE_ID, far above what a run creates (one id per new instance), far below the
2**32 - 1 of Instance.id: a file claiming more ids is refused rather than stalling the next frames.

Every check raises MapValidationError with the reason; nothing is modified.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

from .config import MapConfig

MAX_INSTANCE_ID = 1 << 20  # largest id / next_id accepted from a file (see the module docstring)
UINT32_MAX = 2**32 - 1


class MapValidationError(ValueError):
    """A saved map's content is invalid; the message says which field and why."""


# ------------------------------------------------------------------------------------------- config
def config_from_json(text: str) -> MapConfig:
    """The MapConfig saved as JSON `text`, every field checked (module docstring); MapValidationError."""
    try:
        values = json.loads(text)
    except (TypeError, ValueError) as err:
        raise MapValidationError(f"map configuration is not JSON: {err}") from None
    if not isinstance(values, dict):
        raise MapValidationError(f"map configuration is a {type(values).__name__}, not an object")
    checked = {}
    for f in dataclasses.fields(MapConfig):
        if f.name in values:
            checked[f.name] = _checked_field(f, values[f.name])
    return MapConfig(**checked)


def unknown_config_keys(text: str) -> list[str]:
    """Keys of the saved configuration that this MapConfig does not have (ignored on load)."""
    values = json.loads(text)
    known = {f.name for f in dataclasses.fields(MapConfig)}
    return sorted(k for k in values if k not in known) if isinstance(values, dict) else []


def _checked_field(f: dataclasses.Field, value: Any) -> Any:
    default = f.default
    kind = type(default)
    name = f"map configuration {f.name}"
    if isinstance(value, bool) != isinstance(default, bool):
        raise MapValidationError(f"{name} is {value!r}, expected a {kind.__name__}")
    if kind is float:
        if not isinstance(value, (int, float)):
            raise MapValidationError(f"{name} is {value!r}, expected a number")
        value = float(value)
        if not math.isfinite(value):
            raise MapValidationError(f"{name} is {value}, expected a finite number")
    elif kind is int and not isinstance(default, bool):
        if not isinstance(value, int):
            raise MapValidationError(f"{name} is {value!r}, expected an integer")
    elif not isinstance(value, kind):
        raise MapValidationError(f"{name} is {value!r}, expected a {kind.__name__}")
    low, high = f.metadata.get("range", (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        raise MapValidationError(f"{name} is {value}, outside [{low}, {high}]")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise MapValidationError(f"{name} is {value!r}, expected one of {list(choices)}")
    return value


def config_differences(saved: MapConfig, current: MapConfig) -> dict[str, tuple[Any, Any]]:
    """{field: (current value, saved value)} for every MapConfig field where the two differ."""
    return {f.name: (getattr(current, f.name), getattr(saved, f.name)) for f in dataclasses.fields(MapConfig)
            if getattr(current, f.name) != getattr(saved, f.name)}


# ------------------------------------------------------------------------------------------- content
def validate_state(state: Any) -> None:
    """MapValidationError unless the parsed map `state` (MapState) is consistent (module docstring)."""
    slots = state.slots
    _check_slots(slots)
    _check_instances(state)
    _check_next_id(state.next_id, slots["vote_id"], state.meta_ids)


def _check_slots(slots: dict[str, np.ndarray]) -> None:
    n = slots["keys"].shape[0]
    shapes = {"keys": (n,), "xyz": (n, 3), "rgb": (n, 3), "conf": (n,), "weight": (n,), "vote_id": (n,),
              "vote_count": (n,)}
    for name, shape in shapes.items():
        if slots[name].shape != shape:
            raise MapValidationError(f"voxel array {name} has shape {slots[name].shape}, expected {shape}")
    if n == 0:
        return
    if slots["keys"].min() < 0 or np.unique(slots["keys"]).size != n:
        raise MapValidationError("voxel keys are negative or repeated")
    _require(np.isfinite(slots["xyz"]).all(), "voxel coordinates (xyz) hold NaN or infinite values")
    _require(np.isfinite(slots["conf"]).all(), "voxel confidences hold NaN or infinite values")
    rgb = slots["rgb"]
    _require(bool(np.isfinite(rgb).all() and rgb.min() >= -0.5 and rgb.max() <= 255.5),  # means of uint8
             "voxel colours (rgb) are not finite values in [0, 255]")
    weight = slots["weight"]
    _require(bool(np.isfinite(weight).all() and weight.min() > 0), "voxel weights are not finite and > 0")
    _require(slots["vote_id"].min() >= 0, "voxel instance ids (vote_id) are negative")
    _require(slots["vote_count"].min() >= 0, "voxel vote counts are negative")


def _check_instances(state: Any) -> None:
    ids = np.asarray(state.meta_ids)
    first, last = np.asarray(state.first_seen), np.asarray(state.last_seen)
    if not (ids.shape == first.shape == last.shape == (len(state.descriptors),)):
        raise MapValidationError("instance records have inconsistent lengths")
    if ids.size == 0:
        return
    _require(ids.dtype.kind in "iu", f"instance ids are {ids.dtype}, expected integers")
    _require(ids.min() >= 1, "instance ids must be >= 1")
    _require(bool((np.diff(ids) > 0).all()), "instance ids are not strictly ascending (repeated ids)")
    _require(first.dtype == np.float64 and last.dtype == np.float64, "instance stamps are not float64")
    _require(not (np.isinf(first).any() or np.isinf(last).any()), "instance stamps are infinite")
    seen = ~(np.isnan(first) | np.isnan(last))
    _require(bool((first[seen] <= last[seen]).all()), "an instance was first seen after it was last seen")
    for k, descriptor in enumerate(state.descriptors):
        if descriptor.dtype != np.float32 or not np.isfinite(descriptor).all():
            raise MapValidationError(f"descriptor of instance {int(ids[k])} is not finite float32")
    _check_counts(np.asarray(state.observed), np.asarray(state.in_view), ids.shape)


def _check_counts(observed: np.ndarray, in_view: np.ndarray, shape: tuple) -> None:
    """Keyframe counts per instance: integers >= 0 with observed <= in_view."""
    _require(observed.shape == in_view.shape == shape, "instance keyframe counts have inconsistent lengths")
    _require(observed.dtype.kind in "iu" and in_view.dtype.kind in "iu", "instance keyframe counts are not integers")
    _require(bool((observed >= 0).all() and (observed <= in_view).all()),
             "instance keyframe counts: observed must be in [0, in_view]")


def _check_next_id(next_id: Any, vote_id: np.ndarray, meta_ids: np.ndarray) -> None:
    if isinstance(next_id, (bool, np.bool_)) or not isinstance(next_id, (int, np.integer)):
        raise MapValidationError(f"next_id is {next_id!r}, expected an integer")
    next_id = int(next_id)
    largest = max(int(vote_id.max(initial=0)), int(np.asarray(meta_ids).max(initial=0)))
    if next_id <= largest:
        raise MapValidationError(f"next_id {next_id} is not above the largest instance id {largest}")
    if next_id > MAX_INSTANCE_ID:
        raise MapValidationError(f"next_id {next_id} is above {MAX_INSTANCE_ID}, the most instance ids a map "
                                 f"file may claim (ids index dense per-id tables; Instance.id is uint32)")


def _require(ok: Any, reason: str) -> None:
    if not ok:
        raise MapValidationError(reason)

"""The instance map's file format: one uncompressed .npz written by `save_map`, read back by `load_map`.

Contents: magic, format version, MapConfig as JSON, the id counter, every per-voxel array (`SLOT_ARRAYS`:
name -> dtype and trailing shape) and the instance metadata (ids, first/last seen stamps, descriptors
concatenated with their lengths, keyframe counts observed / in view; files without the counts read as 0).
`load_map` returns exactly what was saved or raises MapFileError; every field is validated first
(map_validation: types, ranges, finiteness, id consistency; object arrays refused).
"""
from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .config import MapConfig
from .map_validation import MapValidationError, config_from_json, validate_state

FORMAT_VERSION = 1
MAGIC = "moonseg3r-instance-map"
SLOT_ARRAYS = {  # name -> (dtype, trailing shape)
    "keys": (np.int64, ()), "xyz": (np.float32, (3,)), "rgb": (np.float32, (3,)), "conf": (np.float32, ()),
    "weight": (np.float32, ()), "vote_id": (np.int32, ()), "vote_count": (np.int32, ()),
}
_META_ARRAYS = ("meta_ids", "meta_first_seen", "meta_last_seen", "meta_desc_len", "meta_desc_data")


class MapFileError(Exception):
    """A saved instance map cannot be read (missing, corrupt, truncated or of another format version)."""


@dataclass
class MapState:
    """Everything a saved map holds: slots {name: N[...] array} (SLOT_ARRAYS), and per instance id (I of
    them, ascending) first/last seen stamps and a float32 descriptor."""

    config: MapConfig
    next_id: int
    slots: dict[str, np.ndarray]
    meta_ids: np.ndarray  # I int64
    first_seen: np.ndarray  # I float64
    last_seen: np.ndarray  # I float64
    descriptors: list[np.ndarray]  # I float32[D_i]
    observed: Optional[np.ndarray] = None  # I int64 keyframes observed (None: zeros)
    in_view: Optional[np.ndarray] = None  # I int64 keyframes in view (None: zeros)

    def __post_init__(self) -> None:
        for name in ("observed", "in_view"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(np.shape(self.meta_ids), np.int64))


def save_map(path: str | os.PathLike, state: MapState) -> None:
    """Write `state` to one .npz file (exact round trip with `load_map`)."""
    arrays: dict[str, Any] = {f"slot_{name}": state.slots[name] for name in SLOT_ARRAYS}
    arrays.update(
        magic=np.array(MAGIC), format_version=np.array(FORMAT_VERSION, np.int64),
        config=np.array(json.dumps(dataclasses.asdict(state.config))), next_id=np.array(state.next_id, np.int64),
        meta_ids=state.meta_ids, meta_first_seen=state.first_seen, meta_last_seen=state.last_seen,
        meta_desc_len=np.array([d.size for d in state.descriptors], np.int64),
        meta_desc_data=np.concatenate(state.descriptors + [np.zeros(0, np.float32)]),
        meta_observed=state.observed, meta_in_view=state.in_view,
    )
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _pickle_refusal(path: str | os.PathLike) -> str:
    """Why np.load(allow_pickle=False) refused `path`: numpy takes every file that is neither .npy nor .npz
    for a pickle, so a file that is no zip archive is named as such (nothing of it was read)."""
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    if zipped:
        return (f"refused to read instance map {path}: it holds a Python object array (a pickle); map files "
                "hold plain arrays only")
    return f"instance map file {path} is not a .npz archive (the zip file save_map writes); nothing of it was read"


def load_map(path: str | os.PathLike) -> MapState:
    """Read a map written by `save_map`; MapFileError when missing, corrupt, truncated or another version."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise MapFileError(f"instance map file not found: {path}") from None
    except ValueError as err:
        if "allow_pickle" in str(err):  # numpy would have to unpickle: an object array, or no .npz at all
            raise MapFileError(_pickle_refusal(path)) from None
        raise MapFileError(f"instance map file {path} is corrupt or truncated: {err}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise MapFileError(f"instance map file {path} is corrupt or truncated: {err}") from None
    try:
        return _state_from_arrays(arrays, str(path))
    except (TypeError, ValueError, IndexError) as err:  # e.g. an array where one number belongs
        raise MapFileError(f"{path}: invalid map: {err}") from None


def _state_from_arrays(a: dict[str, np.ndarray], path: str) -> MapState:
    need = {"magic", "format_version", "config", "next_id", *_META_ARRAYS} | {f"slot_{n}" for n in SLOT_ARRAYS}
    missing = sorted(need - set(a))
    if missing:
        raise MapFileError(f"{path} is not a moonseg3r instance map (missing {missing})")
    if str(a["magic"]) != MAGIC:
        raise MapFileError(f"{path} is not a moonseg3r instance map (magic {str(a['magic'])!r})")
    version = int(a["format_version"])
    if version != FORMAT_VERSION:
        raise MapFileError(f"{path} has map format version {version}; this build reads {FORMAT_VERSION}")
    try:
        config = config_from_json(str(a["config"]))
    except MapValidationError as err:
        raise MapFileError(f"{path}: bad map configuration: {err}") from None
    slots = _checked_slots(a, path)
    ids, lengths, data = a["meta_ids"], a["meta_desc_len"], a["meta_desc_data"]
    if not (ids.shape == lengths.shape == a["meta_first_seen"].shape == a["meta_last_seen"].shape) \
            or lengths.dtype.kind not in "iu" or (lengths.size and lengths.min() < 0) \
            or lengths.sum() != data.size or data.dtype != np.float32:
        raise MapFileError(f"{path}: inconsistent instance records")
    offsets = np.r_[0, np.cumsum(lengths)]
    descriptors = [data[offsets[k]:offsets[k + 1]].copy() for k in range(ids.size)]
    if a["next_id"].shape != () or a["next_id"].dtype.kind not in "iu":
        raise MapFileError(f"{path}: invalid map: next_id is {a['next_id'].dtype} {a['next_id'].shape}, expected "
                           "one integer")
    state = MapState(config, int(a["next_id"]), slots, ids, a["meta_first_seen"], a["meta_last_seen"], descriptors,
                     a.get("meta_observed"), a.get("meta_in_view"))
    try:
        validate_state(state)  # every field, before anything replaces a running map
    except MapValidationError as err:
        raise MapFileError(f"{path}: invalid map: {err}") from None
    return state


def _checked_slots(a: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    n = a["slot_keys"].shape[0]
    for name, (dtype, shape) in SLOT_ARRAYS.items():
        arr = a[f"slot_{name}"]
        if arr.dtype != dtype or arr.shape != (n,) + shape:
            raise MapFileError(f"{path}: array {name} has {arr.dtype} {arr.shape}, expected {np.dtype(dtype)} "
                               f"{(n,) + shape}")
    if np.unique(a["slot_keys"]).size != n or (n and a["slot_keys"].min() < 0):
        raise MapFileError(f"{path}: duplicate or invalid voxel keys")
    return {name: a[f"slot_{name}"] for name in SLOT_ARRAYS}


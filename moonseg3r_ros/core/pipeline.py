"""MoonSeg3R online pipeline: the paper's Figure 2 wired together, one `step()` per camera frame.

Every frame (geometry only on non-keyframes):
    input    image -> HxWx3 uint8 RGB (any 8/16-bit mono/rgb/rgba encoding); stamp must increase
    geometry (a) P_t, X_t, confidence, F3d, A_t from the geometry source (CUT3R or recorded depth+pose)
Every `keyframe_interval`-th accepted frame (the first one included):
    masks       2D masks M_t (SAM / precomputed / ground truth / weight-free), restricted to valid geometry
    features    F2d from the semantic backbone
    lifting     (b) masked pooling of F2d, F3d + 3D positional encoding -> q_t, 3D boxes
    memory      (c) P_t rasterises the query index memory -> visible ids -> contextual queries from the bank
    refinement  (b) query decoder(q_t, psi(F2d, F3d) (trained; F2d otherwise), context) -> q'_t  (identity
                without weights or with refinement.mode identity: documented mode)
    association (d) state-distribution tokens from A_t, intra-frame merge, Hungarian matching to the bank
    map_update  instance map integrate, memory/bank update, periodic prune (all after every check passed)

Asynchronous masks (`masks.asynchronous`): the masks and features of a keyframe run on a worker thread
(core/keyframe_queue.py) while the following frames' geometry runs; at each step the keyframes whose masks
are ready are committed (lifting ... map_update), in frame order, and returned in `FrameResult.committed`
(the keyframe's own result object, completed in place). At most `masks.max_pending` keyframes wait; one more
is dropped and counted (keyframes_dropped_pending). `flush()` commits every pending keyframe. The map, ids
and stats equal the synchronous run's for the same frames.

Robustness: bad images, non-finite or old stamps, geometry errors, too little valid geometry and mask
errors are counted in `stats` and logged; the frame is reported with `skipped_reason` and nothing is
written to the map. The map, memory and bank are only modified in the final commit stage.

Threading: `step`, `flush`, `reset`, `snapshot`, `close`, `load_map` and `update_config` hold `self.lock` (an
RLock); readers that need a consistent view of the map call `snapshot()` (copies) or use `with pipeline.lock:`.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch

from moonseg3r_ros.core import kernels, model_files
from moonseg3r_ros.core.config import PipelineConfig, copy_fields, validate
from moonseg3r_ros.core.devices import resolve_device
from moonseg3r_ros.core.features import make_backbone
from moonseg3r_ros.core.geometry import GeometryError, make_geometry_source
from moonseg3r_ros.core.images import ImageError, to_rgb8
from moonseg3r_ros.core.instance_map import InstanceMap, InstanceRecord
from moonseg3r_ros.core.keyframe_queue import KeyframeQueue, MaskJob
from moonseg3r_ros.core.keyframe_steps import (KeyframeDraft, associate, build_lifter, checked_features_3d,
                                               contextual_queries)
from moonseg3r_ros.core.lifting import QueryLifter
from moonseg3r_ros.core.masks import MaskError, drop_masks_without_geometry, make_mask_source
from moonseg3r_ros.core.query_bank import QueryBank
from moonseg3r_ros.core.query_memory import QueryIndexMemory
from moonseg3r_ros.core.refiner_weights import build_refinement, frame_tokens
from moonseg3r_ros.core.timing import numpy_blas_limiter, stage_timer, torch_single_thread
from moonseg3r_ros.core.types import Frame, FrameGeometry, FrameResult, MaskSet

STAT_NAMES = ("frames", "keyframes", "skipped_out_of_order", "skipped_bad_input", "skipped_no_geometry",
              "skipped_no_masks", "keyframes_without_masks", "masks_total", "masks_dropped_no_geometry",
              "skipped_errors", "instances_new", "instances_matched", "masks_merged", "instances_pruned",
              "keyframes_dropped_pending")


@dataclass
class MapSnapshot:
    """A consistent copy of the map for readers on other threads."""

    xyz: np.ndarray  # Nx3 float32
    rgb: np.ndarray  # Nx3 uint8
    ids: np.ndarray  # N int32
    instances: list[InstanceRecord]
    stamp: float  # stamp of the latest accepted frame (nan before the first)
    pose_c2w: Optional[np.ndarray]  # latest camera pose


class MoonSeg3RPipeline:
    """Monocular (or RGB-D) online 3D instance segmentation; see the module docstring."""

    def __init__(self, config: Optional[PipelineConfig] = None, *, geometry_source: Any = None,
                 mask_source: Any = None, backbone: Any = None):
        self.config = config if config is not None else PipelineConfig()
        validate(self.config)
        self.logger = logging.getLogger("moonseg3r")
        self.lock = threading.RLock()
        self.device = resolve_device(self.config.device)
        self.geometry_source = geometry_source or make_geometry_source(self.config, self.device)
        self.mask_source = mask_source or make_mask_source(self.config, self.device)
        self.backbone = backbone or make_backbone(self.config, self.device)
        self.decoder, self.pixel_head = build_refinement(self.config, self.backbone.out_channels, self.device)
        self.lifter: Optional[QueryLifter] = None  # built at the first keyframe, once F3d's width is known
        self.instance_map = InstanceMap(self.config.map)
        self.memory = QueryIndexMemory(self.config.memory.voxel_size, self.config.memory.occlusion_tolerance)
        self.bank = QueryBank(self.config.features.dim, window=self.config.memory.bank_average_window)
        kernels.warm()  # compiled map kernels: 4.5 s the first time on a machine, 0.3 s from numba's cache
        self.stats: dict[str, int] = {}
        self._blas_limit = numpy_blas_limiter()
        self._pending = KeyframeQueue(self.config.masks.max_pending, self.device) \
            if self.config.masks.asynchronous else None
        self._reset_state()

    # ------------------------------------------------------------------------------------------ public
    @property
    def refinement_mode(self) -> str:
        return self.decoder.mode

    def reset(self) -> None:
        """Start a new sequence: empty map, memory, bank, counters; geometry source state cleared."""
        with self.lock:
            if self._pending is not None:
                self._pending.clear()  # a new sequence: keyframes of the old one are not committed
            self.geometry_source.reset()
            self.instance_map.reset()
            self.memory.reset()
            self.bank.reset()
            self._reset_state()

    def _reset_state(self) -> None:
        self.stats.clear()
        self.stats.update({name: 0 for name in STAT_NAMES})
        self._next_index = 0
        self._accepted = 0
        self._last_stamp = -math.inf
        self._last_pose: Optional[np.ndarray] = None
        self._warned: set[str] = set()

    def snapshot(self) -> MapSnapshot:
        """Copies of the map points and records, consistent with one another (safe from any thread)."""
        with self.lock:
            xyz, rgb, ids = self.instance_map.points()
            pose = None if self._last_pose is None else self._last_pose.copy()
            stamp = self._last_stamp if math.isfinite(self._last_stamp) else float("nan")
            return MapSnapshot(xyz, rgb, ids, self.instance_map.instances(), stamp, pose)

    def close(self) -> None:
        """Free the models (the map stays readable)."""
        with self.lock:
            if self._pending is not None:
                self._pending.close()
            for name in ("geometry_source", "mask_source", "backbone"):
                closer = getattr(getattr(self, name), "close", None)
                if closer is not None:
                    closer()
            self.decoder, self.lifter = None, None  # closed: step() refuses
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def load_map(self, path: str | os.PathLike) -> InstanceMap:
        """Continue from the map saved at `path` as a new sequence (memory, bank and counters start empty).

        The loaded map shares `config.map` (runtime threshold changes keep applying to it); a map saved with
        another MapConfig defines its layout, so `config.map` takes the saved values (in place; the caller
        compares before/after to report them). Raises what InstanceMap.load raises (the file is fully
        validated first): then nothing here changed.
        """
        loaded = InstanceMap.load(Path(path).expanduser())
        with self.lock:
            self.reset()
            for f in dataclasses.fields(self.config.map):
                setattr(self.config.map, f.name, getattr(loaded.config, f.name))
            loaded.config = self.config.map
            self.instance_map = loaded
        return loaded

    def update_config(self, config: PipelineConfig, changed: Iterable[str]) -> None:
        """Take the `changed` dotted fields ("association.match_threshold", ...) of `config` while running.

        Set in place on `self.config`, whose section objects the pipeline's parts share, so they see them.
        Only thresholds read per frame may change this way; the caller refuses the fields that define models.
        """
        with self.lock:
            copy_fields(config, self.config, changed)

    required_files = staticmethod(model_files.required_files)  # (field, path) of the model files a config needs
    missing_files = staticmethod(model_files.missing_files)  # one message naming those unset or absent

    def step(self, image: np.ndarray, stamp: float, *, depth: Optional[np.ndarray] = None,
             intrinsics: Optional[np.ndarray] = None, pose_c2w: Optional[np.ndarray] = None,
             instance_ids: Optional[np.ndarray] = None, encoding: Optional[str] = None) -> FrameResult:
        """Process one frame (see the module docstring); never raises for bad input, returns a FrameResult."""
        with self.lock:
            if self.decoder is None:
                raise RuntimeError("pipeline is closed")
            start = time.perf_counter()
            timings: dict[str, float] = {}
            with self._blas_limit():
                result = self._step(image, stamp, depth, intrinsics, pose_c2w, instance_ids, encoding, timings)
            timings["total"] = time.perf_counter() - start
            result.timings = timings
            return result

    def flush(self) -> list[FrameResult]:
        """masks.asynchronous: wait for every pending keyframe and commit it; their results in frame order."""
        with self.lock:
            timings: dict[str, float] = {}
            with self._blas_limit():
                return self._commit_ready(timings, wait=True)

    # ------------------------------------------------------------------------------------------ stages
    def _step(self, image, stamp, depth, intrinsics, pose_c2w, instance_ids, encoding, timings) -> FrameResult:
        index = self._next_index
        self._next_index += 1
        self.stats["frames"] += 1
        with stage_timer(timings, "input"):
            try:
                rgb = to_rgb8(image, encoding, self.config.max_image_pixels)
            except ImageError as err:
                return self._skip(index, stamp, "skipped_bad_input", f"bad image: {err}")
            stamp_ok = isinstance(stamp, (int, float, np.floating, np.integer)) and math.isfinite(float(stamp))
            if not stamp_ok:
                return self._skip(index, float("nan"), "skipped_bad_input", f"bad stamp {stamp!r}")
            stamp = float(stamp)
            if stamp <= self._last_stamp:
                return self._skip(index, stamp, "skipped_out_of_order",
                                  f"stamp {stamp:.6f} is not newer than the last one ({self._last_stamp:.6f})")
        frame = Frame(rgb, stamp, depth, intrinsics, pose_c2w, instance_ids, index)
        with stage_timer(timings, "geometry"):
            try:
                geometry = self.geometry_source.compute(frame)
            except GeometryError as err:
                return self._skip(index, stamp, "skipped_no_geometry", f"geometry: {err}")
            fraction = float(geometry.valid.mean())
            if fraction < self.config.min_valid_fraction:
                return self._skip(index, stamp, "skipped_no_geometry",
                                  f"only {fraction:.1%} of the pixels have valid geometry "
                                  f"(< {self.config.min_valid_fraction:.1%}; low confidence or bad depth)")
        self._last_stamp, self._last_pose = stamp, geometry.pose_c2w.copy()
        is_keyframe = self._accepted % self.config.keyframe_interval == 0
        self._accepted += 1
        result = FrameResult(stamp, index, is_keyframe, pose_c2w=geometry.pose_c2w.copy())
        result.committed = self._commit_ready(timings)
        if is_keyframe:
            self.stats["keyframes"] += 1
            result.points_cam, result.valid = geometry.points_cam, geometry.valid
            ordinal = self.stats["keyframes"]
            if self._pending is None:
                job = self._mask_job(frame, geometry)
                timings.update(job.timings)
                self._keyframe(frame, geometry, result, job, ordinal, timings)
            elif self._pending.full():
                self.stats["keyframes_dropped_pending"] += 1
                result.skipped_reason = f"masks: {len(self._pending)} keyframes already wait (masks.max_pending)"
                self.logger.warning("keyframe %d dropped: %s", index, result.skipped_reason)
            else:
                self._pending.submit((frame, geometry, result, ordinal), lambda: self._mask_job(frame, geometry))
        return result

    def _commit_ready(self, timings: dict, wait: bool = False) -> list[FrameResult]:
        """Commit the pending keyframes whose mask jobs finished (all of them if `wait`), in frame order."""
        if self._pending is None:
            return []
        done = []
        while (ready := self._pending.pop_ready(wait)) is not None:
            (frame, geometry, result, ordinal), future = ready
            job = future.result()  # re-raises what the mask source raised, as the synchronous path does
            result.timings.update(job.timings)
            if job.features is not None and job.features.is_cuda:
                job.features.record_stream(torch.cuda.current_stream(job.features.device))
            self._keyframe(frame, geometry, result, job, ordinal, timings)
            done.append(result)
        return done

    def _skip(self, index: int, stamp: float, counter: str, reason: str) -> FrameResult:
        self.stats[counter] += 1
        self.logger.warning("frame %d skipped (%s): %s", index, counter, reason)
        return FrameResult(stamp, index, False, skipped_reason=reason)

    def _mask_job(self, frame: Frame, geometry: FrameGeometry) -> MaskJob:
        """Masks with enough valid geometry, and F2d when there are masks; reads no pipeline state."""
        job = MaskJob()
        with stage_timer(job.timings, "masks"):
            try:
                masks = self.mask_source.generate(frame, geometry)
            except MaskError as err:
                job.mask_error = err
                return job
            job.masks, job.dropped = drop_masks_without_geometry(masks, geometry.valid,
                                                                 self.config.masks.min_valid_points)
        if len(job.masks):
            with stage_timer(job.timings, "features"):
                try:
                    job.features = self.backbone.extract(frame.image).to(self.device)
                except Exception as err:  # counted at commit as a keyframe error (map unchanged)
                    job.feature_error = err
        return job

    def _keyframe(self, frame: Frame, geometry: FrameGeometry, result: FrameResult, job: MaskJob, ordinal: int,
                  timings: dict) -> None:
        """Infer and commit one keyframe from its mask job; `ordinal` = its number among the keyframes."""
        if job.mask_error is not None or job.masks is None:
            self.stats["skipped_no_masks"] += 1
            result.skipped_reason = f"masks: {job.mask_error}"
            self.logger.warning("keyframe %d has no masks: %s", frame.frame_index, job.mask_error)
            return
        masks = job.masks
        self.stats["masks_dropped_no_geometry"] += job.dropped
        result.num_masks = len(masks)
        self.stats["masks_total"] += len(masks)
        if len(masks) == 0:
            self.stats["keyframes_without_masks"] += 1
            result.instance_ids_2d = np.zeros((frame.height, frame.width), np.int32)
            return
        try:
            if job.feature_error is not None or job.features is None:
                raise job.feature_error or RuntimeError("no 2D features")
            with torch_single_thread(self.device):
                keyframe = self._infer(frame, geometry, masks, job.features, timings)
        except Exception as err:  # a fault in one keyframe must not stop the stream or touch the map
            self.stats["skipped_errors"] += 1
            result.skipped_reason = f"error: {err}"
            self.logger.error("keyframe %d failed; map unchanged", frame.frame_index, exc_info=err)
            return
        with stage_timer(timings, "map_update"):
            self._commit(frame, geometry, keyframe, ordinal)
        result.instance_ids_2d = keyframe.labels
        result.new_instance_ids = keyframe.new_ids
        result.matched_instance_ids = keyframe.matched_ids

    def _infer(self, frame: Frame, geometry: FrameGeometry, masks: MaskSet, features_2d: torch.Tensor,
               timings: dict) -> KeyframeDraft:
        """Lifting, memory retrieval, refinement and association (no state is modified but the lifter's build)."""
        with stage_timer(timings, "lifting"):
            features_3d = self._features_3d(geometry)
            lifter = self._lifter(features_3d)
            with torch.inference_mode():
                lifted = lifter(masks, features_2d, features_3d, geometry.points_world, geometry.valid)
        with stage_timer(timings, "memory"):
            context, visible_boxes = self._contextual_queries(geometry)
        with stage_timer(timings, "refinement"):
            with torch.inference_mode():
                tokens = frame_tokens(self.pixel_head, features_2d, features_3d, geometry)
                refined = self.decoder(lifted.queries, tokens, context)
            queries = refined.queries.float().cpu().numpy()
        with stage_timer(timings, "association"):
            keyframe = self._associate(masks, queries, lifted.boxes, geometry, visible_boxes)
        keyframe.in_view = sorted(visible_boxes)
        return keyframe

    def _features_3d(self, geometry: FrameGeometry) -> Optional[torch.Tensor]:
        return checked_features_3d(geometry, self.lifter, self.device, self._warn_once)

    def _lifter(self, features_3d: Optional[torch.Tensor]) -> QueryLifter:
        if self.lifter is None:
            self.lifter = build_lifter(self.config, self.backbone.out_channels, features_3d, self.decoder.extras,
                                       self.device)
        return self.lifter

    def _contextual_queries(self, geometry: FrameGeometry) -> tuple[Optional[torch.Tensor], dict[int, np.ndarray]]:
        return contextual_queries(geometry, self.memory, self.bank, self.lifter, self.config.memory,
                                  self.config.association.box_overlap, self.device)

    def _associate(self, masks: MaskSet, queries: np.ndarray, boxes: np.ndarray,
                   geometry: FrameGeometry, visible_boxes: dict[int, np.ndarray]) -> KeyframeDraft:
        return associate(masks, queries, boxes, geometry, visible_boxes, self.bank, self.instance_map,
                         self.config.association)

    def _commit(self, frame: Frame, geometry: FrameGeometry, keyframe: KeyframeDraft, ordinal: int) -> None:
        """Write the keyframe into the instance map, the query index memory and the bank; prune."""
        s = self.config.integrate_stride
        height, width = geometry.valid.shape
        rows, cols = np.nonzero(geometry.valid[::s, ::s])
        flat = rows * (s * width) + cols * s  # flat pixel index of every valid pixel on the stride grid
        points = geometry.points_world.reshape(-1, 3).take(flat, axis=0)
        labels = keyframe.labels.reshape(-1).take(flat)
        self.instance_map.integrate(points, frame.image.reshape(-1, 3).take(flat, axis=0), labels, frame.stamp,
                                    geometry.confidence.reshape(-1).take(flat))
        self.memory.update(points, labels)
        self.bank.upsert(keyframe.ids.tolist(), keyframe.queries, keyframe.boxes, keyframe.tokens)
        self.instance_map.count_keyframe(keyframe.ids.tolist(), keyframe.in_view)  # the observation score
        stored, _, _, _ = self.bank.get(keyframe.ids.tolist())
        for instance_id, query in zip(keyframe.ids.tolist(), stored):
            self.instance_map.set_descriptor(instance_id, query)
        self.stats["instances_new"] += len(keyframe.new_ids)
        self.stats["instances_matched"] += len(keyframe.matched_ids)
        self.stats["masks_merged"] += keyframe.merged
        interval = self.config.prune_interval
        if interval and ordinal % interval == 0:
            self._prune(frame.stamp)

    def _prune(self, now: float) -> None:
        """Prune small/stale map instances and forget bank/memory entries that no longer own map voxels."""
        pruned = self.instance_map.prune(now)
        alive = set(self.instance_map.instance_ids().tolist())
        gone = sorted(set(self.bank.ids().tolist()) - alive)
        if gone:
            self.bank.remove(gone)
            self.memory.remove(gone)
        self.stats["instances_pruned"] += len(pruned)
        if pruned:
            self.logger.info("pruned %d instances: %s", len(pruned), pruned[:20])

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.logger.warning(message)

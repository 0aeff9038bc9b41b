"""Keyframes waiting for their masks (`masks.asynchronous`): one worker thread, frame order kept (ROS-free).

The pipeline submits a keyframe's mask job (mask network + 2D features: they read only the frame and its
geometry) and goes on with the geometry of the following frames; it takes finished jobs from the head of
the queue, in submission order, and commits each keyframe to the map before the next one. At most
`capacity` keyframes wait; `full()` tells the pipeline to drop (and count) a new one.

On CUDA the worker runs its jobs on its own stream (so a mask network's kernels can overlap the geometry's)
and waits for that stream before a job counts as done.
"""
from __future__ import annotations

import collections
import concurrent.futures
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from moonseg3r_ros.core.types import MaskSet


@dataclass
class MaskJob:
    """What a keyframe's mask job produced (computed off the pipeline's state; nothing was counted yet)."""

    masks: Optional[MaskSet] = None  # N masks on the HxW grid with enough valid geometry (None on error)
    dropped: int = 0  # masks removed for too little valid geometry
    features: Optional[torch.Tensor] = None  # CxhxW' F2d (None without masks or when it failed)
    mask_error: Optional[Exception] = None  # a MaskError: the keyframe has no masks
    feature_error: Optional[Exception] = None  # the backbone failed: counted as a keyframe error
    timings: dict[str, float] = field(default_factory=dict)  # "masks", "features" seconds


class KeyframeQueue:
    """FIFO of (item, future) with a single worker thread; not thread-safe itself (the pipeline's lock)."""

    def __init__(self, capacity: int, device: torch.device):
        if capacity < 1:
            raise ValueError(f"pending keyframe capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.device = torch.device(device)
        self._pending: collections.deque = collections.deque()
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._stream: Any = None

    def __len__(self) -> int:
        return len(self._pending)

    def full(self) -> bool:
        return len(self._pending) >= self.capacity

    def submit(self, item: Any, job: Callable[[], MaskJob]) -> None:
        """Queue `item` whose `job()` runs on the worker thread (the caller checked `full()`)."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="moonseg3r-masks")
        self._pending.append((item, self._executor.submit(self._run, job)))

    def pop_ready(self, wait: bool = False) -> Optional[tuple[Any, concurrent.futures.Future]]:
        """The oldest (item, future) if its job finished (or, with `wait`, once it has), else None."""
        if not self._pending or not (wait or self._pending[0][1].done()):
            return None
        item, future = self._pending.popleft()
        concurrent.futures.wait([future])
        return item, future

    def clear(self) -> int:
        """Discard every pending keyframe (the job in progress is waited for); return how many."""
        pending = list(self._pending)
        self._pending.clear()
        concurrent.futures.wait([future for _, future in pending])
        return len(pending)

    def close(self) -> None:
        self.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _run(self, job: Callable[[], MaskJob]) -> MaskJob:
        if self.device.type != "cuda":
            return job()
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._stream):
            out = job()
        self._stream.synchronize()
        return out

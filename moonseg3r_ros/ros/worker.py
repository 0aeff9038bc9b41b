"""Frame hand-off between the subscription callbacks and the processing thread (ROS-free).

The GPU/CPU pipeline is slower than a camera, and inference must never run inside a subscription
callback. Callbacks therefore only convert the message and `submit()` it to a bounded `FrameQueue`;
a `FrameWorker` thread takes frames out and runs the pipeline. When the queue is full:

- drop_policy 'latest' (live cameras): the oldest queued frame is dropped, the newest is kept, so the
  worker always works on the most recent image (latest wins);
- drop_policy 'oldest' (replays): the incoming frame is dropped and the queued ones are kept in order;
  with a queue larger than the replayed sequence nothing is ever dropped.

Every drop is counted (`stats`). `submit` never blocks.

`StampPairing` pairs an image with side inputs (depth, pose, ground-truth ids) that carry exactly the
same header stamp, in a bounded buffer: unpaired entries are dropped and counted once the buffer is full.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

DROP_POLICIES = ("latest", "oldest")


class FrameQueue:
    """Bounded FIFO with a drop policy; thread-safe; `put` never blocks."""

    def __init__(self, capacity: int, drop_policy: str = "latest"):
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        if drop_policy not in DROP_POLICIES:
            raise ValueError(f"drop_policy must be one of {list(DROP_POLICIES)}, got {drop_policy!r}")
        self.capacity = capacity
        self.drop_policy = drop_policy
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.accepted = 0
        self.dropped = 0

    def put(self, item: Any) -> Optional[Any]:
        """Enqueue `item`; return the item dropped to make room (maybe `item` itself), or None."""
        with self._cond:
            if self._closed:
                self.dropped += 1
                return item
            dropped = None
            if len(self._items) >= self.capacity:
                self.dropped += 1
                if self.drop_policy == "oldest":
                    return item
                dropped = self._items.popleft()
            self._items.append(item)
            self.accepted += 1
            self._cond.notify()
            return dropped

    def get(self, timeout: Optional[float] = None) -> Optional[Any]:
        """Oldest queued item, waiting up to `timeout` seconds (None = until one arrives or close())."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            return self._items.popleft() if self._items else None

    def unget(self, item: Any) -> None:
        """Put an item taken by get() back at the front (not counted again)."""
        with self._cond:
            self._items.appendleft(item)
            self._cond.notify()

    def clear(self) -> int:
        """Drop everything queued (not counted as a policy drop); return how many were removed."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            return n

    def clear_each(self, on_item: Callable[[Any], None]) -> int:
        """clear(), handing every removed item to `on_item` (outside the queue's lock)."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
        for item in items:
            on_item(item)
        return len(items)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


@dataclass
class WorkerStats:
    processed: int = 0
    errors: int = 0
    last_error: str = ""
    busy_seconds: float = 0.0
    last_seconds: float = 0.0


class FrameWorker:
    """A thread that runs `process(item)` on items from a FrameQueue, one at a time.

    Exceptions from `process` are counted and handed to `on_error(item, exc)`; the thread keeps running.
    `pause()` waits until the item in progress (if any) is finished; queued items then wait until
    `resume()`. `stop()` ends the thread.
    """

    def __init__(self, queue: FrameQueue, process: Callable[[Any], None],
                 on_error: Optional[Callable[[Any, BaseException], None]] = None, name: str = "moonseg3r-worker"):
        self.queue = queue
        self.stats = WorkerStats()
        self._process = process
        self._on_error = on_error
        self._running = threading.Event()
        self._running.set()
        self._stop = False
        self._idle = threading.Condition()
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> "FrameWorker":
        self._thread.start()
        return self

    @property
    def busy(self) -> bool:
        return self._busy

    def pause(self, timeout: Optional[float] = None) -> bool:
        """Stop taking new items and wait for the current one; True when idle within `timeout`."""
        self._running.clear()
        with self._idle:
            return self._idle.wait_for(lambda: not self._busy, timeout)

    def resume(self) -> None:
        self._running.set()

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Wait until the queue is empty and nothing is being processed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._busy or len(self.queue):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(0.05 if remaining is None else min(remaining, 0.05))
            return True

    def stop(self, timeout: Optional[float] = None) -> bool:
        """End the thread after the current item; True when it ended within `timeout`."""
        self._stop = True
        self._running.set()
        self.queue.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop:
            self._running.wait()
            item = self.queue.get(timeout=0.1)  # blocks outside every lock
            if item is None:
                continue
            with self._idle:
                # Marking busy and checking for pause() happen atomically under the idle lock.
                if self._stop or not self._running.is_set():
                    self.queue.unget(item)
                    continue
                self._busy = True
            start = time.perf_counter()
            try:
                self._process(item)
                self.stats.processed += 1
            except BaseException as exc:  # keep the thread alive whatever the pipeline raises
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                if self._on_error is not None:
                    try:
                        self._on_error(item, exc)
                    except Exception:
                        pass
            finally:
                elapsed = time.perf_counter() - start
                self.stats.busy_seconds += elapsed
                self.stats.last_seconds = elapsed
                with self._idle:
                    self._busy = False
                    self._idle.notify_all()


# ----------------------------------------------------------------------------------------------------
# Stamp pairing of side inputs


@dataclass
class PairingStats:
    paired: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # stream -> entries dropped without a partner

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())


class StampPairing:
    """Pairs entries of several streams that carry exactly the same stamp (integer nanoseconds).

    `add(stream, stamp_ns, value)` returns `{stream: value}` for all `streams` once every one of them has
    an entry with that stamp, else None. At most `capacity` distinct stamps are kept waiting; when more
    arrive, the oldest stamp's entries are dropped and counted per stream. Entries older than the newest
    completed stamp are dropped as well (their partners will never come: streams arrive in order).
    Thread-safe.
    """

    def __init__(self, streams: list[str], capacity: int = 30,
                 on_drop: Optional[Callable[[str, Any], None]] = None):
        if not streams:
            raise ValueError("StampPairing needs at least one stream")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.streams = list(streams)
        self.capacity = capacity
        self.stats = PairingStats(dropped={s: 0 for s in self.streams})
        self._pending: "collections.OrderedDict[int, dict[str, Any]]" = collections.OrderedDict()
        self._lock = threading.Lock()
        self._last_completed: Optional[int] = None
        self._on_drop = on_drop  # (stream, value) of every entry dropped, e.g. to account for each image

    def add(self, stream: str, stamp_ns: int, value: Any) -> Optional[dict[str, Any]]:
        if stream not in self.stats.dropped:
            raise KeyError(f"unknown stream '{stream}' (streams: {self.streams})")
        with self._lock:
            if self._last_completed is not None and stamp_ns <= self._last_completed:
                self._count({stream: value})
                return None
            entry = self._pending.get(stamp_ns)
            if entry is None:
                entry = self._pending[stamp_ns] = {}
                self._sort_if_needed(stamp_ns)
            if stream in entry:  # a duplicate stamp on one stream: keep the newer message
                self._count({stream: entry[stream]})
            entry[stream] = value
            if len(entry) == len(self.streams):
                del self._pending[stamp_ns]
                self._drop_older_than(stamp_ns)
                self._last_completed = stamp_ns
                self.stats.paired += 1
                return entry
            while len(self._pending) > self.capacity:
                _, old = self._pending.popitem(last=False)
                self._count(old)
            return None

    def clear(self) -> None:
        with self._lock:
            for entry in self._pending.values():
                self._count(entry)
            self._pending.clear()
            self._last_completed = None

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _sort_if_needed(self, stamp_ns: int) -> None:
        keys = list(self._pending)
        if len(keys) > 1 and keys[-2] > stamp_ns:
            for key in sorted(keys):
                self._pending.move_to_end(key)

    def _drop_older_than(self, stamp_ns: int) -> None:
        for key in [k for k in self._pending if k < stamp_ns]:
            self._count(self._pending.pop(key))

    def _count(self, entry: dict[str, Any]) -> None:
        for stream, value in entry.items():
            self.stats.dropped[stream] += 1
            if self._on_drop is not None:
                self._on_drop(stream, value)

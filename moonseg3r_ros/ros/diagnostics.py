"""The node's /diagnostics: counters, throughput and latency over a window, memory probes, pipeline stats.

`DiagnosticsMixin` is part of MoonSeg3RNode (node.py); it reads the node's counters, `_recent` (done
time, latency, age per processed frame), queue, pairing and pipeline.
"""
from __future__ import annotations

import resource
import sys
import threading
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

DIAGNOSTIC_NAME = "moonseg3r: pipeline"
STATS_WINDOW_S = 5.0
MISSING_LOG_PERIOD_S = 10.0


def diagnostic_status(values: dict[str, Any], hardware_id: str) -> DiagnosticStatus:
    """ERROR with processing errors, WARN while an input is missing (named) or frames are dropped, else OK;
    every value as a KeyValue."""
    status = DiagnosticStatus(name=DIAGNOSTIC_NAME, hardware_id=hardware_id)
    if values.get("processing_errors"):
        status.level, status.message = DiagnosticStatus.ERROR, f"{values['processing_errors']} processing errors"
    elif values.get("missing_inputs"):
        status.level, status.message = DiagnosticStatus.WARN, f"waiting for inputs: {values['missing_inputs']}"
    elif values.get("bad_input") or values.get("queue_drops") or values.get("pairing_drops"):
        status.level, status.message = DiagnosticStatus.WARN, "dropping frames (see values)"
    else:
        status.level, status.message = DiagnosticStatus.OK, "ok"
    status.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
    return status


def window_rates(recent: list[tuple[float, float, float]], now: float) -> dict[str, float]:
    """fps and latency (mean, max) of the frames done within STATS_WINDOW_S of `now`.

    `recent`: (done time.monotonic(), latency s, age s) per processed frame, oldest first.
    """
    window = [r for r in recent if now - r[0] <= STATS_WINDOW_S]
    span = (window[-1][0] - window[0][0]) if len(window) > 1 else 0.0
    fps = (len(window) - 1) / span if span > 0 else 0.0
    latencies = [r[1] for r in window]
    return {
        "fps": round(fps, 3),
        "latency_mean_ms": round(1000 * float(np.mean(latencies)), 2) if latencies else 0.0,
        "latency_max_ms": round(1000 * float(np.max(latencies)), 2) if latencies else 0.0,
    }


def missing_inputs(topics: dict[str, str], seen: dict[str, float]) -> list[str]:
    """The needed streams (`topics`: stream -> topic) with no message since activation, or (side inputs)
    none within STATS_WINDOW_S before the last image: "stream 'topic'" each. `seen`: stream -> last time."""
    image = seen.get("image")
    return [f"{stream} '{topic}'" for stream, topic in topics.items()
            if stream not in seen or (image is not None and image - seen[stream] > STATS_WINDOW_S)]


def memory_values() -> dict[str, float]:
    """Resident and GPU memory now and at peak, in MiB."""
    return {
        "rss_mb": round(rss_bytes() / 2**20, 1),
        "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
        "gpu_memory_mb": round(gpu_memory_bytes() / 2**20, 1),
        "gpu_peak_memory_mb": round(gpu_memory_bytes(peak=True) / 2**20, 1),
    }


def free_accelerator_memory() -> None:
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return 0


def peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # kilobytes on Linux


def gpu_memory_bytes(peak: bool = False) -> int:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return 0
    return int(torch.cuda.max_memory_allocated() if peak else torch.cuda.memory_allocated())


class DiagnosticsMixin:
    """Counters and the diagnostics timer's output of MoonSeg3RNode."""

    counters: dict[str, int]
    _counter_lock: threading.Lock

    def _count(self, key: str, n: int = 1) -> None:
        """Add to a diagnostics counter (callbacks of several threads count)."""
        with self._counter_lock:
            self.counters[key] += n

    def diagnostics_values(self) -> dict[str, Any]:
        rates = window_rates(list(self._recent), time.monotonic())
        with self._lock:
            pipeline = self._pipeline
            instances = self._instance_count if pipeline is not None else 0  # as of the latest keyframe
            points = len(pipeline.instance_map) if pipeline is not None else 0
            pipeline_stats = dict(pipeline.stats) if pipeline is not None else {}
        missing = missing_inputs(self._input_topics, dict(self._input_seen)) \
            if self._active else []
        values: dict[str, Any] = {
            "state": self.lifecycle_state(),
            "missing_inputs": ", ".join(missing),
            "inputs": len(self._subs),
            "inputs_matched": sum(1 for sub in list(self._subs) if sub.get_publisher_count() > 0),
            **rates,
            "queue_length": len(self._queue) if self._queue is not None else 0,
            "queue_drops": self.counters["queue_drops"],
            "pairing_drops": self._pairing.stats.total_dropped if self._pairing is not None else 0,
            "instances": instances,
            "map_points": points,
            **memory_values(),
        }
        if self._pairing is not None:
            values.update({f"pairing_drops.{k}": v for k, v in self._pairing.stats.dropped.items()})
        with self._counter_lock:
            counters = dict(self.counters)
        values.update(sorted(counters.items()))
        values["images_pending"] = counters.get("images_received", 0) - counters.get("frames_processed", 0) \
            - counters.get("images_dropped", 0)  # queued, in the worker, or waiting for side inputs
        values.update({f"pipeline.{k}": v for k, v in sorted(pipeline_stats.items())
                       if isinstance(v, (int, float))})
        return values

    def publish_diagnostics(self) -> None:
        values = self.diagnostics_values()
        if values["missing_inputs"]:
            self._log_missing(values)
        array = DiagnosticArray(status=[diagnostic_status(values, self.get_fully_qualified_name())])
        array.header.stamp = self.get_clock().now().to_msg()
        self._publish("diagnostics", array)

    def _log_missing(self, values: dict[str, Any]) -> None:
        received = values.get("images_received", 0)
        needs = ", ".join(self._input_topics)
        self.get_logger().warning(
            f"waiting for inputs: {values['missing_inputs']} ({received} images received, "
            f"{values.get('frames_processed', 0)} processed); with geometry.source "
            f"'{self.pipeline_config.geometry.source}' and masks.source '{self.pipeline_config.masks.source}' "
            f"each image needs {needs} with its stamp: remap those topics or change the sources",
            throttle_duration_sec=MISSING_LOG_PERIOD_S)

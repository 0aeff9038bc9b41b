"""Instance queries for behaviours ("instance 7", "what lies within 1.5 m of here", "everything larger than
0.5 m"): the logic behind the node's QueryInstances service (moonseg3r_msgs/srv/QueryInstances.srv).

Filters combine with AND; each one left at its default matches every instance:
- ids: the instance id is one of them (empty = any);
- radius > 0: the distance from `center` to the instance's axis-aligned box (0 inside it) is <= radius;
- min_size / max_size > 0: the largest box edge is >= min_size / <= max_size;
- min_confidence > 0: the instance confidence is >= min_confidence.
Order: nearest to `center` first (ties by id) with the radius filter on, ascending id otherwise; then the
first `max_results` (0 = all).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .instance_map import InstanceRecord


@dataclass
class InstanceQuery:
    ids: tuple[int, ...] = ()
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radius: float = 0.0
    min_size: float = 0.0
    max_size: float = 0.0
    min_confidence: float = 0.0
    max_results: int = 0
    include_descriptors: bool = True


def check_query(query: InstanceQuery) -> None:
    """Raise ValueError naming the first unusable field (non-finite numbers, max_size < min_size, ...)."""
    for name in ("radius", "min_size", "max_size", "min_confidence"):
        value = getattr(query, name)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    if not all(math.isfinite(c) for c in query.center):
        raise ValueError(f"center must be finite, got {list(query.center)}")
    if query.min_size < 0 or query.max_size < 0:
        raise ValueError("min_size and max_size must be >= 0")
    if query.max_size > 0 and query.max_size < query.min_size:
        raise ValueError(f"max_size ({query.max_size}) must be 0 or >= min_size ({query.min_size})")
    if query.max_results < 0:
        raise ValueError(f"max_results must be >= 0, got {query.max_results}")


def box_distance(point: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Euclidean distance from a (3,) point to the box [lo, hi] (0 inside)."""
    p = np.asarray(point, np.float64)
    gap = np.maximum(np.maximum(np.asarray(lo, np.float64) - p, p - np.asarray(hi, np.float64)), 0.0)
    return float(np.linalg.norm(gap))


def largest_edge(record: InstanceRecord) -> float:
    return float(np.max(np.asarray(record.bbox_max, np.float64) - np.asarray(record.bbox_min, np.float64)))


def _matches(record: InstanceRecord, query: InstanceQuery, wanted: set[int], distance: float) -> bool:
    if wanted and record.id not in wanted:
        return False
    if query.radius > 0 and distance > query.radius:
        return False
    edge = largest_edge(record)
    if query.min_size > 0 and edge < query.min_size:
        return False
    if query.max_size > 0 and edge > query.max_size:
        return False
    return not (query.min_confidence > 0 and record.confidence < query.min_confidence)


def query_instances(records: Sequence[InstanceRecord], query: InstanceQuery) -> list[InstanceRecord]:
    """The records matching `query`, in the order described in the module docstring."""
    check_query(query)
    wanted = {int(i) for i in query.ids}
    scored = []
    for record in records:
        distance = box_distance(np.asarray(query.center), record.bbox_min, record.bbox_max) if query.radius > 0 else 0.0
        if _matches(record, query, wanted, distance):
            scored.append((distance, record.id, record))
    scored.sort(key=lambda item: (item[0], item[1]))
    found = [record for _, _, record in scored]
    return found[:query.max_results] if query.max_results > 0 else found

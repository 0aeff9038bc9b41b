"""core/instance_query: the QueryInstances logic (filters, order, limits, invalid requests)."""
from __future__ import annotations

import numpy as np
import pytest

from moonseg3r_ros.core.instance_map import InstanceRecord, instance_color
from moonseg3r_ros.core.instance_query import InstanceQuery, box_distance, query_instances


def record(i: int, lo, hi, confidence: float = 0.5) -> InstanceRecord:
    lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
    return InstanceRecord(i, confidence, 10, (lo + hi).astype(np.float64) / 2, lo, hi, instance_color(i), 0.0, 1.0,
                          np.zeros(0, np.float32))


RECORDS = [
    record(2, [0, 0, 0], [0.2, 0.2, 0.2], 0.9),  # small, at the origin
    record(5, [2, 0, 0], [3, 1, 0.5], 0.4),  # 1 m wide, 2 m away along x
    record(7, [-1.5, -0.1, 0], [-1.3, 0.1, 1.8], 0.7),  # tall and thin, 1.3 m away along -x
    record(9, [0.5, 3, 0], [0.7, 3.2, 0.2], 0.2),  # small, 3 m away along y
]


def ids(query: InstanceQuery) -> list[int]:
    return [r.id for r in query_instances(RECORDS, query)]


def test_box_distance():
    assert box_distance([0.1, 0.1, 0.1], [0, 0, 0], [1, 1, 1]) == 0.0
    assert box_distance([2.0, 0.5, 0.5], [0, 0, 0], [1, 1, 1]) == pytest.approx(1.0)
    assert box_distance([2.0, 2.0, 0.5], [0, 0, 0], [1, 1, 1]) == pytest.approx(np.sqrt(2.0))


def test_each_filter_and_their_combination():
    assert ids(InstanceQuery()) == [2, 5, 7, 9]
    assert ids(InstanceQuery(ids=(9, 5, 42))) == [5, 9]
    assert ids(InstanceQuery(center=(0.0, 0.0, 0.0), radius=1.5)) == [2, 7]  # box distances 0 and 1.3
    assert ids(InstanceQuery(center=(0.0, 0.0, 0.0), radius=2.0)) == [2, 7, 5]  # nearest first
    assert ids(InstanceQuery(min_size=0.9)) == [5, 7]
    assert ids(InstanceQuery(max_size=0.3)) == [2, 9]
    assert ids(InstanceQuery(min_size=0.9, max_size=1.5)) == [5]
    assert ids(InstanceQuery(min_confidence=0.5)) == [2, 7]
    assert ids(InstanceQuery(center=(0.0, 0.0, 0.0), radius=2.5, min_confidence=0.5, min_size=0.5)) == [7]


def test_order_and_limit():
    assert ids(InstanceQuery(max_results=2)) == [2, 5]
    assert ids(InstanceQuery(center=(0.6, 3.1, 0.1), radius=10.0, max_results=2)) == [9, 5]
    assert ids(InstanceQuery(center=(0.6, 3.1, 0.1), radius=10.0)) == [9, 5, 2, 7]  # box distances 0, 2.52, 2.93, 3.55


@pytest.mark.parametrize("query,message", [
    (InstanceQuery(radius=float("nan")), "radius"),
    (InstanceQuery(center=(0.0, float("inf"), 0.0), radius=1.0), "center"),
    (InstanceQuery(min_size=-1.0), "min_size"), (InstanceQuery(min_size=2.0, max_size=1.0), "max_size"),
    (InstanceQuery(max_results=-1), "max_results")])
def test_invalid_queries_are_rejected(query, message):
    with pytest.raises(ValueError, match=message):
        query_instances(RECORDS, query)

"""builtin_interfaces/Time <-> integer nanoseconds (exact, used for pairing) and float seconds (the core's)."""
from __future__ import annotations

from typing import Any


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_seconds(ns: int) -> float:
    return ns / 1e9


def ns_to_stamp(ns: int):
    """Integer nanoseconds -> builtin_interfaces/Time."""
    from builtin_interfaces.msg import Time

    ns = int(ns)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def seconds_to_stamp(seconds: float):
    return ns_to_stamp(int(round(float(seconds) * 1e9)))

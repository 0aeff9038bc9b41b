"""DDS settings of moonseg3r's own tools (tests, replay, demo, benchmarks); ROS-free, no rclpy import.

Everything these tools start keeps DDS discovery on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST)
on a domain id of its own, and uses `fastdds_profile.xml` (a short heartbeat so that large frames lost in a
burst are repaired in 100 ms instead of 3 s). Values the user already set are kept, so a robot's own
network settings win. Call before rclpy.init() and before starting child processes (they inherit them).
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Callable, Optional

FASTDDS_PROFILE = Path(__file__).with_name("fastdds_profile.xml")


def random_domain_id() -> int:
    """A domain id in 10..99 (valid on Linux: 0..101), clear of the default 0."""
    return random.SystemRandom().randint(10, 99)


def confine_dds(domain_id: Optional[Callable[[], int]] = None) -> list[str]:
    """Set LOCALHOST discovery, a domain id and the Fast DDS profile where unset; returns the names set."""
    defaults = {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": lambda: "LOCALHOST",
        "ROS_DOMAIN_ID": lambda: str((domain_id or random_domain_id)()),
        "FASTDDS_DEFAULT_PROFILES_FILE": lambda: str(FASTDDS_PROFILE),
    }
    chosen = []
    for name, value in defaults.items():
        if name not in os.environ or (name != "FASTDDS_DEFAULT_PROFILES_FILE" and not os.environ[name]):
            os.environ[name] = value()
            chosen.append(name)
    return chosen


def describe() -> str:
    """One line naming the DDS settings in effect (printed by the tools)."""
    names = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "FASTDDS_DEFAULT_PROFILES_FILE")
    return " ".join(f"{n}={os.environ.get(n, '')}" for n in names)

"""DDS settings of moonseg3r's own tools (tests, replay, demo, benchmarks, make, CI); ROS-free, no rclpy import.

Everything these tools start keeps DDS discovery on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST)
on a domain id of its own, and uses `fastdds_profile.xml` (a short heartbeat so that large frames lost in a
burst are repaired in 100 ms instead of 3 s). Values the user already set are kept, so a robot's own
network settings win; `strict=True` (the test suite) forces LOCALHOST and drops ROS_STATIC_PEERS whatever
the shell says. Call before rclpy.init() and before starting child processes (they inherit them).

The domain-id rule, the same everywhere: `DOMAIN_ID_OFFSET + pid % DOMAIN_ID_MODULUS` (10..99: valid on
Linux, 0..101, and clear of the default 0). The Makefile and .ci/run apply it in shell arithmetic to their
own process id (`$$(( $$PPID % 90 + 10 ))`, `$(( $$ % 90 + 10 ))`); test/ros/test_dds.py checks that
their formulas are this one. `python -m moonseg3r_ros.ros.dds [PID]` prints the id for a pid.

A user's shell (`source scripts/env.sh`) gets the same defaults from `python moonseg3r_ros/ros/dds.py --shell`
(export lines), except its domain id: `SHELL_DOMAIN_ID`, one fixed id, so that the node, `ros2 topic echo` and
rviz started from different terminals see each other.
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Callable, Optional

FASTDDS_PROFILE = Path(__file__).with_name("fastdds_profile.xml")
DOMAIN_ID_OFFSET = 10
DOMAIN_ID_MODULUS = 90
SHELL_DOMAIN_ID = 42  # scripts/env.sh: the same id in every terminal of the user
NAMES = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "FASTDDS_DEFAULT_PROFILES_FILE")


def domain_id_for(pid: Optional[int] = None) -> int:
    """The domain id of process `pid` (default: this process) by the rule above."""
    return DOMAIN_ID_OFFSET + (os.getpid() if pid is None else int(pid)) % DOMAIN_ID_MODULUS


def confine_dds(domain_id: Optional[Callable[[], int]] = None, strict: bool = False) -> list[str]:
    """Set LOCALHOST discovery, a domain id and the Fast DDS profile where unset; returns the names set.

    An empty ROS_DOMAIN_ID / ROS_AUTOMATIC_DISCOVERY_RANGE counts as unset; an empty
    FASTDDS_DEFAULT_PROFILES_FILE is the user opting out of the profile and is kept. With `strict`,
    discovery is LOCALHOST even when set otherwise, and ROS_STATIC_PEERS is removed.
    """
    defaults = {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": lambda: "LOCALHOST",
        "ROS_DOMAIN_ID": lambda: str((domain_id or domain_id_for)()),
        "FASTDDS_DEFAULT_PROFILES_FILE": lambda: str(FASTDDS_PROFILE),
    }
    chosen = []
    for name, value in defaults.items():
        missing = name not in os.environ or (name != "FASTDDS_DEFAULT_PROFILES_FILE" and not os.environ[name])
        forced = strict and name == "ROS_AUTOMATIC_DISCOVERY_RANGE" and os.environ.get(name) != "LOCALHOST"
        if missing or forced:
            os.environ[name] = value()
            chosen.append(name)
    if strict:
        os.environ.pop("ROS_STATIC_PEERS", None)
    return chosen


def describe() -> str:
    """One line naming the DDS settings in effect (printed by the tools)."""
    return " ".join(f"{n}={os.environ.get(n, '')}" for n in NAMES)


def shell_exports() -> str:
    """`export NAME=value` lines (shell-quoted) for what confine_dds would set in a user's shell (domain id
    SHELL_DOMAIN_ID); sets them in this process too."""
    chosen = confine_dds(lambda: SHELL_DOMAIN_ID)
    return "".join(f"export {name}={shlex.quote(os.environ[name])}\n" for name in chosen)


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--shell"]:
        print(shell_exports(), end="")
        return 0
    print(domain_id_for(int(args[0]) if args else os.getppid()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

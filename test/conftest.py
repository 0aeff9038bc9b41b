"""Test-wide settings: DDS stays on this machine, on a domain of this pytest process's own.

Set at import time, before any test creates an rclpy context or spawns a subprocess, so both the
in-process nodes and every child process (which inherits os.environ) use them.
- ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST always: tests never send discovery traffic off the machine.
- ROS_DOMAIN_ID: kept when already set (make test / .ci/run choose one), otherwise picked from the pid
  so that parallel pytest runs on one machine do not see each other's nodes.
- FASTDDS_DEFAULT_PROFILES_FILE: moonseg3r_ros/ros/fastdds_profile.xml unless already set.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_STATIC_PEERS", None)
if not os.environ.get("ROS_DOMAIN_ID"):
    # Valid Linux domain ids are 0..101; stay clear of 0 (the default other programs use).
    os.environ["ROS_DOMAIN_ID"] = str(os.getpid() % 90 + 10)

REPO_ROOT = Path(__file__).resolve().parents[1]
# Short heartbeat so that large frames lost in a burst are repaired in 100 ms, not 3 s (see the file).
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO_ROOT / "moonseg3r_ros/ros/fastdds_profile.xml"))


@pytest.fixture
def ros_subprocess_env() -> dict:
    """Environment for a child process that must join this test's ROS graph (same domain, localhost)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO_ROOT), env.get("PYTHONPATH", "")] if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@pytest.fixture
def python_executable() -> str:
    return sys.executable

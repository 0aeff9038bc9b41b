"""Test-wide settings: DDS stays on this machine, on a domain of this pytest process's own.

Set at import time, before any test creates an rclpy context or spawns a subprocess, so both the
in-process nodes and every child process (which inherits os.environ) use them. One helper sets them for
the suite, replay, demo and benchmarks alike: moonseg3r_ros.ros.dds.confine_dds (strict here):
- ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST always, ROS_STATIC_PEERS removed: no discovery traffic leaves.
- ROS_DOMAIN_ID: kept when already set (make test / .ci/run choose one), otherwise dds.domain_id_for(pid)
  so that parallel pytest runs on one machine do not see each other's nodes.
- FASTDDS_DEFAULT_PROFILES_FILE: moonseg3r_ros/ros/fastdds_profile.xml unless already set.
"""
from __future__ import annotations

import sys

import pytest

from moonseg3r_ros.ros.dds import confine_dds
from moonseg3r_ros.ros.node_process import child_environment

confine_dds(strict=True)


@pytest.fixture
def ros_subprocess_env() -> dict:
    """Environment for a child process that must join this test's ROS graph (same domain, localhost)."""
    return child_environment()


@pytest.fixture
def python_executable() -> str:
    return sys.executable

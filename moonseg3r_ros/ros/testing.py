"""What the node tests and the node benchmark share beyond the driver itself: the remappings onto the
synthetic bag writer's topics and the parameters of a fast ground-truth run.

The driver is moonseg3r_ros.ros.node_process (the node as a child process) and moonseg3r_ros.ros.node_client
(the in-process client that drives, feeds and observes it); both are re-exported here for the tests.
"""
from __future__ import annotations

from moonseg3r_ros.ros.frame_publisher import CAMERA_TOPICS
from moonseg3r_ros.ros.node_client import (ACTIVATE, CLEANUP, CONFIGURE, DEACTIVATE, SHUTDOWN_FROM_ACTIVE,
                                           SHUTDOWN_FROM_INACTIVE, SHUTDOWN_FROM_UNCONFIGURED, Collector,
                                           NodeClient)
from moonseg3r_ros.ros.node_process import INSTALLED_NODE, REPO_ROOT, NodeProcess, nested, node_command

TestClient = NodeClient  # the name the node tests use

# Remappings from the node's default input names to the synthetic bag writer's topics.
CAMERA_REMAPS = {stream: f"/{topic}" for stream, topic in CAMERA_TOPICS.items()}

# Node parameters for fast runs on synthetic frames: ground-truth masks, reliable inputs, nothing dropped.
GROUND_TRUTH_PARAMS = {"masks.source": "ground_truth", "keyframe_interval": 2, "input_reliability": "reliable",
                       "cloud.rate": 0.0, "queue_size": 100, "drop_policy": "oldest", "input_depth": 50}

__all__ = ["ACTIVATE", "CAMERA_REMAPS", "CLEANUP", "CONFIGURE", "Collector", "DEACTIVATE", "GROUND_TRUTH_PARAMS",
           "INSTALLED_NODE", "NodeClient", "NodeProcess", "REPO_ROOT", "SHUTDOWN_FROM_ACTIVE",
           "SHUTDOWN_FROM_INACTIVE", "SHUTDOWN_FROM_UNCONFIGURED", "TestClient", "nested", "node_command"]

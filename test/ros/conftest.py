"""Fixtures for the node tests: local-only DDS, an in-process rclpy context, and the node as a process.

Every process started here inherits ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and this session's own
ROS_DOMAIN_ID: test/conftest.py sets them for the whole suite (pytest loads it before this file, also when
only this folder runs), with moonseg3r_ros.ros.dds.confine_dds.
"""
import os

os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

import pytest  # noqa: E402

rclpy = pytest.importorskip("rclpy")

from moonseg3r_ros.data.synthetic import SceneSpec, generate_scene  # noqa: E402
from moonseg3r_ros.ros.testing import NodeProcess, TestClient  # noqa: E402


@pytest.fixture(scope="module")
def ros_context():
    """rclpy initialised for the test process (own context per module)."""
    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


@pytest.fixture(scope="module")
def small_frames():
    """Four rendered 128x96 frames of a 4-object synthetic scene (seed 5)."""
    scene = generate_scene(SceneSpec(seed=5, num_frames=4, width=128, height=96, num_objects=4))
    return [scene.frames[i] for i in range(4)]


@pytest.fixture
def client(ros_context, request):
    """A helper node in the test process that drives and observes the node under test."""
    node_name = request.node.name.replace("[", "_").replace("]", "_").replace("-", "_")[:40]
    c = TestClient(ros_context, f"test_client_{node_name}")
    yield c
    c.close()


@pytest.fixture
def node_process(tmp_path):
    """Factory: start `moonseg3r_node` in its own process with the given parameters; stopped afterwards."""
    started = []

    def start(name: str = "moonseg3r", params: dict | None = None, remaps: dict | None = None) -> NodeProcess:
        proc = NodeProcess(name=name, params=params or {}, remaps=remaps or {}, log_dir=tmp_path)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()

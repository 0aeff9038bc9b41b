"""What the cross-process message tests share (test_msgs.py, test_nav_interfaces.py): the test file run again
as a peer subprocess, an rclpy node with its own context in the test process, and spinning until a condition
holds while the peer stays alive."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Callable, Iterator

DEADLINE_S = 60.0  # failure deadline for discovery on a loaded 2-core machine (not a timing test)


def peer_process(test_file: str) -> Iterator[subprocess.Popen]:
    """Runs `python <test_file> peer` with this process's environment (ROS_DOMAIN_ID / LOCALHOST set by conftest);
    yields the process, then terminates it and prints its output (shown by pytest when a test failed)."""
    proc = subprocess.Popen([sys.executable, os.path.abspath(test_file), "peer"], env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    print("peer output:\n" + (out or ""))


def node_in_own_context(name: str, namespace: str) -> Iterator[tuple]:
    """Yields (node, SingleThreadedExecutor) in a context of their own; shut down afterwards."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(name, namespace=namespace, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


def spin_until(executor, done: Callable[[], bool], peer_proc: subprocess.Popen, deadline_s: float = DEADLINE_S
               ) -> None:
    """Spins until done() or the deadline; fails at once if the peer process died."""
    end = time.monotonic() + deadline_s
    while not done() and time.monotonic() < end:
        assert peer_proc.poll() is None, "peer process died (see its output below)"
        executor.spin_once(timeout_sec=0.1)


def spin_peer(node) -> None:
    """The peer's main loop: announce readiness, spin until terminated."""
    import rclpy

    print("peer ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass

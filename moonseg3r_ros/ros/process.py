"""Stopping a child process (the node) politely, then firmly. ROS-free: importable without rclpy."""
from __future__ import annotations

import signal
import subprocess
from typing import Optional


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 30.0) -> Optional[int]:
    """Send `sig` to `proc` if it still runs and wait; SIGKILL if it does not end in `timeout` s.

    Returns the exit code.
    """
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode

"""Run the MoonSeg3R node in a process: executor thread, SIGINT/SIGTERM, autostart, map saved on exit.

`moonseg3r_node` (setup.py) and `python -m moonseg3r_ros.ros.node` reach `main` through node.main.
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import Optional

import rclpy
from lifecycle_msgs.msg import State as StateMsg
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn

EXECUTOR_THREADS = 8  # 5 input streams, outputs, services


def main(args: Optional[list[str]] = None) -> int:
    """Run the node until SIGINT/SIGTERM or its `finalized` state; the map is saved on the way out when
    map_save_path is set."""
    from rclpy.signals import SignalHandlerOptions

    from moonseg3r_ros.ros.node import MoonSeg3RNode

    rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    node = MoonSeg3RNode()
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    executor.add_node(node)
    spinner = threading.Thread(target=_spin, args=(executor, stop), name="moonseg3r-executor", daemon=True)
    spinner.start()
    if node.config.autostart:
        if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()
    try:
        while not stop.wait(0.2):
            if node._state_machine.current_state[0] == StateMsg.PRIMARY_STATE_FINALIZED:
                node.get_logger().info("finalized: exiting")
                break  # a shutdown transition ends the process, as for a launched lifecycle node
    finally:
        executor.shutdown(timeout_sec=5.0)
        spinner.join(timeout=5.0)
        state_id = node._state_machine.current_state[0]
        if state_id != StateMsg.PRIMARY_STATE_FINALIZED:
            node.trigger_shutdown()  # saves the map when map_save_path is set
        node.destroy_node()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        rclpy.try_shutdown()
    return 0


def _spin(executor, stop: threading.Event) -> None:
    """Spin until shutdown; an exception escaping a callback is reported and spinning goes on."""
    try:
        while not stop.is_set():
            try:
                executor.spin()
                break
            except ExternalShutdownException:
                break
            except Exception as err:
                if stop.is_set():
                    break
                print(f"moonseg3r node: callback failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
    finally:
        stop.set()


if __name__ == "__main__":
    raise SystemExit(main())

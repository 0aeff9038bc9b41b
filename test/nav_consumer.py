"""A navigation-stack stand-in that knows only standard messages (rclpy, tf2_msgs, nav_msgs, vision_msgs):
run as its own process, it records what a planner would read and writes it to a JSON file after every
update (atomically), until SIGINT/SIGTERM.

    python test/nav_consumer.py OUT.json GRID_TOPIC DETECTIONS_TOPIC

JSON: tf_parents {child: [parents seen on /tf and /tf_static]}, tf_edges {"parent child": [x y z qx qy qz qw]
of the latest one}, tf_messages, grid {frame, width, height, resolution, origin [x y z qx qy qz qw], data},
grids, detections [{id, center, size, score, class_id}], detection_messages, detections_frame, publishers
{grid, detections: matched publishers} (a test feeds only once they are matched: volatile detections sent
before are not delivered).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading


def main(out_path: str, grid_topic: str, detections_topic: str) -> int:
    import rclpy
    from nav_msgs.msg import OccupancyGrid
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection3DArray

    rclpy.init()
    node = rclpy.create_node("nav_consumer")
    state = {"tf_parents": {}, "tf_edges": {}, "tf_messages": 0, "grid": None, "grids": 0, "detections": [],
             "detection_messages": 0, "detections_frame": ""}
    lock = threading.Lock()

    def dump() -> None:
        with lock:
            text = json.dumps(state)
        tmp = out_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, out_path)

    def on_tf(msg) -> None:
        with lock:
            state["tf_messages"] += 1
            for t in msg.transforms:
                parents = state["tf_parents"].setdefault(t.child_frame_id, [])
                if t.header.frame_id not in parents:
                    parents.append(t.header.frame_id)
                tr, ro = t.transform.translation, t.transform.rotation
                edge = f"{t.header.frame_id} {t.child_frame_id}"
                state["tf_edges"][edge] = [tr.x, tr.y, tr.z, ro.x, ro.y, ro.z, ro.w]
        dump()

    def on_grid(msg) -> None:
        o = msg.info.origin
        with lock:
            state["grids"] += 1
            state["grid"] = {"frame": msg.header.frame_id, "width": msg.info.width, "height": msg.info.height,
                             "resolution": msg.info.resolution,
                             "origin": [o.position.x, o.position.y, o.position.z, o.orientation.x,
                                        o.orientation.y, o.orientation.z, o.orientation.w],
                             "data": list(msg.data)}
        dump()

    def on_detections(msg) -> None:
        with lock:
            state["detection_messages"] += 1
            state["detections_frame"] = msg.header.frame_id
            state["detections"] = [
                {"id": d.id, "center": [d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.center.position.z],
                 "size": [d.bbox.size.x, d.bbox.size.y, d.bbox.size.z],
                 "score": d.results[0].hypothesis.score if d.results else None,
                 "class_id": d.results[0].hypothesis.class_id if d.results else None}
                for d in msg.detections]
        dump()

    reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(TFMessage, "/tf", on_tf, reliable)
    node.create_subscription(TFMessage, "/tf_static", on_tf, latched)
    grid_sub = node.create_subscription(OccupancyGrid, grid_topic, on_grid,
                                        QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                                   durability=DurabilityPolicy.TRANSIENT_LOCAL))
    detections_sub = node.create_subscription(Detection3DArray, detections_topic, on_detections, reliable)

    def count_publishers() -> None:
        counts = {"grid": grid_sub.get_publisher_count(), "detections": detections_sub.get_publisher_count()}
        with lock:
            changed, state["publishers"] = state.get("publishers") != counts, counts
        if changed:
            dump()

    node.create_timer(0.1, count_publishers)
    count_publishers()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)
    except ExternalShutdownException:
        pass
    dump()
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:4]))

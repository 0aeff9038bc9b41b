"""`moonseg3r replay`: feed a bag or a dataset folder through the real moonseg3r node and keep its map.

    moonseg3r replay BAG_OR_SEQUENCE --out OUT [--geometry recorded|cut3r]
                     [--masks rgbd|weight_free|ground_truth|sam|precomputed]
                     [--cut3r-checkpoint P] [--sam-checkpoint P] [--keyframe-interval N] [--params-file YAML]
                     [--rate HZ] [--vertices PLY] [--gt GT.txt] [--scene NAME] [--timeout S]

What happens:
1. The input is opened: a rosbag2 (folder with metadata.yaml, or its .db3/.mcap file; read with
   moonseg3r_ros.data.bag) or a ScanNet/SceneNN-style folder (moonseg3r_ros.data.datasets.open_sequence).
   A missing or corrupt input is a one-line error and exit code 1.
2. The node runs as a child process (moonseg3r_ros.ros.node_process: the installed `moonseg3r_node`) in a
   namespace of its own, with autostart, `drop_policy:=oldest`, a queue longer than the sequence and
   reliable input QoS. Its log goes to OUT/node.log, its parameters to OUT/moonseg3r.params.yaml and
   its command line to OUT/node_command.txt. A configure failure (missing checkpoint, bad parameter) is
   reported back (exit 1).
3. This process (moonseg3r_ros.ros.node_client, the driver the tests use too) publishes every frame
   (image; camera_info, depth and pose for recorded geometry; instance ids for ground-truth masks) on the topics the
   node is told to subscribe to, stamped with the frame's stamp. `--rate 0` (default) sends a frame only while fewer
   than `--window` frames are unfinished in the node (flow control on the node's /diagnostics counters): the node
   works as fast as it can and nothing is dropped. `--rate HZ` sends at that rate (the node's queue absorbs bursts).
4. Every frame is accounted for from the node's diagnostics (received, processed, skipped, dropped);
   the result is written to OUT/replay.json. Drops are reported, never hidden.
5. The node's `~/save_map` service writes OUT/map.npz (the InstanceMap's own format); this tool exports
   OUT/map.ply (coloured by instance) and, when the scene's mesh vertices are known (a dataset folder with
   a mesh, or --vertices), the ScanNet benchmark prediction files OUT/pred/<scene>.txt + pred_mask/.
   With ground truth (the folder's <scene>.txt, or --gt) the AP table is printed and written to
   OUT/metrics.json.

DDS stays on this machine: ROS_AUTOMATIC_DISCOVERY_RANGE defaults to LOCALHOST and an unset ROS_DOMAIN_ID
is chosen by moonseg3r_ros.ros.dds's rule; Fast DDS uses moonseg3r_ros/ros/fastdds_profile.xml unless
FASTDDS_DEFAULT_PROFILES_FILE is set (see that file: it keeps large frames from stalling replays). All are
printed.

Modules: inputs.py (bag / dataset folder -> frames), run.py (the node process, feeding, accounting),
export.py (map.ply, ScanNet predictions, AP, alignment of monocular maps), cli.py (options, summary).
"""
import importlib
from typing import Any

from moonseg3r_ros.tools.replay.choices import GEOMETRY_SOURCES, MASK_SOURCES
from moonseg3r_ros.tools.replay.cli import add_node_options, build_parser, main, options_from_args, print_summary
from moonseg3r_ros.tools.replay.inputs import ReplayError, ReplayInput, bag_image_count, is_bag, open_input

# Loaded on first use (PEP 562): run.py brings in the ROS side and torch, which `--help` does not need.
_LAZY = {name: module for module, names in (
    ("moonseg3r_ros.eval.scannet_ap", ("json_safe",)),
    ("moonseg3r_ros.tools.replay.run", ("NODE_NAME", "TOPICS", "ReplayOptions", "ensure_ros_environment",
                                        "node_parameters", "replay")),
    ("moonseg3r_ros.tools.replay.export", ("ReplayResult", "align_to_ground_truth", "evaluate_labels", "export_map",
                                           "umeyama"))) for name in names}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["GEOMETRY_SOURCES", "MASK_SOURCES", "NODE_NAME", "TOPICS", "ReplayError", "ReplayInput", "ReplayOptions",
           "ReplayResult", "add_node_options", "align_to_ground_truth", "bag_image_count", "build_parser",
           "ensure_ros_environment", "evaluate_labels", "export_map", "is_bag", "json_safe", "main",
           "node_parameters", "open_input", "options_from_args", "print_summary", "replay", "umeyama"]

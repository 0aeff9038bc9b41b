"""Replay a rosbag2 recording through the moonseg3r node on simulated time (full ROS 2 install).

    ros2 launch moonseg3r_ros replay.launch.py bag:=/data/synthetic_0000_bag
    ros2 launch moonseg3r_ros replay.launch.py bag:=/data/scene_bag masks_source:=ground_truth rate:=0.5
    ros2 launch moonseg3r_ros replay.launch.py bag:=/data/scene_bag \
        cut3r_checkpoint:=/w/cut3r.pth sam_checkpoint:=/w/sam_vit_b.pth

Starts `ros2 bag play BAG --clock` (the bag's time on /clock) and the moonseg3r lifecycle node with
use_sim_time:=true, autostart, drop_policy:=oldest, a large queue and reliable input QoS, so that no frame
is dropped when the node is slower than the recording (it queues instead; lower `rate` to keep the queue
short). The node subscribes to the topics `moonseg3r to-bag` writes (/camera/image_raw, /camera/camera_info,
/camera/depth/image_raw, /camera/pose, /camera/instance_ids); override them with the *_topic arguments.
Playback starts after `delay` seconds so that the node can configure and subscribe first.

Launch arguments: bag (required), rate [1.0], delay [5.0], loop [false], geometry_source [recorded, or
cut3r when cut3r_checkpoint is set], masks_source [weight_free, or sam when sam_checkpoint is set],
cut3r_checkpoint [''], sam_checkpoint [''], keyframe_interval ['' = params file], map_save_path ['' = none;
the map is saved there on shutdown], camera_topic, camera_info_topic, depth_topic, pose_topic,
instance_ids_topic, params_file, namespace, node_name, log_level.

Without ros2 launch (PyPI wheels), `moonseg3r replay BAG --out DIR` does the same with the same node
parameters, with flow control instead of a fixed rate, and writes the final map and ScanNet predictions.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

BAG_TOPICS = {  # node parameter -> (launch argument, topic written by `moonseg3r to-bag`)
    "topics.image": ("camera_topic", "/camera/image_raw"),
    "topics.camera_info": ("camera_info_topic", "/camera/camera_info"),
    "topics.depth": ("depth_topic", "/camera/depth/image_raw"),
    "topics.pose": ("pose_topic", "/camera/pose"),
    "topics.instance_ids": ("instance_ids_topic", "/camera/instance_ids"),
}


def _player(context, *args, **kwargs):
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    cmd = ["ros2", "bag", "play", arg("bag"), "--clock", "--rate", arg("rate"), "--delay", arg("delay")]
    if arg("loop").strip().lower() in ("true", "1", "yes", "on"):
        cmd.append("--loop")
    return [ExecuteProcess(cmd=cmd, output="screen")]


def _node(context, *args, **kwargs):
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    overrides = {
        "use_sim_time": True,
        "autostart": True,
        "drop_policy": "oldest",
        "queue_size": 10000,
        "input_reliability": "reliable",
        "geometry.source": arg("geometry_source") or ("cut3r" if arg("cut3r_checkpoint") else "recorded"),
        "masks.source": arg("masks_source") or ("sam" if arg("sam_checkpoint") else "weight_free"),
    }
    overrides.update({param: arg(launch_arg) for param, (launch_arg, _) in BAG_TOPICS.items()})
    if arg("cut3r_checkpoint"):
        overrides["geometry.cut3r_checkpoint"] = arg("cut3r_checkpoint")
    if arg("sam_checkpoint"):
        overrides["masks.sam_checkpoint"] = arg("sam_checkpoint")
    if arg("keyframe_interval"):
        overrides["keyframe_interval"] = int(arg("keyframe_interval"))
    if arg("map_save_path"):
        overrides["map_save_path"] = arg("map_save_path")
    parameters = [arg("params_file")] if arg("params_file") else []
    return [
        LifecycleNode(
            package="moonseg3r_ros",
            executable="moonseg3r_node",
            name=arg("node_name"),
            namespace=arg("namespace"),
            parameters=parameters + [overrides],
            arguments=["--ros-args", "--log-level", arg("log_level")],
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description():
    share = get_package_share_directory("moonseg3r_ros")
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 directory (or file) to play"),
        DeclareLaunchArgument("rate", default_value="1.0", description="Playback rate"),
        DeclareLaunchArgument("delay", default_value="5.0", description="Seconds before playback starts"),
        DeclareLaunchArgument("loop", default_value="false", description="Loop the bag"),
        DeclareLaunchArgument("geometry_source", default_value="", description="recorded | cut3r ('' = auto)"),
        DeclareLaunchArgument("masks_source", default_value="",
                              description="weight_free | ground_truth | sam | precomputed ('' = auto)"),
        DeclareLaunchArgument("cut3r_checkpoint", default_value="", description="CUT3R checkpoint path"),
        DeclareLaunchArgument("sam_checkpoint", default_value="", description="SAM checkpoint path"),
        DeclareLaunchArgument("keyframe_interval", default_value="", description="'' keeps the params file's"),
        DeclareLaunchArgument("map_save_path", default_value="", description="Save the map here on shutdown"),
        *[DeclareLaunchArgument(launch_arg, default_value=topic, description=f"Bag topic for {param}")
          for param, (launch_arg, topic) in BAG_TOPICS.items()],
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "moonseg3r.yaml")),
        DeclareLaunchArgument("namespace", default_value=""),
        DeclareLaunchArgument("node_name", default_value="moonseg3r"),
        DeclareLaunchArgument("log_level", default_value="info"),
        OpaqueFunction(function=_node),
        OpaqueFunction(function=_player),
    ])

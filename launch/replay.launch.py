"""Replay a rosbag2 recording through the moonseg3r node on simulated time.

    ros2 launch moonseg3r_ros replay.launch.py bag:=/data/scene0000_00 camera_topic:=/camera/image

Starts `ros2 bag play BAG --clock` (the bag's time on /clock) and the node of online.launch.py with
use_sim_time:=true, drop_policy:=oldest and a large queue so that no frame is dropped when the node is
slower than the recording (lower `rate` to keep up). Playback starts after `delay` seconds so the node
can configure and subscribe first. Launch arguments: bag (required), rate [1.0], delay [5.0],
loop [false], plus those of online.launch.py (camera_topic, params_file, namespace, node_name, log_level).
Bags written by `moonseg3r to-bag` carry the topics the default parameters subscribe to.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration


def _player(context, *args, **kwargs):
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    cmd = ["ros2", "bag", "play", arg("bag"), "--clock", "--rate", arg("rate"), "--delay", arg("delay")]
    if arg("loop").strip().lower() in ("true", "1", "yes", "on"):
        cmd.append("--loop")
    return [ExecuteProcess(cmd=cmd, output="screen")]


def generate_launch_description():
    share = get_package_share_directory("moonseg3r_ros")
    online = os.path.join(share, "launch", "online.launch.py")
    passthrough = ["camera_topic", "params_file", "namespace", "node_name", "log_level"]
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 directory (or file) to play"),
        DeclareLaunchArgument("rate", default_value="1.0", description="Playback rate"),
        DeclareLaunchArgument("delay", default_value="5.0", description="Seconds before playback starts"),
        DeclareLaunchArgument("loop", default_value="false", description="Loop the bag"),
        DeclareLaunchArgument("camera_topic", default_value="image", description="Image topic in the bag"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "moonseg3r.yaml")),
        DeclareLaunchArgument("namespace", default_value=""),
        DeclareLaunchArgument("node_name", default_value="moonseg3r"),
        DeclareLaunchArgument("log_level", default_value="info"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(online),
            launch_arguments={
                **{name: LaunchConfiguration(name) for name in passthrough},
                "use_sim_time": "true",
                "autostart": "true",
                "drop_policy": "oldest",
                "queue_size": "10000",
            }.items(),
        ),
        OpaqueFunction(function=_player),
    ])

"""Run the moonseg3r lifecycle node on a live camera stream.

    ros2 launch moonseg3r_ros online.launch.py camera_topic:=/camera/color/image_raw
    ros2 launch moonseg3r_ros online.launch.py params_file:=/path/my.yaml namespace:=robot1 use_sim_time:=true

The node is a LifecycleNode; with autostart:=true (the default here) it configures (loads the models)
and activates itself, so no `ros2 lifecycle set` is needed. Launch arguments:
  camera_topic   input sensor_msgs/Image topic (sets the parameter topics.image)   [image]
  params_file    YAML parameter file                         [share/moonseg3r_ros/config/moonseg3r.yaml]
  namespace      namespace of the node and its relative topics                     ['']
  use_sim_time   use /clock (bag replay)                                           [false]
  autostart      configure + activate on start-up                                  [true]
  node_name      node name                                                         [moonseg3r]
  drop_policy    override the parameter drop_policy ('' keeps the params file's)   ['']
  queue_size     override the parameter queue_size ('' keeps the params file's)    ['']
  log_level      ROS log level                                                     [info]
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode


def _as_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected a boolean, got {text!r}")


def _node(context, *args, **kwargs):
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    overrides = {
        "use_sim_time": _as_bool(arg("use_sim_time")),
        "autostart": _as_bool(arg("autostart")),
        "topics.image": arg("camera_topic"),
    }
    if arg("drop_policy"):
        overrides["drop_policy"] = arg("drop_policy")
    if arg("queue_size"):
        overrides["queue_size"] = int(arg("queue_size"))
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
    default_params = os.path.join(get_package_share_directory("moonseg3r_ros"), "config", "moonseg3r.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("camera_topic", default_value="image", description="Input sensor_msgs/Image topic"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="YAML parameter file"),
        DeclareLaunchArgument("namespace", default_value="", description="Node namespace"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (bag replay)"),
        DeclareLaunchArgument("autostart", default_value="true", description="Configure and activate on start-up"),
        DeclareLaunchArgument("node_name", default_value="moonseg3r", description="Node name"),
        DeclareLaunchArgument("drop_policy", default_value="", description="Override drop_policy (latest|oldest)"),
        DeclareLaunchArgument("queue_size", default_value="", description="Override queue_size"),
        DeclareLaunchArgument("log_level", default_value="info", description="ROS log level"),
        OpaqueFunction(function=_node),
    ])

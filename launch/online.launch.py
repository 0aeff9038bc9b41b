"""Run the moonseg3r lifecycle node on a live camera stream.

    ros2 launch moonseg3r_ros online.launch.py camera_topic:=/camera/color/image_raw
    ros2 launch moonseg3r_ros online.launch.py camera_topic:=/camera/image_raw \
        cut3r_checkpoint:=/models/cut3r_512_dpt_4_64.pth sam_checkpoint:=/models/sam_vit_b_01ec64.pth
    ros2 launch moonseg3r_ros online.launch.py params_file:=/path/my.yaml namespace:=robot1 use_sim_time:=true

Monocular mode (the product) needs the CUT3R checkpoint; without it the node runs in RGB-D mode
(recorded geometry: depth + camera_info + pose topics), the params file's weight-free default.

The node is a LifecycleNode; with autostart:=true (the default here) it configures (loads the models)
and activates itself, so no `ros2 lifecycle set` is needed. Launch arguments:
  camera_topic   input sensor_msgs/Image topic (sets the parameter topics.image)   [image]
  params_file    YAML parameter file                         [share/moonseg3r_ros/config/moonseg3r.yaml]
  namespace      namespace of the node and its relative topics                     ['']
  use_sim_time   use /clock (bag replay)                                           [false]
  autostart      configure + activate on start-up                                  [true]
  node_name      node name                                                         [moonseg3r]
  cut3r_checkpoint  CUT3R checkpoint: set -> geometry.source=cut3r (monocular)    ['']
  sam_checkpoint    SAM checkpoint: set -> masks.source=sam                       ['']
  sam_model_type    SAM model type with sam_checkpoint                            [vit_b]
  depth_topic / camera_info_topic / pose_topic
                 RGB-D mode (geometry.source=recorded, the params file's default): the
                 topics of depth (32FC1 m or 16UC1 mm), CameraInfo and camera-optical-to-map
                 PoseStamped, paired with the image by stamp          ['' = the params file's]
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
    if arg("cut3r_checkpoint"):
        overrides.update({"geometry.source": "cut3r", "geometry.cut3r_checkpoint": arg("cut3r_checkpoint")})
    if arg("sam_checkpoint"):
        overrides.update({"masks.source": "sam", "masks.sam_checkpoint": arg("sam_checkpoint"),
                          "masks.sam_model_type": arg("sam_model_type")})
    for stream in ("depth", "camera_info", "pose"):
        if arg(f"{stream}_topic"):
            overrides[f"topics.{stream}"] = arg(f"{stream}_topic")
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
        DeclareLaunchArgument("cut3r_checkpoint", default_value="",
                              description="CUT3R checkpoint (cut3r_512_dpt_4_64.pth); set = monocular geometry"),
        DeclareLaunchArgument("sam_checkpoint", default_value="", description="SAM checkpoint; set = SAM masks"),
        DeclareLaunchArgument("sam_model_type", default_value="vit_b", description="SAM model type"),
        DeclareLaunchArgument("depth_topic", default_value="", description="Depth topic (RGB-D mode)"),
        DeclareLaunchArgument("camera_info_topic", default_value="", description="CameraInfo topic (RGB-D mode)"),
        DeclareLaunchArgument("pose_topic", default_value="", description="Camera pose topic (RGB-D mode)"),
        DeclareLaunchArgument("drop_policy", default_value="", description="Override drop_policy (latest|oldest)"),
        DeclareLaunchArgument("queue_size", default_value="", description="Override queue_size"),
        DeclareLaunchArgument("log_level", default_value="info", description="ROS log level"),
        OpaqueFunction(function=_node),
    ])

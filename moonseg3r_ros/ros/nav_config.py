"""Node parameters of the navigation outputs (ROS-free): standard detections, the occupancy grid and its
instance raster, the obstacle cloud, the query service, and how TF lives with a robot (REP 105).

The grid's own geometry parameters (resolution, height band, obstacle filter, rate) are the pipeline
config's `occupancy.*` section (core/config.py OccupancyConfig); these are the ROS-side ones, declared as
`nav.*` parameters like the rest of NodeConfig.

TF modes (`nav.tf_mode`):
- standalone: the node owns the camera's pose: `map -> <camera frame>` (or, with frames.base set, its own
  `map [-> odom] -> base -> camera` chain), as without a robot;
- odometry: a robot publishes `odom -> base_link -> camera`; the node publishes only the correction
  `map -> odom` = T_map_camera * inv(T_odom_camera at the image stamp);
- localization: a robot publishes `map -> odom -> ... -> camera`; the node publishes no TF. With recorded
  (RGB-D) geometry the camera pose comes from TF instead of the pose topic.
With monocular geometry and a robot (odometry or localization) the pipeline's world is aligned online to
the robot's frame (`odom`, resp. `map`) by a similarity (scale included) fitted to the two camera
trajectories (core/frame_alignment.py); every output is then expressed in the map frame, metric.
Outputs wait until the alignment is ready (counted as `nav.waiting_for_alignment`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from moonseg3r_ros.core.config import param

TF_MODES = ("standalone", "odometry", "localization")


@dataclass
class NavTopicsConfig:
    detections: str = param("~/detections", "Output vision_msgs/Detection3DArray: one detection per map instance, "
                                            "after every keyframe.")
    occupancy_grid: str = param("~/occupancy_grid", "Output nav_msgs/OccupancyGrid (transient local, like a map "
                                                    "server) at occupancy.rate.")
    instance_grid: str = param("~/instance_grid", "Output moonseg3r_msgs/InstanceGrid: the instance id of each "
                                                  "occupied grid cell, with every grid.")
    obstacle_cloud: str = param("~/obstacle_cloud", "Output sensor_msgs/PointCloud2 (x y z) of the keyframe's "
                                                    "obstacle points in the camera frame (nav.obstacle_cloud).")
    query_service: str = param("~/query_instances", "moonseg3r_msgs/QueryInstances service.")


@dataclass
class NavConfig:
    tf_mode: str = param("standalone", "How TF lives with a robot: 'standalone' (map -> camera), 'odometry' "
                                       "(publish only map -> odom) or 'localization' (publish no TF; pose from "
                                       "TF, monocular worlds aligned to the map frame).", choices=TF_MODES)
    detections: bool = param(True, "Publish vision_msgs/Detection3DArray after every keyframe.")
    occupancy_grid: bool = param(True, "Publish the OccupancyGrid and the InstanceGrid at occupancy.rate.")
    obstacle_cloud: bool = param(False, "Publish the keyframe's obstacle points in the camera frame (Nav2 "
                                        "obstacle/voxel layers).")
    tf_wait: float = param(0.5, "Longest wait of the worker for the robot's TF at an image stamp (s); frames "
                                "whose transforms do not arrive are dropped and counted.", 0.0, 60.0)
    tf_cache: float = param(30.0, "History kept by the TF buffer (s).", 1.0, 3600.0)
    align_min_pairs: int = param(5, "Monocular geometry with a robot: camera pose pairs before the world is "
                                    "aligned to the robot's frame.", 2, 1_000_000)
    align_min_spread: float = param(0.3, "Monocular geometry with a robot: the camera positions must spread this "
                                         "far (RMS from their mean, metres) before aligning.", 0.0, 1e6)
    topics: NavTopicsConfig = field(default_factory=NavTopicsConfig)

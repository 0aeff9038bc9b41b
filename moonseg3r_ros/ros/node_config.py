"""Node-only parameters of the moonseg3r lifecycle node (ROS-free).

The pipeline's own parameters come from `core/config.py` (PipelineConfig); these are the ones that only
make sense for the ROS node: topics, frame ids, QoS, queueing, cloud publishing. Both dataclasses are
declared as ROS parameters the same way (see params.py): one parameter per leaf field, the dotted path as
its name, the field metadata as its descriptor.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from moonseg3r_ros.core.config import param
from moonseg3r_ros.ros.nav_config import NavConfig

IDENTITY_TRANSFORM = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)


@dataclass
class TopicsConfig:
    image: str = param("image", "Input camera image (sensor_msgs/Image; with image_transport 'compressed' the "
                                "sensor_msgs/CompressedImage on '<image>/compressed').")
    depth: str = param("depth", "Depth image paired by stamp (32FC1 metres or 16UC1 mm); subscribed only with "
                                "geometry.source 'recorded'.")
    camera_info: str = param("camera_info", "sensor_msgs/CameraInfo giving K: the one with the image's stamp, else "
                                            "the latest; subscribed only with geometry.source 'recorded'.")
    pose: str = param("pose", "geometry_msgs/PoseStamped camera-optical-to-map pose paired by stamp; subscribed "
                              "only with geometry.source 'recorded'.")
    instance_ids: str = param("instance_ids", "Ground-truth instance id image (mono16/16UC1/32SC1) paired by "
                                              "stamp; subscribed only with masks.source 'ground_truth'.")
    cloud: str = param("~/cloud", "Output sensor_msgs/PointCloud2 of the map (x y z rgb instance_id).")
    instance_map: str = param("~/instance_map", "Output moonseg3r_msgs/InstanceMap, after every keyframe.")
    markers: str = param("~/markers", "Output visualization_msgs/MarkerArray: instance boxes and id labels.")
    debug_image: str = param("~/debug_image", "Output mask overlay image (published only when subscribed).")


@dataclass
class FramesConfig:
    map: str = param("map", "Fixed frame of the map, the cloud and the markers (REP 105).")
    camera: str = param("", "Camera optical frame (REP 103: x right, y down, z forward); empty = the input image's "
                            "header.frame_id (camera_optical_frame when that is empty too).")
    base: str = param("", "Robot base frame; when set, TF is published as map[->odom]->base->camera using "
                          "camera_to_base instead of map->camera.")
    odom: str = param("", "Odometry frame; when set together with 'frames.base', map->odom is identity and "
                          "odom->base carries the tracked pose.")


@dataclass
class CloudConfig:
    rate: float = param(1.0, "Maximum PointCloud2 publishing rate in Hz (0 = after every keyframe).", 0.0, 1000.0)
    voxel_size: float = param(0.0, "Extra voxel downsampling of the published cloud (0 = map points as they are).",
                              0.0, 100.0)
    color_by: str = param("instance", "Cloud colours: 'instance' (instance colour, grey for id 0) or 'rgb'.",
                          choices=("instance", "rgb"))


@dataclass
class SyncConfig:
    buffer_size: int = param(30, "Frames kept while waiting for side inputs with the same stamp; older unpaired "
                                 "frames are dropped and counted.", 1, 100_000)


@dataclass
class NodeConfig:
    autostart: bool = param(False, "Configure and activate on start-up.")
    queue_size: int = param(2, "Frames waiting for the worker; beyond this, frames are dropped by drop_policy.",
                            1, 1_000_000)
    drop_policy: str = param("latest", "When the queue is full: 'latest' drops the oldest queued frame (live "
                                       "camera), 'oldest' drops the incoming frame (replay: use a large queue).",
                             choices=("latest", "oldest"))
    image_transport: str = param("raw", "Input transport: 'raw' (sensor_msgs/Image) or 'compressed' "
                                        "(sensor_msgs/CompressedImage on '<topics.image>/compressed').",
                                 choices=("raw", "compressed"))
    input_depth: int = param(5, "History depth of the input subscriptions (sensor-data QoS: 5); raise it when "
                                "the executor may fall behind a burst of messages.", 1, 10_000)
    input_reliability: str = param("best_effort", "Reliability of the input subscriptions (sensor-data QoS).",
                                   choices=("best_effort", "reliable"))
    map_save_path: str = param("", "Default file for save_map/load_map; the map is saved there on shutdown "
                                   "(empty = no automatic save).")
    publish_debug_image: bool = param(True, "Publish the mask overlay (only while someone subscribes).")
    publish_markers: bool = param(True, "Publish instance boxes and labels after every keyframe.")
    diagnostics_rate: float = param(1.0, "diagnostic_msgs/DiagnosticArray rate on /diagnostics (Hz).", 0.01, 100.0)
    camera_to_base: list = param(list(IDENTITY_TRANSFORM), "Static pose of the camera optical frame in frames.base as "
                                 "[x, y, z, qx, qy, qz, qw] (used when frames.base is set).")
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    frames: FramesConfig = field(default_factory=FramesConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    nav: NavConfig = field(default_factory=NavConfig)

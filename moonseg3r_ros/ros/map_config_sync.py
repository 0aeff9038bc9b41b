"""Keep the node's `map.*` parameters equal to the MapConfig of the map it runs.

A map file carries the MapConfig it was built with (voxel size, weights, ...), which defines its layout:
after loading one saved with other values the pipeline adopts them (MoonSeg3RPipeline.load_map) and
`follow_loaded_map` makes the node say so: it logs the differences, sets `node.pipeline_config.map` and the
ROS parameters to the saved values. The parameter callback lets these through unchecked while
`node._following_map_config` is set (they describe the map as it is; no restart is needed).
"""
from __future__ import annotations

from typing import Any

from rclpy.parameter import Parameter

from moonseg3r_ros.core.config import MapConfig
from moonseg3r_ros.core.map_validation import config_differences


def describe_differences(differences: dict[str, tuple[Any, Any]]) -> str:
    """'map.voxel_size 0.02 -> 0.05, map.max_point_weight 100 -> 7' for {field: (parameter, saved)}."""
    return ", ".join(f"map.{name} {old!r} -> {new!r}" for name, (old, new) in differences.items())


def follow_loaded_map(node: Any, before: MapConfig, loaded: MapConfig) -> str:
    """Make `node`'s map parameters equal `loaded` (the map's MapConfig); '' when they already were, else the
    description of what changed (also logged as a warning)."""
    differences = config_differences(loaded, before)
    if not differences:
        return ""
    for name, (_, saved) in differences.items():
        setattr(node.pipeline_config.map, name, saved)
    node._following_map_config = True
    try:
        results = node.set_parameters([Parameter(f"map.{name}", value=saved)
                                       for name, (_, saved) in differences.items()])
    finally:
        node._following_map_config = False
    text = describe_differences(differences)
    refused = [r.reason for r in results if not r.successful]
    node.get_logger().warning(f"the loaded map was saved with other map settings ({text}): the map keeps "
                              f"them and the node's parameters now say so"
                              + (f"; could not set: {refused}" if refused else ""))
    return text

"""The node's pure parts, without a running node: the TF chain, diagnostics status and rates, the K cache,
and which parameter changes the lifecycle state refuses."""
import math

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus

from moonseg3r_ros.core.config import PipelineConfig
from moonseg3r_ros.ros import conversions as conv
from moonseg3r_ros.ros import params, tf_chain
from moonseg3r_ros.ros.diagnostics import diagnostic_status, window_rates
from moonseg3r_ros.ros.inputs import IntrinsicsCache, side_inputs
from moonseg3r_ros.ros.node_config import FramesConfig
from moonseg3r_ros.ros.runtime_params import refusal

STAMP = conv.ns_to_stamp(7_000_000_001)
# camera 0.3 m ahead and 0.2 m above the base, optical axes (z forward) turned to the base's x forward
CAMERA_TO_BASE = [0.3, 0.0, 0.2, -0.5, 0.5, -0.5, 0.5]


def _pose() -> np.ndarray:
    angle = 0.4
    t = np.eye(4)
    t[:3, :3] = [[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]]
    t[:3, 3] = (1.0, -2.0, 0.5)
    return t


def _edges(transforms) -> dict[tuple[str, str], np.ndarray]:
    for t in transforms:
        assert (t.header.stamp.sec, t.header.stamp.nanosec) == (7, 1)
    return {(t.header.frame_id, t.child_frame_id): conv.transform_msg_to_matrix(t) for t in transforms}


def test_tf_chain_without_base_is_the_camera_pose():
    edges = _edges(tf_chain.pose_transforms(_pose(), FramesConfig(map="map", camera="cam"), CAMERA_TO_BASE, STAMP))
    assert list(edges) == [("map", "cam")]
    np.testing.assert_allclose(edges["map", "cam"], _pose(), atol=1e-12)
    assert tf_chain.static_transforms(FramesConfig(), CAMERA_TO_BASE, STAMP) == []


@pytest.mark.parametrize("odom", ["", "odom"])
def test_tf_chain_through_base_composes_to_the_camera_pose(odom):
    frames = FramesConfig(map="map", camera="cam", base="base_link", odom=odom)
    edges = _edges(tf_chain.pose_transforms(_pose(), frames, CAMERA_TO_BASE, STAMP))
    (static,) = tf_chain.static_transforms(frames, CAMERA_TO_BASE, STAMP)
    base_to_camera = conv.transform_msg_to_matrix(static)
    assert (static.header.frame_id, static.child_frame_id) == ("base_link", "cam")
    np.testing.assert_allclose(base_to_camera, conv.xyz_quat_to_matrix(CAMERA_TO_BASE), atol=1e-12)
    if odom:
        assert list(edges) == [("map", "odom"), ("odom", "base_link")]
        np.testing.assert_allclose(edges["map", "odom"], np.eye(4), atol=1e-12)
        map_to_base = edges["map", "odom"] @ edges["odom", "base_link"]
    else:
        assert list(edges) == [("map", "base_link")]
        map_to_base = edges["map", "base_link"]
    np.testing.assert_allclose(map_to_base @ base_to_camera, _pose(), atol=1e-12)


def test_diagnostic_status_levels_and_values():
    ok = diagnostic_status({"state": "active", "fps": 2.5}, "/moonseg3r")
    assert (ok.level, ok.message, ok.hardware_id) == (DiagnosticStatus.OK, "ok", "/moonseg3r")
    assert [(v.key, v.value) for v in ok.values] == [("state", "active"), ("fps", "2.5")]
    assert diagnostic_status({"queue_drops": 1}, "").level == DiagnosticStatus.WARN
    error = diagnostic_status({"queue_drops": 1, "processing_errors": 3}, "")
    assert (error.level, error.message) == (DiagnosticStatus.ERROR, "3 processing errors")


def test_window_rates_use_the_last_five_seconds():
    recent = [(0.0, 9.0, 0.0)] + [(10.0 + 0.5 * i, 0.1 * (i + 1), 0.0) for i in range(5)]  # 2 fps, first is old
    rates = window_rates(recent, now=12.5)
    assert rates == {"fps": 2.0, "latency_mean_ms": 300.0, "latency_max_ms": 500.0}
    assert window_rates([], now=1.0) == {"fps": 0.0, "latency_mean_ms": 0.0, "latency_max_ms": 0.0}


def test_intrinsics_by_stamp_else_latest_within_capacity():
    cache = IntrinsicsCache()
    assert cache.get(1) is None
    ks = [np.eye(3) * (i + 1) for i in range(4)]
    for i, k in enumerate(ks):
        cache.add(100 + i, k, capacity=2)
    assert cache.get(103) is ks[3] and cache.get(102) is ks[2]
    assert cache.get(100) is ks[3]  # evicted: the latest K


def test_side_inputs_follow_the_sources():
    config = PipelineConfig()
    config.geometry.source, config.masks.source = "recorded", "ground_truth"
    assert side_inputs(config) == ["depth", "pose", "instance_ids"]
    config.geometry.source, config.masks.source = "cut3r", "weight_free"
    assert side_inputs(config) == []


def test_parameter_changes_refused_by_lifecycle_state():
    specs = params.all_specs()

    def why(name, value, configured, active):
        return refusal(name, value, specs[name][1], configured, active)

    assert why("association.match_threshold", 1.0, configured=True, active=True) is None
    assert "unconfigured" in why("geometry.source", "cut3r", configured=True, active=False)
    assert why("geometry.source", "cut3r", configured=False, active=False) is None
    assert "inactive" in why("topics.image", "/other", configured=True, active=True)
    assert why("topics.image", "/other", configured=True, active=False) is None
    assert why("association.match_threshold", 99.0, configured=False, active=False)  # out of range

"""Parameters declared from the typed configs, the YAML mirror of the defaults, runtime change classes."""
import dataclasses

import pytest
import yaml

from moonseg3r_ros.core.config import PipelineConfig, field_specs, flatten
from moonseg3r_ros.ros import params
from moonseg3r_ros.ros.node_config import NodeConfig


def test_yaml_file_equals_the_generated_defaults():
    """config/moonseg3r.yaml mirrors the dataclass defaults (regenerate: python -m moonseg3r_ros.ros.params --write)."""
    assert params.YAML_PATH.read_text() == params.render_yaml()


def test_yaml_parses_back_to_every_default_with_its_type():
    tree = yaml.safe_load(params.render_yaml())["/**"]["ros__parameters"]

    def leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    parsed = dict(leaves(tree))
    defaults = params.default_values()
    assert set(parsed) == set(defaults)
    for name, value in defaults.items():
        assert parsed[name] == value and type(parsed[name]) is type(value), name


def test_flat_values_split_into_both_configs():
    values = params.default_values()
    values.update({"association.match_threshold": 1.5, "cloud.rate": 2, "topics.image": "/camera/image_raw",
                   "queue_size": 500, "drop_policy": "oldest", "camera_to_base": [1, 2, 3, 0, 0, 0, 1]})
    pipeline, node = params.split_values(values)
    assert pipeline.association.match_threshold == 1.5
    assert node.cloud.rate == 2.0 and isinstance(node.cloud.rate, float)
    assert (node.topics.image, node.queue_size, node.drop_policy) == ("/camera/image_raw", 500, "oldest")
    assert node.camera_to_base == [1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 1.0]
    assert flatten(pipeline)["masks.source"] == "rgbd"


@pytest.mark.parametrize("name,value,reason", [
    ("drop_policy", "block", "must be one of"),
    ("queue_size", 0, "must be >= 1"),
    ("cloud.color_by", "depth", "must be one of"),
    ("camera_to_base", [1.0, 2.0], "needs 7 numbers"),
    ("association.match_threshold", 7.0, "must be <= 3"),
    ("geometry.source", "lidar", "must be one of"),
])
def test_bad_values_are_rejected_with_the_reason(name, value, reason):
    values = params.default_values()
    values[name] = value
    with pytest.raises(ValueError, match=reason):
        params.split_values(values)


def test_names_do_not_collide_and_every_field_is_classified():
    specs = params.all_specs()
    assert len(specs) == len(field_specs(PipelineConfig)) + len(field_specs(NodeConfig))
    assert params.PIPELINE_TUNABLE <= set(field_specs(PipelineConfig))
    assert params.NODE_TUNABLE <= set(field_specs(NodeConfig))
    assert params.classify_change("association.match_threshold") == "tunable"
    assert params.classify_change("geometry.source") == "restart_pipeline"
    assert params.classify_change("topics.image") == "reactivate"
    assert params.classify_change("cloud.rate") == "tunable"


def test_declared_parameters_carry_descriptors_and_ranges():
    import rclpy
    from rcl_interfaces.msg import ParameterType
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    context = rclpy.context.Context()
    rclpy.init(context=context, args=["--ros-args", "-p", "cloud.rate:=3", "-p", "queue_size:=7"])
    try:
        node = Node("param_probe", context=context)
        params.declare_all(node)
        values = params.read_all(node)
        assert values["cloud.rate"] == 3.0  # an integer override of a double is converted
        assert values["queue_size"] == 7
        pipeline, config = params.split_values(values)
        assert dataclasses.asdict(pipeline) == dataclasses.asdict(PipelineConfig())
        d = node.describe_parameter("association.match_threshold")
        assert d.type == ParameterType.PARAMETER_DOUBLE
        assert "cos(query)" in d.description
        assert (d.floating_point_range[0].from_value, d.floating_point_range[0].to_value) == (-3.0, 3.0)
        d = node.describe_parameter("keyframe_interval")
        assert (d.integer_range[0].from_value, d.integer_range[0].to_value) == (1, 10000)
        assert "one of: latest, oldest" in node.describe_parameter("drop_policy").additional_constraints
        assert node.describe_parameter("camera_to_base").type == ParameterType.PARAMETER_DOUBLE_ARRAY
        # ROS itself enforces the declared range.
        result = node.set_parameters([Parameter("association.match_threshold", value=5.0)])[0]
        assert not result.successful
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_rviz_config_matches_the_node_defaults():
    """rviz/moonseg3r.rviz: fixed frame `map` and the node's default output topics."""
    rviz = yaml.safe_load((params.YAML_PATH.parents[1] / "rviz" / "moonseg3r.rviz").read_text())
    manager = rviz["Visualization Manager"]
    config = NodeConfig()
    assert manager["Global Options"]["Fixed Frame"] == config.frames.map
    topics = {d["Class"].split("/")[-1]: d.get("Topic", {}).get("Value") for d in manager["Displays"]
              if d["Class"] != "rviz_default_plugins/Image"}
    private = "/moonseg3r/"  # the node's private names (~/x) under its default name
    assert topics["PointCloud2"] == private + config.topics.cloud.removeprefix("~/")
    assert topics["MarkerArray"] == private + config.topics.markers.removeprefix("~/")
    assert "TF" in topics
    images = [d["Topic"]["Value"] for d in manager["Displays"] if d["Class"] == "rviz_default_plugins/Image"]
    assert images == ["/camera/image_raw", private + config.topics.debug_image.removeprefix("~/")]


def test_docs_parameter_table_is_generated_from_the_configs():
    """docs/node.md carries the generated table (regenerate: python -m moonseg3r_ros.ros.params --write)."""
    text = params.DOC_PATH.read_text()
    assert params.render_doc(text) == text
    for name in params.all_specs():
        assert f"| `{name}` |" in text

"""The typed pipeline configuration: dotted names, types, ranges, choices (the node's parameters rely on it)."""
import math

import pytest

from moonseg3r_ros.core.config import PipelineConfig, field_specs, flatten, from_flat, validate


def test_flat_names_match_the_field_specs_and_carry_descriptions():
    flat = flatten(PipelineConfig())
    specs = field_specs(PipelineConfig)
    assert set(flat) == set(specs)
    expected = {"keyframe_interval", "association.match_threshold", "masks.source", "geometry.cut3r_checkpoint"}
    assert expected <= set(flat)
    assert all(f.metadata.get("description") for f in specs.values())
    assert flat["association.merge_threshold"] == 0.8 and flat["association.match_threshold"] == 1.8


def test_from_flat_applies_values_without_touching_the_base():
    base = PipelineConfig()
    config = from_flat({"association.match_threshold": 1.5, "keyframe_interval": 20, "map.voxel_size": 1}, base)
    assert config.association.match_threshold == 1.5
    assert config.keyframe_interval == 20
    assert config.map.voxel_size == 1.0 and isinstance(config.map.voxel_size, float)
    assert base.association.match_threshold == 1.8 and base.keyframe_interval == 10


@pytest.mark.parametrize("values, error, words", [
    ({"association.no_such_threshold": 1.0}, KeyError, "unknown configuration key"),
    ({"keyframe_interval": 2.5}, ValueError, "must be an integer"),
    ({"keyframe_interval": True}, ValueError, "must be an integer"),
    ({"keyframe_interval": 0}, ValueError, "must be >= 1"),
    ({"association.merge_threshold": 1.5}, ValueError, "must be <= 1.0"),
    ({"association.match_threshold": math.nan}, ValueError, "finite number"),
    ({"map.voxel_size": math.inf}, ValueError, "finite number"),
    ({"masks.source": "cropformer"}, ValueError, "must be one of"),
    ({"geometry.cut3r_checkpoint": 3}, ValueError, "must be a string"),
])
def test_bad_values_are_rejected_with_the_parameter_named(values, error, words):
    with pytest.raises(error) as raised:
        from_flat(values)
    assert words in str(raised.value)
    assert next(iter(values)).split(".")[-1] in str(raised.value)


def test_validate_names_a_field_set_out_of_range_directly():
    config = PipelineConfig()
    config.memory.voxel_size = -1.0
    with pytest.raises(ValueError, match="memory.voxel_size"):
        validate(config)

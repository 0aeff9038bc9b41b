"""The compare table (training/compare.py): pooled AP, mean of the per-scene APs, and per-scene counts."""
from moonseg3r_ros.training.compare import format_rows, parse_variant, scene_record


def _row(name, scenes):
    return {"variant": name, "ap": 0.5, "ap50": 0.6, "ap25": 0.7, "scene_ap": scenes,
            "mean_scene_ap": sum(scenes.values()) / len(scenes)}


def test_scene_record_counts_better_same_worse_against_the_reference():
    reference = _row("identity", {"a": 0.5, "b": 0.5, "c": 0.5})
    trained = _row("trained", {"a": 0.6, "b": 0.5, "c": 0.4})
    assert scene_record(trained, reference) == "1/1/1"
    assert scene_record(reference, reference) == "0/3/0"


def test_table_has_the_mean_scene_ap_and_the_counts():
    rows = [_row("identity", {"a": 0.2, "b": 0.4}), _row("trained", {"a": 0.3, "b": 0.5})]
    text = format_rows(rows, 2)
    assert "| trained | 0.500 | 0.600 | 0.700 | 0.400 | 2/0/0 |" in text
    assert "| identity | 0.500 | 0.600 | 0.700 | 0.300 | 0/2/0 |" in text


def test_variant_settings_are_parsed_as_yaml_values():
    assert parse_variant("no context=w.safetensors,memory.max_contextual_queries=0") == (
        "no context", "w.safetensors", {"memory.max_contextual_queries": 0})

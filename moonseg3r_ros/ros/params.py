"""ROS parameters declared once from the typed dataclasses, and `config/moonseg3r.yaml` generated from them.

Every leaf field of PipelineConfig and NodeConfig becomes one parameter named by its dotted path, with a
ParameterDescriptor built from the field metadata (description, FloatingPointRange/IntegerRange from the
range, the allowed choices in additional_constraints). The ROS-free half of this module (flat <-> dataclass,
validation, YAML rendering) is importable without rclpy; rclpy is imported inside the ROS functions.

Runtime changes (see `classify_change`):
- tunable: pipeline thresholds read on every frame and the cloud/markers/debug options; accepted any time.
- restart_pipeline: pipeline parameters that define models or the map layout (sources, checkpoints, widths,
  voxel sizes, device); only while the node is unconfigured (cleanup, set, configure).
- reactivate: node parameters used when subscriptions/publishers are created (topics, frames, QoS, queue);
  only while the node is not active (deactivate, set, activate).
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Optional

from moonseg3r_ros.core.config import PipelineConfig, field_specs, flatten, value_error
from moonseg3r_ros.core.config import from_flat as pipeline_from_flat
from moonseg3r_ros.ros.node_config import NodeConfig

# Pipeline parameters that may change while the pipeline exists: the ones the pipeline reads from its
# config on every frame (parts that copy a value when they are built, e.g. the mask sources' min_mask_area or
# the recorded geometry's max_depth, are not listed: those need cleanup + configure).
PIPELINE_TUNABLE = frozenset({
    "keyframe_interval", "prune_interval", "min_valid_fraction", "max_image_pixels", "geometry.min_confidence",
    "memory.max_contextual_queries",
    "association.merge_threshold", "association.match_threshold", "association.match_threshold_without_state",
    "association.merge_box_margin",
    "map.min_instance_points", "map.stale_after_s", "map.export_max_distance",
    # read by every occupancy grid the node builds (not occupancy.rate: its timer is made on activation)
    *(f"occupancy.{name}" for name in ("resolution", "band_min", "band_max", "floor_tolerance", "obstacle_points",
                                       "min_obstacle_size", "max_obstacle_size", "floor_fraction", "min_cell_points",
                                       "ground", "up", "ground_height", "fit_max_tilt", "margin", "max_cells")),
})
# Node parameters that may change while active.
NODE_TUNABLE = frozenset({
    "cloud.rate", "cloud.voxel_size", "cloud.color_by", "publish_debug_image", "publish_markers",
    "map_save_path", "diagnostics_rate", "autostart",
})
YAML_PATH = Path(__file__).resolve().parents[2] / "config" / "moonseg3r.yaml"


# ----------------------------------------------------------------------------------------------------
# ROS-free: flat dictionaries, validation, YAML

def all_specs() -> dict[str, tuple[str, dataclasses.Field]]:
    """{dotted name: (owner 'pipeline' | 'node', field)} for every parameter of the node."""
    specs = {name: ("pipeline", f) for name, f in field_specs(PipelineConfig).items()}
    for name, f in field_specs(NodeConfig).items():
        if name in specs:
            raise RuntimeError(f"parameter name '{name}' is used by both PipelineConfig and NodeConfig")
        specs[name] = ("node", f)
    return specs


def default_values() -> dict[str, Any]:
    """{dotted name: default} for every parameter (pipeline first, then node)."""
    values = flatten(PipelineConfig())
    values.update(flatten(NodeConfig()))
    return values


# The same type/range/choices rule as the pipeline config (one piece for both).
validate_value = value_error


def field_kind(name: str) -> type:
    """Python type of a parameter (from its default value)."""
    value = default_values()[name]
    return list if isinstance(value, (list, tuple)) else type(value)


def node_config_from_flat(values: dict[str, Any], base: Optional[NodeConfig] = None) -> NodeConfig:
    """{dotted name: value} -> NodeConfig; unknown names raise KeyError, bad values ValueError."""
    config = copy.deepcopy(base) if base is not None else NodeConfig()
    specs = field_specs(NodeConfig)
    for name, value in values.items():
        if name not in specs:
            raise KeyError(f"unknown node parameter '{name}'")
        kind = field_kind(name)
        reason = validate_value(name, value, specs[name], kind)
        if reason:
            raise ValueError(reason)
        if kind is float:
            value = float(value)
        elif kind is list:
            value = [float(v) for v in value]
        target = config
        *parents, leaf = name.split(".")
        for p in parents:
            target = getattr(target, p)
        setattr(target, leaf, value)
    if len(config.camera_to_base) != 7:
        raise ValueError(f"'camera_to_base' needs 7 numbers [x, y, z, qx, qy, qz, qw], got "
                         f"{len(config.camera_to_base)}")
    return config


def split_values(values: dict[str, Any]) -> tuple[PipelineConfig, NodeConfig]:
    """{dotted name: value} for all parameters -> (PipelineConfig, NodeConfig), validated."""
    specs = all_specs()
    pipeline = {k: v for k, v in values.items() if specs[k][0] == "pipeline"}
    node = {k: v for k, v in values.items() if specs[k][0] == "node"}
    for name, value in pipeline.items():  # ints given for float fields are fine
        if field_kind(name) is float and isinstance(value, int) and not isinstance(value, bool):
            pipeline[name] = float(value)
    return pipeline_from_flat(pipeline), node_config_from_flat(node)


def classify_change(name: str) -> str:
    """'tunable', 'restart_pipeline' or 'reactivate' (see the module docstring)."""
    owner = all_specs()[name][0]
    if owner == "pipeline":
        return "tunable" if name in PIPELINE_TUNABLE else "restart_pipeline"
    return "tunable" if name in NODE_TUNABLE else "reactivate"


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        if "e" in text or "E" in text:
            mantissa, exponent = text.lower().split("e")
            if "." not in mantissa:
                mantissa += ".0"
            text = f"{mantissa}e{exponent}"
        elif "." not in text and text not in ("inf", "-inf", "nan"):
            text += ".0"
        return text
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render_yaml(node_name: str = "/**") -> str:
    """The ROS 2 parameter file with every default, grouped by section, each with its description."""
    specs = all_specs()
    values = default_values()
    lines = [
        "# moonseg3r node parameters: every default, generated from moonseg3r_ros/core/config.py (pipeline)",
        "# and moonseg3r_ros/ros/node_config.py (node). Regenerate with:",
        "#   python -m moonseg3r_ros.ros.params --write",
        "# Floats keep their decimal point: ROS parameters are typed (1 is an integer, 1.0 a double).",
        f"{node_name}:",
        "  ros__parameters:",
    ]
    open_sections: list[str] = []
    for name in _yaml_order(specs):
        *parents, leaf = name.split(".")
        common = 0
        while common < min(len(parents), len(open_sections)) and parents[common] == open_sections[common]:
            common += 1
        open_sections = open_sections[:common]
        for depth in range(common, len(parents)):
            lines.append("    " + "  " * depth + f"{parents[depth]}:")
            open_sections.append(parents[depth])
        indent = "    " + "  " * len(parents)
        f = specs[name][1]
        description = f.metadata.get("description", "")
        low, high = f.metadata.get("range", (None, None))
        choices = f.metadata.get("choices")
        extra = ""
        if choices:
            extra = f" One of: {', '.join(map(str, choices))}."
        elif low is not None or high is not None:
            extra = f" Range [{_range_text(low)}, {_range_text(high)}]."
        lines.append(f"{indent}# {description}{extra}")
        lines.append(f"{indent}{leaf}: {_yaml_scalar(values[name])}")
    return "\n".join(lines) + "\n"


def _range_text(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}"


def _yaml_order(specs: dict[str, Any]) -> list[str]:
    """Top-level scalars first, then sections in declaration order (a section's keys stay together)."""
    names = list(specs)
    scalars = [n for n in names if "." not in n]
    sections: dict[str, list[str]] = {}
    for n in names:
        if "." in n:
            sections.setdefault(n.split(".")[0], []).append(n)
    return scalars + [n for group in sections.values() for n in group]


DOC_PATH = YAML_PATH.parents[1] / "docs" / "node.md"
DOC_BEGIN = "<!-- parameters:begin (generated by python -m moonseg3r_ros.ros.params --write) -->"
DOC_END = "<!-- parameters:end -->"
CHANGE_TEXT = {"tunable": "any time", "restart_pipeline": "unconfigured", "reactivate": "inactive"}


def render_parameter_table() -> str:
    """Markdown table of every parameter: name, type, default, range/choices, when it may change, meaning."""
    values = default_values()
    rows = ["| Parameter | Type | Default | Range / choices | Change when | Description |",
            "|---|---|---|---|---|---|"]
    for name in _yaml_order(all_specs()):
        f = all_specs()[name][1]
        kind = field_kind(name)
        low, high = f.metadata.get("range", (None, None))
        choices = f.metadata.get("choices")
        limits = ", ".join(f"`{c}`" for c in choices) if choices else (
            f"[{_range_text(low)}, {_range_text(high)}]" if low is not None or high is not None else "")
        default = _yaml_scalar(values[name])
        description = f.metadata.get("description", "").replace("|", "\\|")
        rows.append(f"| `{name}` | {kind.__name__} | `{default}` | {limits} | {CHANGE_TEXT[classify_change(name)]} "
                    f"| {description} |")
    return "\n".join(rows) + "\n"


def render_doc(text: str) -> str:
    """`text` (docs/node.md) with the generated parameter table between its markers."""
    start, end = text.index(DOC_BEGIN) + len(DOC_BEGIN), text.index(DOC_END)
    return text[:start] + "\n" + render_parameter_table() + text[end:]


def write_yaml(path: Path = YAML_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_yaml())
    return path


# ----------------------------------------------------------------------------------------------------
# ROS: declaration and reading

def parameter_descriptor(name: str, f: dataclasses.Field, kind: type, restriction: str):
    """dataclass field -> rcl_interfaces/ParameterDescriptor (type, description, range, choices)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

    types = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
             float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
             list: ParameterType.PARAMETER_DOUBLE_ARRAY}
    descriptor = ParameterDescriptor(name=name, type=types[kind], description=f.metadata.get("description", ""))
    low, high = f.metadata.get("range", (None, None))
    choices = f.metadata.get("choices")
    constraints = []
    if choices:
        constraints.append(f"one of: {', '.join(map(str, choices))}")
    if kind is float and (low is not None or high is not None):
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(low if low is not None else -1e308), to_value=float(high if high is not None else 1e308),
            step=0.0)]
    elif kind is int and (low is not None or high is not None):
        descriptor.integer_range = [IntegerRange(
            from_value=int(low if low is not None else -2**63), to_value=int(high if high is not None else 2**63 - 1),
            step=1)]
    constraints.append(restriction)
    descriptor.additional_constraints = "; ".join(constraints)
    return descriptor


RESTRICTION_TEXT = {
    "tunable": "may change at any time",
    "restart_pipeline": "change only while unconfigured (cleanup, set, configure)",
    "reactivate": "change only while inactive (deactivate, set, activate)",
}


def declare_all(node: Any) -> None:
    """Declare every pipeline and node parameter on `node` with its descriptor and default.

    Integer overrides of double parameters (`cloud.rate:=2`) are accepted and converted, since the
    command line and YAML files make that mistake easy.
    """
    from rclpy.parameter import Parameter

    values = default_values()
    overrides = getattr(node, "_parameter_overrides", {})
    for name, (_, f) in all_specs().items():
        kind = field_kind(name)
        override = overrides.get(name)
        if override is not None and kind is float and override.type_ == Parameter.Type.INTEGER:
            overrides[name] = Parameter(name, Parameter.Type.DOUBLE, float(override.value))
        if override is not None and kind is list and override.type_ == Parameter.Type.INTEGER_ARRAY:
            overrides[name] = Parameter(name, Parameter.Type.DOUBLE_ARRAY, [float(v) for v in override.value])
        default = [float(v) for v in values[name]] if kind is list else values[name]
        node.declare_parameter(name, default, parameter_descriptor(name, f, kind,
                                                                   RESTRICTION_TEXT[classify_change(name)]))


def read_all(node: Any) -> dict[str, Any]:
    """{dotted name: current value} of every declared parameter (lists as Python lists)."""
    out: dict[str, Any] = {}
    for name in all_specs():
        value = node.get_parameter(name).value
        out[name] = list(value) if field_kind(name) is list else value
    return out


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m moonseg3r_ros.ros.params [--write | --check]`: print, write or check the YAML file."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--write", action="store_true", help=f"write {YAML_PATH} and the table in {DOC_PATH}")
    parser.add_argument("--check", action="store_true", help="exit 1 when the file differs from the defaults")
    args = parser.parse_args(argv)
    if args.write:
        print(write_yaml())
        if DOC_PATH.exists():
            DOC_PATH.write_text(render_doc(DOC_PATH.read_text()))
            print(DOC_PATH)
        return 0
    if args.check:
        same = YAML_PATH.exists() and YAML_PATH.read_text() == render_yaml()
        doc_same = DOC_PATH.exists() and render_doc(DOC_PATH.read_text()) == DOC_PATH.read_text()
        print("config/moonseg3r.yaml is up to date" if same else "config/moonseg3r.yaml differs; run --write")
        print("docs/node.md parameter table is up to date" if doc_same else "docs/node.md differs; run --write")
        return 0 if same and doc_same else 1
    sys.stdout.write(render_yaml())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The sources `moonseg3r replay` and `moonseg3r demo` offer: the node's own choices (core/config.py). A module
of its own that loads neither torch nor rclpy, so that building their parsers (`--help`) stays fast."""
import dataclasses

from moonseg3r_ros.core.config import GeometryConfig, MaskConfig


def _choices(config: type, name: str) -> tuple[str, ...]:
    return tuple(next(f for f in dataclasses.fields(config) if f.name == name).metadata["choices"])


GEOMETRY_SOURCES = _choices(GeometryConfig, "source")
MASK_SOURCES = _choices(MaskConfig, "source")

"""The sources `moonseg3r replay` and `moonseg3r demo` offer. A module of its own with no imports, so that
building their parsers (`--help`) loads neither torch nor rclpy."""

GEOMETRY_SOURCES = ("recorded", "cut3r")
MASK_SOURCES = ("rgbd", "weight_free", "ground_truth", "sam", "precomputed")

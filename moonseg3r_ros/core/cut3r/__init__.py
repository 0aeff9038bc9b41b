"""Our PyTorch implementation of CUT3R (ROS-free): loads the official checkpoint, streams frame by frame.

    from moonseg3r_ros.core.cut3r import Cut3r, Cut3rConfig, load_checkpoint, Cut3rStream
"""
from .config import Cut3rConfig
from .modeling.cut3r import Cut3r, build_cut3r

__all__ = ["Cut3r", "Cut3rConfig", "build_cut3r"]

from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint  # noqa: E402

__all__ += ["CheckpointError", "load_checkpoint", "read_checkpoint"]
from .preprocess import PreprocessInfo, official_geometry, preprocess_image, to_input_grid  # noqa: E402
from .stream import Cut3rStream  # noqa: E402

__all__ += ["Cut3rStream", "PreprocessInfo", "official_geometry", "preprocess_image", "to_input_grid"]

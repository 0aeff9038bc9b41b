"""moonseg3r_ros: monocular online zero-shot 3D instance segmentation (MoonSeg3R) for ROS 2.

`moonseg3r_ros.core` is ROS-free (PyTorch/NumPy); `moonseg3r_ros.ros` is the thin ROS 2 layer.
"""

from importlib.metadata import PackageNotFoundError, version

try:  # the installed metadata, whose version setup.py reads from package.xml (the one version source)
    __version__ = version("moonseg3r_ros")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"

"""moonseg3r_ros: monocular online zero-shot 3D instance segmentation (MoonSeg3R) for ROS 2.

`moonseg3r_ros.core` is ROS-free (PyTorch/NumPy); `moonseg3r_ros.ros` is the thin ROS 2 layer.
"""

__version__ = "0.1.0"

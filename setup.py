"""ament_python package `moonseg3r_ros` (the repository root).

Built two ways (see README "How the workspace is put together"):
- `colcon build` installs it into install/moonseg3r_ros: executables in lib/moonseg3r_ros (so
  `ros2 run moonseg3r_ros moonseg3r_node` works), launch/, config/, rviz/ and package.xml in
  share/moonseg3r_ros, and the ament index marker.
- `pip install -e .` into .venv puts `moonseg3r` and `moonseg3r_node` on the venv's PATH and makes the
  source tree importable. The editable build skips data_files so that no stale copy of launch/config
  lands in .venv/share (the ament index would find it before install/).
"""
import sys
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "moonseg3r_ros"


def share_files(folder: str) -> list[str]:
    return sorted(p for p in glob(f"{folder}/*") if not p.endswith(".gitkeep") and not p.endswith("__pycache__"))


data_files = [
    ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
    (f"share/{PACKAGE}", ["package.xml"]),
    (f"share/{PACKAGE}/launch", share_files("launch")),
    (f"share/{PACKAGE}/config", share_files("config")),
    (f"share/{PACKAGE}/rviz", share_files("rviz")),
]
if "editable_wheel" in sys.argv:  # pip install -e . : code and console scripts only
    data_files = []

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={f"{PACKAGE}.ros": ["*.xml"]},  # the Fast DDS profile of the tools
    data_files=data_files,
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="moonseg3r maintainers",
    maintainer_email="moonseg3r@example.com",
    description="MoonSeg3R: monocular online 3D instance segmentation (ROS 2 node + ROS-free core)",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "moonseg3r_node = moonseg3r_ros.ros.node:main",
            "moonseg3r = moonseg3r_ros.cli:main",
        ],
    },
)

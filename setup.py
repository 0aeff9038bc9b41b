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
import xml.etree.ElementTree as ET
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "moonseg3r_ros"
# package.xml is the one source of the version, maintainer and license (ROS tools read it too).
MANIFEST = ET.parse(Path(__file__).resolve().with_name("package.xml")).getroot()
MAINTAINER = MANIFEST.find("maintainer")


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
    version=MANIFEST.findtext("version"),
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={f"{PACKAGE}.ros": ["*.xml"],  # the Fast DDS profile of the tools
                  PACKAGE: ["weights/*.safetensors", "weights/*.yaml"]},  # shipped refiner weights
    data_files=data_files,
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer=MAINTAINER.text,
    maintainer_email=MAINTAINER.get("email"),
    description="MoonSeg3R: monocular online 3D instance segmentation (ROS 2 node + ROS-free core)",
    license=MANIFEST.findtext("license"),
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "moonseg3r_node = moonseg3r_ros.ros.node:main",
            "moonseg3r = moonseg3r_ros.cli:main",
        ],
    },
)

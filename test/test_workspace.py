"""The workspace that `make setup` builds: installed package layout, console scripts, environment
script, and the cmake-export patch of the ROS wheels."""
from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "install"
needs_install = pytest.mark.skipif(not (INSTALL / "moonseg3r_ros").is_dir(), reason="run `make setup` first")

sys.path.insert(0, str(ROOT / "scripts"))
import patch_ros_wheels  # noqa: E402


def test_patch_rewrites_wheel_include_dirs_idempotently():
    text = ('INTERFACE_INCLUDE_DIRECTORIES "${_IMPORT_PREFIX}/include;'
            '/opt/python/cp311-cp311/include/python3.11;'
            '/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"')
    once = patch_ros_wheels.patch_text(text, "/real/include/python3.11", "/venv/numpy/_core/include")
    assert once == 'INTERFACE_INCLUDE_DIRECTORIES "${_IMPORT_PREFIX}/include;/real/include/python3.11;/venv/numpy/_core/include"'
    assert patch_ros_wheels.patch_text(once, "/real/include/python3.11", "/venv/numpy/_core/include") == once


def test_patch_prefix_changes_only_cmake_files(tmp_path):
    cmake = tmp_path / "share" / "pkg" / "cmake" / "export_pkgExport.cmake"
    other = tmp_path / "share" / "pkg" / "notes.txt"
    cmake.parent.mkdir(parents=True)
    cmake.write_text("set(X /opt/python/cp311-cp311/include/python3.11)\n")
    other.write_text("/opt/python/cp311-cp311/include/python3.11\n")
    assert patch_ros_wheels.patch_prefix(tmp_path) == [cmake]
    assert "/opt/python" not in cmake.read_text()
    assert "/opt/python" in other.read_text()
    assert patch_ros_wheels.patch_prefix(tmp_path) == []


@needs_install
def test_installed_share_and_executables():
    share = INSTALL / "moonseg3r_ros" / "share" / "moonseg3r_ros"
    assert (share / "package.xml").is_file()
    for launch_file in ("online.launch.py", "replay.launch.py"):
        assert (share / "launch" / launch_file).is_file()
    assert (share / "config" / "moonseg3r.yaml").is_file()
    assert (INSTALL / "moonseg3r_ros/share/ament_index/resource_index/packages/moonseg3r_ros").is_file()
    for exe in ("moonseg3r_node", "moonseg3r"):
        script = INSTALL / "moonseg3r_ros" / "lib" / "moonseg3r_ros" / exe
        assert script.is_file() and os.access(script, os.X_OK)
        shebang = script.read_text().splitlines()[0]
        assert shebang.startswith("#!") and "python" in shebang
    assert (INSTALL / "moonseg3r_msgs/share/ament_index/resource_index/rosidl_interfaces/moonseg3r_msgs").is_file()


def test_console_scripts_point_at_the_documented_entry_points():
    eps = {ep.name: ep.value for ep in importlib.metadata.distribution("moonseg3r_ros").entry_points
           if ep.group == "console_scripts"}
    assert eps == {"moonseg3r_node": "moonseg3r_ros.ros.node:main", "moonseg3r": "moonseg3r_ros.cli:main"}
    bindir = Path(sys.executable).parent
    assert (bindir / "moonseg3r").is_file() and (bindir / "moonseg3r_node").is_file()


def _env_after_sourcing(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROS_")}
    env.update(extra)
    out = subprocess.run(["bash", "-c", "source scripts/env.sh >/dev/null && env"], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@needs_install
def test_env_script_confines_dds_unless_told_otherwise():
    env = _env_after_sourcing({})
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert env["ROS_DOMAIN_ID"].isdigit()
    assert env["VIRTUAL_ENV"] == str(ROOT / ".venv")
    assert str(INSTALL / "moonseg3r_msgs") in env["AMENT_PREFIX_PATH"].split(":")
    robot = _env_after_sourcing({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "ROS_DOMAIN_ID": "7"})
    assert robot["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET" and robot["ROS_DOMAIN_ID"] == "7"


def test_pytest_process_is_confined_to_localhost():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert 0 <= int(os.environ["ROS_DOMAIN_ID"]) <= 101

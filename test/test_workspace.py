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
    assert once == ('INTERFACE_INCLUDE_DIRECTORIES "${_IMPORT_PREFIX}/include;/real/include/python3.11;'
                    '/venv/numpy/_core/include"')
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


def _make_dds_env(extra: dict) -> dict:
    """The DDS variables `make` passes to what it runs (make test, make demo), from a shell with `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROS_") and k not in ("MAKEFLAGS", "MAKELEVEL")}
    env.update(extra)
    out = subprocess.run(["make", "-s", "dds-env"], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def test_make_confines_dds_to_localhost_on_its_own_domain():
    launched = _make_dds_env({})
    assert launched["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert 10 <= int(launched["ROS_DOMAIN_ID"]) <= 99
    # A shell set up for a robot does not open the tests to the network; a chosen domain id is kept.
    robot = _make_dds_env({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "ROS_DOMAIN_ID": "7"})
    assert robot["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and robot["ROS_DOMAIN_ID"] == "7"


# A node that stays up until killed, and a probe that exits once it has discovered it (a handshake: the
# count below covers a completed discovery, not a guessed amount of time).
_PEER = ("import rclpy, time; rclpy.init(); n = rclpy.create_node('confinement_peer'); print('up', flush=True); "
         "rclpy.spin(n)")
_PROBE = ("import rclpy, time; rclpy.init(); n = rclpy.create_node('confinement_probe'); end = time.monotonic() + 60\n"
          "while 'confinement_peer' not in n.get_node_names() and time.monotonic() < end:\n"
          "    rclpy.spin_once(n, timeout_sec=0.1)\n"
          "print('found' if 'confinement_peer' in n.get_node_names() else 'missing', flush=True)")


def _multicast_packets_sent() -> int:
    """IPv4 multicast packets this machine has sent (the counter ../shared/tools/no-multicast reads)."""
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines() if line.startswith("IpExt:")]
    return int(lines[1][lines[0].index("OutMcastPkts")])


def _discovery_multicast(env: dict) -> tuple[str, int]:
    """Start the peer and the probe with `env`; (the probe's answer, multicast packets sent meanwhile)."""
    before = _multicast_packets_sent()
    peer = subprocess.Popen([sys.executable, "-c", _PEER], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert peer.stdout.readline().strip() == "up"
        probe = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    finally:
        peer.kill()
        peer.wait(10)
    return probe.stdout.strip(), _multicast_packets_sent() - before


@pytest.mark.skipif(not Path("/proc/net/netstat").is_file(), reason="needs Linux's /proc/net/netstat counters")
def test_nodes_launched_by_the_tests_discover_each_other_without_multicast(ros_subprocess_env):
    pytest.importorskip("rclpy")
    # The environment every test hands its child processes (nodes, peers, the CLI).
    answer, sent = _discovery_multicast(ros_subprocess_env)
    assert answer == "found"
    assert sent == 0, f"{sent} multicast packets left the machine during discovery"
    # The counter sees it when discovery is not confined (so the check above can fail).
    answer, sent = _discovery_multicast(dict(ros_subprocess_env, ROS_AUTOMATIC_DISCOVERY_RANGE="SUBNET"))
    if sent == 0:
        pytest.skip("no multicast-capable network interface here: the SUBNET control sent nothing")
    assert answer == "found"


def test_version_license_and_maintainer_have_one_source():
    import xml.etree.ElementTree as ET

    import moonseg3r_ros

    manifest = ET.parse(ROOT / "package.xml").getroot()
    version = manifest.findtext("version")
    assert moonseg3r_ros.__version__ == importlib.metadata.version("moonseg3r_ros") == version
    setup_py = (ROOT / "setup.py").read_text()
    assert version not in setup_py and "Apache" not in setup_py  # read from package.xml, not repeated
    license_name = manifest.findtext("license")
    assert license_name == "Apache-2.0" and manifest.find("license").get("file") == "LICENSE"
    assert importlib.metadata.metadata("moonseg3r_ros")["License"] == license_name
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def _imported_top_level_modules(folders) -> set[str]:
    import ast

    names = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names


def _ament_packages() -> set[str]:
    found = set()
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        index = Path(prefix) / "share" / "ament_index" / "resource_index" / "packages"
        if prefix and index.is_dir():
            found |= {p.name for p in index.iterdir()}
    return found


# ROS packages without wheels here (so not in this machine's ament index) that the code imports where they exist.
ROS_WITHOUT_WHEELS = {"launch", "launch_ros", "launch_testing", "tf2_ros", "ros2bag"}


def test_package_xml_lists_every_ros_package_the_code_imports():
    import xml.etree.ElementTree as ET

    manifest = ET.parse(ROOT / "package.xml").getroot()
    declared = {e.text for tag in ("depend", "exec_depend") for e in manifest.iter(tag)}
    test_declared = declared | {e.text for e in manifest.iter("test_depend")}
    ros = (_ament_packages() | ROS_WITHOUT_WHEELS) - {"moonseg3r_ros"}
    assert {"rclpy", "sensor_msgs", "moonseg3r_msgs"} <= ros or not _ament_packages()
    used = _imported_top_level_modules(["moonseg3r_ros", "launch"]) & ros
    assert used and not used - declared, f"imported but not in package.xml: {sorted(used - declared)}"
    used_by_tests = _imported_top_level_modules(["test"]) & ros
    assert not used_by_tests - test_declared, f"tests import undeclared: {sorted(used_by_tests - test_declared)}"


def test_launch_tests_are_not_fooled_by_the_repositorys_launch_folder(monkeypatch):
    from installed_packages import installed_module

    monkeypatch.syspath_prepend(str(ROOT))  # as when pytest runs from the repository root
    assert "not the installed package" in installed_module("launch")  # launch/ has launch files, no package
    assert installed_module("no_such_module_here") == "no_such_module_here is not installed"
    assert installed_module("yaml") == ""  # a real installed package

"""Make this workspace's colcon install/ overlay visible to every Python run from the venv.

scripts/setup.sh copies this file into the venv's site-packages as `_moonseg3r_overlay.py`, with
INSTALL_DIR filled in, and adds `_moonseg3r_overlay.pth` ("import _moonseg3r_overlay"). At interpreter
start it appends each install/<pkg>/lib/pythonX.Y/site-packages to sys.path and prepends install/<pkg>/lib
to LD_LIBRARY_PATH and install/<pkg> to AMENT_PREFIX_PATH (and the venv itself when it holds the ROS
wheels). With the PyPI ROS wheels the `ros_wheels_bootstrapper.pth` that runs after this one re-executes
the interpreter, so the library path takes effect: `.venv/bin/python`, `.venv/bin/moonseg3r` and
install/moonseg3r_ros/lib/moonseg3r_ros/moonseg3r_node then work without sourcing anything. With a
sourced ROS distribution, source scripts/env.sh instead (it does the same through colcon's setup files).
Set MOONSEG3R_NO_OVERLAY=1 to disable it (setup.sh does, to look for a real tf2_msgs).
"""
import os
import sys

INSTALL_DIR = "@INSTALL_DIR@"


def _prepend(var: str, entries: list) -> None:
    current = [p for p in os.environ.get(var, "").split(os.pathsep) if p]
    new = [e for e in entries if e not in current]
    if new:
        os.environ[var] = os.pathsep.join(new + current)


def apply() -> None:
    if os.environ.get("MOONSEG3R_NO_OVERLAY") or not os.path.isdir(INSTALL_DIR):
        return
    if any("_local_setup_util" in str(arg) for arg in getattr(sys, "orig_argv", [])):
        return  # colcon's setup files compute the environment themselves: don't pre-empt them
    pyver = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    prefixes, libs = [], []
    for name in sorted(os.listdir(INSTALL_DIR)):
        prefix = os.path.join(INSTALL_DIR, name)
        if not os.path.isfile(os.path.join(prefix, "share", "colcon-core", "packages", name)):
            continue
        prefixes.append(prefix)
        site_dir = os.path.join(prefix, "lib", pyver, "site-packages")
        if os.path.isdir(site_dir) and site_dir not in sys.path:
            sys.path.append(site_dir)
        if os.path.isdir(os.path.join(prefix, "lib")):
            libs.append(os.path.join(prefix, "lib"))
    if os.path.isdir(os.path.join(sys.prefix, "share", "ament_index")) and not os.environ.get("ROS_DISTRO"):
        prefixes.append(sys.prefix)  # the PyPI ROS wheels install their ament index into the venv
    _prepend("LD_LIBRARY_PATH", libs)
    _prepend("AMENT_PREFIX_PATH", prefixes)


try:
    apply()
except Exception as exc:  # never break the interpreter
    sys.stderr.write(f"moonseg3r overlay: {exc}\n")

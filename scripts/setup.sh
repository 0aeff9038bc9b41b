#!/usr/bin/env bash
# Set up the moonseg3r workspace: .venv, pinned Python deps, ROS 2 (sourced distribution or PyPI
# wheels), the interface packages built with colcon into install/, and the moonseg3r_ros package.
# Idempotent: run it again at any time (`make setup`); finished steps are quick no-ops.
# Prints a summary of what it did and what failed; exits non-zero when a required step failed.
#
# Environment knobs:
#   PYTHON=/path/to/python3.11   interpreter for a new .venv (default: python3.11, then python3)
#   MOONSEG3R_SKIP_APT=1         never call apt-get
#   MOONSEG3R_CLEAN=1            remove build/ install/ log/ first (the venv is kept)
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
LOGDIR="$ROOT/log/setup"
mkdir -p "$LOGDIR"

declare -a SUMMARY=()
FAILED=0
say() { printf '[setup] %s\n' "$*"; }
ok() { SUMMARY+=("  OK      $1"); say "OK: $1"; }
skip() { SUMMARY+=("  SKIPPED $1"); say "SKIPPED: $1"; }
warn() { SUMMARY+=("  WARNING $1"); say "WARNING: $1"; }
fail() { SUMMARY+=("  FAILED  $1"); say "FAILED: $1"; FAILED=1; }
# run LOGNAME CMD...: run quietly into log/setup/LOGNAME.log, show the tail on failure
run() {
  local name="$1"; shift
  "$@" >"$LOGDIR/$name.log" 2>&1
  local rc=$?
  [ "$rc" -eq 0 ] && return 0
  say "command failed ($rc): $*"; tail -n 30 "$LOGDIR/$name.log" | sed 's/^/    | /'
  say "full log: $LOGDIR/$name.log"
  return $rc
}
finish() {
  echo
  echo "================ moonseg3r setup summary ================"
  printf '%s\n' "${SUMMARY[@]}"
  if [ "$FAILED" -eq 0 ]; then
    echo "Setup finished. Next: 'make test' (tests), 'make demo' (demo), or 'source scripts/env.sh' for a shell."
  else
    echo "Setup FAILED (see the FAILED lines above and the logs in $LOGDIR)."
  fi
  echo "========================================================="
  exit "$FAILED"
}

if [ "${MOONSEG3R_CLEAN:-0}" = 1 ]; then
  rm -rf "$ROOT/build" "$ROOT/install" && mkdir -p "$LOGDIR" && ok "removed build/ and install/ (MOONSEG3R_CLEAN=1)"
fi

# --- 1. ROS 2: a sourced distribution, or the PyPI wheels ---------------------------------------
SYSTEM_ROS=0
if [ -n "${ROS_DISTRO:-}" ] && command -v python3 >/dev/null && python3 -c 'import rclpy' >/dev/null 2>&1; then
  SYSTEM_ROS=1
  ok "using the sourced ROS 2 '$ROS_DISTRO' (rclpy importable); the ROS wheels are not installed"
else
  say "no sourced ROS 2 distribution with rclpy: the kilted wheels from PyPI go into .venv"
fi

# --- 2. Debian packages (libusb-1.0-0 for open3d) ------------------------------------------------
if ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  ok "libusb-1.0-0 present"
elif [ "${MOONSEG3R_SKIP_APT:-0}" = 1 ]; then
  warn "libusb-1.0-0 missing and MOONSEG3R_SKIP_APT=1: install it yourself (open3d needs it)"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if run apt-update apt-get update && run apt-libusb env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libusb-1.0-0; then
    ok "installed Debian package libusb-1.0-0 (open3d needs it)"
  else
    warn "could not apt-get install libusb-1.0-0: open3d will not import until it is installed"
  fi
else
  warn "libusb-1.0-0 missing and not root/apt: run 'sudo apt-get install libusb-1.0-0' (open3d needs it)"
fi

# --- 3. The virtual environment ------------------------------------------------------------------
pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  if [ "$SYSTEM_ROS" = 1 ]; then command -v python3; return; fi  # must match the distribution's rclpy
  for p in python3.11 python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      command -v "$p"; return
    fi
  done
}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  ok "reusing .venv ($("$VENV/bin/python" --version 2>&1))"
else
  PY="$(pick_python)"
  if [ -z "$PY" ]; then
    fail "no Python 3.11 found (set PYTHON=/path/to/python3.11)"; finish
  fi
  VENV_ARGS=()
  [ "$SYSTEM_ROS" = 1 ] && VENV_ARGS+=(--system-site-packages)  # see the distribution's rclpy
  if run venv "$PY" -m venv "${VENV_ARGS[@]}" "$VENV"; then
    ok "created .venv with $("$VENV/bin/python" --version 2>&1) ($PY ${VENV_ARGS[*]})"
  else
    fail "creating .venv with $PY"; finish
  fi
fi
"$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || warn ".venv runs $("$VENV/bin/python" --version 2>&1), not 3.11: the ROS wheels and pinned torch need 3.11"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# --- 4. Pinned Python dependencies -----------------------------------------------------------------
say "installing requirements/python.txt (torch is large: the first run takes several minutes)"
if run pip-python "${PIP[@]}" install -r requirements/python.txt; then
  ok "pip install -r requirements/python.txt"
else
  fail "pip install -r requirements/python.txt"
fi

# --- 5. ROS wheels (only without a sourced distribution) -----------------------------------------
if [ "$SYSTEM_ROS" = 0 ]; then
  if run pip-ros "${PIP[@]}" install -r requirements/ros.txt; then
    ok "pip install -r requirements/ros.txt (ROS 2 kilted wheels + colcon)"
  else
    fail "pip install -r requirements/ros.txt"; finish
  fi
  if run patch-wheels "$VENV/bin/python" scripts/patch_ros_wheels.py "$VENV"; then
    ok "$(tail -n 1 "$LOGDIR/patch-wheels.log" | sed 's/^patch_ros_wheels: //')"
  else
    fail "patching the ROS wheels' cmake exports (scripts/patch_ros_wheels.py)"; finish
  fi
  export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
else
  if "$VENV/bin/python" -c 'import colcon_core' >/dev/null 2>&1; then
    ok "colcon present in .venv"
  elif run pip-colcon "${PIP[@]}" install "$(grep '^colcon-common-extensions' requirements/ros.txt)"; then
    ok "pip install colcon-common-extensions"
  else
    fail "pip install colcon-common-extensions"; finish
  fi
fi
export PATH="$VENV/bin:$PATH"

# --- 6. Overlay hook: install/ visible to the venv's Python without sourcing ----------------------
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
sed "s#@INSTALL_DIR@#$ROOT/install#" scripts/ros_overlay.py > "$SITE/_moonseg3r_overlay.py" \
  && echo "import _moonseg3r_overlay" > "$SITE/_moonseg3r_overlay.pth" \
  && ok "overlay hook $SITE/_moonseg3r_overlay.pth -> $ROOT/install" \
  || fail "writing the overlay hook into $SITE"

# --- 7. Interface packages (moonseg3r_msgs, tf2_msgs and vision_msgs fallbacks) ------------------
REAL_TF2="$(MOONSEG3R_NO_OVERLAY=1 "$VENV/bin/python" -c 'import os, tf2_msgs.msg; print(os.path.dirname(tf2_msgs.__file__))' 2>/dev/null || true)"
case "$REAL_TF2" in "$ROOT"/*) REAL_TF2="";; esac  # our own fallback is not a real one
MSG_PATHS=(moonseg3r_msgs)
if [ -n "$REAL_TF2" ]; then
  ok "tf2_msgs provided by the environment ($REAL_TF2): fallback not built"
  if [ -d "$ROOT/install/tf2_msgs" ] || [ -d "$ROOT/build/tf2_msgs" ]; then
    rm -rf "$ROOT/install/tf2_msgs" "$ROOT/build/tf2_msgs" && ok "removed the previously built tf2_msgs fallback (would shadow the real one)"
  fi
else
  MSG_PATHS+=(third_party/tf2_msgs)
  say "no tf2_msgs in the environment: building the minimal fallback (tf2_msgs/msg/TFMessage)"
fi
REAL_VISION="$(MOONSEG3R_NO_OVERLAY=1 "$VENV/bin/python" -c 'import os, vision_msgs.msg; print(os.path.dirname(vision_msgs.__file__))' 2>/dev/null || true)"
case "$REAL_VISION" in "$ROOT"/*) REAL_VISION="";; esac  # our own fallback is not a real one
if [ -n "$REAL_VISION" ]; then
  ok "vision_msgs provided by the environment ($REAL_VISION): fallback not built"
  if [ -d "$ROOT/install/vision_msgs" ] || [ -d "$ROOT/build/vision_msgs" ]; then
    rm -rf "$ROOT/install/vision_msgs" "$ROOT/build/vision_msgs" && ok "removed the previously built vision_msgs fallback (would shadow the real one)"
  fi
else
  MSG_PATHS+=(third_party/vision_msgs)
  say "no vision_msgs in the environment: building the minimal fallback (Detection3DArray and its parts)"
fi
COLCON_COMMON=(--log-base "$ROOT/log" build --build-base "$ROOT/build" --install-base "$ROOT/install")
# RUNPATH $ORIGIN: the generated libraries and Python extensions find their siblings without
# LD_LIBRARY_PATH (the dlopen of the typesupport libraries still uses LD_LIBRARY_PATH: see the overlay).
if run colcon-msgs colcon "${COLCON_COMMON[@]}" --paths "${MSG_PATHS[@]}" --event-handlers console_direct- \
    --cmake-args -DBUILD_TESTING=OFF "-DPython3_EXECUTABLE=$VENV/bin/python" '-DCMAKE_INSTALL_RPATH=$ORIGIN;$ORIGIN/../../..'; then
  ok "colcon build ${MSG_PATHS[*]} -> install/"
else
  fail "colcon build ${MSG_PATHS[*]} (log: $LOGDIR/colcon-msgs.log and log/latest_build)"; finish
fi

# --- 8. The moonseg3r_ros package itself ----------------------------------------------------------
# colcon --symlink-install: lib/moonseg3r_ros/{moonseg3r_node,moonseg3r} and share/moonseg3r_ros/{launch,
# config,rviz} point at the source tree; pip install -e: the code, its metadata and the console scripts
# in .venv/bin. Both use the sources in place, so edits need no rebuild (new launch/config files do).
if run colcon-ros colcon "${COLCON_COMMON[@]}" --paths . --symlink-install --event-handlers console_direct-; then
  ok "colcon build --symlink-install moonseg3r_ros -> install/moonseg3r_ros"
else
  fail "colcon build moonseg3r_ros (log: $LOGDIR/colcon-ros.log)"
fi
if run pip-editable "${PIP[@]}" install --no-deps --no-build-isolation -e .; then
  ok "pip install -e . (moonseg3r and moonseg3r_node on .venv/bin)"
else
  fail "pip install -e ."
fi

# --- 9. Smoke check -------------------------------------------------------------------------------
if run smoke env ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-0}" "$VENV/bin/python" -c '
import rclpy, moonseg3r_ros
from moonseg3r_msgs.msg import Instance, InstanceMap
from moonseg3r_msgs.srv import SaveMap, LoadMap
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3DArray
from nav_msgs.msg import OccupancyGrid
rclpy.init(); node = rclpy.create_node("moonseg3r_setup_check")
node.create_publisher(InstanceMap, "setup_check", 1); node.destroy_node(); rclpy.shutdown()
print("rclpy node + moonseg3r_msgs + tf2_msgs + vision_msgs + nav_msgs OK")'; then
  ok "smoke check: rclpy node, moonseg3r_msgs, tf2_msgs, vision_msgs, nav_msgs import from .venv/bin/python"
else
  fail "smoke check (log: $LOGDIR/smoke.log)"
fi
if "$VENV/bin/python" -c 'import open3d' >/dev/null 2>&1; then ok "open3d imports"; else warn "open3d does not import (libusb-1.0-0?)"; fi

finish

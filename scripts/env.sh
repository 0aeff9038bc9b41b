# Source me (bash or zsh):  source scripts/env.sh
# Activates .venv, overlays this workspace's install/ (colcon) on top of ROS 2 (a sourced distribution,
# or the PyPI wheels inside .venv), and confines DDS to this machine unless you chose otherwise:
#   ROS_AUTOMATIC_DISCOVERY_RANGE  default LOCALHOST (nothing leaves the machine). On a robot that must
#                                  talk to other hosts export SUBNET (the ROS default) BEFORE sourcing.
#   ROS_DOMAIN_ID                  default dds.SHELL_DOMAIN_ID (42, the same in every terminal) unless already set.
#   FASTDDS_DEFAULT_PROFILES_FILE  moonseg3r_ros/ros/fastdds_profile.xml unless already set (even to "").
# These defaults are moonseg3r_ros/ros/dds.py's (the one rule of our tools), run as a plain script (fast).
if [ -n "${BASH_SOURCE:-}" ]; then _ms3r_here="${BASH_SOURCE[0]}"; elif [ -n "${ZSH_VERSION:-}" ]; then _ms3r_here="${(%):-%x}"; else _ms3r_here="$0"; fi
_ms3r_root="$(cd "$(dirname "$_ms3r_here")/.." && pwd)"
if [ ! -x "$_ms3r_root/.venv/bin/python" ]; then
  echo "moonseg3r env: $_ms3r_root/.venv missing: run 'make setup' first" >&2
else
  # shellcheck disable=SC1091
  . "$_ms3r_root/.venv/bin/activate"
  if [ -z "${ROS_DISTRO:-}" ] && [ -d "$_ms3r_root/.venv/share/ament_index" ]; then
    # ROS 2 from the PyPI wheels: the venv is the underlay.
    case ":${AMENT_PREFIX_PATH:-}:" in *":$VIRTUAL_ENV:"*) ;; *) export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}";; esac
    case ":${CMAKE_PREFIX_PATH:-}:" in *":$VIRTUAL_ENV:"*) ;; *) export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}";; esac
    case ":${LD_LIBRARY_PATH:-}:" in *":$VIRTUAL_ENV/lib:"*) ;; *) export LD_LIBRARY_PATH="$VIRTUAL_ENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}";; esac
  fi
  if [ -f "$_ms3r_root/install/local_setup.sh" ]; then
    # colcon's POSIX setup file needs to be told where it lives when sourced.
    COLCON_CURRENT_PREFIX="$_ms3r_root/install" . "$_ms3r_root/install/local_setup.sh"
  else
    echo "moonseg3r env: $_ms3r_root/install missing: run 'make setup' to build the interfaces" >&2
  fi
  # LOCALHOST discovery, the shell's domain id and the Fast DDS profile (short reliable-writer heartbeat), where
  # unset; an explicitly empty FASTDDS_DEFAULT_PROFILES_FILE opts out of the profile.
  eval "$("$_ms3r_root/.venv/bin/python" "$_ms3r_root/moonseg3r_ros/ros/dds.py" --shell)"
fi
unset _ms3r_here _ms3r_root

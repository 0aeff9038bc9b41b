"""The moonseg3r node as a child process: command line, environment, parameters, log, stop, memory.

One driver for the tests (test/ros), `moonseg3r replay` / `demo` and `moonseg3r bench node`. ROS-free (no
rclpy import): the child inherits the caller's environment, so ROS_AUTOMATIC_DISCOVERY_RANGE and
ROS_DOMAIN_ID chosen by the caller (moonseg3r_ros.ros.dds.confine_dds) apply to the node too.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import yaml

from moonseg3r_ros.ros.process import stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALLED_NODE = REPO_ROOT / "install" / "moonseg3r_ros" / "lib" / "moonseg3r_ros" / "moonseg3r_node"
# Log lines that explain a failed start, most telling first.
FAILURE_KEYS = ("configure failed", "activate failed", "invalid parameters", "Traceback", "Error")


def node_command() -> list[str]:
    """The installed `moonseg3r_node` executable when present, else `python -m moonseg3r_ros.ros.node`."""
    if INSTALLED_NODE.exists() and os.access(INSTALLED_NODE, os.X_OK):
        return [str(INSTALLED_NODE)]
    on_path = shutil.which("moonseg3r_node")
    return [on_path] if on_path else [sys.executable, "-m", "moonseg3r_ros.ros.node"]


def child_environment(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """This process's environment (DDS settings included) with the source tree importable and unbuffered logs."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO_ROOT), env.get("PYTHONPATH", "")] if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "0")
    env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    env.update(extra or {})
    return env


def parse_overrides(items: list[str]) -> dict[str, str]:
    """["NAME:=VALUE", ...] from a tool's `-p` options -> {NAME: VALUE text}, passed on as NodeProcess
    `overrides` (ROS types the text, as for `ros2 run ... -p`). ValueError names an item without `:=`."""
    overrides = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name.strip():
            raise ValueError(f"-p expects NAME:=VALUE, got {item!r}")
        overrides[name.strip()] = value.strip()
    return overrides


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    """{'a.b': 1} -> {'a': {'b': 1}} (ROS parameter files are nested)."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        target = out
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = value
    return out


def failure_line(log_text: str) -> str:
    """The node's most telling error line ('configure failed: ...') from its log, '' if none."""
    lines = log_text.splitlines()
    for key in FAILURE_KEYS:
        hits = [line for line in lines if key in line]
        if hits:
            line = hits[-1] if key != "Traceback" else lines[-1]
            return line.split("]: ", 1)[-1].strip()
    return ""


class NodeProcess:
    """`moonseg3r_node --ros-args -r __node:=NAME [-r __ns:=/NS] [--params-file USER] --params-file FILE
    [-p NAME:=TEXT ...] [-r from:=to ...]`, its output in LOG_DIR/NAME.log (or LOG_DIR/`log_name`).

    `params` are typed values written to LOG_DIR/NAME.params.yaml (after the user's `params_file`, so
    they win over it); `overrides` are NAME -> text as typed on a command line (`-p`, parsed by ROS).
    """

    def __init__(self, name: str = "moonseg3r", params: Optional[dict[str, Any]] = None,
                 remaps: Optional[dict[str, str]] = None, log_dir: Optional[Path] = None,
                 extra_env: Optional[dict[str, str]] = None, namespace: str = "",
                 params_file: Optional[str] = None, overrides: Optional[dict[str, str]] = None,
                 log_name: str = ""):
        self.name = name
        self.namespace = namespace.strip("/")
        self.params = dict(params or {})
        self.remaps = dict(remaps or {})
        self.overrides = dict(overrides or {})
        self.user_params_file = str(Path(params_file).expanduser().resolve()) if params_file else None
        self.log_dir = Path(log_dir or ".").resolve()
        self.extra_env = extra_env or {}
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.log_dir / (log_name or f"{name}.log")
        self._log = None

    @property
    def fqn(self) -> str:
        """Fully qualified node name: /NS/NAME or /NAME."""
        return f"/{self.namespace}/{self.name}" if self.namespace else f"/{self.name}"

    def command(self) -> list[str]:
        """The command line; writes the parameter file it names."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        params_file = self.log_dir / f"{self.name}.params.yaml"
        params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": nested(self.params)}}))
        cmd = node_command() + ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            cmd += ["-r", f"__ns:=/{self.namespace}"]
        if self.user_params_file:
            cmd += ["--params-file", self.user_params_file]
        cmd += ["--params-file", str(params_file)]
        for name, text in self.overrides.items():
            cmd += ["-p", f"{name}:={text}"]
        for source, target in self.remaps.items():
            cmd += ["-r", f"{source}:={target}"]
        return cmd

    def start(self) -> "NodeProcess":
        cmd = self.command()
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=child_environment(self.extra_env), stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=str(self.log_dir))
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> Optional[int]:
        return None if self.proc is None else self.proc.poll()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def failure_line(self) -> str:
        return failure_line(self.log())

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> Optional[int]:
        """Signal the node and wait; SIGKILL if it does not end in `timeout`. Returns the exit code."""
        if self.proc is None:
            return None
        code = stop_process(self.proc, sig, timeout)
        if self._log is not None:
            self._log.close()
        return code

    def peak_rss_bytes(self) -> int:
        """Peak resident memory of the process so far (VmHWM from /proc)."""
        if not self.alive():
            return 0
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

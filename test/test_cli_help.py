"""`moonseg3r <cmd> --help` for every command: exit 0, a usage line that names the command, and neither torch nor
rclpy loaded (issue 13: help took 8-25 s because the tools imported them before parsing). Speed itself is measured
by hand, not here (see docs/node.md / the report); what is tested is which modules `--help` loads."""
import json
import os
import subprocess
import sys
from pathlib import Path

from moonseg3r_ros import cli

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "rclpy")

# Runs in a fresh interpreter: the test process itself has torch loaded already.
PROBE = """
import contextlib, io, json, sys
from moonseg3r_ros import cli
results = []
for command in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = cli.main(command + ["--help"])
        except SystemExit as exit:
            code = exit.code
    lines = out.getvalue().splitlines()
    results.append({"command": command, "code": code, "usage": lines[0] if lines else "",
                    "heavy": [name for name in %r if name in sys.modules]})
print(json.dumps(results))
""" % (HEAVY,)


def all_commands() -> list[list[str]]:
    return [["generate"], ["to-bag"], ["evaluate"]] + [[name] for name in cli.DISPATCH] + \
        [["bench", name] for name in cli.BENCH]


def test_every_help_parses_before_loading_torch_or_rclpy():
    commands = all_commands()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(commands)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.splitlines()[-1])
    assert [r["command"] for r in results] == commands
    for r in results:  # modules accumulate: the first command that loads one is the one named
        name = " ".join(r["command"])
        assert r["code"] == 0, f"moonseg3r {name} --help exited {r['code']}"
        assert r["usage"].startswith(f"usage: moonseg3r {name} "), f"moonseg3r {name} --help: {r['usage']!r}"
        assert r["heavy"] == [], f"moonseg3r {name} --help loaded {r['heavy']}"

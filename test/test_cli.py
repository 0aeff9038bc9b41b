"""`moonseg3r` command: generate -> to-bag -> evaluate in subprocesses on tiny data; dispatch rules."""
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from moonseg3r_ros import cli

REPO = Path(__file__).resolve().parents[1]


def run(*args, check_rc=0):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "moonseg3r_ros.cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    assert proc.returncode == check_rc, proc.stdout + proc.stderr
    return proc


@pytest.mark.parametrize("command", [[], ["generate"], ["to-bag"], ["evaluate"]])
def test_help(command):
    out = run(*command, "--help").stdout
    assert "usage: moonseg3r" in out
    if command:
        assert command[0] in out


def test_top_level_help_lists_all_commands():
    out = run("--help").stdout
    for name in ("generate", "to-bag", "evaluate", "replay", "demo", "bench", "train"):
        assert name in out


def test_generate_to_bag_evaluate(tmp_path):
    run("generate", "--out", str(tmp_path / "data"), "--seed", "4", "--frames", "3", "--width", "32",
        "--height", "24", "--objects", "4", "--quiet")
    scene = tmp_path / "data" / "synthetic_0004"
    assert len(list((scene / "color").glob("*.jpg"))) == 3
    gt = np.loadtxt(scene / "synthetic_0004.txt", dtype=np.int64)

    run("to-bag", str(scene), "--out", str(tmp_path / "bag"), "--storage", "mcap", "--depth", "--gt", "--quiet")
    assert (tmp_path / "bag" / "metadata.yaml").is_file() and list((tmp_path / "bag").glob("*.mcap"))
    run("to-bag", str(scene), "--out", str(tmp_path / "bag"), check_rc=1)  # exists -> clear error

    from moonseg3r_ros.eval.scannet_ap import write_instance_predictions

    write_instance_predictions(tmp_path / "pred", "synthetic_0004", np.where(gt > 0, gt % 1000, 0))
    proc = run("evaluate", "--gt", str(tmp_path / "data"), "--pred", str(tmp_path / "pred"),
               "--json", str(tmp_path / "r.json"))
    assert "synthetic_0004" in proc.stdout and "average" in proc.stdout
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["ap"] == pytest.approx(1.0) and result["ap50"] == 1.0 and result["ap25"] == 1.0
    assert result["scenes"]["synthetic_0004"]["ap"] == pytest.approx(1.0)


def test_evaluate_bad_folder_exits_1(tmp_path):
    proc = run("evaluate", "--gt", str(tmp_path / "no"), "--pred", str(tmp_path), check_rc=1)
    assert "not found" in proc.stderr


def test_generate_rejects_bad_spec(tmp_path):
    proc = run("generate", "--out", str(tmp_path), "--frames", "0", "--quiet", check_rc=2)
    assert "num_frames" in proc.stderr


def test_dispatch_passes_argv_through(monkeypatch):
    seen = {}
    fake = types.ModuleType("moonseg3r_ros.tools.replay")
    fake.main = lambda argv: seen.setdefault("argv", argv) and 3
    monkeypatch.setitem(sys.modules, "moonseg3r_ros.tools.replay", fake)
    assert cli.main(["replay", "--help", "--rate", "2"]) == 3
    assert seen["argv"] == ["--help", "--rate", "2"]
    fake_bench = types.ModuleType("moonseg3r_ros.tools.bench_cut3r")
    fake_bench.main = lambda argv: seen.__setitem__("bench", argv)
    monkeypatch.setitem(sys.modules, "moonseg3r_ros.tools.bench_cut3r", fake_bench)
    assert cli.main(["bench", "cut3r", "--frames", "4"]) == 0 and seen["bench"] == ["--frames", "4"]


def test_missing_tool_and_unknown_bench_exit_2(capsys):
    assert cli._run_tool("moonseg3r_ros.tools.not_written_yet", [], "moonseg3r not-written-yet") == 2
    assert "not available" in capsys.readouterr().err
    assert cli.main(["bench", "nosuch"]) == 2
    assert cli.main(["bench"]) == 2
    assert cli.main(["bench", "--help"]) == 0


def test_train_is_routed_to_the_trainer_and_needs_a_config():
    proc = run("train", check_rc=2)  # argparse: --config is required
    assert "--config" in proc.stderr
    assert "not implemented" not in proc.stderr

"""One-line errors of the `moonseg3r` command (issue 13): exit code 2 for usage errors, 1 for bad data, never a
traceback; evaluate refuses a run folder without pred/, NaN confidences and mask values other than 0/1; the
usage lines of pass-through tools carry their full name."""
import subprocess
import sys

import numpy as np
import pytest

from moonseg3r_ros import cli
from moonseg3r_ros.eval.scannet_ap import write_predictions


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moonseg3r_ros.cli", *args], capture_output=True, text=True,
                          timeout=300)


def gt_folder(tmp_path, scene: str = "scene0000_00"):
    gt = np.concatenate([np.zeros(100, np.int64), np.full(200, 1001), np.full(300, 1002)])
    (tmp_path / "gt").mkdir()
    np.savetxt(tmp_path / "gt" / f"{scene}.txt", gt, fmt="%d")
    return tmp_path / "gt", gt


def test_generate_onto_a_file_is_a_one_line_usage_error(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("x")
    assert cli.main(["generate", "--out", str(target), "--frames", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"moonseg3r generate: error: --out {target} is a file; give a folder " \
                          "(each scene goes to OUT/<scene name>/)"


def test_bench_cut3r_with_a_bad_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    done = run_cli("bench", "cut3r", "--checkpoint", str(bad), "--frames", "1", "--warmup", "0")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("moonseg3r bench cut3r: error: "), done.stderr


def test_usage_lines_carry_the_tool_name(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "map", "--help"])
    assert capsys.readouterr().out.startswith("usage: moonseg3r bench map ")


def test_evaluate_on_a_run_folder_without_pred_says_so(tmp_path, capsys):
    gt_dir, _ = gt_folder(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "node_command.txt").write_text("moonseg3r_node --ros-args -p autostart:=true\n")
    assert cli.main(["evaluate", "--gt", str(gt_dir), "--pred", str(run)]) == 1
    err = capsys.readouterr().err
    assert "holds no prediction of the ground-truth scene(s) scene0000_00 (it has node_command.txt)" in err
    assert "`moonseg3r replay` output folder without pred/" in err
    (run / "pred").mkdir()
    assert cli.main(["evaluate", "--gt", str(gt_dir), "--pred", str(run)]) == 1
    assert f"the predictions are in its pred/ folder: --pred {run / 'pred'}" in capsys.readouterr().err


def test_evaluate_refuses_nan_confidences(tmp_path, capsys):
    gt_dir, gt = gt_folder(tmp_path)
    write_predictions(tmp_path / "pred", "scene0000_00", [gt == 1001], [0.5])
    pred_file = tmp_path / "pred" / "scene0000_00.txt"
    pred_file.write_text("pred_mask/scene0000_00_0.txt 1 nan\n")
    assert cli.main(["evaluate", "--gt", str(gt_dir), "--pred", str(tmp_path / "pred")]) == 1
    assert "the confidence must be a finite number, got 'nan'" in capsys.readouterr().err


def test_evaluate_refuses_mask_values_other_than_0_and_1(tmp_path, capsys):
    gt_dir, gt = gt_folder(tmp_path)
    write_predictions(tmp_path / "pred", "scene0000_00", [gt == 1001], [0.5])
    mask_file = tmp_path / "pred" / "pred_mask" / "scene0000_00_0.txt"
    np.savetxt(mask_file, (gt == 1001).astype(np.int64) * 7, fmt="%d")
    assert cli.main(["evaluate", "--gt", str(gt_dir), "--pred", str(tmp_path / "pred")]) == 1
    assert "mask values must be 0 or 1, found 7 (200 of 600 lines)" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"this is no map at all\n", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94."])
def test_view_of_a_file_that_is_no_npz_says_so(tmp_path, capsys, content):
    """numpy takes any file that is neither .npy nor .npz for a pickle: the error names what the file is."""
    path = tmp_path / "map.npz"
    path.write_bytes(content)  # text, and a plain pickle of {}
    assert cli.main(["view", str(path), "--out", str(tmp_path / "map.rrd")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"moonseg3r view: error: instance map file {path} is not a .npz archive (the zip file save_map " \
                  "writes); nothing of it was read"
    assert not (tmp_path / "map.rrd").exists()


@pytest.mark.parametrize("command", [["demo"], ["replay", "/nonexistent/input"]])
def test_demo_and_replay_onto_a_file_say_so(tmp_path, capsys, command):
    target = tmp_path / "a_file"
    target.write_text("x")
    assert cli.main(command + ["--out", str(target), "--quiet"]) == 1
    assert capsys.readouterr().err.strip() == f"moonseg3r {command[0]}: error: --out {target} is a file; give a " \
                                              "folder (it is created when missing)"
    assert target.read_text() == "x"


def test_outputs_that_cannot_be_created_are_one_line_errors(tmp_path, capsys):
    from moonseg3r_ros.core.config import MapConfig
    from moonseg3r_ros.core.instance_map import InstanceMap

    blocker = tmp_path / "a_file"
    blocker.write_text("x")  # nothing can be created below a file (not even by root)
    assert cli.main(["generate", "--out", str(blocker / "data"), "--frames", "2", "--width", "32", "--height", "24",
                     "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("moonseg3r generate: error: [Errno 20] Not a directory"), err
    instance_map = InstanceMap(MapConfig(voxel_size=0.05))
    instance_map.integrate(np.zeros((1, 3), np.float32), np.zeros((1, 3), np.uint8), np.ones(1, np.int32), 0.0)
    instance_map.save(tmp_path / "map.npz")
    for out in (blocker / "map.rrd", tmp_path):  # below a file; a folder (rerun's own sink raised RuntimeError)
        assert cli.main(["view", str(tmp_path / "map.npz"), "--out", str(out)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("moonseg3r view: error: [Errno "), err

"""`moonseg3r demo` end to end on a small setting: synthetic scene -> bag -> real node -> AP -> PNG.

The module fixture runs the simple generator (`--kind primitives`); the last test runs the default realistic
kind (tabletop) on a tiny scene for its path (JPEG folder -> bag), not for its AP.
Floor (measured on the development machine, seed 0, 30 frames 320x240, keyframe interval 5, recorded
geometry, ground-truth masks): AP50 1.000. With ground-truth masks and recorded geometry every object must
be found: AP50 >= 0.9. (The primitives demo, 100 frames with the default rgbd masks, measured AP 0.866, AP50
1.000; see docs/demo.md.)
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "moonseg3r_ros.cli", "demo", "--out", str(out), "--frames", "30",
                           "--kind", "primitives", "--masks", "ground_truth", "--quiet"], capture_output=True,
                          text=True, env=env, timeout=900)
    return out, proc


def test_demo_writes_metrics(demo):
    out, proc = demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"ap", "ap50", "ap25", "scenes"} <= set(metrics)
    assert list(metrics["scenes"]) == ["synthetic_0000"]
    assert metrics["sources"] == {"geometry": "recorded", "masks": "ground_truth"}
    assert metrics["replay"]["drops"] == 0 and metrics["replay"]["frames_processed"] == 30
    assert metrics["ap50"] >= 0.9
    assert metrics["ap25"] >= metrics["ap50"] >= metrics["ap"] > 0.5


def numeric_strings(value, path: str = "") -> list[str]:
    """Paths of the strings in a JSON value that hold a number (metrics.json keeps numbers as numbers)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in numeric_strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in numeric_strings(v, f"{path}[{i}]")]
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return []
        return [path]
    return []


def test_demo_says_what_it_waits_for_and_writes_numbers(demo):
    out, proc = demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"starting node (log: {out / 'replay' / 'node.log'})" in proc.stdout  # not ~7 s of silence
    assert f"saving map to {out / 'replay' / 'map.npz'}" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert numeric_strings(metrics) == []
    assert isinstance(metrics["replay"]["node_fps"], float) and isinstance(metrics["seconds"]["total"], float)


def test_demo_writes_a_png(demo):
    out, proc = demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    pngs = list(out.glob("*.png"))
    assert pngs
    data = pngs[0].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    from PIL import Image

    with Image.open(pngs[0]) as image:
        image.verify()
        assert image.size[0] > 800 and image.size[1] > 400


def test_demo_prints_table_and_stand_ins(demo):
    out, proc = demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "AP50" in proc.stdout and "average (pooled)" in proc.stdout
    assert "recorded depth+pose" in proc.stdout and "stood in for CUT3R" in proc.stdout
    assert "--cut3r-checkpoint" in proc.stdout
    assert "ground-truth instance masks stood in for SAM" in proc.stdout and "--sam-checkpoint" in proc.stdout
    assert "ROS_DOMAIN_ID=" in proc.stdout


def test_demo_tabletop_goes_through_a_jpeg_folder(tmp_path):
    """The default (realistic) kind: scene -> ScanNet folder with JPEG colour -> bag -> node -> AP."""
    out = tmp_path / "tabletop"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "moonseg3r_ros.cli", "demo", "--out", str(out), "--frames", "10",
                           "--width", "160", "--height", "120", "--masks", "ground_truth", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kind"] == "tabletop" and metrics["color_format"] == "jpg"
    assert list(metrics["scenes"]) == ["tabletop_0000"] and metrics["gt_instances"] >= 8
    assert (out / "scene" / "color" / "0.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert metrics["replay"]["drops"] == 0 and metrics["replay"]["frames_processed"] == 10
    assert "reprojection disagreement median" in proc.stdout
    assert metrics["ap25"] >= metrics["ap50"] >= metrics["ap"] > 0.0

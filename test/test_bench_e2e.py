"""`moonseg3r bench e2e` on CPU with tiny networks: the report's structure and numbers (no timing thresholds)."""
import importlib.util
import json
import math

import pytest

from moonseg3r_ros.cli import main as cli_main
from moonseg3r_ros.tools import bench_e2e

WARMUP, FRAMES = 2, 5
STAGES = ("input", "geometry", "masks", "features", "lifting", "memory", "refinement", "association", "map_update",
          "total")


def _keyframes(interval: int) -> int:
    return sum(1 for k in range(WARMUP, WARMUP + FRAMES) if k % interval == 0)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "e2e.json"
    code = cli_main(["bench", "e2e", "--device", "cpu", "--size", "tiny", "--masks", "weight_free", "--frames",
                     str(FRAMES), "--warmup", str(WARMUP), "--width", "96", "--height", "64", "--intervals", "1,3",
                     "--async", "both", "--threads", "1", "--json", str(out)])
    assert code == 0
    return json.loads(out.read_text())


def test_every_interval_and_mode_is_run_on_the_real_pipeline(report):
    assert report["masks"] == "weight_free" and report["image"] == "96x64" and report["frames"] == FRAMES
    assert [(r["interval"], r["asynchronous"]) for r in report["runs"]] == [(1, False), (1, True), (3, False),
                                                                            (3, True)]
    for run in report["runs"]:
        assert run["frames"] == FRAMES and run["skipped"] == 0 and run["dropped_pending"] == 0
        assert run["keyframes"] == _keyframes(run["interval"])
        assert run["masks_per_keyframe"] >= 1 and run["instances"] >= 1
        assert math.isfinite(run["fps"]) and run["fps"] > 0
        assert set(run["stages"]) == set(STAGES)
        assert run["stages"]["geometry"]["count"] == run["stages"]["total"]["count"] == FRAMES
        assert run["stages"]["masks"]["count"] == run["keyframes"]  # async ones too, once committed
        for figures in run["stages"].values():
            assert 0 <= figures["median_ms"] <= figures["p95_ms"] < 60_000
        assert run["stages"]["geometry"]["median_ms"] > 0 and run["keyframe_step_ms"]["count"] == run["keyframes"]


def test_asynchronous_masks_give_the_same_segmentation_as_inline(report):
    runs = {(r["interval"], r["asynchronous"]): r for r in report["runs"]}
    for interval in (1, 3):
        inline, asynchronous = runs[interval, False], runs[interval, True]
        for key in ("keyframes", "masks_per_keyframe", "instances"):
            assert inline[key] == asynchronous[key], (interval, key)


def test_memory_is_reported_for_both_halves(report):
    for run in report["runs"]:
        memory = run["memory"]
        assert memory["kind"] == "process RSS" and memory["first_half_mib"] > 50
        assert memory["growth_mib"] == pytest.approx(memory["second_half_mib"] - memory["first_half_mib"])
        assert memory["peak_mib"] >= max(memory["first_half_mib"], memory["second_half_mib"]) - 1


def test_printed_report(capsys, tmp_path):
    bench_e2e.print_report(json.loads(json.dumps({**_tiny_report(), "runs": [_tiny_run()]})))
    out = capsys.readouterr().out
    assert "keyframe interval 10, masks asynchronous: 2.50 FPS" in out
    assert "  geometry           12.0       20.0     10" in out
    assert "process RSS: first half 900 MiB, second half 901 MiB (+1 MiB); peak 950 MiB" in out


def test_a_missing_optional_package_is_one_clear_line(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ultralytics" else real(name, *a))
    assert bench_e2e.main(["--device", "cpu", "--size", "tiny", "--masks", "fastsam", "--frames", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--masks fastsam needs the optional package ultralytics" in err and "pip install" in err
    assert len(err.splitlines()) == 1


def test_bad_arguments_are_usage_errors():
    for argv in (["--width", "100"], ["--frames", "1"], ["--intervals", "0"], ["--intervals", "a,b"]):
        with pytest.raises(SystemExit) as exc:
            bench_e2e.parse_args(argv)
        assert exc.value.code == 2


def _tiny_report():
    return {"device": "cpu", "cut3r": "tiny", "masks": "rgbd", "size": "tiny", "image": "96x64", "frames": 10,
            "warmup": 2, "load_average": [1.0, 1.0, 1.0]}


def _tiny_run():
    figures = {"median_ms": 12.0, "p95_ms": 20.0, "count": 10}
    return {"interval": 10, "asynchronous": True, "frames": 10, "keyframes": 1, "fps": 2.5, "masks_per_keyframe": 3.0,
            "skipped": 0, "dropped_pending": 0, "instances": 3, "stages": {"geometry": figures},
            "keyframe_step_ms": figures, "memory": {"kind": "process RSS", "first_half_mib": 900.0,
                                                     "second_half_mib": 901.0, "growth_mib": 1.0,
                                                     "peak_mib": 950.0}}

"""tools/bench_node's run summary and the -p overrides it shares with replay (the node run itself is the benchmark)."""
from __future__ import annotations

import pytest

from moonseg3r_ros.ros.node_process import NodeProcess, parse_overrides
from moonseg3r_ros.tools.bench_node import summarize_runs


def run(p50: float, p95: float, drops: int, load: float) -> dict:
    return {"latency_ms": {"mean": p50 + 5, "p50": p50, "p95": p95}, "queue_drops": drops,
            "throughput_fps": 10.0 - drops / 10, "load_average": load}


def test_summary_is_the_median_and_range_over_runs():
    summary = summarize_runs([run(50, 90, 0, 0.5), run(60, 200, 3, 0.8), run(55, 100, 1, 0.6)])
    assert summary["latency_p95_ms"] == {"median": 100.0, "min": 90.0, "max": 200.0}
    assert summary["latency_p50_ms"] == {"median": 55.0, "min": 50.0, "max": 60.0}
    assert summary["latency_mean_ms"]["median"] == 60.0
    assert summary["queue_drops"] == {"median": 1.0, "min": 0.0, "max": 3.0}
    assert summary["load_average"] == [0.5, 0.8, 0.6] and summary["runs"] == 3


def test_overrides_go_to_the_node_command_line_after_its_parameter_files(tmp_path):
    """bench node's and replay's -p: NAME:=VALUE texts, passed as -p after the parameter files (so they win)."""
    assert parse_overrides(["occupancy.rate:=0.1", " nav.detections := false", "frames.map:=world"]) \
        == {"occupancy.rate": "0.1", "nav.detections": "false", "frames.map": "world"}
    with pytest.raises(ValueError, match="NAME:=VALUE"):
        parse_overrides(["queue_size=4"])
    command = NodeProcess("moonseg3r", {"queue_size": 2}, log_dir=tmp_path,
                          overrides={"occupancy.rate": "0.1"}).command()
    last_file = max(i for i, arg in enumerate(command) if arg == "--params-file")
    assert command[command.index("occupancy.rate:=0.1") - 1] == "-p"
    assert command.index("occupancy.rate:=0.1") > last_file

"""The CUT3R benchmark command runs and prints latency and memory figures."""
import re

import pytest

from moonseg3r_ros.tools import bench_cut3r


def test_bench_prints_latency_and_flat_memory(capsys):
    assert bench_cut3r.main(["--config", "small", "--device", "cpu", "--frames", "2", "--warmup", "0",
                             "--height", "32", "--width", "32", "--threads", "1", "--attention"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"latency ms/frame: median [\d.]+  p95 [\d.]+", out)
    assert re.search(r"MiB after frame: 1: [\d.]+  2: [\d.]+", out)
    assert "state (1, 12, 64), mem (1, 256, 128)" in out


def test_bench_rejects_sizes_that_are_not_multiples_of_16():
    with pytest.raises(SystemExit):
        bench_cut3r.main(["--height", "30"])

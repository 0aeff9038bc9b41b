"""`moonseg3r view MAP.npz` writes a Rerun recording that Rerun's own tools read back (issue 13): `rerun rrd
verify` accepts it, and rerun's RrdReader finds the instance-coloured points (all of the map's), the boxes with
their id labels and the legend."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

rr = pytest.importorskip("rerun")

from moonseg3r_ros.core.config import MapConfig  # noqa: E402
from moonseg3r_ros.core.instance_map import InstanceMap  # noqa: E402
from moonseg3r_ros.tools import view  # noqa: E402


def rerun_cli() -> str:
    exe = Path(sys.executable).with_name("rerun")
    return str(exe) if exe.exists() else (shutil.which("rerun") or pytest.skip("no rerun CLI"))


@pytest.fixture
def saved_map(tmp_path) -> Path:
    """Two boxes of points, ids 1 and 2 (400 voxels each), plus 100 unassigned points."""
    rng = np.random.default_rng(0)
    parts = [rng.uniform(0, 0.4, (400, 3)), rng.uniform(1, 1.4, (400, 3)), rng.uniform(3, 3.4, (100, 3))]
    xyz = np.concatenate([np.round(p / 0.02) * 0.02 + 0.01 for p in parts]).astype(np.float32)
    ids = np.repeat(np.array([1, 2, 0], np.int32), [400, 400, 100])
    instance_map = InstanceMap(MapConfig(voxel_size=0.02))
    instance_map.integrate(xyz, np.full((len(xyz), 3), 128, np.uint8), ids, 0.0)
    path = tmp_path / "map.npz"
    instance_map.save(path)
    return path


def test_view_writes_a_recording_rerun_reads(saved_map, tmp_path, capsys):
    shown = view.map_view(saved_map)
    assert sorted(i[0] for i in shown.instances) == [1, 2]
    out = tmp_path / "map.rrd"
    assert view.main([str(saved_map), "--out", str(out)]) == 0
    assert f"wrote {out} ({len(shown.xyz)} points, 2 instances)" in capsys.readouterr().out
    cli = rerun_cli()
    verify = subprocess.run([cli, "rrd", "verify", str(out)], capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stderr
    chunks = {chunk.entity_path: chunk.to_record_batch() for chunk in rr.chunk.RrdReader(str(out)).stream()}
    assert {"/map/points", "/map/rgb", "/map/boxes", "/legend"} <= set(chunks)
    positions = chunks["/map/points"].column("Points3D:positions").to_pylist()[0]
    assert len(positions) == len(shown.xyz) > 800
    class_ids = chunks["/map/points"].column("Points3D:class_ids").to_pylist()[0]
    assert sorted(set(class_ids)) == [0, 1, 2]
    labels = chunks["/map/boxes"].column("Boxes3D:labels").to_pylist()[0]
    assert [label.split(" (")[0] for label in labels] == ["id 1", "id 2"]
    legend = chunks["/legend"].column("TextDocument:text").to_pylist()[0][0]
    assert legend.startswith("| id | colour | points | confidence |") and "| 2 | #" in legend


def test_view_of_a_file_that_is_no_map_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"no map")
    assert view.main([str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("moonseg3r view: error: ") and len(err.splitlines()) == 1

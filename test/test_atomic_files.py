"""core/atomic_files.py: a failed write keeps the old file and leaves no temporary file; two writers of one
target never share a temporary file."""
import os
import threading

import numpy as np
import pytest

from moonseg3r_ros.core import atomic_files
from moonseg3r_ros.core.atomic_files import replaced_atomically
from moonseg3r_ros.core.config import MapConfig
from moonseg3r_ros.core.instance_map import InstanceMap


def _map(points: int) -> InstanceMap:
    rng = np.random.default_rng(points)
    instance_map = InstanceMap(MapConfig())
    instance_map.integrate(rng.uniform(-1, 1, (points, 3)).astype(np.float32),
                           rng.integers(0, 256, (points, 3), dtype=np.uint8), np.zeros(points, np.int32), 1.0)
    return instance_map


def test_success_replaces_the_target_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "map.npz"
    _map(50).save(target)
    with replaced_atomically(target) as partial:
        assert partial.parent == target.parent and partial != target
        _map(80).save(partial)
        assert len(InstanceMap.load(target)) == 50  # readers see the old file until the rename
    assert len(InstanceMap.load(target)) == 80
    assert os.listdir(target.parent) == ["map.npz"]


def test_disk_full_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "map.npz"
    _map(50).save(target)
    old = target.read_bytes()

    class FixedName:
        hex = "0" * 32

    monkeypatch.setattr(atomic_files.uuid, "uuid4", lambda: FixedName())
    os.symlink("/dev/full", tmp_path / f"map.npz.{'0' * 8}.partial")  # this write runs out of space
    with pytest.raises(OSError, match="No space left"):
        with replaced_atomically(target) as partial:
            _map(5000).save(partial)
    assert target.read_bytes() == old
    assert os.listdir(tmp_path) == ["map.npz"]


def test_two_concurrent_writers_both_succeed(tmp_path):
    """Writer B writes and renames while writer A is between its write and its rename."""
    target = tmp_path / "file.txt"
    a_written, b_done = threading.Event(), threading.Event()
    errors = []

    def writer_b():
        a_written.wait(10)
        try:
            with replaced_atomically(target) as partial:
                partial.write_text("B")
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)
        b_done.set()

    thread = threading.Thread(target=writer_b)
    thread.start()
    with replaced_atomically(target) as partial:
        partial.write_text("A")
        a_written.set()
        b_done.wait(10)
    thread.join()
    assert errors == []
    assert target.read_text() == "A"
    assert os.listdir(tmp_path) == ["file.txt"]


def test_the_new_file_and_its_folder_reach_the_disk_before_and_after_the_rename(tmp_path, monkeypatch):
    """A power cut must not leave an empty file: fsync of the data before the rename, of the folder after it."""
    target = tmp_path / "file.txt"
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", str(b))) or real_replace(a, b))
    with replaced_atomically(target) as partial:
        partial.write_text("new")
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    assert events[0][1] == str(partial) and events[2][1] == str(tmp_path)

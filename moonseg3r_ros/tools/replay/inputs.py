"""What `moonseg3r replay` replays: a rosbag2 or a ScanNet/SceneNN-style folder, opened as frames plus what
is known about the scene (mesh vertices, per-vertex ground truth, ground-truth poses)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np


class ReplayError(RuntimeError):
    """A user-facing failure (bad input, node failure); the command prints it and exits 1."""


@dataclass
class ReplayInput:
    """Frames to replay plus what is known about the scene."""

    frames: Iterable[Any]  # iterable of core.types.Frame (may be a generator)
    total: Optional[int]
    scene: str
    vertices: Optional[np.ndarray] = None  # Vx3 mesh vertices for the ScanNet export
    gt_labels: Optional[np.ndarray] = None  # V per-vertex GT (label*1000+instance)
    gt_poses: Optional[dict] = None  # stamp ns -> 4x4 GT camera-to-world (aligns monocular maps)


def is_bag(path: Path) -> bool:
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or path.suffix in (".db3", ".mcap")


def bag_image_count(path: Path) -> int:
    """Number of images in a bag from its metadata (BagError when missing/corrupt or without images)."""
    from moonseg3r_ros.data.bag import IMAGE_TOPIC, BagError, _open_reader

    if path.is_file() and path.suffix in (".db3", ".mcap"):
        path = path.parent
    reader = _open_reader(path)
    try:
        counts = {c.topic: c.msgcount for c in reader.connections}
    finally:
        reader.close()
    if not counts.get(IMAGE_TOPIC):
        raise BagError(f"{path}: no messages on {IMAGE_TOPIC} (topics: {sorted(counts)})")
    return int(counts[IMAGE_TOPIC])


def open_input(path, scene: Optional[str] = None) -> ReplayInput:
    """Open a bag or a dataset folder; ReplayError (one line) when missing or unreadable."""
    from moonseg3r_ros.data.bag import BagError, read_bag
    from moonseg3r_ros.data.datasets import DatasetError, open_sequence

    path = Path(path)
    if not path.exists():
        raise ReplayError(f"input not found: {path}")
    try:
        if is_bag(path):
            total = bag_image_count(path)
            name = scene or (path.parent.name if path.is_file() else path.name)
            return ReplayInput(read_bag(path), total, name)
        seq = open_sequence(path)
    except (BagError, DatasetError, ValueError) as err:
        raise ReplayError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    vertices = getattr(seq, "vertices", None)
    labels = getattr(seq, "vertex_labels", None)
    return ReplayInput(seq, len(seq), scene or getattr(seq, "name", path.name), vertices, labels)

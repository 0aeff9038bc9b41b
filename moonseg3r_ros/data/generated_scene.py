"""`GeneratedScene`: what every scene generator returns (data/synthetic.py primitives, data/tabletop.py tabletop
and room; data/scenes.py picks one): lazy frames plus the ground-truth vertex set, and writing it as a
ScanNet-style folder (data/scannet_io.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moonseg3r_ros.data.lazy import LazyFrames


@dataclass
class GeneratedScene:
    """Generators narrow `spec`, `frames` and `objects` to their own types (and may add fields after these)."""

    spec: Any  # the generator's spec; has .scene_name
    frames: LazyFrames
    vertices: np.ndarray  # Nx3 float32
    vertex_labels: np.ndarray  # N int64, label_id * 1000 + instance_id, 0 = unannotated (floor, walls)
    vertex_colors: np.ndarray  # Nx3 uint8
    objects: list[Any]  # each with .instance_id
    intrinsics: np.ndarray  # 3x3
    poses: np.ndarray  # Fx4x4 camera-to-world

    @property
    def name(self) -> str:
        return self.spec.scene_name

    @property
    def object_ids(self) -> list[int]:
        return [o.instance_id for o in self.objects]

    def save(self, out_dir, image_format: str = "jpg", progress: bool = False) -> Path:
        """Write the ScanNet-style folder of data/scannet_io.py (colour as `image_format` jpg or png); returns
        its path."""
        from moonseg3r_ros.data.scannet_io import write_scannet_folder

        return write_scannet_folder(self, Path(out_dir), image_format=image_format, progress=progress)

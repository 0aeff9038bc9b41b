"""Lazy readers of recorded RGB(-D) sequences as `Frame`s: ScanNet-style folders and SceneNN sequences.

Both readers index their files once (cheap) and load images only on access: `len(seq)`, `seq[i]`,
`iter(seq)`. Frames whose pose contains inf/NaN (ScanNet has such frames) are skipped with a warning;
`seq.skipped_invalid_pose` counts them. `frame_index` is the frame number from the file name and
`stamp = frame_number / fps`.

ScanNet layout (also what `moonseg3r generate` writes; `scene` is the folder name):
    color/<n>.jpg or .png          RGB (required)
    pose/<n>.txt                   4x4 camera-to-world, optical frame (required)
    intrinsic/intrinsic_color.txt  4x4 or 3x3 K of the colour camera (required)
    intrinsic/intrinsic_depth.txt  K of the depth camera (optional, unused: depth is resized, see below)
    depth/<n>.png                  uint16 millimetres (optional folder)
    instance/<n>.png               uint16 per-pixel instance ids (optional folder)
    <scene>_vh_clean_2.ply         mesh / vertex set (optional) -> `vertices`
    <scene>.txt                    per-vertex GT label_id*1000+instance_id (optional) -> `vertex_labels`
    meta.json                      optional; its "fps" overrides the default 30 Hz
  ScanNet's colour images (1296x968) are larger than its depth (640x480): depth and instance images are
  resized to the COLOUR size with nearest-neighbour interpolation (no mixing of depths across edges), and
  `intrinsics` is the colour camera's K, so everything lives on the colour pixel grid.

SceneNN layout (one sequence folder, e.g. the official `011/`):
    image/image<n>.png             RGB (required; any name, sorted by the number in it)
    depth/depth<n>.png             uint16 millimetres (optional folder)
    trajectory.log                 Redwood format: per frame a line "i i n" then 4 rows of the 4x4
                                   camera-to-world pose; the k-th entry belongs to the k-th image (required)
    intrinsics.txt                 3x3 or 4x4 K (optional; default: SceneNN's Kinect asus.ini values
                                   fx = fy = 544.47329, cx = 320, cy = 240)
    <scene>.ply, <scene>.txt       optional mesh and per-vertex GT (as for ScanNet)
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from moonseg3r_ros.core.types import Frame
from moonseg3r_ros.data.lazy import LazyFrames
from moonseg3r_ros.data.scannet_io import depth_from_png, read_labels, read_matrix, read_vertex_ply

log = logging.getLogger(__name__)

SCENENN_DEFAULT_K = np.array([[544.47329, 0.0, 320.0], [0.0, 544.47329, 240.0], [0.0, 0.0, 1.0]])


class DatasetError(FileNotFoundError):
    """A sequence folder or one of its required files is missing or unreadable."""


@dataclass
class FrameFiles:
    """Files of one frame (None = not available)."""

    number: int
    color: Path
    pose_c2w: np.ndarray  # 4x4
    depth: Optional[Path] = None
    instance: Optional[Path] = None


def _number(path: Path) -> int:
    digits = re.findall(r"\d+", path.stem)
    if not digits:
        raise DatasetError(f"cannot read a frame number from the file name {path}")
    return int(digits[-1])


def _sorted_frames(folder: Path, patterns: Sequence[str]) -> list[Path]:
    files = [p for pattern in patterns for p in folder.glob(pattern)]
    return sorted(files, key=_number)


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read image {path}")
    return np.ascontiguousarray(image[..., ::-1])


def _read_png16(path: Path, size_hw: tuple[int, int]) -> np.ndarray:
    """uint16 PNG, resized with nearest-neighbour to size_hw when it differs."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 2:
        raise DatasetError(f"cannot read single-channel 16-bit image {path}")
    if image.shape != size_hw:
        image = cv2.resize(image, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_NEAREST)
    return image


def _read_K(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"intrinsics file not found: {path}")
    try:
        m = np.loadtxt(path, ndmin=2)
    except ValueError as e:
        raise DatasetError(f"{path}: not a numeric matrix ({e})") from None
    if m.shape not in ((3, 3), (4, 4)):
        raise DatasetError(f"{path}: expected a 3x3 or 4x4 matrix, got {m.shape}")
    return m[:3, :3].astype(np.float64)


class RecordedSequence(LazyFrames):
    """Base of the folder readers: a list of FrameFiles loaded lazily into Frames."""

    def __init__(self, root: Path, entries: list[FrameFiles], intrinsics: np.ndarray, fps: float,
                 skipped_invalid_pose: int):
        self.root, self.intrinsics, self.fps = root, intrinsics, fps
        self._entries = entries
        self.skipped_invalid_pose = skipped_invalid_pose
        if skipped_invalid_pose:
            log.warning("%s: skipped %d frame(s) with an inf/NaN pose", root, skipped_invalid_pose)

    @property
    def name(self) -> str:
        return self.root.name

    def __len__(self) -> int:
        return len(self._entries)

    def _frame(self, index: int) -> Frame:
        return self._load(self._entries[index])

    def _load(self, entry: FrameFiles) -> Frame:
        image = _read_rgb(entry.color)
        hw = image.shape[:2]
        depth = depth_from_png(_read_png16(entry.depth, hw)) if entry.depth else None
        ids = _read_png16(entry.instance, hw).astype(np.int32) if entry.instance else None
        return Frame(image=image, stamp=entry.number / self.fps, depth=depth, intrinsics=self.intrinsics.copy(),
                     pose_c2w=entry.pose_c2w.copy(), instance_ids=ids, frame_index=entry.number)

    # ground truth of the scene ------------------------------------------------------------------
    def mesh_path(self) -> Optional[Path]:
        for candidate in (self.root / f"{self.name}_vh_clean_2.ply", self.root / f"{self.name}.ply"):
            if candidate.is_file():
                return candidate
        return None

    @property
    def vertices(self) -> Optional[np.ndarray]:
        """Nx3 float32 mesh vertices, or None when the folder has no mesh."""
        path = self.mesh_path()
        return read_vertex_ply(path) if path else None

    @property
    def vertex_labels(self) -> Optional[np.ndarray]:
        """N int64 per-vertex GT (label_id*1000+instance_id), or None when absent."""
        path = self.root / f"{self.name}.txt"
        return read_labels(path) if path.is_file() else None


def _check_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} folder not found: {path}")
    return path


def _optional_file(folder: Path, number: int, stem_prefix: str = "") -> Optional[Path]:
    if not folder.is_dir():
        return None
    path = folder / f"{stem_prefix}{number}.png"
    if not path.is_file():
        raise DatasetError(f"missing {path} (the folder {folder} exists, so every frame needs a file)")
    return path


def _valid_pose(pose: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(pose)))


class ScanNetSequence(RecordedSequence):
    """ScanNet-style folder (layout in the module docstring)."""

    def __init__(self, root, fps: Optional[float] = None):
        root = _check_dir(Path(root), "sequence")
        colors = _sorted_frames(_check_dir(root / "color", "color"), ("*.jpg", "*.png"))
        if not colors:
            raise DatasetError(f"no color/*.jpg or color/*.png images in {root}")
        pose_dir = _check_dir(root / "pose", "pose")
        K = _read_K(root / "intrinsic" / "intrinsic_color.txt")
        entries, skipped = [], 0
        for color in colors:
            n = _number(color)
            pose = _read_pose(pose_dir / f"{n}.txt")
            if not _valid_pose(pose):
                skipped += 1
                continue
            entries.append(FrameFiles(n, color, pose, _optional_file(root / "depth", n),
                                      _optional_file(root / "instance", n)))
        super().__init__(root, entries, K, fps or _meta_fps(root, 30.0), skipped)


def _read_pose(path: Path) -> np.ndarray:
    try:
        return read_matrix(path, (4, 4))
    except FileNotFoundError:
        raise DatasetError(f"pose file not found: {path}") from None
    except ValueError as e:
        raise DatasetError(str(e)) from None


def _meta_fps(root: Path, default: float) -> float:
    meta = root / "meta.json"
    if meta.is_file():
        try:
            return float(json.loads(meta.read_text()).get("fps", default))
        except (ValueError, TypeError):
            log.warning("%s: unreadable meta.json, using %.1f Hz", root, default)
    return default


def read_trajectory_log(path: Path) -> list[np.ndarray]:
    """Redwood/SceneNN trajectory.log -> list of 4x4 camera-to-world poses (entry order)."""
    if not path.is_file():
        raise DatasetError(f"trajectory file not found: {path}")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if len(rows) % 5:
        raise DatasetError(f"{path}: expected blocks of 5 lines (header + 4x4), got {len(rows)} lines")
    poses = []
    for k in range(0, len(rows), 5):
        try:
            poses.append(np.array(rows[k + 1:k + 5], dtype=np.float64))
        except ValueError:
            raise DatasetError(f"{path}: non-numeric pose in block {k // 5}") from None
        if poses[-1].shape != (4, 4):
            raise DatasetError(f"{path}: block {k // 5} is not a 4x4 matrix")
    return poses


class SceneNNSequence(RecordedSequence):
    """SceneNN sequence folder (layout in the module docstring)."""

    def __init__(self, root, fps: float = 30.0):
        root = _check_dir(Path(root), "sequence")
        images = _sorted_frames(_check_dir(root / "image", "image"), ("*.png", "*.jpg"))
        if not images:
            raise DatasetError(f"no image/*.png images in {root}")
        poses = read_trajectory_log(root / "trajectory.log")
        if len(poses) < len(images):
            raise DatasetError(f"{root}: {len(images)} images but only {len(poses)} poses in trajectory.log")
        K = _read_K(root / "intrinsics.txt") if (root / "intrinsics.txt").is_file() else SCENENN_DEFAULT_K
        depth_dir = root / "depth"
        entries, skipped = [], 0
        for image, pose in zip(images, poses):
            n = _number(image)
            if not _valid_pose(pose):
                skipped += 1
                continue
            depth = None
            if depth_dir.is_dir():
                depth = depth_dir / image.name.replace("image", "depth")
                if not depth.is_file():
                    raise DatasetError(f"missing depth image {depth}")
            entries.append(FrameFiles(n, image, pose, depth))
        super().__init__(root, entries, K, fps, skipped)


def open_sequence(path) -> Sequence[Frame]:
    """Auto-detect: ScanNet-style folder (color/), SceneNN folder (image/ + trajectory.log) or a rosbag2
    (folder with metadata.yaml, or a .db3/.mcap file; frames read eagerly into a list)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"sequence not found: {path}")
    if path.is_dir() and (path / "color").is_dir():
        return ScanNetSequence(path)
    if path.is_dir() and (path / "image").is_dir() and (path / "trajectory.log").is_file():
        return SceneNNSequence(path)
    if (path.is_dir() and (path / "metadata.yaml").is_file()) or path.suffix in (".db3", ".mcap"):
        from moonseg3r_ros.data.bag import read_bag

        return list(read_bag(path))
    raise DatasetError(f"{path}: not a ScanNet folder (color/, pose/, intrinsic/), a SceneNN folder "
                       f"(image/, trajectory.log) or a rosbag2")

"""ScanNet-style folder I/O: vertex PLY, per-vertex ground truth, matrices, depth/instance PNGs.

Layout (one folder per scene, as written by `write_scannet_folder` and read by datasets.ScanNetSequence):
    color/<i>.jpg|.png   depth/<i>.png (uint16 mm)   pose/<i>.txt (4x4 c2w)   instance/<i>.png (uint16)
    intrinsic/intrinsic_color.txt, intrinsic/intrinsic_depth.txt (4x4)
    <scene>_vh_clean_2.ply   <scene>.txt (one integer per vertex: label_id * 1000 + instance_id)
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

DEPTH_SHIFT = 1000.0  # ScanNet depth PNGs are millimetres


def write_vertex_ply(path: Path, vertices: np.ndarray, colors: Optional[np.ndarray] = None) -> None:
    """Binary little-endian PLY with float32 x,y,z (+ uchar red,green,blue); Nx3 inputs, no faces."""
    vertices = np.asarray(vertices, np.float32)
    n = len(vertices)
    props = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}",
              "property float x", "property float y", "property float z"]
    if colors is not None:
        props += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    data = np.zeros(n, dtype=props)
    data["x"], data["y"], data["z"] = vertices[:, 0], vertices[:, 1], vertices[:, 2]
    if colors is not None:
        colors = np.asarray(colors, np.uint8)
        data["red"], data["green"], data["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(data.tobytes())


def read_vertex_ply(path: Path) -> np.ndarray:
    """Nx3 float32 vertices of a PLY (our binary format exactly; any other PLY via Open3D)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(4096)
    end = head.find(b"end_header\n")
    lines = head[:end].decode("ascii", "replace").splitlines() if end > 0 else []
    ours = ("format binary_little_endian 1.0" in lines and "element face" not in " ".join(lines)
            and lines[3:6] == ["property float x", "property float y", "property float z"])
    if ours:
        n = int(lines[2].split()[-1])
        has_rgb = "property uchar red" in lines
        dtype = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")] + ([("r", "u1"), ("g", "u1"), ("b", "u1")]
                                                              if has_rgb else [])
        data = np.frombuffer(open(path, "rb").read()[end + len(b"end_header\n"):], dtype=dtype, count=n)
        return np.stack([data["x"], data["y"], data["z"]], 1).astype(np.float32)
    import open3d as o3d

    mesh = o3d.io.read_triangle_mesh(str(path))
    vertices = np.asarray(mesh.vertices, np.float32)
    if len(vertices) == 0:
        raise ValueError(f"no vertices could be read from {path}")
    return vertices


def write_labels(path: Path, labels: np.ndarray) -> None:
    """One integer per line (the ScanNet ground-truth / prediction-mask text format)."""
    np.savetxt(path, np.asarray(labels, np.int64), fmt="%d")


def read_labels(path: Path) -> np.ndarray:
    """N int64 from a one-integer-per-line file (clear error when missing or malformed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    try:
        return np.loadtxt(path, dtype=np.int64, ndmin=1)
    except ValueError as e:
        raise ValueError(f"{path}: expected one integer per line ({e})") from None


def write_matrix(path: Path, matrix: np.ndarray) -> None:
    np.savetxt(path, np.asarray(matrix, np.float64), fmt="%.9f")


def read_matrix(path: Path, shape: tuple[int, int] = (4, 4)) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"matrix file not found: {path}")
    try:
        m = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise ValueError(f"{path}: not a numeric matrix ({e})") from None
    if m.shape != shape:
        raise ValueError(f"{path}: expected a {shape[0]}x{shape[1]} matrix, got {m.shape}")
    return m


def intrinsics_4x4(K: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = K
    return m


def depth_to_png(depth: np.ndarray) -> np.ndarray:
    """HxW float32 metres -> HxW uint16 millimetres (invalid / out of range -> 0)."""
    mm = np.where(np.isfinite(depth) & (depth > 0), depth * DEPTH_SHIFT + 0.5, 0.0)
    return np.where(mm < 65536, mm, 0).astype(np.uint16)


def depth_from_png(png: np.ndarray) -> np.ndarray:
    return png.astype(np.float32) / np.float32(DEPTH_SHIFT)


def write_scannet_folder(scene, out_dir: Path, image_format: str = "jpg", progress: bool = False) -> Path:
    """Write a `SyntheticScene` (data/synthetic.py) as a ScanNet-style folder; returns out_dir."""
    import cv2

    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    out_dir = Path(out_dir)
    for sub in ("color", "depth", "pose", "intrinsic", "instance"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    K4 = intrinsics_4x4(scene.intrinsics)
    write_matrix(out_dir / "intrinsic" / "intrinsic_color.txt", K4)
    write_matrix(out_dir / "intrinsic" / "intrinsic_depth.txt", K4)
    for frame in _maybe_progress(scene.frames, progress, f"writing {scene.name}"):
        i = frame.frame_index
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if image_format == "jpg" else []
        cv2.imwrite(str(out_dir / "color" / f"{i}.{image_format}"), frame.image[..., ::-1], params)
        cv2.imwrite(str(out_dir / "depth" / f"{i}.png"), depth_to_png(frame.depth))
        cv2.imwrite(str(out_dir / "instance" / f"{i}.png"), frame.instance_ids.astype(np.uint16))
        write_matrix(out_dir / "pose" / f"{i}.txt", frame.pose_c2w)
    write_vertex_ply(out_dir / f"{scene.name}_vh_clean_2.ply", scene.vertices, scene.vertex_colors)
    write_labels(out_dir / f"{scene.name}.txt", scene.vertex_labels)
    meta = {"name": scene.name, "spec": asdict(scene.spec), "fps": scene.spec.fps,
            "stamps": [i / scene.spec.fps for i in range(len(scene.frames))]}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    return out_dir


def _maybe_progress(items: Iterable, progress: bool, desc: str) -> Iterable:
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="frame")

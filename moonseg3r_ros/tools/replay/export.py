"""After a replay: the node's saved map -> OUT/map.ply, ScanNet predictions over the mesh vertices and, with
ground truth, the AP table. Monocular maps are first aligned to the ground-truth world."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from moonseg3r_ros.core.camera import umeyama
from moonseg3r_ros.tools.replay.inputs import ReplayError, ReplayInput


@dataclass
class ReplayResult:
    out: Path
    map_path: Path
    ply_path: Path
    pred_dir: Optional[Path]
    stats: dict
    instances: int
    seconds: float
    metrics: Optional[dict] = None
    poses: dict = field(default_factory=dict)  # stamp ns -> 4x4 camera-to-map pose published by the node
    alignment: Optional[np.ndarray] = None  # 4x4 similarity map -> GT world (monocular geometry only)


def align_to_ground_truth(poses: dict, source: ReplayInput, geometry: str) -> Optional[np.ndarray]:
    """Monocular (CUT3R) maps live in the model's own frame and scale: fit map -> GT world from the camera
    centres (the node's /tf vs the recorded poses, matched by stamp). None for recorded geometry."""
    gt = getattr(source, "gt_poses", None)
    if geometry == "recorded" or not gt or not poses:
        return None
    common = sorted(set(poses) & set(gt))
    if len(common) < 3:
        return None
    return umeyama(np.array([poses[k][:3, 3] for k in common]), np.array([gt[k][:3, 3] for k in common]))


def export_map(map_path: Path, out: Path, source: ReplayInput, alignment: Optional[np.ndarray] = None
               ) -> ReplayResult:
    """OUT/map.ply and (with vertices) OUT/pred/<scene>.txt + pred_mask/; AP when GT labels are known.

    With `alignment` (map -> GT world similarity), the vertices are brought into the map frame first."""
    from moonseg3r_ros.core.instance_map import InstanceMap
    from moonseg3r_ros.core.map_files import MapFileError

    try:
        instance_map = InstanceMap.load(map_path)
    except MapFileError as err:
        raise ReplayError(str(err)) from None
    ply = out / "map.ply"
    instance_map.export_ply(ply, color_by="instance")
    pred_dir, metrics = None, None
    if source.vertices is not None:
        pred_dir = out / "pred"
        vertices = np.asarray(source.vertices, np.float64)
        if alignment is not None:
            vertices = (vertices - alignment[:3, 3]) @ np.linalg.inv(alignment[:3, :3]).T
        instance_map.export_scannet(vertices, pred_dir, source.scene)
        if source.gt_labels is not None:
            metrics = evaluate_labels(source.scene, source.gt_labels, pred_dir, out / "gt")
    result = ReplayResult(out, map_path, ply, pred_dir, {}, len(instance_map.instances()), 0.0, metrics)
    result.alignment = alignment
    return result


def evaluate_labels(scene: str, labels: np.ndarray, pred_dir: Path, gt_dir: Path) -> dict:
    from moonseg3r_ros.eval.scannet_ap import evaluate

    gt_dir.mkdir(parents=True, exist_ok=True)
    np.savetxt(gt_dir / f"{scene}.txt", np.asarray(labels, np.int64), fmt="%d")
    return evaluate(gt_dir, pred_dir)

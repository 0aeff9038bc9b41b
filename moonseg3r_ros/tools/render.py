"""Offscreen PNG of an instance map next to its ground truth (matplotlib, Agg backend; no display needed).

Layout (2 rows x 3 columns): top row top-down (world z up, looking down), bottom row a perspective view.
Columns: ground truth over the scene's mesh vertices | prediction over the same vertices (what the ScanNet
evaluation scores) | the fused map points themselves. Unannotated / unassigned vertices are light grey.
Predicted instances take the colour of the GT instance they overlap most (IoU >= 0.25) so that matching
objects look alike; unmatched predictions (floor and wall segments, ...) get a pale tint of their map colour.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

GREY = np.array([0.82, 0.82, 0.82])
MAX_POINTS = 25_000
TOP_POINT_SIZE = 7.0  # matplotlib marker area (pt^2): a 2 cm voxel map reads as surfaces, objects as blobs
PERSPECTIVE_POINT_SIZE = 4.0
LEGEND_ENTRIES = 16


def _palette(k: int) -> np.ndarray:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return np.array(cmap((2 * k) % 20 + (k // 10) % 2))[:3]


def gt_colors(labels: np.ndarray) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Per-vertex colours of the GT instances (label // 1000 != 0), grey elsewhere; also {gt value: colour}."""
    colors = np.tile(GREY, (len(labels), 1))
    table = {}
    for k, value in enumerate(v for v in np.unique(labels) if v // 1000 != 0):
        table[int(value)] = _palette(k)
        colors[labels == value] = table[int(value)]
    return colors, table


def pred_colors(vertex_ids: np.ndarray, labels: Optional[np.ndarray], gt_table: dict[int, np.ndarray],
                own: dict[int, np.ndarray]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Per-vertex colours of the predicted ids; {pred id: colour} (matched GT colour or its own)."""
    colors = np.tile(GREY, (len(vertex_ids), 1))
    table = {}
    for pid in (int(i) for i in np.unique(vertex_ids) if i != 0):
        mask = vertex_ids == pid
        color = own.get(pid, np.array([0.3, 0.3, 0.3]))
        if labels is not None:
            values, counts = np.unique(labels[mask], return_counts=True)
            best = int(np.argmax(counts))
            value = int(values[best])
            if value in gt_table:
                iou = counts[best] / (mask.sum() + (labels == value).sum() - counts[best])
                if iou >= 0.25:
                    color = gt_table[value]
                else:  # background / unmatched segments: pale, so that the objects stand out
                    color = 0.35 * np.asarray(color, np.float64) + 0.65 * GREY
        table[pid] = color
        colors[mask] = color
    return colors, table


def _subsample(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= MAX_POINTS else np.sort(rng.choice(n, MAX_POINTS, replace=False))


def _top(ax, xyz: np.ndarray, colors: np.ndarray, title: str, bounds) -> None:
    order = np.argsort(xyz[:, 2])  # higher points drawn last
    ax.scatter(xyz[order, 0], xyz[order, 1], c=colors[order], s=TOP_POINT_SIZE, marker="o", linewidths=0)
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
    ax.set_xlim(bounds[0][0], bounds[1][0])
    ax.set_ylim(bounds[0][1], bounds[1][1])
    ax.set_xticks([])
    ax.set_yticks([])


def _perspective(ax, xyz: np.ndarray, colors: np.ndarray, bounds) -> None:
    ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], c=colors, s=PERSPECTIVE_POINT_SIZE, marker="o", linewidths=0,
               depthshade=False)
    ax.view_init(elev=35, azim=-60)
    lo, hi = bounds
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_zlim(lo[2], hi[2])
    ax.set_box_aspect(tuple(np.maximum(hi - lo, 1e-3)))
    ax.set_axis_off()


def legend_entries(ids: np.ndarray, colors: dict[int, np.ndarray], limit: int = LEGEND_ENTRIES
                   ) -> list[tuple[str, np.ndarray]]:
    """("id N (P pts)", colour) for the `limit` largest instances among `ids` (N ids; 0 = none)."""
    values, counts = np.unique(ids[ids != 0], return_counts=True)
    order = np.argsort(-counts, kind="stable")[:limit]
    return [(f"id {int(values[k])} ({int(counts[k])} pts)", np.asarray(colors.get(int(values[k]), GREY)))
            for k in order]


def _legend(fig, entries: list[tuple[str, np.ndarray]]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", markersize=7, color=color, label=label)
               for label, color in entries]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(8, len(handles)), fontsize=7, frameon=False,
                   title="fused map instances (largest first)", title_fontsize=8)


def render_comparison(path, vertices: Optional[np.ndarray], gt_labels: Optional[np.ndarray],
                      vertex_ids: Optional[np.ndarray], map_xyz: np.ndarray, map_ids: np.ndarray,
                      instance_colors: dict[int, np.ndarray], title: str = "", max_height: Optional[float] = 1.2
                      ) -> Path:
    """Write the PNG described in the module docstring; returns its path.

    `max_height` hides points above that height (world z) so that the walls do not hide the objects in the
    top-down view (None = keep all).
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    panels = []
    gt_table: dict[int, np.ndarray] = {}
    if vertices is not None and gt_labels is not None:
        colors, gt_table = gt_colors(gt_labels)
        panels.append((f"ground truth ({len(gt_table)} instances)", vertices, colors))
    if vertices is not None and vertex_ids is not None:
        colors, table = pred_colors(vertex_ids, gt_labels, gt_table, instance_colors)
        panels.append((f"prediction on mesh vertices ({len(table)} instances)", vertices, colors))
        instance_colors = {**instance_colors, **table}
    own = np.array([instance_colors.get(int(i), GREY) if i != 0 else GREY for i in map_ids]).reshape(-1, 3)
    n_map = len({int(i) for i in np.unique(map_ids) if i != 0})
    panels.append((f"fused map ({len(map_xyz)} points, {n_map} instances)", map_xyz, own))
    clipped = []
    for name, xyz, colors in panels:
        xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
        keep = np.ones(len(xyz), bool) if max_height is None else xyz[:, 2] <= max_height
        idx = np.flatnonzero(keep)[_subsample(int(keep.sum()), rng)]
        clipped.append((name, xyz[idx], np.asarray(colors)[idx]))
    everything = np.concatenate([c[1] for c in clipped if len(c[1])] or [np.zeros((1, 3))])
    bounds = (everything.min(0) - 0.05, everything.max(0) + 0.05)
    if vertices is not None and gt_labels is not None and np.any(gt_labels // 1000 != 0):
        objects = np.asarray(vertices, np.float64)[gt_labels // 1000 != 0]  # zoom on the annotated objects
        bounds = (np.maximum(bounds[0], objects.min(0) - 0.6), np.minimum(bounds[1], objects.max(0) + 0.6))
        bounds[0][2] = min(bounds[0][2], 0.0)
    shown = []
    for name, xyz, colors in clipped:
        inside = np.all((xyz >= bounds[0]) & (xyz <= bounds[1]), axis=1)
        if inside.any():  # no empty panels
            shown.append((name, xyz[inside], colors[inside]))
    clipped = shown or clipped[-1:]
    fig = plt.figure(figsize=(4.2 * len(clipped), 8.8), dpi=110)
    for k, (name, xyz, colors) in enumerate(clipped):
        _top(fig.add_subplot(2, len(clipped), k + 1), xyz, colors, name + " — top view", bounds)
        _perspective(fig.add_subplot(2, len(clipped), len(clipped) + k + 1, projection="3d"), xyz, colors, bounds)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    _legend(fig, legend_entries(np.asarray(map_ids), instance_colors))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def render_map_file(map_path, png_path, vertices: Optional[np.ndarray] = None,
                    gt_labels: Optional[np.ndarray] = None, title: str = "",
                    alignment: Optional[np.ndarray] = None) -> Path:
    """Render a map saved by the node (map.npz) with `render_comparison`.

    `alignment`: 4x4 similarity map -> GT world (monocular maps); the map points are drawn in the GT world."""
    from moonseg3r_ros.core.instance_map import InstanceMap

    instance_map = InstanceMap.load(map_path)
    xyz, _rgb, ids = instance_map.points()
    colors = {int(r.id): np.asarray(r.color, np.float64)[:3] for r in instance_map.instances()}
    vertex_ids = None
    if vertices is not None:
        in_map = np.asarray(vertices, np.float64)
        if alignment is not None:
            in_map = (in_map - alignment[:3, 3]) @ np.linalg.inv(alignment[:3, :3]).T
        vertex_ids = instance_map.vertex_ids(in_map)
    if alignment is not None:
        xyz = np.asarray(xyz, np.float64) @ alignment[:3, :3].T + alignment[:3, 3]
    return render_comparison(png_path, vertices, gt_labels, vertex_ids, xyz, ids, colors, title)

"""`moonseg3r view MAP.npz`: a saved map as a Rerun recording (.rrd) — no ROS desktop, no RViz needed.

The recording holds, under `map/`:
    points     the fused map points coloured by instance (grey = unassigned)
    rgb        the same points in their observed colours (a separate entity: toggle either in the viewer)
    boxes      one axis-aligned box per instance with its label "id N (P points, conf C)" in its colour
and a text document `legend` (id -> colour, point count, confidence). Open it with `rerun OUT.rrd` (the
viewer that comes with rerun-sdk, also `pip install rerun-sdk` on a laptop) or at https://app.rerun.io.
`--spawn` also starts the native viewer and streams to it; `--serve` serves the web viewer on this machine.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

APPLICATION_ID = "moonseg3r"
POINT_RADIUS_M = 0.008  # large enough to see a 2 cm voxel map as surfaces


@dataclass
class MapView:
    """What the recording shows: points (Nx3 float32, instance colours Nx3 uint8, rgb Nx3 uint8, ids N) and
    per instance (id, colour 3 uint8, box min 3, box max 3, points, confidence)."""

    xyz: np.ndarray
    instance_rgb: np.ndarray
    rgb: np.ndarray
    ids: np.ndarray
    instances: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, int, float]]


def map_view(map_path: Path) -> MapView:
    """Read a map saved by the node / replay (map.npz; MapFileError when it is not one)."""
    from moonseg3r_ros.core.instance_map import InstanceMap
    from moonseg3r_ros.core.map_cloud import instance_colors

    instance_map = InstanceMap.load(map_path)
    xyz, rgb, ids = instance_map.points()
    records = instance_map.instances()
    colors = {int(r.id): r.color for r in records}
    instances = [(int(r.id), (np.asarray(r.color[:3]) * 255).round().astype(np.uint8),
                  np.asarray(r.bbox_min, np.float32), np.asarray(r.bbox_max, np.float32), int(r.point_count),
                  float(r.confidence)) for r in records]
    return MapView(np.asarray(xyz, np.float32), instance_colors(ids, colors), np.asarray(rgb, np.uint8),
                   np.asarray(ids), instances)


def legend(view: MapView) -> str:
    """Markdown table: id, colour (hex), points, confidence."""
    rows = ["| id | colour | points | confidence |", "|---|---|---|---|"]
    for iid, color, _lo, _hi, points, conf in view.instances:
        rows.append(f"| {iid} | #{color[0]:02x}{color[1]:02x}{color[2]:02x} | {points} | {conf:.2f} |")
    return "\n".join(rows)


def log_map(rec, view: MapView, radius: float = POINT_RADIUS_M) -> None:
    """Log `view` into the Rerun RecordingStream `rec` (static: a map has no timeline)."""
    import rerun as rr

    rec.log("map", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
    rec.log("map/points", rr.Points3D(view.xyz, colors=view.instance_rgb, radii=radius,
                                      class_ids=view.ids.astype(np.uint16)), static=True)
    rec.log("map/rgb", rr.Points3D(view.xyz, colors=view.rgb, radii=radius), static=True)
    if view.instances:
        lo = np.stack([i[2] for i in view.instances])
        hi = np.stack([i[3] for i in view.instances])
        rec.log("map/boxes", rr.Boxes3D(mins=lo, sizes=np.maximum(hi - lo, 1e-4),
                                        colors=np.stack([i[1] for i in view.instances]),
                                        labels=[f"id {i[0]} ({i[4]} points, conf {i[5]:.2f})"
                                                for i in view.instances]), static=True)
    rec.log("legend", rr.TextDocument(legend(view), media_type=rr.MediaType.MARKDOWN), static=True)


def write_recording(view: MapView, out: Path) -> Path:
    """`view` as a .rrd file at `out`."""
    import rerun as rr

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb"):  # an unwritable path is an OSError here, not rerun's RuntimeError in its sink
        pass
    rec = rr.RecordingStream(APPLICATION_ID)
    rec.save(str(out))
    log_map(rec, view)
    rec.flush()
    rec.disconnect()
    return out


def show_live(view: MapView, serve: bool) -> None:
    """Stream `view` to a native viewer started now (spawn) or to the web viewer served here (serve)."""
    import rerun as rr

    rec = rr.RecordingStream(APPLICATION_ID)
    if serve:
        rr.serve_web_viewer(connect_to=rec.serve_grpc())
    else:
        rec.spawn()
    log_map(rec, view)
    rec.flush()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="moonseg3r view", description=__doc__.splitlines()[0])
    parser.add_argument("map", help="a map saved by the node, replay or demo (map.npz)")
    parser.add_argument("--out", default=None, help="recording to write (default: MAP with suffix .rrd)")
    live = parser.add_mutually_exclusive_group()
    live.add_argument("--spawn", action="store_true", help="also start the native Rerun viewer and show it")
    live.add_argument("--serve", action="store_true", help="also serve the web viewer on this machine")
    args = parser.parse_args(argv)
    from moonseg3r_ros.core.map_files import MapFileError

    map_path = Path(args.map)
    out = Path(args.out) if args.out else map_path.with_suffix(".rrd")
    try:
        view = map_view(map_path)
        write_recording(view, out)
    except (MapFileError, OSError, ValueError) as err:
        print(f"moonseg3r view: error: {err}".splitlines()[0], file=sys.stderr)
        return 1
    print(f"wrote {out} ({len(view.xyz)} points, {len(view.instances)} instances); open it with: rerun {out}")
    if args.spawn or args.serve:
        show_live(view, args.serve)
    if args.serve:
        input("serving the web viewer; press Enter to stop\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

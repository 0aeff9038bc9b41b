"""One entry point to the scene generators: `make_scene(kind, ...)` for kinds tabletop, room, primitives.

`primitives` is data/synthetic.py (flat-coloured boxes, cylinders and spheres on a floor, Open3D ray
casting); `tabletop` and `room` are data/tabletop.py (pybullet renders of textured meshes). Both return
scenes with the same interface (`frames`, `vertices`, `vertex_labels`, `objects`, `poses`, `save`).
"""
from __future__ import annotations

from typing import Optional

SCENE_KINDS = ("tabletop", "room", "primitives")
REALISTIC_KINDS = ("tabletop", "room")


def make_scene(kind: str, seed: int = 0, num_frames: int = 80, width: int = 320, height: int = 240,
               objects: Optional[int] = None, name: Optional[str] = None):
    """Generate one scene. `objects`: primitives per scene (default 6), or objects on the table for the
    realistic kinds (default from the seed). Raises ValueError for an unknown kind or invalid settings."""
    if kind == "primitives":
        from moonseg3r_ros.data.synthetic import SceneSpec, generate_scene

        return generate_scene(SceneSpec(seed=seed, num_frames=num_frames, width=width, height=height,
                                        num_objects=6 if objects is None else objects, name=name))
    if kind in REALISTIC_KINDS:
        from moonseg3r_ros.data.tabletop import TabletopSpec, generate_tabletop

        return generate_tabletop(TabletopSpec(seed=seed, kind=kind, num_frames=num_frames, width=width,
                                              height=height, table_objects=objects, name=name))
    raise ValueError(f"unknown scene kind {kind!r}; choose from {', '.join(SCENE_KINDS)}")


def camera_check_line(scene) -> Optional[str]:
    """The camera-model check of a realistic scene in one line (None for primitives or 1-frame scenes)."""
    if not hasattr(scene, "world") or len(scene.frames) < 2:
        return None
    from moonseg3r_ros.data.tabletop import camera_check

    c = camera_check(scene)
    return (f"camera check (frames {c['frames'][0]}->{c['frames'][1]}, {c['points']} points): reprojection "
            f"disagreement median {c['reprojection_mm_median']:.3f} mm, p90 {c['reprojection_mm_p90']:.3f} mm; "
            f"floor points off z=0: median {c['floor_mm_median']:.3f} mm")

"""Synthetic indoor scenes with ground truth, rendered with Open3D's RaycastingScene.

A scene is a room (floor + 4 walls, unannotated: label 0) holding 4-8 objects (boxes, cylinders,
spheres) that rest on the floor without intersecting. A camera orbits the room centre at about 1.5 m
height looking at the objects, with gentle sinusoidal variation of radius, height and target.

Conventions (see core/types.py):
- World frame: z up, floor at z = 0, room centred on the origin (metres).
- Camera poses are camera-to-world 4x4 in the OPTICAL frame (x right, y down, z forward).
- Depth is z-depth in metres (float32), 0 where the ray hits nothing.
- Per-pixel `instance_ids` (int32): object k (0-based) has instance id k + 1; room and misses are 0.
- Per-vertex ground truth `vertex_labels` (int64) uses the ScanNet encoding label_id * 1000 + instance_id,
  with label_id 1 = box, 2 = cylinder, 3 = sphere; room vertices are 0 (unannotated).
- Frame stamps are `frame_index / fps` seconds (10 Hz from 0 by default).

`scene.frames` is a lazy sequence: each access renders the frame (deterministic, a few ms at 320x240).
Everything is deterministic in `SceneSpec.seed`.

Folder layout written by `SyntheticScene.save(dir)` (ScanNet style, read back by data/datasets.py):
    color/<i>.jpg (or .png with image_format="png", lossless)   RGB frames
    depth/<i>.png        uint16 depth in millimetres (0 = invalid)
    pose/<i>.txt         4x4 camera-to-world (optical frame)
    intrinsic/intrinsic_color.txt, intrinsic/intrinsic_depth.txt   4x4 (K in the top-left 3x3)
    instance/<i>.png     uint16 per-pixel instance ids
    <name>_vh_clean_2.ply   the vertex set (binary PLY, float32 xyz + uchar rgb, no faces)
    <name>.txt           ground truth: one integer per vertex (label_id * 1000 + instance_id)
    meta.json            spec and stamps
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from moonseg3r_ros.core.camera import look_at, pinhole
from moonseg3r_ros.core.types import Frame
from moonseg3r_ros.data.generated_scene import GeneratedScene
from moonseg3r_ros.data.lazy import LazyFrames

SHAPES = ("box", "cylinder", "sphere")  # label_id = index + 1
LIGHT_DIR = np.array([0.3, 0.5, 1.0]) / np.linalg.norm([0.3, 0.5, 1.0])


@dataclass
class SceneSpec:
    """Parameters of one synthetic scene; every field has a sensible default."""

    seed: int = 0
    num_frames: int = 100
    width: int = 320
    height: int = 240
    num_objects: int = 6  # 4..8 recommended (1..12 accepted)
    fps: float = 10.0
    room_size: tuple[float, float, float] = (6.0, 5.0, 2.6)  # x, y extent and wall height (m)
    focal_scale: float = 0.8  # fx = fy = focal_scale * width
    orbit_radius: float = 2.1
    camera_height: float = 1.5
    orbit_degrees: float = 360.0  # angle swept by the whole sequence
    object_spacing: float = 0.02  # vertex sampling spacing on objects (m)
    room_spacing: float = 0.04  # vertex sampling spacing on floor and walls (m)
    name: Optional[str] = None  # default: f"synthetic_{seed:04d}"

    def validate(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.width < 8 or self.height < 8:
            raise ValueError(f"image size must be at least 8x8, got {self.width}x{self.height}")
        if not 1 <= self.num_objects <= 12:
            raise ValueError(f"num_objects must be in 1..12, got {self.num_objects}")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.object_spacing <= 0 or self.room_spacing <= 0:
            raise ValueError("vertex spacings must be > 0")

    @property
    def scene_name(self) -> str:
        return self.name or f"synthetic_{self.seed:04d}"


@dataclass
class SceneObject:
    """One object of the scene: a closed Open3D mesh with its ground-truth identity."""

    instance_id: int
    label_id: int  # 1 box, 2 cylinder, 3 sphere
    shape: str
    color: np.ndarray  # 3 float in [0, 1]
    center_xy: np.ndarray  # 2 float
    footprint_radius: float
    mesh: object = field(repr=False)  # open3d.geometry.TriangleMesh


# ----------------------------------------------------------------------------------------------------
# Scene layout


def _object_mesh(shape: str, rng: np.random.Generator):
    """A mesh of `shape` centred at the origin in xy, resting on z = 0; returns (mesh, footprint radius)."""
    import open3d as o3d

    if shape == "box":
        w, d, h = rng.uniform(0.25, 0.6), rng.uniform(0.25, 0.6), rng.uniform(0.2, 0.8)
        mesh = o3d.geometry.TriangleMesh.create_box(w, d, h)
        mesh.translate((-w / 2, -d / 2, 0.0))
        yaw = rng.uniform(0, math.pi)
        mesh.rotate(mesh.get_rotation_matrix_from_xyz((0.0, 0.0, yaw)), center=(0.0, 0.0, 0.0))
        return mesh, math.hypot(w, d) / 2
    if shape == "cylinder":
        r, h = rng.uniform(0.1, 0.25), rng.uniform(0.3, 0.9)
        mesh = o3d.geometry.TriangleMesh.create_cylinder(radius=r, height=h, resolution=32, split=4)
        mesh.translate((0.0, 0.0, h / 2))
        return mesh, r
    r = rng.uniform(0.12, 0.3)
    mesh = o3d.geometry.TriangleMesh.create_sphere(radius=r, resolution=20)
    mesh.translate((0.0, 0.0, r))
    return mesh, r


def _object_color(rng: np.random.Generator, hue0: float, index: int) -> np.ndarray:
    """A saturated colour as 3 floats in [0, 1]; hues spread by the golden ratio so objects differ."""
    import colorsys

    h, s, v = (hue0 + 0.618034 * index) % 1.0, rng.uniform(0.55, 0.9), rng.uniform(0.6, 0.95)
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def _place_objects(spec: SceneSpec, rng: np.random.Generator) -> list[SceneObject]:
    """Rejection-sample non-overlapping footprints (0.08 m gap) inside the orbit (radius 1.3 m)."""
    objects: list[SceneObject] = []
    place_radius = max(0.3, spec.orbit_radius - 0.8)
    hue0 = rng.uniform(0, 1)
    for k in range(spec.num_objects):
        shape = SHAPES[int(rng.integers(0, len(SHAPES)))] if k >= len(SHAPES) else SHAPES[k]
        for _ in range(1000):
            mesh, radius = _object_mesh(shape, rng)
            xy = rng.uniform(-place_radius, place_radius, size=2)
            if np.linalg.norm(xy) + radius > place_radius + 0.15:
                continue
            if all(np.linalg.norm(xy - o.center_xy) > radius + o.footprint_radius + 0.08 for o in objects):
                break
        else:
            raise ValueError(f"could not place {spec.num_objects} non-overlapping objects; use fewer")
        mesh.translate((xy[0], xy[1], 0.0))
        mesh.compute_triangle_normals()
        color = _object_color(rng, hue0, k)
        objects.append(SceneObject(k + 1, SHAPES.index(shape) + 1, shape, color, xy, radius, mesh))
    return objects


def _room_quads(spec: SceneSpec) -> list[tuple[np.ndarray, np.ndarray]]:
    """Floor and 4 walls as (4x3 corners, rgb colour) quads facing the room's inside."""
    sx, sy, sz = spec.room_size[0] / 2, spec.room_size[1] / 2, spec.room_size[2]
    floor = np.array([[-sx, -sy, 0], [sx, -sy, 0], [sx, sy, 0], [-sx, sy, 0]], float)
    walls = [
        np.array([[-sx, -sy, 0], [sx, -sy, 0], [sx, -sy, sz], [-sx, -sy, sz]], float),
        np.array([[sx, -sy, 0], [sx, sy, 0], [sx, sy, sz], [sx, -sy, sz]], float),
        np.array([[sx, sy, 0], [-sx, sy, 0], [-sx, sy, sz], [sx, sy, sz]], float),
        np.array([[-sx, sy, 0], [-sx, -sy, 0], [-sx, -sy, sz], [-sx, sy, sz]], float),
    ]
    wall_colors = [(0.82, 0.79, 0.72), (0.75, 0.8, 0.82), (0.84, 0.8, 0.7), (0.78, 0.82, 0.76)]
    return [(floor, np.array([0.55, 0.42, 0.3]))] + [(w, np.array(c)) for w, c in zip(walls, wall_colors)]


def _quad_mesh(corners: np.ndarray):
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(corners),
                                     o3d.utility.Vector3iVector(np.array([[0, 1, 2], [0, 2, 3]])))
    mesh.compute_triangle_normals()
    return mesh


# ----------------------------------------------------------------------------------------------------
# Camera


def camera_trajectory(spec: SceneSpec) -> np.ndarray:
    """Fx4x4 camera-to-world poses: an orbit with gentle variation of radius, height and target."""
    rng = np.random.default_rng(spec.seed + 7919)
    phase = rng.uniform(0, 2 * math.pi, size=4)
    start = rng.uniform(0, 2 * math.pi)
    poses = np.zeros((spec.num_frames, 4, 4))
    for i in range(spec.num_frames):
        s = i / max(1, spec.num_frames - 1)
        angle = start + math.radians(spec.orbit_degrees) * s * (spec.num_frames - 1) / spec.num_frames
        radius = spec.orbit_radius + 0.12 * math.sin(2 * math.pi * s * 2 + phase[0])
        height = spec.camera_height + 0.1 * math.sin(2 * math.pi * s * 3 + phase[1])
        eye = np.array([radius * math.cos(angle), radius * math.sin(angle), height])
        target = np.array([0.15 * math.sin(2 * math.pi * s + phase[2]),
                           0.15 * math.cos(2 * math.pi * s + phase[3]), 0.35])
        poses[i] = look_at(eye, target)
    return poses


def intrinsics_for(spec: SceneSpec) -> np.ndarray:
    """3x3 pinhole K with fx = fy = focal_scale * width and the principal point at the image centre."""
    return pinhole(spec.focal_scale * spec.width, spec.width, spec.height)


# ----------------------------------------------------------------------------------------------------
# Rendering


def _texture(points: np.ndarray, cell: float = 0.05) -> np.ndarray:
    """Deterministic blocky value noise in [0.9, 1.1] per point (Nx3 -> N)."""
    cells = np.floor(points / cell)
    h = np.sin(cells @ np.array([12.9898, 78.233, 37.719])) * 43758.5453
    return 0.9 + 0.2 * (h - np.floor(h))


class _Renderer:
    """Owns the RaycastingScene; maps Open3D geometry ids to instance ids and colours."""

    def __init__(self, spec: SceneSpec, objects: list[SceneObject]):
        import open3d as o3d

        self.spec = spec
        self.scene = o3d.t.geometry.RaycastingScene()
        instance, is_floor = [], []
        for corners, color in _room_quads(spec):
            gid = self.scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(_quad_mesh(corners)))
            instance.append((gid, 0, color, len(is_floor) == 0))
            is_floor.append(True)
        for obj in objects:
            gid = self.scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(obj.mesh))
            instance.append((gid, obj.instance_id, obj.color, False))
        size = max(g for g, *_ in instance) + 2
        self.geom_instance = np.zeros(size, np.int32)
        self.geom_color = np.zeros((size, 3))
        self.geom_floor = np.zeros(size, bool)
        for gid, inst, color, floor in instance:
            self.geom_instance[gid], self.geom_color[gid], self.geom_floor[gid] = inst, color, floor
        self.miss = size - 1  # slot for rays that hit nothing: instance 0, black
        K = intrinsics_for(spec)
        u, v = np.meshgrid(np.arange(spec.width), np.arange(spec.height))
        self.dirs_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1)

    def render(self, pose_c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (HxWx3 uint8 RGB, HxW float32 z-depth in metres (0 = miss), HxW int32 instance ids)."""
        import open3d as o3d

        dirs = self.dirs_cam @ pose_c2w[:3, :3].T  # z-component 1 in camera -> t_hit is z-depth
        origins = np.broadcast_to(pose_c2w[:3, 3], dirs.shape)
        rays = np.concatenate([origins, dirs], -1).astype(np.float32)
        ans = self.scene.cast_rays(o3d.core.Tensor(rays))
        t_hit = ans["t_hit"].numpy()
        hit = np.isfinite(t_hit)
        gid = ans["geometry_ids"].numpy().astype(np.int64)
        gid = np.where(hit, gid, self.miss)
        depth = np.where(hit, t_hit, 0.0).astype(np.float32)
        points = origins + dirs * np.where(hit, t_hit, 0.0)[..., None]
        rgb = self._shade(gid, ans["primitive_normals"].numpy(), dirs, points, hit)
        return rgb, depth, self.geom_instance[gid]

    def _shade(self, gid, normals, dirs, points, hit) -> np.ndarray:
        """Lambertian shading of the base colour, modulated by texture (and floor tiles)."""
        facing = np.sign(-(normals * dirs).sum(-1, keepdims=True))
        normals = normals * np.where(facing == 0, 1.0, facing)
        lambert = 0.4 + 0.6 * np.clip(normals @ LIGHT_DIR, 0.0, 1.0)
        base = self.geom_color[gid]
        texture = _texture(points)
        tiles = ((np.floor(points[..., 0] / 0.5) + np.floor(points[..., 1] / 0.5)) % 2) * 0.15 + 0.85
        texture = np.where(self.geom_floor[gid], texture * tiles, texture)
        rgb = base * (lambert * texture)[..., None]
        rgb = np.where(hit[..., None], rgb, 0.0)
        return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------
# Vertex set


def _sample_surface(mesh, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Area-weighted uniform samples, about one per spacing^2 of surface: Nx3 float64."""
    vertices = np.asarray(mesh.vertices)
    tris = vertices[np.asarray(mesh.triangles)]  # Tx3x3
    areas = 0.5 * np.linalg.norm(np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]), axis=1)
    count = max(1, int(math.ceil(areas.sum() / spacing ** 2)))
    which = rng.choice(len(tris), size=count, p=areas / areas.sum())
    a, b = rng.random(count), rng.random(count)
    flip = a + b > 1
    a, b = np.where(flip, 1 - a, a), np.where(flip, 1 - b, b)
    t = tris[which]
    return t[:, 0] + a[:, None] * (t[:, 1] - t[:, 0]) + b[:, None] * (t[:, 2] - t[:, 0])


def _vertex_set(spec: SceneSpec, objects: list[SceneObject], rng: np.random.Generator):
    """-> (Nx3 float32 vertices, N int64 labels label*1000+inst, Nx3 uint8 colours)."""
    parts, labels, colors = [], [], []
    for corners, color in _room_quads(spec):
        pts = _sample_surface(_quad_mesh(corners), spec.room_spacing, rng)
        parts.append(pts)
        labels.append(np.zeros(len(pts), np.int64))
        colors.append(np.broadcast_to(color, pts.shape))
    for obj in objects:
        pts = _sample_surface(obj.mesh, spec.object_spacing, rng)
        parts.append(pts)
        labels.append(np.full(len(pts), obj.label_id * 1000 + obj.instance_id, np.int64))
        colors.append(np.broadcast_to(obj.color, pts.shape))
    vertices = np.concatenate(parts)
    rgb = np.concatenate(colors) * _texture(vertices)[:, None]
    return (vertices.astype(np.float32), np.concatenate(labels),
            np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8))


# ----------------------------------------------------------------------------------------------------
# Scene


class SyntheticFrames(LazyFrames):
    """Lazy, indexable sequence of rendered `Frame`s (each access renders; results are identical)."""

    def __init__(self, renderer: _Renderer, poses: np.ndarray, intrinsics: np.ndarray, fps: float):
        self._renderer, self._poses, self._K, self._fps = renderer, poses, intrinsics, fps

    def __len__(self) -> int:
        return len(self._poses)

    def _frame(self, index: int) -> Frame:
        rgb, depth, ids = self._renderer.render(self._poses[index])
        return Frame(image=rgb, stamp=index / self._fps, depth=depth, intrinsics=self._K.copy(),
                     pose_c2w=self._poses[index].copy(), instance_ids=ids, frame_index=index)


@dataclass
class SyntheticScene(GeneratedScene):
    """A generated primitives scene: lazy frames plus the ground-truth vertex set (fields: GeneratedScene)."""

    spec: SceneSpec
    frames: SyntheticFrames
    objects: list[SceneObject]


def generate_scene(spec: Optional[SceneSpec] = None) -> SyntheticScene:
    """Build the scene described by `spec` (deterministic in spec.seed). Frames render lazily."""
    spec = spec or SceneSpec()
    spec.validate()
    rng = np.random.default_rng(spec.seed)
    objects = _place_objects(spec, rng)
    vertices, labels, colors = _vertex_set(spec, objects, np.random.default_rng(spec.seed + 104729))
    poses = camera_trajectory(spec)
    K = intrinsics_for(spec)
    frames = SyntheticFrames(_Renderer(spec, objects), poses, K, spec.fps)
    return SyntheticScene(spec, frames, vertices, labels, colors, objects, K, poses)


def spec_to_json(spec: SceneSpec) -> str:
    return json.dumps(asdict(spec), indent=2)

"""Realistic scenes with ground truth, rendered by pybullet from textured meshes (kinds tabletop and room).

`tabletop`: a textured room (wood-plank, checkered or tiled floor; painted or striped walls) with
pybullet_data's wooden table, 4-7 household objects resting ON the table and 2-4 ON the floor, some of
them touching, always at least one thin object (tray, book, domino), one black/white/grey object and one
wearing the table's own texture. `room`: a larger room that adds a bookshelf with objects on its boards.
The camera circles the table with seeded variations of radius, height, arc and target. Everything is
deterministic in `TabletopSpec.seed`.

Ground truth and conventions are those of data/synthetic.py (same `Frame`s, same ScanNet-style folder via
`save`): instance id k + 1 per pixel for instance k (supports included: the table and the shelf are
instances), 0 for floor, walls and misses; per-vertex labels label_id * 1000 + instance_id with floor and
walls 0. The vertex set samples the visible surfaces: every frame's depth is back-projected and reduced to
one point per voxel (1 cm on instances, 3 cm on floor and walls), labelled from the same pixels' ids.
Objects are placed, not simulated: each rests on its support at the bottom of its collision AABB.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from moonseg3r_ros.core.camera import look_at, pinhole
from moonseg3r_ros.core.types import Frame
from moonseg3r_ros.data import tabletop_objects as to
from moonseg3r_ros.data import textures as tx
from moonseg3r_ros.data.bullet_scene import BulletWorld, Light
from moonseg3r_ros.data.generated_scene import GeneratedScene
from moonseg3r_ros.data.lazy import LazyFrames
from moonseg3r_ros.data.scene_truth import camera_check, visible_vertex_set

__all__ = ["KINDS", "TabletopScene", "TabletopSpec", "camera_check", "generate_tabletop"]

KINDS = ("tabletop", "room")


@dataclass
class TabletopSpec:
    """Parameters of one realistic scene; every field has a sensible default."""

    seed: int = 0
    kind: str = "tabletop"
    num_frames: int = 80
    width: int = 320
    height: int = 240
    fps: float = 10.0
    focal_scale: float = 0.85  # fx = fy = focal_scale * width
    table_objects: Optional[int] = None  # default: 4..7 from the seed
    floor_objects: Optional[int] = None  # default: 2..4 from the seed
    object_voxel: float = 0.01  # vertex spacing on instances (m)
    room_voxel: float = 0.03  # vertex spacing on floor and walls (m)
    name: Optional[str] = None  # default: f"{kind}_{seed:04d}"

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.width < 16 or self.height < 16:
            raise ValueError(f"image size must be at least 16x16, got {self.width}x{self.height}")
        if self.fps <= 0 or self.object_voxel <= 0 or self.room_voxel <= 0:
            raise ValueError("fps and voxel sizes must be > 0")
        for name in ("table_objects", "floor_objects"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 10:
                raise ValueError(f"{name} must be in 0..10, got {value}")

    @property
    def scene_name(self) -> str:
        return self.name or f"{self.kind}_{self.seed:04d}"


@dataclass
class SceneObject:
    """One ground-truth instance: its bodies, what it stands on (0 = floor) and its collision bounds."""

    instance_id: int
    label_id: int
    kind: str  # catalogue name (data/tabletop_objects.py) or "table" / "shelf"
    bodies: list[int]
    support_id: int = 0
    aabb_min: np.ndarray = field(default_factory=lambda: np.zeros(3))
    aabb_max: np.ndarray = field(default_factory=lambda: np.zeros(3))


@dataclass
class _Surface:
    """A horizontal rectangle objects can rest on."""

    lo: np.ndarray  # 2 (x, y min)
    hi: np.ndarray  # 2
    z: float
    instance_id: int  # 0 = floor
    texture: int
    tile: float
    max_height: float = 1.0
    aligned: bool = False  # objects turned to the surface's axes (shelf boards), not to a random yaw
    keep_out: list = field(default_factory=list)  # (lo 2, hi 2) rectangles to avoid


class _Layout:
    """Builds the room, supports and objects into a BulletWorld, recording the ground truth."""

    def __init__(self, spec: TabletopSpec, world: BulletWorld):
        self.spec, self.world = spec, world
        self.rng = np.random.default_rng(spec.seed)
        self.objects: list[SceneObject] = []
        self.body_instance: dict[int, int] = {}
        self.placed: dict[tuple, list[tuple[np.ndarray, np.ndarray]]] = {}  # (support, height) -> footprints

    def _add(self, kind: str, bodies: list[int], support: int) -> SceneObject:
        inst = len(self.objects) + 1
        bounds = [self.world.aabb(b) for b in bodies]
        obj = SceneObject(inst, to.LABELS[kind], kind, bodies, support,
                          np.min([b[0] for b in bounds], 0), np.max([b[1] for b in bounds], 0))
        self.objects.append(obj)
        for b in bodies:
            self.body_instance[b] = inst
        return obj

    def room(self, half: np.ndarray) -> tuple[int, float]:
        """Floor (top at z = 0) and four walls; returns the floor's (texture, tile)."""
        w, rng = self.world, self.rng
        floor_kind = list(tx.FLOORS)[int(rng.integers(len(tx.FLOORS)))]
        floor_tex, tile = w.texture(tx.FLOORS[floor_kind](rng)), tx.TEXTURE_TILE_M[floor_kind] * rng.uniform(0.8, 1.2)
        w.add_box((2 * half[0] + 0.2, 2 * half[1] + 0.2, 0.02), (0, 0, -0.01), texture=floor_tex, tile=tile)
        wall_kind = list(tx.WALLS)[int(rng.integers(len(tx.WALLS)))]
        wall_tex = w.texture(tx.WALLS[wall_kind](rng))
        height = 2.6
        for axis in (0, 1):
            for sign in (-1, 1):
                size = [2 * half[0] + 0.2, 2 * half[1] + 0.2, height]
                size[axis] = 0.05
                pos = [0.0, 0.0, height / 2]
                pos[axis] = sign * (half[axis] + 0.025)
                w.add_box(size, pos, texture=wall_tex, tile=tx.TEXTURE_TILE_M[wall_kind])
        return floor_tex, tile

    def table(self, centre: np.ndarray) -> _Surface:
        rng = self.rng
        ctx = to.BuildContext(self.world, rng, -1, 1.0)
        texture = None
        if rng.random() < 0.5:  # keep the model's own wood, or a generated wood / white / grey top
            texture = self.world.texture(tx.wood(rng) if rng.random() < 0.6 else tx.plain(rng))
        body = to.table_support(ctx, float(rng.uniform(0.8, 1.0)), texture)
        self.world.move(body, (centre[0], centre[1], 0.0))
        obj = self._add("table", [body], 0)
        tex = texture if texture is not None else self._model_texture(body)
        return _Surface(obj.aabb_min[:2] + 0.03, obj.aabb_max[:2] - 0.03, float(obj.aabb_max[2]),
                        obj.instance_id, tex, 0.5)

    def _model_texture(self, body: int) -> int:
        """The texture a URDF body was loaded with (for objects that copy the support's look)."""
        import pybullet as p

        data = p.getVisualShapeData(body, flags=p.VISUAL_SHAPE_DATA_TEXTURE_UNIQUE_IDS,
                                    physicsClientId=self.world.client)
        ids = [d[8] for d in data if len(d) > 8 and d[8] >= 0]
        return ids[0] if ids else self.world.texture(tx.wood(self.rng))

    def shelf(self, half: np.ndarray) -> list[_Surface]:
        rng = self.rng
        width, depth, height = rng.uniform(0.8, 1.2), 0.32, rng.uniform(1.2, 1.6)
        position = np.array([rng.uniform(-half[0] + 0.8, half[0] - 0.8), half[1] - depth / 2 - 0.01, 0.0])
        texture = self.world.texture(tx.wood(rng) if rng.random() < 0.6 else tx.plain(rng))
        bodies, tops = to.shelf_support(to.BuildContext(self.world, rng, texture, 0.6), position, width, depth,
                                        height, 4, texture)
        obj = self._add("shelf", bodies, 0)
        gap = tops[1] - tops[0] - 0.04
        lo = np.array([position[0] - width / 2 + 0.04, position[1] - depth / 2 + 0.02])
        hi = np.array([position[0] + width / 2 - 0.04, position[1] + depth / 2 - 0.04])
        return [_Surface(lo, hi, z, obj.instance_id, texture, 0.6, max_height=gap if k < 3 else 0.5, aligned=True)
                for k, z in enumerate(tops)]

    def place(self, kind: str, surface: _Surface, touch: bool = False) -> Optional[SceneObject]:
        """Build `kind` and rest it on `surface` without overlaps (next to an earlier object when
        `touch`, 0-4 mm apart); None (and the body removed) when it does not fit."""
        ctx = to.BuildContext(self.world, self.rng, surface.texture, surface.tile)
        body = to.BUILDERS[kind](ctx)
        if surface.aligned:
            yaw = float(self.rng.choice([0.0, math.pi / 2]) + self.rng.uniform(-0.1, 0.1))
        else:
            yaw = 0.0 if touch else float(self.rng.uniform(0, math.pi))
        euler = (0.0, 0.0, 0.0)
        if kind == "domino":
            euler = (0.0, math.pi / 2, 0.0)  # lying flat
        self.world.move(body, (0, 0, 0), euler=(euler[0], euler[1], yaw))
        lo, hi = self.world.aabb(body)
        half, centre_off = (hi - lo)[:2] / 2, (hi + lo)[:2] / 2
        if hi[2] - lo[2] > surface.max_height:
            return self._drop(body)
        taken = self.placed.setdefault((surface.instance_id, round(surface.z, 4)), [])
        for _ in range(200):
            xy = self._candidate(surface, half, taken, touch)
            if xy is None:
                continue
            box = (xy - half, xy + half)
            if all(_apart(box, other, 0.0 if touch else 0.03) for other in taken + surface.keep_out):
                self.world.move(body, (xy[0] - centre_off[0], xy[1] - centre_off[1], surface.z - lo[2] + 0.001),
                                euler=(euler[0], euler[1], yaw))
                taken.append(box)
                return self._add(kind, [body], surface.instance_id)
        return self._drop(body)

    def _candidate(self, surface: _Surface, half: np.ndarray, taken, touch: bool) -> Optional[np.ndarray]:
        rng = self.rng
        if touch and taken:
            lo, hi = taken[int(rng.integers(len(taken)))]
            axis, sign = int(rng.integers(2)), float(rng.choice([-1.0, 1.0]))
            xy = (lo + hi) / 2 + rng.uniform(-0.3, 0.3) * (hi - lo) / 2
            gap = rng.uniform(0.0005, 0.004)
            xy[axis] = (hi[axis] + half[axis] + gap) if sign > 0 else (lo[axis] - half[axis] - gap)
        else:
            xy = rng.uniform(surface.lo + half, np.maximum(surface.lo + half, surface.hi - half))
        if np.any(xy - half < surface.lo) or np.any(xy + half > surface.hi):
            return None
        return xy

    def _drop(self, body: int) -> None:
        import pybullet as p

        p.removeBody(body, physicsClientId=self.world.client)
        return None

    def fill(self, surface: _Surface, count: int, pool: tuple, musts: list[tuple]) -> None:
        """`count` objects on `surface`: one from each of `musts`, the rest from `pool`; the second object
        touches the first."""
        rng = self.rng
        kinds = [m[int(rng.integers(len(m)))] for m in musts][:count]
        kinds += [pool[int(rng.integers(len(pool)))] for _ in range(count - len(kinds))]
        kinds = [kinds[i] for i in rng.permutation(len(kinds))]
        for k, kind in enumerate(kinds):
            touch = k == 1 or (k > 1 and rng.random() < 0.3)
            for attempt in range(3):  # a different position rule, then another object, when it does not fit
                if self.place(kind, surface, touch and attempt == 0) is not None:
                    break
                if attempt == 1:
                    kind = pool[int(rng.integers(len(pool)))]


def _apart(a, b, gap: float) -> bool:
    """True when the xy rectangles a and b ((lo 2, hi 2)) are at least `gap` apart along some axis."""
    return bool(np.any(a[0] >= b[1] + gap) or np.any(b[0] >= a[1] + gap))


# ----------------------------------------------------------------------------------------------------
# Camera


def intrinsics_for(spec: TabletopSpec) -> np.ndarray:
    return pinhole(spec.focal_scale * spec.width, spec.width, spec.height)


def camera_path(spec: TabletopSpec, centre: np.ndarray, radius: float, look_z: float,
                second_target: Optional[np.ndarray] = None) -> np.ndarray:
    """Fx4x4 optical camera-to-world poses on a seeded arc around `centre` (3)."""
    rng = np.random.default_rng(spec.seed + 7919)
    arc, start = math.radians(rng.uniform(200, 330)), rng.uniform(0, 2 * math.pi)
    height, phase = rng.uniform(1.25, 1.65), rng.uniform(0, 2 * math.pi, size=5)
    poses = np.zeros((spec.num_frames, 4, 4))
    for i in range(spec.num_frames):
        s = i / max(1, spec.num_frames - 1)
        angle = start + arc * s
        r = radius + 0.15 * math.sin(2 * math.pi * 1.5 * s + phase[0])
        eye = centre + np.array([r * math.cos(angle), r * math.sin(angle), 0.0])
        eye[2] = height + 0.12 * math.sin(2 * math.pi * 2 * s + phase[1])
        target = np.array([centre[0] + 0.2 * math.sin(2 * math.pi * s + phase[2]),
                           centre[1] + 0.2 * math.cos(2 * math.pi * s + phase[3]),
                           look_z + 0.1 * math.sin(2 * math.pi * 2.5 * s + phase[4])])
        if second_target is not None:  # swing between the table and the shelf
            w = 0.5 - 0.5 * math.cos(2 * math.pi * 1.5 * s)
            target = (1 - w) * target + w * second_target
        poses[i] = look_at(eye, target)
    return poses


# ----------------------------------------------------------------------------------------------------
# Scene


class TabletopFrames(LazyFrames):
    """Lazy sequence of rendered `Frame`s (each access renders with the live pybullet world)."""

    def __init__(self, world: BulletWorld, light: Light, body_instance: np.ndarray, poses: np.ndarray,
                 K: np.ndarray, spec: TabletopSpec):
        self._world, self._light, self._ids, self._poses, self._K, self._spec = (
            world, light, body_instance, poses, K, spec)

    def __len__(self) -> int:
        return len(self._poses)

    def _frame(self, index: int) -> Frame:
        rgb, depth, bodies = self._world.render(self._poses[index], self._K, self._spec.width, self._spec.height,
                                                self._light)
        ids = self._ids[np.clip(bodies, -1, len(self._ids) - 2)]  # -1 -> the last slot (0)
        return Frame(image=rgb, stamp=index / self._spec.fps, depth=depth, intrinsics=self._K.copy(),
                     pose_c2w=self._poses[index].copy(), instance_ids=ids.astype(np.int32), frame_index=index)


@dataclass
class TabletopScene(GeneratedScene):
    """A generated realistic scene (fields: GeneratedScene; `objects`: supports first (table, shelf), then
    objects; `vertex_labels` 0 = floor/walls) and its live pybullet world."""

    spec: TabletopSpec
    frames: TabletopFrames
    objects: list[SceneObject]
    world: BulletWorld = field(repr=False)


def _build(spec: TabletopSpec, world: BulletWorld) -> tuple[_Layout, np.ndarray]:
    """Lay the scene out; returns (layout, Fx4x4 camera poses)."""
    layout = _Layout(spec, world)
    rng = layout.rng
    radius = rng.uniform(1.8, 2.3) if spec.kind == "tabletop" else rng.uniform(1.9, 2.2)
    half = np.array([radius + rng.uniform(0.5, 1.0), radius + rng.uniform(0.5, 1.0)])
    if spec.kind == "room":
        half[1] = max(half[1], radius + 0.9)
    floor_tex, floor_tile = layout.room(half)
    table = layout.table(np.zeros(2))
    n_table = spec.table_objects if spec.table_objects is not None else int(rng.integers(4, 8))
    layout.fill(table, n_table, to.TABLE_POOL, [to.THIN, to.NEUTRAL, to.SAME])
    shelf_target = None
    if spec.kind == "room":
        boards = layout.shelf(half)
        for board in boards:
            layout.fill(board, int(rng.integers(2, 5)), to.SHELF_POOL, [("book",)])
        shelf_target = np.array([(boards[0].lo[0] + boards[0].hi[0]) / 2, boards[0].hi[1], 0.7])
    reach = radius - 0.45  # floor objects stay clear of the camera path
    floor = _Surface(np.array([-reach, -reach]), np.array([reach, reach]), 0.0, 0, floor_tex, floor_tile,
                     keep_out=[(table.lo - 0.08, table.hi + 0.08)])
    n_floor = spec.floor_objects if spec.floor_objects is not None else int(rng.integers(2, 5))
    layout.fill(floor, n_floor, to.FLOOR_POOL, [("carton", "teddy"), to.NEUTRAL])
    poses = camera_path(spec, np.zeros(3), radius, table.z - 0.25, shelf_target)
    return layout, poses


def _random_light(rng: np.random.Generator) -> Light:
    a = rng.uniform(0, 2 * math.pi)
    return Light(direction=(math.cos(a), math.sin(a), float(rng.uniform(1.2, 2.5))),
                 ambient=float(rng.uniform(0.5, 0.7)), diffuse=float(rng.uniform(0.3, 0.5)),
                 specular=float(rng.uniform(0.05, 0.3)), shadow=True)


def generate_tabletop(spec: Optional[TabletopSpec] = None) -> TabletopScene:
    """Build the realistic scene described by `spec` (deterministic in spec.seed). Frames render lazily;
    the vertex set renders every frame once."""
    spec = spec or TabletopSpec()
    spec.validate()
    world = BulletWorld()
    layout, poses = _build(spec, world)
    world.finish_building()
    slots = max(layout.body_instance, default=0) + 2
    body_instance = np.zeros(slots, np.int32)
    for body, inst in layout.body_instance.items():
        body_instance[body] = inst
    K = intrinsics_for(spec)
    light = _random_light(np.random.default_rng(spec.seed + 15485863))
    frames = TabletopFrames(world, light, body_instance, poses, K, spec)
    vertices, inst, colours = visible_vertex_set(frames, spec.object_voxel, spec.room_voxel)
    label_of = np.zeros(len(layout.objects) + 1, np.int64)
    for obj in layout.objects:
        label_of[obj.instance_id] = obj.label_id
    labels = np.where(inst > 0, label_of[inst] * 1000 + inst, 0)
    return TabletopScene(spec, frames, vertices, labels, colours, layout.objects, K, poses, world)


def spec_to_json(spec: TabletopSpec) -> str:
    return json.dumps(asdict(spec), indent=2)

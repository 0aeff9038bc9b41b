"""The household objects and supports of the pybullet scenes (data/tabletop.py).

Mesh objects come from the textured models pybullet_data ships (duck, teddy, mug, toy brick, jenga block,
soccer ball, textured cube, tray, domino, random shapes), scaled to 10-50 cm; procedural ones are boxes and
cylinders with generated textures (books, cardboard boxes, black/white/grey boxes and cans, and objects
wearing the very texture of the surface they stand on). Each builder adds one static body to a
`BulletWorld` at the origin in its resting orientation and returns its body id.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from moonseg3r_ros.data import textures as tx
from moonseg3r_ros.data.bullet_scene import BulletWorld

# label_id of the ScanNet-style ground truth (label_id * 1000 + instance_id); evaluation is class-agnostic.
LABELS = {"table": 1, "shelf": 2, "duck": 3, "teddy": 4, "mug": 5, "brick": 6, "jenga": 7, "ball": 8,
          "cube": 9, "tray": 10, "domino": 11, "shape": 12, "book": 13, "carton": 14, "box": 15, "can": 16,
          "same_box": 17, "same_can": 18}
NEUTRAL_RGBA = ((0.95, 0.95, 0.95, 1.0), (0.12, 0.12, 0.12, 1.0), (0.55, 0.55, 0.55, 1.0))


@dataclass
class BuildContext:
    """What a builder may use: the world, the scene's generator and the support's texture."""

    world: BulletWorld
    rng: np.random.Generator
    support_texture: int  # texture id of the surface the object will stand on
    support_tile: float


Builder = Callable[[BuildContext], int]


def _urdf(filename: str, scale: tuple[float, float], euler=(0.0, 0.0, 0.0), colours=None) -> Builder:
    def build(ctx: BuildContext) -> int:
        rgba = None
        if colours is not None:
            rgba = colours[int(ctx.rng.integers(len(colours)))]
        return ctx.world.add_urdf(filename, (0, 0, 0), euler, float(ctx.rng.uniform(*scale)), rgba=rgba)
    return build


def _box(size_ranges, texture: Callable[[np.random.Generator], np.ndarray], tile: float) -> Builder:
    def build(ctx: BuildContext) -> int:
        size = [ctx.rng.uniform(*r) for r in size_ranges]
        return ctx.world.add_box(size, (0, 0, 0), texture=ctx.world.texture(texture(ctx.rng)), tile=tile)
    return build


def _can(ctx: BuildContext) -> int:
    tex = ctx.world.texture(tx.plain(ctx.rng) if ctx.rng.random() < 0.7 else tx.fabric(ctx.rng))
    return ctx.world.add_cylinder(float(ctx.rng.uniform(0.05, 0.12)), float(ctx.rng.uniform(0.12, 0.35)),
                                  (0, 0, 0), texture=tex, tile=0.2)


def _same_box(ctx: BuildContext) -> int:
    """A box wearing the support's own texture: only geometry tells it apart."""
    size = [ctx.rng.uniform(0.12, 0.3), ctx.rng.uniform(0.12, 0.3), ctx.rng.uniform(0.08, 0.25)]
    return ctx.world.add_box(size, (0, 0, 0), texture=ctx.support_texture, tile=ctx.support_tile)


def _same_can(ctx: BuildContext) -> int:
    return ctx.world.add_cylinder(float(ctx.rng.uniform(0.05, 0.12)), float(ctx.rng.uniform(0.1, 0.3)),
                                  (0, 0, 0), texture=ctx.support_texture, tile=ctx.support_tile)


def _shape(ctx: BuildContext) -> int:
    index = int(ctx.rng.integers(0, 100))
    name = f"random_urdfs/{index:03d}/{index:03d}.urdf"
    return ctx.world.add_urdf(name, (0, 0, 0), scale=float(ctx.rng.uniform(2.5, 3.5)),
                              rgba=(*tx.random_colour(ctx.rng), 1.0))


def _book(ctx: BuildContext) -> int:
    colour = tx.NEUTRALS[int(ctx.rng.integers(len(tx.NEUTRALS)))] if ctx.rng.random() < 0.4 else None
    size = [ctx.rng.uniform(0.16, 0.3), ctx.rng.uniform(0.12, 0.22), ctx.rng.uniform(0.02, 0.05)]
    return ctx.world.add_box(size, (0, 0, 0), texture=ctx.world.texture(tx.cover(ctx.rng, colour)), tile=0.3)


MUG_RGBA = NEUTRAL_RGBA + ((0.8, 0.15, 0.12, 1.0), (0.15, 0.3, 0.7, 1.0))
BUILDERS: dict[str, Builder] = {
    "duck": _urdf("duck_vhacd.urdf", (2.5, 4.0)),
    "teddy": _urdf("teddy_vhacd.urdf", (3.0, 5.0)),
    "mug": _urdf("objects/mug.urdf", (1.5, 2.3), colours=MUG_RGBA),
    "brick": _urdf("lego/lego.urdf", (5.0, 8.0), colours=((0.8, 0.1, 0.1, 1), (0.1, 0.35, 0.8, 1),
                                                         (0.95, 0.8, 0.1, 1), (0.9, 0.9, 0.9, 1))),
    "jenga": _urdf("jenga/jenga.urdf", (1.6, 2.6)),
    "ball": _urdf("soccerball.urdf", (0.16, 0.26)),
    "cube": _urdf("cube.urdf", (0.12, 0.25)),
    "tray": _urdf("tray/traybox.urdf", (0.45, 0.7)),
    "domino": _urdf("domino/domino.urdf", (5.0, 7.0), euler=(0.0, math.pi / 2, 0.0)),
    "shape": _shape,
    "book": _book,
    "carton": _box(((0.22, 0.45), (0.2, 0.4), (0.15, 0.4)), tx.cardboard, tx.TEXTURE_TILE_M["cardboard"]),
    "box": _box(((0.1, 0.3), (0.1, 0.3), (0.08, 0.3)), tx.plain, tx.TEXTURE_TILE_M["plain"]),
    "can": _can,
    "same_box": _same_box,
    "same_can": _same_can,
}
# What goes where; the first entries of each list are the hard cases a scene always gets one of.
THIN = ("tray", "book", "domino")
NEUTRAL = ("ball", "box", "can", "mug")
SAME = ("same_box", "same_can")
TABLE_POOL = ("duck", "mug", "brick", "jenga", "ball", "cube", "tray", "book", "domino", "shape", "box", "can")
FLOOR_POOL = ("teddy", "carton", "box", "can", "ball", "same_box", "tray", "duck")
SHELF_POOL = ("book", "book", "mug", "brick", "cube", "box", "can", "duck", "jenga")


def table_support(ctx: BuildContext, scale: float, texture: Optional[int]) -> int:
    """pybullet_data's table (1.5 x 1.0 m top at 0.625 m, times `scale`), optionally retextured."""
    return ctx.world.add_urdf("table/table.urdf", (0, 0, 0), scale=scale, texture=texture)


def shelf_support(ctx: BuildContext, position: np.ndarray, width: float, depth: float, height: float,
                  boards: int, texture: int) -> tuple[list[int], list[float]]:
    """A bookshelf of boxes (sides, back, `boards` boards) standing at `position` (3, floor centre, front
    facing -y); returns (its body ids, the board top heights)."""
    world, t = ctx.world, 0.02
    x, y, _ = position
    bodies = [world.add_box((t, depth, height), (x + s * (width - t) / 2, y, height / 2), texture=texture,
                            tile=0.6) for s in (-1, 1)]
    bodies.append(world.add_box((width, t, height), (x, y + (depth - t) / 2, height / 2), texture=texture,
                                tile=0.6))
    tops = []
    for k in range(boards):
        z = 0.05 + k * (height - 0.1) / max(1, boards - 1)
        bodies.append(world.add_box((width - 2 * t, depth - t, t), (x, y - t / 2, z), texture=texture, tile=0.6))
        tops.append(z + t / 2)
    return bodies, tops

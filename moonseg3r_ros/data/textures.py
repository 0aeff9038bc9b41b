"""Procedural surface textures (numpy RGB images) for the pybullet scenes (data/tabletop.py).

Every texture is an SxSx3 uint8 image drawn from an `np.random.Generator`, so a scene's look is fixed by
its seed. The images tile (the renderer repeats UVs outside [0, 1]); `TEXTURE_TILE_M` says how many metres
one repeat covers when data/bullet_scene.py maps it onto a box.
"""
from __future__ import annotations

import colorsys

import numpy as np

TEXTURE_SIZE = 256
TEXTURE_TILE_M = {"wood": 0.6, "planks": 1.2, "checker": 0.8, "tiles": 0.9, "paint": 1.0, "wallpaper": 0.6,
                  "cardboard": 0.4, "fabric": 0.2, "plain": 0.3, "cover": 1.0}
NEUTRALS = ((0.08, 0.08, 0.08), (0.93, 0.93, 0.92), (0.5, 0.5, 0.5), (0.72, 0.72, 0.72), (0.25, 0.25, 0.26))


def _to_u8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """SxS float in [0, 1]: bilinear value noise on a cells x cells lattice that wraps around."""
    lattice = rng.random((cells, cells))
    t = np.arange(size) * cells / size
    i0 = np.floor(t).astype(int)
    f = t - i0
    i1 = (i0 + 1) % cells
    rows = lattice[i0] * (1 - f)[:, None] + lattice[i1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :]


def random_colour(rng: np.random.Generator, saturation=(0.35, 0.8), value=(0.45, 0.9)) -> np.ndarray:
    """3 floats in [0, 1]: a random hue with saturation/value in the given ranges."""
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(*value)))


def wood(rng: np.random.Generator, base=None, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Grain along u: stretched noise bands over a brown base."""
    base = np.asarray(base if base is not None else colorsys.hsv_to_rgb(rng.uniform(0.05, 0.1),
                                                                       rng.uniform(0.4, 0.7),
                                                                       rng.uniform(0.45, 0.8)))
    v = np.arange(size)[:, None] / size
    warp = _smooth_noise(rng, size, 4)
    grain = 0.5 + 0.5 * np.sin(2 * np.pi * (v * rng.integers(6, 14) + 1.5 * warp))
    fine = _smooth_noise(rng, size, 32)
    shade = 0.82 + 0.12 * grain + 0.08 * fine
    return _to_u8(base[None, None, :] * shade[..., None])


def planks(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Wooden floor: 4 planks per tile, each with its own tone, dark seams between them."""
    img = wood(rng, size=size).astype(np.float64) / 255.0
    rows = 4
    plank = np.arange(size) * rows // size
    tone = rng.uniform(0.85, 1.12, size=rows)
    img *= tone[plank][:, None, None]
    seam = (np.arange(size) % (size // rows)) < 2
    img[seam] *= 0.45
    shift = rng.integers(0, size, size=rows)
    for r in range(rows):  # butt joints at a different place in each plank
        img[plank == r, shift[r]:shift[r] + 2] *= 0.5
    return _to_u8(img)


def checker(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A 4x4 checkerboard of two colours (often black and white), faint noise on top."""
    if rng.random() < 0.5:
        a, b = np.array([0.92, 0.92, 0.9]), np.array([0.1, 0.1, 0.1])
    else:
        a, b = random_colour(rng, (0.0, 0.3), (0.75, 0.95)), random_colour(rng, (0.2, 0.6), (0.25, 0.55))
    cells = (np.arange(size) * 4 // size)
    board = (cells[:, None] + cells[None, :]) % 2 == 0
    noise = 0.95 + 0.05 * _smooth_noise(rng, size, 64)
    return _to_u8(np.where(board[..., None], a, b) * noise[..., None])


def tiles(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Square tiles (3x3 per repeat) of slightly varying tone with grey grout lines."""
    base = random_colour(rng, (0.0, 0.25), (0.6, 0.9))
    cells = np.arange(size) * 3 // size
    tone = rng.uniform(0.9, 1.08, size=(3, 3))[cells[:, None], cells[None, :]]
    img = base * tone[..., None] * (0.96 + 0.04 * _smooth_noise(rng, size, 48))[..., None]
    grout = (np.arange(size) % (size // 3)) < 3
    img[grout, :] = img[:, grout] = np.array([0.45, 0.44, 0.42])
    return _to_u8(img)


def paint(rng: np.random.Generator, colour=None, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A painted wall: one light colour with very low-contrast blotches."""
    colour = np.asarray(colour if colour is not None else random_colour(rng, (0.05, 0.3), (0.7, 0.92)))
    return _to_u8(colour * (0.95 + 0.05 * _smooth_noise(rng, size, 8))[..., None])


def wallpaper(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Vertical stripes of two close colours."""
    a = random_colour(rng, (0.05, 0.35), (0.7, 0.9))
    b = a * rng.uniform(0.8, 0.92)
    stripes = (np.arange(size) * 8 // size) % 2 == 0
    img = np.where(stripes[None, :, None], a, b) * np.ones((size, 1, 1))
    return _to_u8(img * (0.97 + 0.03 * _smooth_noise(rng, size, 16))[..., None])


def cardboard(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Brown cardboard with faint corrugation and a lighter tape band."""
    base = np.array(colorsys.hsv_to_rgb(rng.uniform(0.07, 0.1), rng.uniform(0.4, 0.6), rng.uniform(0.55, 0.75)))
    u = np.arange(size)[None, :] / size
    img = base * (0.94 + 0.03 * np.sin(2 * np.pi * 24 * u) + 0.05 * _smooth_noise(rng, size, 16))[..., None]
    band = np.abs(np.arange(size) - size // 2) < size // 12
    img[band] = img[band] * 0.8 + 0.2 * np.array([0.85, 0.8, 0.7])
    return _to_u8(img)


def fabric(rng: np.random.Generator, colour=None, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Fine woven noise over one colour."""
    colour = np.asarray(colour if colour is not None else random_colour(rng))
    weave = 0.5 + 0.5 * np.sin(np.arange(size) * np.pi / 2)
    img = colour * (0.88 + 0.06 * (weave[:, None] + weave[None, :]) / 2
                    + 0.06 * _smooth_noise(rng, size, 64))[..., None]
    return _to_u8(img)


def plain(rng: np.random.Generator, colour=None, size: int = TEXTURE_SIZE) -> np.ndarray:
    """One colour with slight noise (neutral objects: black, white, grey)."""
    colour = np.asarray(colour if colour is not None else NEUTRALS[int(rng.integers(len(NEUTRALS)))])
    return _to_u8(colour * (0.96 + 0.06 * _smooth_noise(rng, size, 32))[..., None])


def cover(rng: np.random.Generator, colour=None, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A book cover: one colour with a band and a title block of another."""
    colour = np.asarray(colour if colour is not None else random_colour(rng))
    img = np.ones((size, size, 3)) * colour
    band = slice(int(size * rng.uniform(0.1, 0.3)), int(size * rng.uniform(0.35, 0.5)))
    img[band] = random_colour(rng, (0.0, 0.5), (0.3, 0.95))
    img[int(size * 0.6):int(size * 0.7), size // 4:3 * size // 4] = 0.9 * np.ones(3)
    return _to_u8(img * (0.96 + 0.04 * _smooth_noise(rng, size, 32))[..., None])


FLOORS = {"planks": planks, "checker": checker, "tiles": tiles}
WALLS = {"paint": paint, "wallpaper": wallpaper}

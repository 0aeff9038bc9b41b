"""A thin pybullet world for rendering scenes: bodies from meshes/URDFs, and a pinhole camera.

pybullet is imported here only (lazily, when a world is built), so the rest of the package does not need
it. Rendering uses pybullet's CPU TinyRenderer in a DIRECT (headless) client: RGB, the OpenGL depth buffer
and a per-pixel body-id mask in one call.

Camera conventions (the package's, see core/camera.py): `pose_c2w` is camera-to-world in the optical frame
(x right, y down, z forward); K has fx, fy and the principal point in pixel-centre coordinates. OpenGL's
camera looks down -z with y up, so its camera-to-world is pose_c2w @ diag(1, -1, -1, 1). The projection
matrix is built from K for the TinyRenderer's pixel grid, measured (data/scene_truth.camera_check: floor
points on z = 0 to 0.01 mm, reprojection between frames to 0.05 mm): pixel centres lie at
u = (x_ndc + 1) W / 2 and v = (1 - y_ndc) H / 2 - 1, not at the half-pixel offsets of OpenGL's rule. The
non-linear depth buffer d in [0, 1] converts to z-depth as z = f n / (f - (f - n) d).
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

OPENGL_FROM_OPTICAL = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass
class Light:
    """TinyRenderer lighting of one scene (direction points towards the light)."""

    direction: tuple[float, float, float] = (0.4, 0.3, 1.0)
    ambient: float = 0.6
    diffuse: float = 0.4
    specular: float = 0.15
    shadow: bool = True


def view_matrix(pose_c2w: np.ndarray) -> list[float]:
    """pybullet view matrix (16 floats, column-major world-to-OpenGL-camera) of an optical c2w pose."""
    world_to_gl = np.linalg.inv(np.asarray(pose_c2w, np.float64) @ OPENGL_FROM_OPTICAL)
    return [float(x) for x in world_to_gl.T.reshape(-1)]


def projection_matrix(K: np.ndarray, width: int, height: int, near: float, far: float) -> list[float]:
    """pybullet projection matrix (16 floats, column-major) reproducing the pinhole K on a WxH image."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    m = np.zeros((4, 4))
    m[0, 0] = 2 * fx / width
    m[1, 1] = 2 * fy / height
    m[0, 2] = 1 - 2 * cx / width  # TinyRenderer: u = (x_ndc + 1) W / 2
    m[1, 2] = 2 * (cy + 1) / height - 1  # TinyRenderer: v = (1 - y_ndc) H / 2 - 1 (rows grow downwards)
    m[2, 2] = -(far + near) / (far - near)
    m[2, 3] = -2 * far * near / (far - near)
    m[3, 2] = -1.0
    return [float(x) for x in m.T.reshape(-1)]


def linear_depth(buffer: np.ndarray, near: float, far: float) -> np.ndarray:
    """HxW OpenGL depth buffer in [0, 1] -> HxW float32 z-depth in metres; the far plane (no hit) -> 0."""
    buffer = np.asarray(buffer, np.float64)
    z = far * near / (far - (far - near) * buffer)
    return np.where(buffer < 1.0 - 1e-7, z, 0.0).astype(np.float32)


def _write_obj(path: Path, vertices: np.ndarray, uvs: np.ndarray, normals: np.ndarray, faces: np.ndarray) -> None:
    """Wavefront OBJ with one uv and normal per vertex; faces Fx3 (0-based, counter-clockwise outside)."""
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in uvs]
    lines += [f"vn {x:.6f} {y:.6f} {z:.6f}" for x, y, z in normals]
    lines += ["f " + " ".join(f"{i + 1}/{i + 1}/{i + 1}" for i in face) for face in faces]
    path.write_text("\n".join(lines) + "\n")


def box_mesh(size: np.ndarray, tile: float) -> tuple[np.ndarray, ...]:
    """Box of `size` (3, metres) centred at the origin: (Vx3, Vx2 uv in tile repeats, Vx3 normals, Fx3)."""
    half = np.asarray(size, np.float64) / 2
    verts, uvs, normals, faces = [], [], [], []
    for axis in range(3):
        a, b = (axis + 1) % 3, (axis + 2) % 3
        for sign in (1.0, -1.0):
            n = np.zeros(3)
            n[axis] = sign
            base = len(verts)
            for s, t in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                p = n * half
                p[a], p[b] = s * half[a], t * half[b]
                verts.append(p)
                uvs.append((p[a] / tile, p[b] / tile))
                normals.append(n)
            quad = [(base, base + 1, base + 2), (base, base + 2, base + 3)]
            faces += quad if sign > 0 else [(i, k, j) for i, j, k in quad]
    return np.array(verts), np.array(uvs), np.array(normals), np.array(faces)


def cylinder_mesh(radius: float, height: float, tile: float, segments: int = 32) -> tuple[np.ndarray, ...]:
    """Upright cylinder centred at the origin: (Vx3, Vx2 uv, Vx3 normals, Fx3)."""
    angles = np.linspace(0, 2 * math.pi, segments + 1)
    verts, uvs, normals, faces = [], [], [], []
    for k, a in enumerate(angles):  # side: a strip of quads, seam duplicated for the uv wrap
        c, s = math.cos(a), math.sin(a)
        for z in (-height / 2, height / 2):
            verts.append((radius * c, radius * s, z))
            uvs.append((a * radius / tile, z / tile))
            normals.append((c, s, 0.0))
        if k < segments:
            i = 2 * k
            faces += [(i, i + 2, i + 3), (i, i + 3, i + 1)]
    for sign in (-1.0, 1.0):  # caps: a fan around a centre vertex
        centre = len(verts)
        verts.append((0.0, 0.0, sign * height / 2))
        uvs.append((0.0, 0.0))
        normals.append((0.0, 0.0, sign))
        for a in angles[:-1]:
            verts.append((radius * math.cos(a), radius * math.sin(a), sign * height / 2))
            uvs.append((radius * math.cos(a) / tile, radius * math.sin(a) / tile))
            normals.append((0.0, 0.0, sign))
        for k in range(segments):
            i, j = centre + 1 + k, centre + 1 + (k + 1) % segments
            faces.append((centre, i, j) if sign > 0 else (centre, j, i))
    return np.array(verts), np.array(uvs), np.array(normals), np.array(faces)


class BulletWorld:
    """A headless pybullet client holding static bodies; renders RGB, z-depth and body ids."""

    def __init__(self, near: float = 0.05, far: float = 15.0):
        import pybullet as p
        import pybullet_data

        self._p = p
        self.near, self.far = near, far
        self.client = p.connect(p.DIRECT)
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=self.client)
        self._tmp: Optional[tempfile.TemporaryDirectory] = tempfile.TemporaryDirectory(prefix="moonseg3r_bullet_")
        self._count = 0

    # -- building ------------------------------------------------------------------------------------

    def _file(self, suffix: str) -> Path:
        if self._tmp is None:
            raise RuntimeError("BulletWorld.finish_building() was called; no more bodies can be added")
        self._count += 1
        return Path(self._tmp.name) / f"{self._count}{suffix}"

    def texture(self, image: np.ndarray) -> int:
        """Load an SxSx3 uint8 RGB image as a texture; returns its id."""
        import cv2

        path = self._file(".png")
        cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1]))
        return self._p.loadTexture(str(path), physicsClientId=self.client)

    def _mesh_body(self, mesh: tuple[np.ndarray, ...], collision: int, position, yaw: float,
                   texture: Optional[int], rgba=None) -> int:
        p = self._p
        path = self._file(".obj")
        _write_obj(path, *mesh)
        visual = p.createVisualShape(p.GEOM_MESH, fileName=str(path), physicsClientId=self.client)
        body = p.createMultiBody(0, collision, visual, list(map(float, position)),
                                 p.getQuaternionFromEuler((0.0, 0.0, float(yaw))), physicsClientId=self.client)
        self._style(body, texture, rgba)
        return body

    def add_box(self, size, position, yaw: float = 0.0, texture: Optional[int] = None, tile: float = 0.5,
                rgba=None) -> int:
        """A static box of `size` (3 m) centred at `position`, rotated by `yaw` about z; returns its id."""
        p = self._p
        collision = p.createCollisionShape(p.GEOM_BOX, halfExtents=[float(s) / 2 for s in size],
                                           physicsClientId=self.client)
        return self._mesh_body(box_mesh(np.asarray(size), tile), collision, position, yaw, texture, rgba)

    def add_cylinder(self, radius: float, height: float, position, texture: Optional[int] = None,
                     tile: float = 0.3, rgba=None) -> int:
        p = self._p
        collision = p.createCollisionShape(p.GEOM_CYLINDER, radius=radius, height=height,
                                           physicsClientId=self.client)
        return self._mesh_body(cylinder_mesh(radius, height, tile), collision, position, 0.0, texture, rgba)

    def add_urdf(self, filename: str, position, euler=(0.0, 0.0, 0.0), scale: float = 1.0,
                 texture: Optional[int] = None, rgba=None) -> int:
        """A static body from a pybullet_data URDF, scaled by `scale`; returns its id."""
        p = self._p
        body = p.loadURDF(filename, list(map(float, position)), p.getQuaternionFromEuler(euler),
                          useFixedBase=True, globalScaling=float(scale), physicsClientId=self.client)
        self._style(body, texture, rgba)
        return body

    def _style(self, body: int, texture: Optional[int], rgba) -> None:
        kwargs = {}
        if texture is not None:
            kwargs["textureUniqueId"] = texture
        if rgba is not None:
            kwargs["rgbaColor"] = [float(c) for c in rgba]
        if kwargs:
            for link in range(-1, self._p.getNumJoints(body, physicsClientId=self.client)):
                self._p.changeVisualShape(body, link, physicsClientId=self.client, **kwargs)

    def move(self, body: int, position, yaw: Optional[float] = None, euler=None) -> None:
        p = self._p
        if euler is None:
            euler = (0.0, 0.0, float(yaw or 0.0))
        p.resetBasePositionAndOrientation(body, list(map(float, position)), p.getQuaternionFromEuler(euler),
                                          physicsClientId=self.client)

    def aabb(self, body: int) -> tuple[np.ndarray, np.ndarray]:
        """(3 min, 3 max) world axis-aligned bounds of the body's collision shapes."""
        lo, hi = self._p.getAABB(body, physicsClientId=self.client)
        return np.array(lo), np.array(hi)

    def distance(self, a: int, b: int, within: float = 0.05) -> float:
        """Closest distance (m) between two bodies' collision shapes, inf when farther than `within`."""
        pts = self._p.getClosestPoints(a, b, within, physicsClientId=self.client)
        return min((pt[8] for pt in pts), default=math.inf)

    def finish_building(self) -> None:
        """Delete the temporary OBJ/PNG files (everything is loaded by now)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- rendering -----------------------------------------------------------------------------------

    def render(self, pose_c2w: np.ndarray, K: np.ndarray, width: int, height: int, light: Light
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (HxWx3 uint8 RGB, HxW float32 z-depth in metres (0 = nothing), HxW int32 body id (-1 = none))."""
        p = self._p
        _, _, rgba, depth, seg = p.getCameraImage(
            width, height, view_matrix(pose_c2w), projection_matrix(K, width, height, self.near, self.far),
            lightDirection=list(light.direction), lightAmbientCoeff=light.ambient,
            lightDiffuseCoeff=light.diffuse, lightSpecularCoeff=light.specular, shadow=int(light.shadow),
            renderer=p.ER_TINY_RENDERER, physicsClientId=self.client)
        rgb = np.asarray(rgba, np.uint8).reshape(height, width, 4)[..., :3].copy()
        z = linear_depth(np.asarray(depth, np.float32).reshape(height, width), self.near, self.far)
        ids = np.asarray(seg, np.int32).reshape(height, width)
        return rgb, z, np.where(z > 0, ids, -1)

    def close(self) -> None:
        self.finish_building()
        if self.client is not None:
            try:
                self._p.disconnect(physicsClientId=self.client)
            except Exception:  # already disconnected (interpreter shutdown)
                pass
            self.client = None

    def __del__(self):
        self.close()

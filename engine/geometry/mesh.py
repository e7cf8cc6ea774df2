"""Meshes: marching cubes on decoded fields, vertex colours, and GLB/PLY/OBJ files via trimesh.

A :class:`Mesh` lives in the engine's world frame (Z up, see ``engine.data.procedural``) with
sRGB vertex colours in [0, 1]. Files follow their formats' conventions instead:

* GLB: Y up as glTF requires (converted on write and read), ``COLOR_0`` holds *linear* RGBA
  as glTF requires (converted from/to sRGB on write/read). Blender's glTF importer therefore
  shows the object upright with the intended colours.
* OBJ: Y up (the convention Blender's OBJ importer assumes), colours as sRGB ``v x y z r g b``.
* PLY: Z up (what Blender's PLY importer assumes), sRGB uchar colours.

Files are written atomically: a temporary file in the target folder, then ``os.replace``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..fileio import atomic_write, write_bytes

# Z-up (engine) -> Y-up (glTF/OBJ): rotate -90 degrees about X, i.e. (x, y, z) -> (x, z, -y).
_Z_TO_Y_UP = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=np.float64)
_Y_UP_FORMATS = {".glb", ".obj"}


@dataclass
class Mesh:
    """A triangle mesh: vertices (N, 3) float32 world units, faces (F, 3) int64, colours (N, 3) sRGB [0, 1]."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int64)
        self.colors = np.ascontiguousarray(np.clip(self.colors, 0.0, 1.0), dtype=np.float32)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"vertices must be (N, 3), got {self.vertices.shape}")
        if self.colors.shape != self.vertices.shape:
            raise ValueError(f"colors must match vertices {self.vertices.shape}, got {self.colors.shape}")
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= len(self.vertices)):
            raise ValueError("faces index vertices out of range")

    @property
    def is_empty(self) -> bool:
        return len(self.faces) == 0

    def to_trimesh(self):
        import trimesh

        rgba = np.concatenate([self.colors, np.ones((len(self.colors), 1), np.float32)], 1)
        return trimesh.Trimesh(self.vertices, self.faces, vertex_colors=(rgba * 255).round().astype(np.uint8), process=False)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def extract_mesh(volume: torch.Tensor | np.ndarray, level: float = 0.0) -> Mesh:
    """Marching cubes on a field (4, z, y, x): channel 0 the signed field, 1:4 sRGB colour.

    The grid spans [-1, 1]^3 with corners on the bounds (``align_corners`` layout); an object
    touching the bounds is closed there, so meshes are watertight. Vertex colours are trilinearly
    interpolated from the colour channels. A field with nothing inside gives an empty mesh rather
    than an error, so a batch never fails because one sample collapsed.
    """
    from skimage.measure import marching_cubes

    vol = volume.detach().cpu().float().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume, np.float32)
    if vol.ndim != 4 or vol.shape[0] != 4:
        raise ValueError(f"expected a (4, D, H, W) field, got {vol.shape}")
    res = np.array(vol.shape[1:], dtype=np.float64)
    if not (vol[0].min() < level):
        return Mesh(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)))
    # A one-voxel shell of "outside" closes surfaces that the grid's bounds would cut open.
    sdf = np.pad(vol[0], 1, constant_values=max(float(vol[0].max()), level + 1.0))
    padded_colours = np.pad(vol[1:4], ((0, 0), (1, 1), (1, 1), (1, 1)), mode="edge")
    spacing = tuple(2.0 / (res - 1))
    verts_zyx, faces, _, _ = marching_cubes(sdf, level=level, spacing=spacing)
    idx = verts_zyx / np.array(spacing)  # fractional indices into the padded grid (z, y, x)
    colors = np.stack([_trilinear(padded_colours[c], idx) for c in range(3)], -1)
    vertices = verts_zyx[:, ::-1] - 1.0 - np.array(spacing)[::-1]  # (x, y, z), undo the padding
    # skimage orients faces for a field that is positive inside; ours is negative inside.
    return Mesh(vertices, faces[:, ::-1], colors)


def _trilinear(grid: np.ndarray, idx: np.ndarray) -> np.ndarray:
    hi = np.array(grid.shape) - 1
    i0 = np.clip(np.floor(idx).astype(np.int64), 0, hi - 1)
    f = np.clip(idx - i0, 0.0, 1.0)
    out = np.zeros(len(idx))
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                w = (f[:, 0] if dz else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1]) * (f[:, 2] if dx else 1 - f[:, 2])
                out += w * grid[i0[:, 0] + dz, i0[:, 1] + dy, i0[:, 2] + dx]
    return out


def save_mesh(mesh: Mesh, path: str | os.PathLike) -> Path:
    """Write ``mesh`` as .glb, .ply or .obj (chosen by suffix), atomically. Returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".glb", ".ply", ".obj"):
        raise ValueError(f"unsupported mesh format {suffix!r}; use .glb, .ply or .obj")
    tm = mesh.to_trimesh()
    if suffix in _Y_UP_FORMATS:
        tm.vertices = mesh.vertices.astype(np.float64) @ _Z_TO_Y_UP.T
    if suffix == ".glb":
        linear = srgb_to_linear(mesh.colors)
        rgba = np.concatenate([linear, np.ones((len(linear), 1))], 1)
        tm.visual.vertex_colors = (rgba * 255).round().astype(np.uint8)
        data = tm.export(file_type="glb")
    elif suffix == ".obj":
        data = tm.export(file_type="obj", include_color=True, include_normals=False, include_texture=False).encode()
    else:
        data = tm.export(file_type="ply", encoding="binary")
    write_bytes(path, data)
    return path


def load_mesh(path: str | os.PathLike) -> Mesh:
    """Read a file written by :func:`save_mesh` (or any single-mesh file) back into the engine frame."""
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    loaded = trimesh.load(path, process=False, force="mesh")
    vertices = np.asarray(loaded.vertices, dtype=np.float64)
    if suffix in _Y_UP_FORMATS:
        vertices = vertices @ _Z_TO_Y_UP  # inverse of an orthogonal matrix is its transpose
    colors = np.asarray(loaded.visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
    if suffix == ".glb":
        colors = linear_to_srgb(colors)
    return Mesh(vertices, np.asarray(loaded.faces), colors)


def save_npz(mesh: Mesh, path: str | os.PathLike) -> Path:
    """The mesh for Blender, written atomically: vertices float32 (N, 3) Z-up world units, faces
    int32 (M, 3), colors float32 (N, 4) *linear* RGBA (alpha 1), what a FLOAT_COLOR attribute's
    ``color`` takes, and ``color_space = "linear"``."""
    linear = srgb_to_linear(mesh.colors).astype(np.float32).reshape(-1, 3)
    rgba = np.concatenate([linear, np.ones((len(linear), 1), np.float32)], 1)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, vertices=mesh.vertices.astype(np.float32).reshape(-1, 3),
                     faces=mesh.faces.astype(np.int32).reshape(-1, 3), colors=rgba, color_space=np.array("linear"))

    return atomic_write(path, write)

"""Meshes: marching cubes on decoded fields, vertex colours, and GLB/PLY/OBJ files via trimesh.

A :class:`Mesh` lives in the engine's world frame (Z up, see ``engine.models.protocol``) with
sRGB vertex colours in [0, 1]. Files follow their formats' conventions instead:

* GLB: Y up as glTF requires (converted on write and read), ``COLOR_0`` holds *linear* RGB
  as glTF requires (converted from/to sRGB on write/read), as 32-bit floats so dark tones do not
  band; per-vertex ``NORMAL``s (smooth shading); no material, so the primitive gets glTF's default
  material, which the vertex colours tint; node and mesh named after the asset. Blender's glTF
  importer therefore shows the object upright, smooth and with the intended colours (it gives a
  material-less primitive with ``COLOR_0`` a Principled BSDF, metallic 0, fed by the colours), and
  ``trimesh.load`` reads the colours as ``visual.vertex_colors`` (trimesh 5 files ``COLOR_0`` of a
  primitive *with* a material as a texture attribute and shows it white, and wraps 16-bit integer
  colours modulo 256; float colours it rounds to its own 8-bit store, still linear).
* OBJ: Y up (the convention Blender's OBJ importer assumes), colours as sRGB ``v x y z r g b``.
* PLY: Z up (what Blender's PLY importer assumes), sRGB uchar colours.

Files are written atomically: a temporary file in the target folder, then ``os.replace``.
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..fileio import atomic_write, write_bytes
from ..naming import slug

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


_GL_FLOAT = 5126  # glTF 2.0 accessor componentType FLOAT
_DEFAULT_NAME = "mesh"
_MAX_NAME = 63  # Blender 4.2's longest ID name (bytes); a longer one would be cut on import


def asset_name(prompt: str, seed: int) -> str:
    """The name of a generated asset's node and mesh: ``"a red cube"``, 7 -> ``"red_cube_seed7"``."""
    words = re.sub(r"[^a-z0-9]+", " ", str(prompt).lower()).split()
    if len(words) > 1 and words[0] in ("a", "an", "the"):
        words = words[1:]
    suffix = f"_seed{int(seed)}"  # kept whole: a long prompt is shortened instead (engine.naming.slug)
    return slug(" ".join(words), fallback=_DEFAULT_NAME, max_len=_MAX_NAME - len(suffix)) + suffix


def _safe_name(name: str | None) -> str:
    """``name`` as a glTF/Blender object name: ASCII letters, digits, ``_ . -``; never empty."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", name or "").strip("_.")[:_MAX_NAME]
    return cleaned or _DEFAULT_NAME


def _unit_vertex_normals(tm) -> np.ndarray:
    """trimesh's (angle-weighted) vertex normals, (N, 3) float64, every row of length 1.

    A vertex used only by zero-area triangles (marching cubes makes a few), or by none, has no
    normal and trimesh gives it (0, 0, 0); glTF requires NORMAL to be unit length, so it gets +Y
    (glTF up): its triangles cover no area, so no pixel is shaded with it.
    """
    normals = np.array(tm.vertex_normals, dtype=np.float64).reshape(-1, 3)
    length = np.linalg.norm(normals, axis=1)
    bad = ~(np.isfinite(length) & (length > 1e-12))
    normals[~bad] /= length[~bad, None]
    normals[bad] = (0.0, 1.0, 0.0)
    return normals


def _glb_bytes(mesh: Mesh, name: str) -> bytes:
    """The GLB of ``mesh``: trimesh's exporter, with float linear COLOR_0 and NORMAL, no material.

    trimesh writes the container (JSON and BIN chunks, 4-byte aligned buffer views, accessor
    min/max) but only ever stores COLOR_0 as 8-bit, which leaves three red levels in a black
    sphere (linear light crowds dark sRGB tones into the lowest few of 256 codes). Its
    ``buffer_postprocessor`` hook runs before the buffer views are laid out, so the float colours
    are added there as one more buffer item and accessor, and trimesh lays them out like its own.
    Floats, not 16-bit normalised integers: both keep the dark levels, but trimesh's reader casts
    integer colours straight to uint8 (65535 becomes 255, 256 becomes 0) and scales float ones.
    """
    import trimesh

    vertices = mesh.vertices.astype(np.float64) @ _Z_TO_Y_UP.T
    # A plain visual: trimesh then writes no material (see the module docstring for why none).
    tm = trimesh.Trimesh(vertices, mesh.faces, process=False)
    if not mesh.is_empty:
        tm.vertex_normals = _unit_vertex_normals(tm)
    linear = np.clip(srgb_to_linear(mesh.colors), 0.0, 1.0)
    colour_f32 = np.ascontiguousarray(linear, dtype="<f4").reshape(-1, 3)  # 12 bytes a vertex: 4-aligned

    def add_colours(buffer_items, tree) -> None:
        primitives = [p for m in tree.get("meshes", []) for p in m.get("primitives", [])]
        if not primitives:  # an empty mesh: trimesh wrote no mesh to colour
            return
        if len(primitives) != 1 or "COLOR_0" in primitives[0]["attributes"] or "material" in primitives[0]:
            raise RuntimeError(f"unexpected glTF layout from trimesh {trimesh.__version__}: {primitives}")
        view = len(buffer_items)
        buffer_items[("nabla_r2d3", "COLOR_0")] = colour_f32.tobytes()
        accessor = len(tree["accessors"])
        tree["accessors"][("nabla_r2d3", "COLOR_0")] = {
            "bufferView": view, "byteOffset": 0, "componentType": _GL_FLOAT, "type": "VEC3",
            "count": len(colour_f32), "min": colour_f32.min(0).tolist(), "max": colour_f32.max(0).tolist(),
        }
        primitives[0]["attributes"]["COLOR_0"] = accessor

    scene = trimesh.Scene()
    scene.add_geometry(tm, geom_name=name, node_name=name)
    data = scene.export(file_type="glb", include_normals=not mesh.is_empty, buffer_postprocessor=add_colours)
    # An empty mesh has no binary data, and the spec says the BIN chunk SHOULD then be omitted;
    # trimesh writes a zero-length one. Drop it and shorten the header's total length to match.
    if data[-8:] == struct.pack("<I4s", 0, b"BIN\x00"):
        data = data[:8] + struct.pack("<I", len(data) - 8) + data[12:-8]
    return data


def save_mesh(mesh: Mesh, path: str | os.PathLike, name: str | None = None) -> Path:
    """Write ``mesh`` as .glb, .ply or .obj (chosen by suffix), atomically. Returns the path.

    ``name`` names the GLB's node and mesh (what Blender calls the imported object),
    e.g. :func:`asset_name`; without one, the file's stem. Other formats have no such names.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".glb", ".ply", ".obj"):
        raise ValueError(f"unsupported mesh format {suffix!r}; use .glb, .ply or .obj")
    if suffix == ".glb":
        data = _glb_bytes(mesh, _safe_name(path.stem if name is None else name))
    elif suffix == ".obj":
        tm = mesh.to_trimesh()
        tm.vertices = mesh.vertices.astype(np.float64) @ _Z_TO_Y_UP.T
        data = tm.export(file_type="obj", include_color=True, include_normals=False, include_texture=False).encode()
    else:
        data = mesh.to_trimesh().export(file_type="ply", encoding="binary")
    write_bytes(path, data)
    return path


def _glb_colours(path: Path) -> dict[str, np.ndarray]:
    """COLOR_0 of each mesh in a GLB as stored, as linear RGB in [0, 1], (N, 3) float64, keyed by
    the geometry name ``trimesh.load`` gives it.

    A loaded trimesh keeps only 8 bits of a material-less primitive's colours (``vertex_colors``),
    which bands dark tones, so the colours come from trimesh's glTF reader before a mesh is built:
    there COLOR_0 is still the accessor's array (float, or normalised uint8/uint16), under
    ``vertex_colors``, or under the texture visual's ``vertex_attributes`` when the primitive has a
    material (the engine's GLBs before it dropped the material).
    """
    from trimesh.exchange.gltf import load_glb

    with open(path, "rb") as f:
        geometries = load_glb(f).get("geometry", {})
    colours = {}
    for name, kwargs in geometries.items():
        raw = kwargs.get("vertex_colors")
        if raw is None:
            raw = getattr(kwargs.get("visual"), "vertex_attributes", {}).get("color")
        if raw is None:
            continue
        raw = np.asarray(raw)
        if raw.dtype.kind == "u":
            colours[name] = raw[:, :3].astype(np.float64) / np.iinfo(raw.dtype).max
        else:
            colours[name] = np.asarray(raw[:, :3], dtype=np.float64)
    return colours


def load_mesh(path: str | os.PathLike) -> Mesh:
    """Read a file written by :func:`save_mesh` (or any single-mesh file) back into the engine frame."""
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".glb":
        # As a scene, not force="mesh": a scene keeps the node's transform and the geometry's name.
        scene = trimesh.load(path, process=False, force="scene")
        placed = [scene.graph[node] for node in scene.graph.nodes_geometry]  # (transform, geometry name)
        if not placed:  # what save_mesh writes for an empty mesh
            return Mesh(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)))
        if len(placed) != 1:
            raise ValueError(f"{path} holds {len(placed)} meshes, not one")
        transform, geometry_name = placed[0]
        loaded = scene.geometry[geometry_name]
        vertices = trimesh.transform_points(np.asarray(loaded.vertices, dtype=np.float64), transform)
        linear = _glb_colours(path).get(geometry_name)
        if linear is None or len(linear) != len(vertices):
            colors = np.ones((len(vertices), 3))
        else:
            colors = linear_to_srgb(np.clip(linear, 0.0, 1.0))
    else:
        loaded = trimesh.load(path, process=False, force="mesh")
        vertices = np.asarray(loaded.vertices, dtype=np.float64)
        colors = np.asarray(loaded.visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
    if suffix in _Y_UP_FORMATS:
        vertices = vertices @ _Z_TO_Y_UP  # inverse of an orthogonal matrix is its transpose
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

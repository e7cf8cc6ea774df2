# SPDX-License-Identifier: GPL-3.0-or-later
"""Generated meshes -> Blender objects, built straight from numpy arrays (no importer).

Each asset becomes a mesh object with

* its vertices and triangles set with ``foreach_set`` (fast: ~1 ms for a few thousand vertices),
* a point-domain ``BYTE_COLOR`` colour attribute :data:`ATTRIBUTE` (the active and render colour),
* the shared material :data:`MATERIAL_NAME`: a Principled BSDF whose Base Color is fed by a
  Color Attribute node reading :data:`ATTRIBUTE`, so the vertex colours show in Material Preview
  and in renders,
* custom properties ``nabla_r2d3_prompt`` / ``nabla_r2d3_seed`` / ``nabla_r2d3_adapter``,

named ``"<prompt> (seed <n>)"`` and linked into a collection of its own per job, laid out on a grid
from an origin (the 3D cursor in the UI, moved along +X past whatever already stands there). Coordinates are the engine's: Z up, Blender units
(assets span about [-1, 1]^3), which is Blender's own frame, so no axis conversion happens here.

Everything here must run on Blender's main thread (it creates datablocks).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import bpy
import numpy as np
from mathutils import Vector

from ..engine.generate.records import GenerateResult, RecordError
from ..engine.geometry.blender_mesh import COLOR_SPACES, new_mesh

ATTRIBUTE = "Color"
MATERIAL_NAME = "Nabla-R2D3 Vertex Colour"
_MATERIAL_TAG = "nabla_r2d3_vertex_colour"  # custom property that marks our material


class MeshFileError(ValueError):
    """A mesh file (.npz) is missing, unreadable or holds arrays of the wrong shape."""


@dataclass
class MeshArrays:
    """One triangle mesh. ``vertices`` (N, 3) float32 Blender units, Z up; ``faces`` (M, 3) int32
    vertex indices; ``colors`` (N, 3) or (N, 4) float32 in [0, 1], in ``color_space`` ("SRGB" display
    values or "LINEAR" scene-linear); a fourth channel is alpha."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    color_space: str = "SRGB"

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int32)
        self.colors = np.ascontiguousarray(self.colors, dtype=np.float32)
        n = len(self.vertices)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise MeshFileError(f"vertices must be (N, 3), got {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise MeshFileError(f"faces must be (M, 3) triangles, got {self.faces.shape}")
        if self.colors.ndim != 2 or self.colors.shape[0] != n or self.colors.shape[1] not in (3, 4):
            raise MeshFileError(f"colors must be ({n}, 3) or ({n}, 4), got {self.colors.shape}")
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= n):
            raise MeshFileError(f"faces index vertices outside 0..{n - 1}")
        if not np.isfinite(self.vertices).all():
            raise MeshFileError("vertices contain NaN or infinity")
        if self.color_space not in COLOR_SPACES:
            raise MeshFileError(f"color_space must be one of {COLOR_SPACES}, got {self.color_space!r}")

    @property
    def rgba(self) -> np.ndarray:
        """(N, 4) float32 clipped to [0, 1], alpha 1 where the colours had none."""
        c = np.clip(self.colors, 0.0, 1.0)
        if c.shape[1] == 3:
            c = np.concatenate([c, np.ones((len(c), 1), np.float32)], 1)
        return np.ascontiguousarray(c, dtype=np.float32)


def load_npz(path: str | os.PathLike, color_space: str | None = None) -> MeshArrays:
    """Read a mesh written by the worker: an .npz with ``vertices``, ``faces``, ``colors`` and
    optionally ``color_space`` ("linear" or "srgb"; the worker writes linear). ``color_space``
    given here overrides the file's; without either, colours are taken as sRGB."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("vertices", "faces", "colors") if k not in data.files]
            if missing:
                raise MeshFileError(f"{path}: missing arrays {missing} (found {sorted(data.files)})")
            if color_space is None:
                color_space = str(data["color_space"]).upper() if "color_space" in data.files else "SRGB"
            return MeshArrays(data["vertices"], data["faces"], data["colors"], color_space)
    except (OSError, ValueError) as exc:
        if isinstance(exc, MeshFileError):
            raise
        raise MeshFileError(f"cannot read mesh file {path}: {exc}") from exc


# --- datablocks -----------------------------------------------------------------------------------


def asset_name(prompt: str, seed: int) -> str:
    """Object name for an asset: ``"a red cube (seed 3)"`` (Blender truncates names to 63 bytes)."""
    return f"{prompt.strip() or 'asset'} (seed {seed})"


def vertex_colour_material() -> bpy.types.Material:
    """The shared material that shows :data:`ATTRIBUTE`, created on first use and then reused."""
    for mat in bpy.data.materials:
        if mat.get(_MATERIAL_TAG) and mat.library is None:
            return mat
    mat = bpy.data.materials.new(MATERIAL_NAME)
    mat[_MATERIAL_TAG] = True
    if mat.node_tree is None:  # before Blender 5, a material gets nodes only with use_nodes
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    attr = nodes.new("ShaderNodeVertexColor")  # shown as "Color Attribute" in the UI
    attr.layer_name = ATTRIBUTE
    attr.location = (-300, 0)
    bsdf = nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.inputs["Roughness"].default_value = 0.6
    out = nodes.new("ShaderNodeOutputMaterial")
    out.location = (300, 0)
    links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
    links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    return mat


def build_mesh(name: str, arrays: MeshArrays) -> bpy.types.Mesh:
    """A mesh datablock from ``arrays`` (smooth shaded, colour attribute :data:`ATTRIBUTE`)."""
    return new_mesh(bpy, name, arrays.vertices, arrays.faces, arrays.rgba, ATTRIBUTE, arrays.color_space)


def new_collection(scene: bpy.types.Scene, name: str, parent: bpy.types.Collection | None = None) -> bpy.types.Collection:
    """A new collection (Blender adds ``.001`` to a taken name) linked under ``parent`` or the scene."""
    coll = bpy.data.collections.new(name)
    (parent or scene.collection).children.link(coll)
    return coll


def grid_positions(count: int, spacing: float, origin: Sequence[float] = (0.0, 0.0, 0.0)) -> list[tuple[float, float, float]]:
    """``count`` positions on a near-square grid in the XY plane: row-major, +X along a row, rows
    going -Y (reading order seen from the top view), the first at ``origin``."""
    if count < 0:
        raise ValueError("count must be >= 0")
    if spacing <= 0:
        raise ValueError("spacing must be > 0")
    cols, _ = grid_shape(count)
    ox, oy, oz = (float(v) for v in origin)
    return [(ox + (i % cols) * spacing, oy - (i // cols) * spacing, oz) for i in range(count)]


def grid_shape(count: int) -> tuple[int, int]:
    """(columns, rows) of :func:`grid_positions`' near-square grid of ``count`` (at least one column)."""
    cols = max(1, math.ceil(math.sqrt(count)))
    return cols, math.ceil(count / cols)


# Object types whose bounding box a new grid keeps clear of (cameras, lights and empties do not block).
_SOLID_TYPES = {'MESH', 'CURVE', 'SURFACE', 'FONT', 'META', 'VOLUME', 'POINTCLOUD', 'CURVES', 'GREASEPENCIL'}


def clear_origin(origin: Sequence[float], count: int, spacing: float,
                 boxes: Iterable[tuple[float, float, float, float]]) -> tuple[float, float, float]:
    """The grid origin nearest ``origin`` along +X whose footprint overlaps none of ``boxes``.

    The footprint is the grid of :func:`grid_positions` with half a spacing around each position
    (assets span about one unit either side). ``boxes`` are world XY rectangles
    ``(xmin, ymin, xmax, ymax)`` of what stands in the scene. Only X moves: a user who put the cursor
    at some height or row keeps it, and jobs line up left to right in the order they finish.
    """
    ox, oy, oz = (float(v) for v in origin)
    if count <= 0:
        return ox, oy, oz
    cols, rows = grid_shape(count)
    half = spacing / 2
    boxes = list(boxes)
    for _ in range(len(boxes) + 1):  # each pass clears at least one box for good
        x0, x1 = ox - half, ox + (cols - 1) * spacing + half
        y0, y1 = oy - (rows - 1) * spacing - half, oy + half
        hit = [b for b in boxes if b[0] < x1 and b[2] > x0 and b[1] < y1 and b[3] > y0]
        if not hit:
            break
        ox = max(b[2] for b in hit) + half + 1e-3
    return ox, oy, oz


def scene_boxes(scene: bpy.types.Scene) -> list[tuple[float, float, float, float]]:
    """World XY bounding rectangles of the solid objects in ``scene`` (hidden ones too: they come back)."""
    boxes = []
    for obj in scene.objects:
        if obj.type not in _SOLID_TYPES:
            continue
        corners = np.array([tuple(obj.matrix_world @ Vector(c)) for c in obj.bound_box])
        boxes.append((corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max()))
    return boxes


@dataclass
class AssetSpec:
    """One asset to import: its prompt and seed, the ``.npz`` to build it from (absolute) and the GLB
    the object keeps a link to ("" for none)."""

    prompt: str
    seed: int
    mesh_path: str
    glb_path: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> "AssetSpec":
        try:
            return cls(str(d["prompt"]), int(d["seed"]), str(d["mesh_path"]), str(d.get("glb_path") or ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise MeshFileError(f"malformed asset record {d!r}: {exc}") from exc

    @classmethod
    def from_result(cls, data: dict) -> list["AssetSpec"]:
        """The assets of a generate job's result data (engine/generate/records.py's GenerateResult,
        with ``out_dir``): each needs its ``npz`` file; its ``glb``, if any, is linked."""
        try:
            result = GenerateResult.from_json(data)
        except RecordError as exc:
            raise MeshFileError(f"malformed generate result: {exc}") from exc
        if result.out_dir is None or not result.assets:
            raise MeshFileError(f"the generate result names no folder or no assets: {data!r}"[:300])
        missing = [a.name for a in result.assets if "npz" not in a.files]
        if missing:
            raise MeshFileError(f"the generate result has no .npz mesh for {', '.join(missing)} (formats {result.formats})")
        return [cls(a.prompt, a.seed, str(a.path("npz", result.out_dir)),
                    str(a.path("glb", result.out_dir)) if "glb" in a.files else "") for a in result.assets]


class SceneChanged(RuntimeError):
    """Data an unfinished import made is gone (undone or deleted between two of its steps)."""


class AssetImporter:
    """Imports one job's assets one at a time, so a timer can spread the work over several ticks.

    Between steps it holds datablock *names*, never Python references: an undo between two timer
    calls frees and re-reads Blender's data, and a stale reference would crash Blender when used.
    The collection is created with the first asset; :meth:`import_next` returns the new object.
    """

    def __init__(self, scene, assets: list[AssetSpec], collection_name: str, spacing: float = 2.5,
                 origin: Sequence[float] = (0.0, 0.0, 0.0), color_space: str | None = None, adapter: str = "",
                 keep_clear: bool = False):
        # keep_clear: move the grid along +X past what stands in the scene when the first asset
        # arrives (not when the job starts: jobs that finish meanwhile take their place first).
        self.keep_clear = keep_clear
        self.spacing = spacing
        self.scene_name = scene if isinstance(scene, str) else scene.name
        self.assets = list(assets)
        self.collection_name = collection_name  # asked for; Blender may add ".001"
        self.color_space = color_space  # None: as each file says
        self.adapter = adapter
        self._positions = grid_positions(len(self.assets), spacing, origin)
        self._collection: str | None = None  # actual names of what was made
        self._objects: list[str] = []
        self._meshes: list[str] = []

    # -- lookups by name (valid only within one step / one timer call) ---------------------------
    @property
    def scene(self) -> bpy.types.Scene:
        scene = bpy.data.scenes.get(self.scene_name)
        if scene is None:
            raise SceneChanged(f"scene {self.scene_name!r} no longer exists")
        return scene

    @property
    def collection(self) -> bpy.types.Collection | None:
        return None if self._collection is None else bpy.data.collections.get(self._collection)

    @property
    def objects(self) -> list:
        return [o for o in (bpy.data.objects.get(n) for n in self._objects) if o is not None]

    @property
    def done(self) -> bool:
        return len(self._objects) >= len(self.assets)

    def import_next(self) -> bpy.types.Object:
        if self.done:
            raise IndexError("every asset is imported")
        i = len(self._objects)
        spec = self.assets[i]
        arrays = load_npz(spec.mesh_path, self.color_space)  # read before creating anything
        scene = self.scene
        if self._collection is None:
            if self.keep_clear:
                origin = clear_origin(self._positions[0], len(self.assets), self.spacing, scene_boxes(scene))
                self._positions = grid_positions(len(self.assets), self.spacing, origin)
            coll = new_collection(scene, self.collection_name)
            self._collection = coll.name
        else:
            coll = self.collection
            if coll is None or len(self.objects) != i:
                raise SceneChanged("the assets imported so far are gone (undone or deleted)")
        name = asset_name(spec.prompt, spec.seed)
        me = build_mesh(name, arrays)
        self._meshes.append(me.name)
        me.materials.append(vertex_colour_material())
        obj = bpy.data.objects.new(name, me)
        self._objects.append(obj.name)
        obj.location = self._positions[i]
        obj["nabla_r2d3_prompt"] = spec.prompt
        obj["nabla_r2d3_seed"] = spec.seed
        obj["nabla_r2d3_adapter"] = self.adapter
        if spec.glb_path:
            obj["nabla_r2d3_glb"] = spec.glb_path
        coll.objects.link(obj)
        return obj

    def import_all(self) -> list:
        while not self.done:
            self.import_next()
        return self.objects

    def discard(self) -> None:
        """Remove every datablock this importer created that still exists."""
        ids = [bpy.data.objects.get(n) for n in self._objects] + [bpy.data.meshes.get(n) for n in self._meshes]
        if self._collection is not None:
            ids.append(bpy.data.collections.get(self._collection))
        self._objects, self._meshes, self._collection = [], [], None
        ids = [x for x in ids if x is not None]
        if ids:
            bpy.data.batch_remove(ids)


def import_assets(
    scene: bpy.types.Scene,
    assets: Iterable[dict | AssetSpec],
    collection_name: str,
    *,
    spacing: float = 2.5,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    color_space: str | None = None,
    adapter: str = "",
) -> AssetImporter:
    """Import every asset at once; on any error nothing stays behind (the error is re-raised)."""
    specs = [a if isinstance(a, AssetSpec) else AssetSpec.from_dict(a) for a in assets]
    importer = AssetImporter(scene, specs, collection_name, spacing, tuple(origin), color_space, adapter)
    try:
        importer.import_all()
    except BaseException:
        importer.discard()
        raise
    return importer


def collection_name_for(prompt: str) -> str:
    return f"Nabla-R2D3 {prompt.strip()}"

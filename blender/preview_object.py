# SPDX-License-Identifier: GPL-3.0-or-later
"""The live preview object of an align job: one mesh object whose mesh is swapped for each preview
mesh (``.npz``) the worker sends, so the scene shows the model improving while it trains.

* One object per job, named ``"Nabla-R2D3 Preview <adapter>"`` (Blender adds ``.001`` to a taken
  name), linked into the collection :data:`COLLECTION_NAME`, placed at the 3D cursor (as it was when
  the job was made) plus :data:`OFFSET`, with the generated assets' vertex-colour material.
* Each update builds a new mesh with :func:`scene_import.build_mesh`, gives it to the object and
  removes the mesh it replaced (when nothing else uses it), so no orphan meshes pile up. The mesh is
  named after the preview's label; the label is also the custom property ``nabla_r2d3_preview``.
* Updates push no undo step: a preview is transient. An undo may take the object away; the next
  update then makes a new one.
* Between updates only *names* are kept (an undo frees and re-reads Blender's data; a stale Python
  reference would crash Blender). The object found under the kept name must carry this target's
  token (``nabla_r2d3_preview_token``), so an object the user made or renamed into that name is
  never touched.

Main thread only (it creates and removes datablocks).
"""
from __future__ import annotations

import uuid
from typing import Sequence

import bpy

from . import scene_import

COLLECTION_NAME = "Nabla-R2D3 Previews"
# Generated assets fill a grid from the 3D cursor towards +X and -Y; 3 units towards -X keeps the
# preview (about 2 units wide) clear of them.
OFFSET = (-3.0, 0.0, 0.0)
_TOKEN = "nabla_r2d3_preview_token"
_COLLECTION_TAG = "nabla_r2d3_previews"  # marks the collection this module made (removable when empty)


class PreviewObject:
    """Creates, updates and removes one job's preview object in the scene ``scene_name``."""

    def __init__(self, scene_name: str, name: str, origin: Sequence[float] = (0.0, 0.0, 0.0), adapter: str = ""):
        self.scene_name = scene_name
        self.name = name  # asked for; Blender may add ".001"
        self.location = tuple(float(o) + d for o, d in zip(origin, OFFSET))
        self.adapter = adapter
        self.token = uuid.uuid4().hex
        self.object_name: str | None = None  # the actual name once made
        self.label = ""

    @classmethod
    def for_scene(cls, scene: bpy.types.Scene, adapter: str = "") -> "PreviewObject":
        """A target next to ``scene``'s 3D cursor, named after ``adapter``."""
        name = f"Nabla-R2D3 Preview {adapter}".strip()
        return cls(scene.name, name, tuple(scene.cursor.location), adapter)

    # -- lookups by name (valid only within one call) --------------------------------------------
    @property
    def object(self) -> bpy.types.Object | None:
        obj = None if self.object_name is None else bpy.data.objects.get(self.object_name)
        if obj is None or obj.library is not None or obj.get(_TOKEN) != self.token:
            return None
        return obj

    def _collection(self, scene: bpy.types.Scene) -> bpy.types.Collection:
        coll = bpy.data.collections.get(COLLECTION_NAME)
        if coll is None or coll.library is not None:
            coll = bpy.data.collections.new(COLLECTION_NAME)
            coll[_COLLECTION_TAG] = True
        if coll not in scene.collection.children_recursive:
            scene.collection.children.link(coll)
        return coll

    # -- changes ---------------------------------------------------------------------------------
    def update(self, mesh_path: str, label: str = "") -> bool:
        """Show the mesh in ``mesh_path`` (.npz, see :func:`scene_import.load_npz`); False when the
        object is in Edit Mode (its mesh is left alone; the next preview tries again).

        Raises :class:`scene_import.MeshFileError` for a missing or malformed file and
        :class:`scene_import.SceneChanged` when the scene is gone; the scene is unchanged then."""
        arrays = scene_import.load_npz(mesh_path)  # read before touching anything
        scene = bpy.data.scenes.get(self.scene_name)
        if scene is None:
            raise scene_import.SceneChanged(f"scene {self.scene_name!r} no longer exists")
        obj = self.object
        if obj is not None and obj.mode != 'OBJECT':
            return False  # swapping the mesh under an edit session would lose or corrupt it
        me = scene_import.build_mesh(label or self.name, arrays)
        try:
            me.materials.append(scene_import.vertex_colour_material())
            if obj is None:  # first preview, or the object was deleted / undone since
                obj = bpy.data.objects.new(self.name, me)
                obj[_TOKEN] = self.token
                obj.location = self.location
                self._collection(scene).objects.link(obj)
                self.object_name = obj.name
                old = None
            else:
                old, obj.data = obj.data, me
        except BaseException:
            bpy.data.meshes.remove(me)
            raise
        if old is not None and old.users == 0:
            bpy.data.meshes.remove(old)
        obj["nabla_r2d3_preview"] = label
        obj["nabla_r2d3_adapter"] = self.adapter
        self.label = label
        return True

    def remove(self) -> None:
        """Delete the object (and its mesh, and the previews collection once empty) if it still exists."""
        obj = self.object
        self.object_name = None
        if obj is None:
            return
        me = obj.data
        colls = list(obj.users_collection)
        bpy.data.objects.remove(obj)
        if me is not None and me.users == 0:
            bpy.data.meshes.remove(me)
        for coll in colls:
            if coll.get(_COLLECTION_TAG) and not coll.objects and not coll.children:
                bpy.data.collections.remove(coll)

"""Triangle meshes with vertex colours -> Blender mesh datablocks, straight from numpy arrays.

Shared by the Cycles renderer (``engine/render/cycles.py``) and the add-on's scene import
(``blender/scene_import.py``). It imports neither torch nor bpy: the caller passes its ``bpy``
module, so the add-on can use it in Blender without pulling in the engine's torch imports.
"""
from __future__ import annotations

import numpy as np

COLOR_SPACES = ("SRGB", "LINEAR")


def new_mesh(bpy, name: str, vertices: np.ndarray, faces: np.ndarray, rgba: np.ndarray,
             attribute: str = "Color", color_space: str = "SRGB"):
    """A smooth-shaded ``bpy.types.Mesh`` named ``name``.

    ``vertices`` (V, 3) in Blender units (Z up), ``faces`` (F, 3) vertex indices, ``rgba`` (V, 4) in
    [0, 1], either display (sRGB) values or scene-linear ones as ``color_space`` says. The colours go
    to a point-domain ``BYTE_COLOR`` attribute ``attribute``, made the active and render colour.
    """
    if color_space not in COLOR_SPACES:
        raise ValueError(f"color_space must be one of {COLOR_SPACES}, got {color_space!r}")
    verts = np.ascontiguousarray(vertices, dtype=np.float32)
    faces = np.ascontiguousarray(faces, dtype=np.int32)
    colours = np.ascontiguousarray(rgba, dtype=np.float32)
    me = bpy.data.meshes.new(name)
    me.vertices.add(len(verts))
    me.vertices.foreach_set("co", verts.ravel())
    me.loops.add(faces.size)
    me.loops.foreach_set("vertex_index", faces.ravel())
    me.polygons.add(len(faces))
    me.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    col = me.color_attributes.new(attribute, "BYTE_COLOR", "POINT")
    # BYTE_COLOR stores sRGB bytes; "color_srgb" writes display values as they are, "color" converts
    # scene-linear values, so either input lands unchanged in what the viewer sees.
    col.data.foreach_set("color_srgb" if color_space == "SRGB" else "color", colours.ravel())
    me.color_attributes.active_color_name = attribute
    me.color_attributes.render_color_index = me.color_attributes.active_color_index
    me.update(calc_edges=True)
    me.validate(clean_customdata=False)
    me.shade_smooth()  # marching-cubes surfaces are smooth; flat shading shows every triangle
    return me

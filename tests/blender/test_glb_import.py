"""The engine's GLBs as Blender's own glTF importer (``bpy.ops.import_scene.gltf``) sees them.

The importer runs in a subprocess with BLENDER_USER_* pointed at temporary folders, so neither this
process's bpy state (the add-on tests share it) nor the user's Blender configuration is touched.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import trimesh

from engine.geometry.mesh import Mesh, asset_name, save_mesh, srgb_to_linear

IMPORT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    status = bpy.ops.import_scene.gltf(filepath=sys.argv[1])
    (obj,) = bpy.data.objects
    mesh = obj.data
    sharp = np.zeros(len(mesh.polygons), bool)
    if "sharp_face" in mesh.attributes:
        mesh.attributes["sharp_face"].data.foreach_get("value", sharp)
    colours = mesh.color_attributes[0]
    srgb = np.empty(len(colours.data) * 4, np.float32)
    colours.data.foreach_get("color_srgb", srgb)
    positions = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", positions)
    if colours.domain == "CORNER":  # one colour a face corner: take each vertex's from a corner
        corner_vertex = np.empty(len(mesh.loops), np.int32)
        mesh.loops.foreach_get("vertex_index", corner_vertex)
        per_vertex = np.zeros((len(mesh.vertices), 4), np.float32)
        per_vertex[corner_vertex] = srgb.reshape(-1, 4)
    else:
        per_vertex = srgb.reshape(-1, 4)
    material = mesh.materials[0]
    bsdf = next(n for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    print("RESULT " + json.dumps({
        "status": sorted(status), "object": obj.name, "mesh": mesh.name, "material": material.name,
        "faces": len(mesh.polygons), "sharp_faces": int(sharp.sum()),
        "red_levels": len(np.unique(np.round(srgb.reshape(-1, 4)[:, 0] * 255))),
        "base_colour_from": [link.from_node.bl_idname for link in bsdf.inputs["Base Color"].links],
        "metallic": bsdf.inputs["Metallic"].default_value,
        "positions": positions.reshape(-1, 3).tolist(), "srgb": per_vertex.tolist(),
    }))
    """
)


def blender_import(path, user_root) -> dict:
    user_root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(BLENDER_USER_RESOURCES=str(user_root / "resources"), BLENDER_USER_CONFIG=str(user_root / "config"),
               BLENDER_USER_SCRIPTS=str(user_root / "scripts"))
    proc = subprocess.run([sys.executable, "-c", IMPORT, str(path)], capture_output=True, text=True, timeout=120,
                          env=env, cwd=user_root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])


def test_blender_imports_a_smooth_named_object_whose_material_shows_the_dark_vertex_colours(tmp_path):
    """Before: flat-shaded "geometry_0" whose near-black reds collapsed to a handful of levels."""
    sphere = trimesh.creation.icosphere(subdivisions=3)
    red = (np.arange(len(sphere.vertices)) % 41) / 255.0  # sRGB 0..40 of 255: near black
    colours = np.stack([red, np.zeros_like(red), np.zeros_like(red)], 1)
    path = save_mesh(Mesh(sphere.vertices, sphere.faces, colours), tmp_path / "a_black_sphere_seed7.glb",
                     name=asset_name("a black sphere", 7))
    got = blender_import(path, tmp_path / "user")
    assert got["status"] == ["FINISHED"]
    assert got["object"] == got["mesh"] == "black_sphere_seed7"
    assert got["faces"] == len(sphere.faces) and got["sharp_faces"] == 0  # smooth: the NORMALs were used
    assert got["base_colour_from"] == ["ShaderNodeVertexColor"] and got["metallic"] == 0.0
    assert got["red_levels"] == 41
    # every vertex's colour as written (Blender's Z-up world is the engine's frame)
    positions, srgb = np.array(got["positions"]), np.array(got["srgb"])
    nearest = np.argmin(((positions[:, None] - sphere.vertices[None]) ** 2).sum(-1), axis=1)
    assert np.abs(positions - sphere.vertices[nearest]).max() < 1e-5
    np.testing.assert_allclose(srgb[:, :3], colours[nearest], atol=0.5 / 255)


def test_blender_and_trimesh_show_the_same_vertex_colours(tmp_path):
    """Bright and mid tones too, each channel its own level: what Blender's importer shows and what
    ``trimesh.load`` reads (white before: trimesh dropped COLOR_0 beside a material) are the same
    colours, Blender's in sRGB and trimesh's as the file's linear values at its 8-bit precision."""
    sphere = trimesh.creation.icosphere(subdivisions=2)
    rng = np.random.default_rng(3)
    colours = rng.integers(0, 256, size=(len(sphere.vertices), 3)) / 255.0
    path = save_mesh(Mesh(sphere.vertices, sphere.faces, colours), tmp_path / "mixed.glb", name="mixed")
    got = blender_import(path, tmp_path / "user")
    positions, srgb = np.array(got["positions"]), np.array(got["srgb"])
    nearest = np.argmin(((positions[:, None] - sphere.vertices[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(srgb[:, :3], colours[nearest], atol=0.5 / 255)
    loaded = trimesh.load(path).geometry["mixed"]
    assert loaded.visual.kind == "vertex"
    np.testing.assert_array_equal(loaded.visual.vertex_colors[:, :3], np.round(srgb_to_linear(colours) * 255))

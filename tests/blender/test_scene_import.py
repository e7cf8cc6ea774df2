"""Meshes from numpy arrays -> Blender objects: geometry, colour attribute, material, collection, grid,
clean failure on bad files, and the import as one undo step."""
from __future__ import annotations

import numpy as np
import pytest

import bpy


@pytest.fixture
def si(registered, clean_scene):
    return registered.blender.scene_import


def _tetra(offset=0.0, colors=None, color_space=None):
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32) + offset
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int32)
    c = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]], np.float32) if colors is None else colors
    return v, f, c


def _write(path, v, f, c, color_space=None):
    extra = {} if color_space is None else {"color_space": np.array(color_space)}
    np.savez(path, vertices=v, faces=f, colors=c, **extra)
    return str(path)


def _srgb_to_linear(c):
    c = np.asarray(c, np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _colours(obj, prop="color_srgb"):
    attr = obj.data.color_attributes["Color"]
    out = np.empty(len(attr.data) * 4, np.float32)
    attr.data.foreach_get(prop, out)
    return out.reshape(-1, 4)


def test_import_builds_objects_with_colours_material_collection_and_grid(si, tmp_path):
    v, f, c = _tetra()
    path = _write(tmp_path / "a.npz", v, f, c)
    scene = bpy.context.scene
    assets = [{"prompt": "a red cube", "seed": s, "mesh_path": path, "glb_path": "/x.glb"} for s in range(5, 10)]
    importer = si.import_assets(scene, assets, "Nabla-R2D3 a red cube", spacing=3.0, origin=(1.0, 2.0, 0.5))

    coll = importer.collection
    assert coll.name in scene.collection.children
    assert [o.name for o in coll.objects] == [f"a red cube (seed {s})" for s in range(5, 10)]
    # 5 assets -> 3 columns; rows go -Y; the first sits at the origin
    locs = [tuple(round(x, 4) for x in o.location) for o in importer.objects]
    assert locs == [(1, 2, 0.5), (4, 2, 0.5), (7, 2, 0.5), (1, -1, 0.5), (4, -1, 0.5)]
    mats = set()
    for obj, seed in zip(importer.objects, range(5, 10)):
        me = obj.data
        assert (len(me.vertices), len(me.polygons), len(me.loops)) == (4, 4, 12)
        co = np.empty(12, np.float32)
        me.vertices.foreach_get("co", co)
        np.testing.assert_allclose(co.reshape(-1, 3), v)
        attr = me.color_attributes["Color"]
        assert (attr.domain, attr.data_type) == ("POINT", "BYTE_COLOR")
        assert me.color_attributes.active_color_name == "Color"
        np.testing.assert_allclose(_colours(obj)[:, :3], c, atol=1 / 255 + 1e-6)  # sRGB file: unchanged
        assert (obj["nabla_r2d3_prompt"], obj["nabla_r2d3_seed"], obj["nabla_r2d3_glb"]) == ("a red cube", seed, "/x.glb")
        assert all(p.use_smooth for p in me.polygons)
        mats.add(me.materials[0].name)
    assert len(mats) == 1, "one shared material, not one per object"

    mat = importer.objects[0].data.materials[0]
    nodes = mat.node_tree.nodes
    bsdf = next(n for n in nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    link = bsdf.inputs["Base Color"].links[0]
    assert link.from_node.bl_idname == "ShaderNodeVertexColor" and link.from_node.layer_name == "Color"
    out = next(n for n in nodes if n.bl_idname == "ShaderNodeOutputMaterial")
    assert out.inputs["Surface"].links[0].from_node == bsdf

    again = si.import_assets(scene, assets[:1], "Nabla-R2D3 a red cube")
    assert again.collection.name != coll.name, "each job gets a collection of its own"
    assert again.objects[0].data.materials[0] == mat, "the material is reused"


def test_linear_colours_from_the_worker_show_as_their_srgb_values(si, tmp_path):
    srgb = np.array([[0.85, 0.12, 0.10], [0.12, 0.25, 0.85], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0]], np.float32)
    lin = np.concatenate([_srgb_to_linear(srgb), np.ones((4, 1))], 1).astype(np.float32)
    v, f, _ = _tetra()
    path = _write(tmp_path / "lin.npz", v, f, lin, color_space="linear")  # what engine.worker writes
    (obj,) = si.import_assets(bpy.context.scene, [{"prompt": "p", "seed": 0, "mesh_path": path}], "c").objects
    np.testing.assert_allclose(_colours(obj)[:, :3], srgb, atol=1.5 / 255)


def test_grid_positions(addon):
    si = addon.blender.scene_import
    assert si.grid_positions(0, 2.0) == []
    assert si.grid_positions(4, 2.0) == [(0, 0, 0), (2, 0, 0), (0, -2, 0), (2, -2, 0)]
    assert len({p for p in si.grid_positions(10, 1.0)}) == 10
    with pytest.raises(ValueError):
        si.grid_positions(3, 0.0)


@pytest.mark.parametrize("case", ["faces_out_of_range", "missing_colors", "colour_rows", "not_a_file", "nan"])
def test_bad_mesh_files_fail_clearly_and_leave_nothing(si, tmp_path, case):
    v, f, c = _tetra()
    good = _write(tmp_path / "good.npz", v, f, c)
    bad = tmp_path / "bad.npz"
    expected = {
        "faces_out_of_range": "faces index vertices",
        "missing_colors": "missing arrays ['colors']",
        "colour_rows": "colors must be",
        "not_a_file": "cannot read mesh file",
        "nan": "NaN",
    }[case]
    if case == "faces_out_of_range":
        _write(bad, v, f + 1, c)
    elif case == "missing_colors":
        np.savez(bad, vertices=v, faces=f)
    elif case == "colour_rows":
        _write(bad, v, f, c[:2])
    elif case == "nan":
        v2 = v.copy()
        v2[1, 1] = np.nan
        _write(bad, v2, f, c)
    else:
        bad.write_text("not a zip")
    counts = (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.collections))
    assets = [{"prompt": "p", "seed": 0, "mesh_path": good}, {"prompt": "p", "seed": 1, "mesh_path": str(bad)}]
    with pytest.raises(si.MeshFileError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        si.import_assets(bpy.context.scene, assets, "Nabla-R2D3 bad")
    assert (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.collections)) == counts


def test_malformed_asset_record_is_reported(si):
    with pytest.raises(si.MeshFileError, match="malformed asset record"):
        si.import_assets(bpy.context.scene, [{"prompt": "p"}], "c")


def test_an_import_is_one_undo_step(si, tmp_path):
    v, f, c = _tetra()
    path = _write(tmp_path / "a.npz", v, f, c)
    bpy.ops.ed.undo_push(message="before")
    before = {o.name for o in bpy.data.objects}
    si.import_assets(bpy.context.scene, [{"prompt": "p", "seed": s, "mesh_path": path} for s in range(3)], "Nabla-R2D3 u")
    bpy.ops.ed.undo_push(message="import")
    assert len({o.name for o in bpy.data.objects} - before) == 3
    bpy.ops.ed.undo()
    assert {o.name for o in bpy.data.objects} == before
    bpy.ops.ed.redo()
    assert len({o.name for o in bpy.data.objects} - before) == 3


def test_an_undo_between_two_import_steps_stops_the_import_safely(si, tmp_path):
    """The timer imports a slice at a time; the artist may press Ctrl+Z in between."""
    v, f, c = _tetra()
    path = _write(tmp_path / "a.npz", v, f, c)
    bpy.ops.ed.undo_push(message="before")
    before = {o.name for o in bpy.data.objects}
    specs = [si.AssetSpec("p", s, path) for s in range(3)]
    importer = si.AssetImporter(bpy.context.scene.name, specs, "Nabla-R2D3 undo")
    importer.import_next()
    bpy.ops.ed.undo_push(message="one imported")
    bpy.ops.ed.undo()  # frees and re-reads Blender's data: old Python references would dangle
    with pytest.raises(si.SceneChanged, match="gone"):
        importer.import_next()
    importer.discard()
    assert {o.name for o in bpy.data.objects} == before


def test_each_job_grid_keeps_clear_of_what_is_already_in_the_scene(si, tmp_path):
    v, f, c = _tetra(offset=-0.5)
    path = _write(tmp_path / "a.npz", v, f, c)
    scene = bpy.context.scene
    cube = bpy.data.objects.new("Cube", bpy.data.meshes.new("Cube"))
    cube.data.from_pydata([(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], [], [])
    scene.collection.objects.link(cube)
    bpy.context.view_layer.update()
    specs = [si.AssetSpec("p", s, path) for s in range(4)]
    footprints = [(-1.0, -1.0, 1.0, 1.0)]
    for job in range(2):  # both started at the cursor (origin), as two Generate clicks would be
        importer = si.AssetImporter(scene.name, specs, f"Nabla-R2D3 job {job}", 2.5, (0.0, 0.0, 0.0), keep_clear=True)
        objects = importer.import_all()
        bpy.context.view_layer.update()
        xs = [o.location.x for o in objects]
        ys = sorted({round(o.location.y, 4) for o in objects})
        assert ys == [-2.5, 0.0] and len(set(round(x, 4) for x in xs)) == 2  # still a 2 x 2 grid, rows kept
        box = si.scene_boxes(scene)[-4:]
        mine = (min(b[0] for b in box), min(b[1] for b in box), max(b[2] for b in box), max(b[3] for b in box))
        for other in footprints:  # no overlap with the cube or an earlier job
            assert mine[0] >= other[2] or mine[2] <= other[0] or mine[1] >= other[3] or mine[3] <= other[1]
        footprints.append(mine)
    # Without keep_clear (scripts that place assets themselves) the origin is used as given.
    importer = si.import_assets(scene, specs[:1], "Nabla-R2D3 exact", origin=(0.0, 0.0, 0.0))
    assert tuple(importer.objects[0].location) == (0.0, 0.0, 0.0)


def test_clear_origin_moves_along_x_only_and_only_when_needed(si):
    assert si.clear_origin((1.0, 2.0, 3.0), 4, 2.5, []) == (1.0, 2.0, 3.0)
    assert si.clear_origin((0.0, 0.0, 0.0), 4, 2.5, [(10.0, -1.0, 12.0, 1.0)]) == (0.0, 0.0, 0.0)  # beside, not on
    x, y, z = si.clear_origin((0.0, 5.0, 1.0), 1, 2.0, [(-1.0, 4.0, 3.0, 6.0), (3.5, 4.5, 4.0, 5.5)])
    assert (y, z) == (5.0, 1.0) and x == pytest.approx(4.0 + 1.0 + 1e-3)  # past both: the second blocks too


def test_specs_come_from_the_generate_record_and_a_result_without_npz_is_refused(si, tmp_path):
    from engine.generate.records import GeneratedAsset, GenerateResult

    asset = GeneratedAsset("a red cube", 4, "red_cube_seed4", {"npz": "a.npz", "glb": "a.glb"}, 4, 4)
    result = GenerateResult(["a red cube"], 4, 1, "embedded", {}, ["npz", "glb"], [asset], out_dir=str(tmp_path))
    (spec,) = si.AssetSpec.from_result(result.to_json(with_out_dir=True))
    assert (spec.prompt, spec.seed, spec.mesh_path, spec.glb_path) == ("a red cube", 4, str(tmp_path / "a.npz"),
                                                                       str(tmp_path / "a.glb"))
    glb_only = GenerateResult(["a red cube"], 4, 1, "embedded", {}, ["glb"],
                              [GeneratedAsset("a red cube", 4, "red_cube_seed4", {"glb": "a.glb"}, 4, 4)], out_dir=str(tmp_path))
    with pytest.raises(si.MeshFileError, match="no .npz mesh for red_cube_seed4"):
        si.AssetSpec.from_result(glb_only.to_json(with_out_dir=True))
    with pytest.raises(si.MeshFileError, match="malformed generate result: manifest has no 'assets'"):
        si.AssetSpec.from_result({k: v for k, v in result.to_json(with_out_dir=True).items() if k != "assets"})
    with pytest.raises(si.MeshFileError, match="names no folder"):
        si.AssetSpec.from_result(result.to_json())  # a manifest without out_dir: nowhere to find the files

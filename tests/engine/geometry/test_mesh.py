import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from engine.models.embedded.grammar import Prompt
from engine.models.embedded.procedural import field_volume, sample_spec
from engine.geometry.mesh import Mesh, asset_name, extract_mesh, load_mesh, save_mesh, srgb_to_linear


@pytest.fixture(scope="module")
def mesh():
    spec = sample_spec(torch.Generator().manual_seed(0), Prompt("cone", "green"))
    return extract_mesh(field_volume(spec, 32))


def test_marching_cubes_gives_closed_outward_coloured_mesh(mesh):
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    assert tm.is_watertight
    assert tm.volume > 0  # outward-facing triangles
    assert np.allclose(mesh.colors.mean(0), [0.15, 0.70, 0.20], atol=0.06)
    assert np.abs(mesh.vertices).max() <= 1.0


@pytest.mark.parametrize("fmt", ["glb", "ply", "obj"])
def test_files_round_trip(mesh, tmp_path, fmt):
    path = save_mesh(mesh, tmp_path / f"m.{fmt}")
    back = load_mesh(path)
    assert back.faces.shape == mesh.faces.shape and np.array_equal(back.faces, mesh.faces)
    assert np.allclose(back.vertices, mesh.vertices, atol=1e-6)
    assert np.allclose(back.colors, mesh.colors, atol=1.5 / 255 if fmt != "glb" else 0.02)
    assert [p.name for p in tmp_path.iterdir()] == [f"m.{fmt}"]  # no temp files left


def test_glb_is_y_up_with_linear_colour_0(mesh, tmp_path):
    path = save_mesh(mesh, tmp_path / "m.glb")
    tree, arrays = read_glb(path)
    attributes = tree["meshes"][0]["primitives"][0]["attributes"]
    # engine z (up) becomes glTF +y
    assert np.allclose(arrays[attributes["POSITION"]][:, 1], mesh.vertices[:, 2], atol=1e-6)
    linear = arrays[attributes["COLOR_0"]][:, 1].mean()
    assert linear < mesh.colors[:, 1].mean() - 0.1  # green 0.7 sRGB is ~0.45 linear
    np.testing.assert_allclose(arrays[attributes["COLOR_0"]][:, :3], srgb_to_linear(mesh.colors), atol=1e-6)


# -- GLB structure ------------------------------------------------------------------------------
# glTF 2.0: componentType -> numpy dtype, accessor type -> components per element.
COMPONENT = {5120: "<i1", 5121: "<u1", 5122: "<i2", 5123: "<u2", 5125: "<u4", 5126: "<f4"}
WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def read_glb(path):
    """Parse a GLB as strictly as the glTF 2.0 spec's container and accessor rules allow without
    the Khronos validator; return (JSON tree, accessor arrays decoded, normalised ones to [0, 1])."""
    data = Path(path).read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    json_len, json_type = struct.unpack_from("<I4s", data, 12)
    assert json_type == b"JSON" and json_len % 4 == 0
    text = data[20:20 + json_len]
    assert text == text.rstrip(b" ") + b" " * (len(text) - len(text.rstrip(b" ")))  # padded with spaces
    tree = json.loads(text)  # strict: no NaN/Infinity constants in a glTF file either
    assert tree["asset"]["version"] == "2.0"
    chunks = data[20 + json_len:]
    if not chunks:
        assert "buffers" not in tree and "accessors" not in tree
        return tree, []
    bin_len, bin_type = struct.unpack_from("<I4s", chunks, 0)
    assert bin_type == b"BIN\x00" and bin_len % 4 == 0 and len(chunks) == 8 + bin_len
    blob = chunks[8:]
    (buffer,) = tree["buffers"]
    assert "uri" not in buffer and buffer["byteLength"] <= bin_len < buffer["byteLength"] + 4
    for view in tree["bufferViews"]:
        assert view["buffer"] == 0 and view["byteOffset"] % 4 == 0 and view["byteLength"] > 0
        assert view["byteOffset"] + view["byteLength"] <= buffer["byteLength"]
        assert "byteStride" not in view  # every accessor below is tightly packed
    arrays = []
    for acc in tree["accessors"]:
        view = tree["bufferViews"][acc["bufferView"]]
        dtype = np.dtype(COMPONENT[acc["componentType"]])
        width, offset = WIDTH[acc["type"]], acc.get("byteOffset", 0)
        assert (view["byteOffset"] + offset) % dtype.itemsize == 0
        assert offset + acc["count"] * width * dtype.itemsize <= view["byteLength"]
        raw = np.frombuffer(blob, dtype, acc["count"] * width, view["byteOffset"] + offset).reshape(acc["count"], width)
        if "min" in acc or "max" in acc:  # when present they must be the data's exact bounds
            assert acc["min"] == raw.min(0).tolist() and acc["max"] == raw.max(0).tolist(), acc
        values = raw.astype(np.float64)
        if acc.get("normalized"):
            assert dtype.kind == "u"
            values /= np.iinfo(dtype).max
        arrays.append(values)
    scene = tree["scenes"][tree["scene"]]
    for node_index in scene["nodes"]:
        node = tree["nodes"][node_index]
        if "mesh" not in node:
            continue
        for prim in tree["meshes"][node["mesh"]]["primitives"]:
            attrs = prim["attributes"]
            counts = {name: tree["accessors"][i]["count"] for name, i in attrs.items()}
            assert len(set(counts.values())) == 1, counts  # one count for every vertex attribute
            pos = tree["accessors"][attrs["POSITION"]]
            assert (pos["componentType"], pos["type"]) == (5126, "VEC3") and "min" in pos and "max" in pos
            for name, i in attrs.items():  # vertex attribute elements are 4-byte aligned (spec 3.6.2.4)
                acc = tree["accessors"][i]
                assert WIDTH[acc["type"]] * np.dtype(COMPONENT[acc["componentType"]]).itemsize % 4 == 0, name
            if "NORMAL" in attrs:
                normal = tree["accessors"][attrs["NORMAL"]]
                assert (normal["componentType"], normal["type"]) == (5126, "VEC3")
            if "COLOR_0" in attrs:  # the three encodings the spec allows for COLOR_0
                colour = tree["accessors"][attrs["COLOR_0"]]
                assert colour["type"] in ("VEC3", "VEC4")
                assert colour["componentType"] == 5126 or (colour["componentType"] in (5121, 5123) and colour["normalized"])
            indices = tree["accessors"][prim["indices"]]
            assert indices["type"] == "SCALAR" and indices["componentType"] in (5121, 5123, 5125)
            assert prim.get("mode", 4) == 4 and indices["count"] % 3 == 0
            assert 0 <= arrays[prim["indices"]].min() and arrays[prim["indices"]].max() < counts["POSITION"]
            if "material" in prim:
                assert 0 <= prim["material"] < len(tree["materials"])
    return tree, arrays


def test_glb_is_structurally_valid_gltf(mesh, tmp_path):
    tree, arrays = read_glb(save_mesh(mesh, tmp_path / "m.glb"))
    (node,) = tree["nodes"]
    assert tree["scenes"][tree["scene"]]["nodes"] == [0] and node["mesh"] == 0
    (prim,) = tree["meshes"][0]["primitives"]
    assert set(prim["attributes"]) == {"POSITION", "NORMAL", "COLOR_0"}
    assert len(arrays[prim["indices"]]) == 3 * len(mesh.faces)


def test_glb_has_unit_vertex_normals_vertex_colours_and_the_asset_name(mesh, tmp_path):
    """Without NORMAL Blender shaded every triangle flat; the node was "geometry_0". The primitive
    has no material: trimesh shows a material's primitive white (tests below), and Blender gives a
    material-less primitive with COLOR_0 a material fed by the colours (tests/blender)."""
    path = save_mesh(mesh, tmp_path / "a_red_cube_seed7.glb", name=asset_name("a red cube", 7))
    tree, arrays = read_glb(path)
    (node,), (gmesh,) = tree["nodes"], tree["meshes"]
    assert node["name"] == gmesh["name"] == "red_cube_seed7"
    (prim,) = gmesh["primitives"]
    normals = arrays[prim["attributes"]["NORMAL"]]
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    y_up = mesh.vertices.astype(np.float64) @ np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]]).T
    expected = trimesh.Trimesh(y_up, mesh.faces, process=False).vertex_normals
    assert np.min(np.sum(normals * expected, axis=1)) > 0.9999
    assert "material" not in prim and "materials" not in tree and "COLOR_0" in prim["attributes"]

    scene = trimesh.load(path)  # trimesh reads it back as the same named mesh with those normals
    assert list(scene.geometry) == ["red_cube_seed7"]
    np.testing.assert_allclose(scene.geometry["red_cube_seed7"].vertex_normals, normals, atol=1e-6)
    back = load_mesh(path)
    np.testing.assert_allclose(back.vertices, mesh.vertices, atol=1e-6)
    np.testing.assert_allclose(back.colors, mesh.colors, atol=1e-3)


def test_vertices_only_on_zero_area_triangles_still_get_unit_normals(tmp_path):
    vertices = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 2, 2], [3, 3, 3], [4, 4, 4]]
    tree, arrays = read_glb(save_mesh(Mesh(vertices, [[0, 1, 2], [3, 4, 5]], np.full((6, 3), 0.5)), tmp_path / "d.glb"))
    normals = arrays[tree["meshes"][0]["primitives"][0]["attributes"]["NORMAL"]]
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(normals[:3], [[0, 1, 0]] * 3, atol=1e-6)  # engine +z is glTF +y


@pytest.mark.parametrize("stem, name, expected", [
    ("a_blue_torus_seed3", None, "a_blue_torus_seed3"),  # no name given: the file's stem
    ("x", "red_cube_seed7", "red_cube_seed7"),
    ("weird name \u2603!", None, "weird_name"),
    ("...", None, "mesh"),
    ("x", "", "mesh"),
])
def test_glb_names_default_to_a_safe_file_stem(tmp_path, stem, name, expected):
    mesh = Mesh(np.eye(3), [[0, 1, 2]], np.full((3, 3), 0.5))
    tree, _ = read_glb(save_mesh(mesh, tmp_path / f"{stem}.glb", name=name))
    assert tree["nodes"][0]["name"] == tree["meshes"][0]["name"] == expected


def test_asset_names_come_from_the_prompt_and_seed():
    assert asset_name("a red cube", 7) == "red_cube_seed7"
    assert asset_name("An Orange torus", 0) == "orange_torus_seed0"
    assert asset_name("a tall, blue cylinder", 12) == "tall_blue_cylinder_seed12"
    assert asset_name("torus", 3) == "torus_seed3"
    long = asset_name("a " + "large " * 30 + "cube", 2**63 - 1)
    assert len(long) <= 63 and long.startswith("large_large_") and long.endswith("_seed9223372036854775807")
    assert asset_name("a " + "large " * 30 + "sphere", 1) != asset_name("a " + "large " * 30 + "cube", 1)  # told apart
    assert asset_name("?!", 4) == "mesh_seed4"


def dark_mesh(levels):
    """A strip of triangles whose vertices carry every sRGB 8-bit level in ``levels`` on each channel."""
    n = len(levels)
    colours = np.stack([levels, np.roll(levels, 1), np.roll(levels, 2)], 1) / 255.0
    vertices = np.stack([np.arange(n) * 0.01, (np.arange(n) % 2) * 0.01, np.zeros(n)], 1)
    faces = np.stack([np.arange(n - 2), np.arange(1, n - 1), np.arange(2, n)], 1)
    return Mesh(vertices, faces, colours)


def test_dark_colours_keep_their_levels_through_a_glb(tmp_path):
    """COLOR_0 was 8-bit linear: sRGB 0..40 of 255 (near black) came back as 6 levels, against 41 in the PLY."""
    levels = np.arange(0, 41)
    mesh = dark_mesh(levels)
    glb = load_mesh(save_mesh(mesh, tmp_path / "dark.glb"))
    ply = load_mesh(save_mesh(mesh, tmp_path / "dark.ply"))
    for channel in range(3):
        got = np.unique(np.round(glb.colors[:, channel] * 255))
        assert len(got) == len(levels) == len(np.unique(np.round(ply.colors[:, channel] * 255))), channel
    np.testing.assert_allclose(glb.colors, mesh.colors, atol=0.25 / 255)
    # and the file itself stores linear light (what glTF requires) finely enough
    tree, arrays = read_glb(tmp_path / "dark.glb")
    attributes = tree["meshes"][0]["primitives"][0]["attributes"]
    colour = arrays[attributes["COLOR_0"]]
    assert len(np.unique(colour[:, 0])) == len(levels)
    np.testing.assert_allclose(colour[:, :3], srgb_to_linear(mesh.colors), atol=1e-6)


def test_trimesh_loads_the_glb_with_its_vertex_colours(tmp_path):
    """``trimesh.load`` gave white: it files COLOR_0 of a primitive with a material as a texture
    attribute, and read 16-bit colours modulo 256. Now its vertex colours are the file's linear
    COLOR_0 at trimesh's own precision (uint8: it keeps no more), for bright and dark tones alike."""
    levels = np.concatenate([np.arange(0, 41), [64, 128, 200, 255]])
    mesh = dark_mesh(levels)
    path = save_mesh(mesh, tmp_path / "known.glb", name="known")
    scene = trimesh.load(path)
    loaded = scene.geometry["known"]
    assert loaded.visual.kind == "vertex"
    got = np.asarray(loaded.visual.vertex_colors)
    expected = np.round(srgb_to_linear(mesh.colors) * 255)
    np.testing.assert_array_equal(got[:, :3], expected)  # to the code, in the order written
    np.testing.assert_array_equal(got[:, 3], 255)
    assert trimesh.load(path, force="mesh").visual.kind == "vertex"  # flattened too
    # the engine's own reader still gets every dark level from the same file
    assert len(np.unique(np.round(load_mesh(path).colors[:, 0] * 255))) == len(levels)


def test_empty_mesh_glb_is_valid_and_reads_back_empty(tmp_path):
    empty = Mesh(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)))
    path = save_mesh(empty, tmp_path / "e.glb", name="a_seed0")
    tree, _ = read_glb(path)
    assert tree["nodes"][0]["name"] == "a_seed0"
    assert load_mesh(path).is_empty


def test_object_cut_by_the_grid_bounds_is_closed():
    field = torch.ones(4, 16, 16, 16)
    field[0, :, 4:12, 4:12] = -1.0  # a square column running through the top and bottom faces
    mesh = extract_mesh(field)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    assert tm.is_watertight and tm.volume > 0
    assert np.isclose(mesh.vertices[:, 2].max(), 1.0, atol=0.07)


def test_empty_field_and_bad_input():
    empty = extract_mesh(torch.ones(4, 8, 8, 8))
    assert empty.is_empty and empty.vertices.shape == (0, 3)
    with pytest.raises(ValueError):
        extract_mesh(torch.zeros(3, 8, 8, 8))
    with pytest.raises(ValueError):
        save_mesh(Mesh(np.zeros((3, 3)), np.array([[0, 1, 2]]), np.zeros((3, 3))), "x.stl")
    with pytest.raises(ValueError):
        Mesh(np.zeros((3, 3)), np.array([[0, 1, 5]]), np.zeros((3, 3)))

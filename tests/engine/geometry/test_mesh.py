import numpy as np
import pytest
import torch
import trimesh

from engine.data.grammar import Prompt
from engine.data.procedural import field_volume, sample_spec
from engine.geometry.mesh import Mesh, extract_mesh, load_mesh, save_mesh


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
    scene = trimesh.load(path)
    raw = next(iter(scene.geometry.values()))
    # engine z (up) becomes glTF +y
    assert np.allclose(np.asarray(raw.vertices)[:, 1], mesh.vertices[:, 2], atol=1e-6)
    linear = np.asarray(raw.visual.vertex_colors)[:, 1].mean() / 255
    assert linear < mesh.colors[:, 1].mean() - 0.1  # green 0.7 sRGB is ~0.45 linear


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

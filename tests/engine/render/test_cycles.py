"""Cycles renderer: same cameras as the differentiable renderer (silhouette IoU), colours, cleanup."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.models.embedded.grammar import Prompt
from engine.models.embedded.procedural import TRUNCATION, field_volume, sample_spec
from engine.geometry.mesh import Mesh, extract_mesh
from engine.models.fields import SDFGrid
from engine.render.cameras import Cameras
from engine.render.cycles import CyclesConfig, CyclesUnavailable, render_meshes_cycles
from engine.render.volume import VolumeRenderConfig, render_field

bpy = pytest.importorskip("bpy")

RES = 64
CYCLES = CyclesConfig(resolution=RES, samples=8)


def make_cameras(azimuth, elevation, radius=3.0, fov=40.0) -> Cameras:
    n = len(azimuth)
    return Cameras(
        torch.tensor(azimuth, dtype=torch.float32),
        torch.tensor(elevation, dtype=torch.float32),
        torch.full((n,), float(radius)),
        torch.full((n,), float(fov)),
    )


# One view above the horizon, one below it from the other side.
CAMERAS = make_cameras([30.0, 160.0], [25.0, -15.0])
_CACHE: dict = {}


def shape_case(shape: str, size: str | None = None):
    """(mesh, volume-renderer alpha (V, 1, R, R)) for a procedural shape with a fixed seed."""
    key = (shape, size)
    if key not in _CACHE:
        spec = sample_spec(torch.Generator().manual_seed(0), Prompt(shape=shape, size=size))
        volume = field_volume(spec, 32)
        field = SDFGrid(volume[None], TRUNCATION)
        with torch.no_grad():
            alpha = render_field(field, CAMERAS, VolumeRenderConfig(resolution=RES)).alpha[0].numpy()
        _CACHE[key] = (extract_mesh(volume), alpha)
    return _CACHE[key]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-view IoU of silhouettes (alpha > 0.5) of (V, 1, R, R) images."""
    a, b = a > 0.5, b > 0.5
    return (a & b).sum((-3, -2, -1)) / np.maximum((a | b).sum((-3, -2, -1)), 1)


@pytest.mark.parametrize("shape, size", [("cube", None), ("cone", None), ("torus", None), ("pyramid", "tall")])
def test_silhouettes_match_volume_renderer(shape, size):
    mesh, volume_alpha = shape_case(shape, size)
    out = render_meshes_cycles([mesh], CAMERAS, CYCLES)
    assert out.rgb.shape == (1, 2, 3, RES, RES) and out.rgb.dtype == np.float32
    assert out.alpha.shape == (1, 2, 1, RES, RES) and out.alpha.dtype == np.float32
    scores = iou(volume_alpha, out.alpha[0])
    assert (scores >= 0.9).all(), f"{shape}: silhouette IoU per view {scores}"


def test_silhouette_test_detects_camera_convention_errors():
    """The IoU test has teeth: plausible convention mistakes on an asymmetric shape fall well below 0.9."""
    mesh, volume_alpha = shape_case("pyramid", "tall")
    right = render_meshes_cycles([mesh], CAMERAS, CYCLES).alpha[0]
    assert (iou(volume_alpha, right) >= 0.9).all()
    mistakes = {
        "image rows bottom-up": right[..., ::-1, :],
        "mirrored (handedness)": right[..., ::-1],
        "azimuth off by 90 degrees": render_meshes_cycles(
            [mesh], make_cameras([120.0, 250.0], [25.0, -15.0]), CYCLES
        ).alpha[0],
        "fov off by 25 percent": render_meshes_cycles(
            [mesh], make_cameras([30.0, 160.0], [25.0, -15.0], fov=50.0), CYCLES
        ).alpha[0],
    }
    for name, alpha in mistakes.items():
        scores = iou(volume_alpha, alpha)
        assert scores.min() < 0.8, f"{name}: IoU {scores} would pass unnoticed"


def coloured_sphere(rgb) -> Mesh:
    spec = sample_spec(torch.Generator().manual_seed(3), Prompt(shape="sphere", size="large"))
    mesh = extract_mesh(field_volume(spec, 24))
    return Mesh(mesh.vertices, mesh.faces, np.tile(np.asarray(rgb, np.float32), (len(mesh.vertices), 1)))


def test_red_mesh_is_red_over_white_and_empty_mesh_is_background():
    empty = Mesh(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)))
    cams = make_cameras([45.0], [20.0])
    out = render_meshes_cycles([coloured_sphere((0.85, 0.1, 0.1)), empty], cams, CyclesConfig(resolution=48, samples=8))
    assert out.rgb.shape == (2, 1, 3, 48, 48)
    assert 0.0 <= out.rgb.min() and out.rgb.max() <= 1.0

    fg = out.alpha[0, 0, 0] > 0.99
    assert 0.2 < fg.mean() < 0.8
    r, g, b = out.rgb[0, 0][:, fg].mean(1)
    assert r > 0.5 and r > g + 0.3 and r > b + 0.3, (r, g, b)
    corners = out.rgb[0, 0][:, [0, 0, -1, -1], [0, -1, 0, -1]]
    np.testing.assert_allclose(corners, 1.0)
    assert (out.alpha[0, 0][:, [0, 0, -1, -1], [0, -1, 0, -1]] == 0).all()

    np.testing.assert_array_equal(out.rgb[1], 1.0)
    np.testing.assert_array_equal(out.alpha[1], 0.0)


def test_background_colour_transparent_and_opaque():
    cams = make_cameras([0.0], [10.0])
    background = (0.2, 0.4, 0.6)
    mesh = coloured_sphere((0.1, 0.8, 0.1))
    empty = Mesh(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)))
    for transparent in (True, False):
        cfg = CyclesConfig(resolution=32, samples=4, background=background, transparent=transparent)
        out = render_meshes_cycles([mesh, empty], cams, cfg)
        np.testing.assert_allclose(out.rgb[0, 0, :, 0, 0], background, atol=1.5 / 255)
        assert out.rgb[0, 0, 1, 16, 16] > out.rgb[0, 0, 0, 16, 16] + 0.3  # green object in the middle
        np.testing.assert_allclose(out.rgb[1, 0], np.broadcast_to(np.reshape(background, (3, 1, 1)), (3, 32, 32)))
        if transparent:
            assert out.alpha[0, 0, 0, 0, 0] == 0.0 and out.alpha[0, 0, 0, 16, 16] == 1.0
            np.testing.assert_array_equal(out.alpha[1], 0.0)
        else:
            np.testing.assert_array_equal(out.alpha, 1.0)


def test_no_datablock_leak_and_other_scenes_untouched():
    def counts():
        return {
            name: len(getattr(bpy.data, name))
            for name in ("meshes", "objects", "materials", "images", "cameras", "lights", "worlds", "scenes", "collections", "node_groups")
        }

    window = bpy.context.window
    scene_before = window.scene.name if window else None
    cube_location = tuple(bpy.data.objects["Cube"].location) if "Cube" in bpy.data.objects else None
    before = counts()
    cfg = CyclesConfig(resolution=16, samples=1)
    cams = make_cameras([0.0, 90.0], [20.0, 20.0])
    mesh = coloured_sphere((0.5, 0.5, 0.5))
    for _ in range(2):
        render_meshes_cycles([mesh, mesh], cams, cfg)
    assert counts() == before
    if window:
        assert window.scene.name == scene_before
    if cube_location is not None:
        assert tuple(bpy.data.objects["Cube"].location) == cube_location


def test_missing_bpy_raises_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bpy", None)  # makes `import bpy` raise ImportError
    with pytest.raises(CyclesUnavailable, match="bpy"):
        render_meshes_cycles([coloured_sphere((1, 0, 0))], make_cameras([0.0], [0.0]), CyclesConfig(resolution=8))


def test_albedo_pass_is_the_unshaded_vertex_colour_premultiplied():
    colour = (0.85, 0.4, 0.1)
    cams = make_cameras([45.0, 200.0], [20.0, -10.0])
    out = render_meshes_cycles([coloured_sphere(colour)], cams, CyclesConfig(resolution=48, samples=8, albedo=True))
    assert out.albedo.shape == out.rgb.shape
    for v in range(2):
        cover = out.alpha[0, v, 0] > 0.99
        # inside the silhouette (its edge pixels are sampled apart in the two passes)
        fg = cover & np.roll(cover, 1, 0) & np.roll(cover, -1, 0) & np.roll(cover, 1, 1) & np.roll(cover, -1, 1)
        # unshaded: every covered pixel shows the stored sRGB colour (8-bit PNG: within 1/255)
        np.testing.assert_allclose(out.albedo[0, v][:, fg].T, np.tile(colour, (fg.sum(), 1)), atol=2 / 255)
        near = out.alpha[0, v, 0] > 0
        near = near | np.roll(near, 1, 0) | np.roll(near, -1, 0) | np.roll(near, 1, 1) | np.roll(near, -1, 1)
        assert (out.albedo[0, v][:, ~near] == 0).all()  # premultiplied: nothing off the mesh
        shaded = out.rgb[0, v][:, fg]
        assert shaded.std(1).max() > 0.02  # the shaded pass does vary with the light
    assert render_meshes_cycles([coloured_sphere(colour)], cams[:1], CYCLES).albedo is None  # only when asked

"""Generic mesh measurements: the mean colour and its nearest palette name, and the settings' checks.

How well the features separate shapes is tested with the judge that uses them
(tests/engine/models/embedded/test_shape_judge.py).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import trimesh

from engine.geometry.mesh import Mesh
from engine.geometry.mesh_features import FeatureSettings, mean_colour, nearest_colour, shape_features

SETTINGS = FeatureSettings(smoothing_radius=0.08, max_smoothing_steps=64, facet_core_deg=5.0, facet_min_area=0.03,
                           facet_separation_deg=20.0, facet_seeds=800, taper_end_fraction=0.2)
PALETTE = {"red": (0.85, 0.12, 0.10), "blue": (0.12, 0.25, 0.85), "white": (0.92, 0.92, 0.90)}


def _red_square_and_blue_slivers() -> Mesh:
    # One big red square and many tiny blue slivers elsewhere: by vertex count the mesh is blue,
    # by visible area it is red.
    vertices, faces, colours = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]], [PALETTE["red"]] * 4
    for k in range(40):
        base = len(vertices)
        vertices += [[2 + k, 0, 0], [2.01 + k, 0, 0], [2 + k, 0.01, 0]]
        faces.append([base, base + 1, base + 2])
        colours += [PALETTE["blue"]] * 3
    return Mesh(np.array(vertices, dtype=float), np.array(faces), np.array(colours))


def test_colour_is_area_weighted_and_named_from_the_palette():
    mesh = _red_square_and_blue_slivers()
    rgb = mean_colour(mesh)
    assert rgb is not None and rgb[0] > 0.8 and rgb[2] < 0.2
    assert nearest_colour(mesh, PALETTE) == "red"


def test_degenerate_mesh_has_no_colour():
    empty = Mesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=int), np.zeros((0, 3)))
    assert mean_colour(empty) is None and nearest_colour(empty, PALETTE) is None
    assert shape_features(empty, SETTINGS) is None


def test_features_of_a_ball_and_a_ring():
    ball = trimesh.creation.icosphere(subdivisions=4, radius=0.6)
    ring = trimesh.creation.torus(major_radius=0.5, minor_radius=0.15)
    grey = lambda m: np.full((len(m.vertices), 3), 0.5)  # noqa: E731
    f_ball = shape_features(Mesh(ball.vertices, ball.faces, grey(ball)), SETTINGS)
    f_ring = shape_features(Mesh(ring.vertices, ring.faces, grey(ring)), SETTINGS)
    assert f_ball.sphericity == pytest.approx(1.0, abs=0.02) and f_ball.radial_cv < 0.01
    assert abs(f_ball.centroid_winding) == pytest.approx(1.0, abs=1e-3)  # centroid inside
    assert abs(f_ring.centroid_winding) < 0.05  # centroid in the hole
    assert f_ring.sphericity < f_ball.sphericity


@pytest.mark.parametrize("field, value", [("smoothing_radius", 0.0), ("smoothing_radius", float("nan")),
                                          ("facet_seeds", 0), ("max_smoothing_steps", 1.5), ("taper_end_fraction", 0.7)])
def test_bad_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(SETTINGS, **{field: value})

"""The known splat shapes lie flat on their surfaces: each Gaussian's thin axis is the surface normal."""
import pytest
import torch

from engine.geometry.splat_shapes import SplatShapeConfig, splat_cube, splat_sphere
from engine.render.splats import quats_to_rotmats


def _thin_axes(splats):
    rot = quats_to_rotmats(splats.quats[0].double())
    axis = splats.scales[0].abs().argmin(-1)
    return rot[torch.arange(len(axis)), :, axis], splats.scales[0]


@pytest.mark.parametrize("build", ["sphere", "cube"])
def test_gaussians_are_tangent_to_the_surface(build):
    config = SplatShapeConfig(count=600, normal_jitter=0.0, seed=4)
    shape = splat_sphere(0.6, config) if build == "sphere" else splat_cube(0.5, config)
    thin, scales = _thin_axes(shape.splats)
    assert torch.allclose(scales[:, 2], torch.full_like(scales[:, 2], config.thickness))  # the thin one is local z
    means = shape.splats.means[0].double()
    if build == "sphere":
        normals = means / means.norm(dim=1, keepdim=True)
    else:  # the face a point lies on: its largest coordinate
        normals = torch.nn.functional.one_hot(means.abs().argmax(1), 3).double() * means.sign()
    # Parallel to the normal, and the spin about it kept the tangent axes in the tangent plane.
    assert torch.allclose((thin * normals).sum(1).abs(), torch.ones(len(thin), dtype=torch.float64), atol=1e-5)
    assert torch.allclose(shape.splats.quats[0].norm(dim=1), torch.ones(len(thin)), atol=1e-5)

import math

import pytest
import torch

from engine.models.embedded.grammar import Prompt
from engine.models.embedded.procedural import TRUNCATION, ShapeSpec, field_volume
from engine.models.embedded.model import EmbeddedConfig, EmbeddedModel
from engine.models.fields import SDFGrid
from engine.render import render
from engine.render.cameras import Cameras, OrbitConfig, orbit_cameras
from engine.render.volume import VolumeRenderConfig

IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _sphere(radius=0.6):
    spec = ShapeSpec("sphere", "red", (0.8, 0.1, 0.1), (radius,), IDENTITY)
    return SDFGrid(field_volume(spec, 48)[None], TRUNCATION)


def test_sphere_silhouette_depth_and_normal_match_geometry():
    r, dist, fov, res = 0.6, 3.0, 40.0, 96
    cams = Cameras(torch.tensor([30.0]), torch.tensor([10.0]), torch.tensor([dist]), torch.tensor([fov]))
    out = render(_sphere(r), cams, VolumeRenderConfig(resolution=res, samples=96))
    assert out.rgb.shape == (1, 1, 3, res, res) and out.alpha.shape == (1, 1, 1, res, res)
    projected = math.tan(math.asin(r / dist)) / math.tan(math.radians(fov / 2)) * res / 2
    area = float((out.alpha > 0.5).sum())
    assert abs(area - math.pi * projected**2) / (math.pi * projected**2) < 0.05
    c = res // 2
    assert abs(float(out.depth[0, 0, 0, c, c]) - (dist - r)) < 0.03
    toward_camera = -torch.nn.functional.normalize(torch.tensor([0.0, 0.0, 0.0]) - torch.tensor(
        [math.cos(math.radians(10)) * math.cos(math.radians(30)), math.cos(math.radians(10)) * math.sin(math.radians(30)), math.sin(math.radians(10))]
    ), dim=0)
    assert torch.dot(out.normal[0, 0, :, c, c], toward_camera) > 0.99
    # Background: white RGB, zero alpha, depth and normal.
    assert torch.allclose(out.rgb[0, 0, :, 0, 0], torch.ones(3)) and float(out.alpha[0, 0, 0, 0, 0]) < 1e-3
    assert float(out.depth[0, 0, 0, 0, 0]) == 0.0
    # Lit red: red channel dominates on the object.
    mask = out.alpha[0, 0, 0] > 0.9
    rgb = out.rgb[0, 0][:, mask].mean(1)
    assert rgb[0] > 2 * rgb[1] and rgb[0] > 2 * rgb[2]


def test_gradients_reach_latent_and_match_finite_differences():
    torch.manual_seed(0)
    model = EmbeddedModel(EmbeddedConfig())
    model.autoencoder.double()
    z = torch.randn(1, *model.latent_shape, dtype=torch.float64) * 0.5
    cams = orbit_cameras(OrbitConfig(views=2))
    cfg = VolumeRenderConfig(resolution=12, samples=24, sharpness=0.05)
    g = torch.Generator().manual_seed(1)
    weights = {k: torch.rand(1, 2, c, 12, 12, generator=g, dtype=torch.float64) for k, c in (("rgb", 3), ("alpha", 1), ("depth", 1), ("normal", 3))}

    def loss(latent):
        out = render(model.decode(latent, resolution=16), cams, cfg)
        return sum((getattr(out, k) * w).sum() for k, w in weights.items())

    zz = z.clone().requires_grad_(True)
    loss(zz).backward()
    assert zz.grad is not None and zz.grad.abs().sum() > 0
    for seed in range(2):
        v = torch.randn(z.shape, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
        eps = 1e-5
        with torch.no_grad():
            fd = (loss(z + eps * v) - loss(z - eps * v)) / (2 * eps)
        analytic = (zz.grad * v).sum()
        assert torch.isclose(analytic, fd, rtol=1e-4, atol=1e-6), (float(analytic), float(fd))


def test_render_picks_the_renderer_by_representation_type():
    from engine.models.fields import SDFGrid
    from engine.render import SignedDistanceField, render
    from engine.render.cameras import OrbitConfig, orbit_cameras

    grid = SDFGrid(torch.ones(1, 4, 8, 8, 8), 0.1)
    assert isinstance(grid, SignedDistanceField)
    out = render(grid, orbit_cameras(OrbitConfig(views=1)), VolumeRenderConfig(resolution=8, samples=8))
    assert out.rgb.shape == (1, 1, 3, 8, 8)
    double = render(SDFGrid(torch.ones(1, 4, 8, 8, 8, dtype=torch.float64), 0.1), orbit_cameras(OrbitConfig(views=1)),
                    VolumeRenderConfig(resolution=8, samples=8))
    assert double.rgb.dtype == torch.float64  # rays are built where and as precise as the field is
    with pytest.raises(TypeError, match="no differentiable renderer for Tensor"):
        render(torch.zeros(1, 2), orbit_cameras(OrbitConfig(views=1)))

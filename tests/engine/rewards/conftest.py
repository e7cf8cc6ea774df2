import pytest
import torch

from engine.models.embedded.procedural import TRUNCATION, ShapeSpec, field_volume
from engine.models.fields import SDFGrid
from engine.render import OrbitConfig, VolumeRenderConfig, orbit_cameras, render

IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
RED = (0.85, 0.12, 0.10)
BLUE = (0.12, 0.25, 0.85)


@pytest.fixture(scope="session")
def red_sphere_blue_cube():
    """Renders (B=2, V=2, C, 32, 32) of a red sphere and a blue cube, no gradient."""
    specs = [ShapeSpec("sphere", "red", RED, (0.6,), IDENTITY), ShapeSpec("cube", "blue", BLUE, (0.4, 0.4, 0.4), IDENTITY)]
    grid = torch.stack([field_volume(s, 24) for s in specs])
    cams = orbit_cameras(OrbitConfig(views=2, azimuth_offset=20.0))
    with torch.no_grad():
        return render(SDFGrid(grid, TRUNCATION), cams, VolumeRenderConfig(resolution=32, samples=32))


@pytest.fixture
def differentiable_render():
    """(grid leaf requiring grad (1, 4, 20, 20, 20), renders (1, 1, C, 24, 24)) of a green sphere."""
    spec = ShapeSpec("sphere", "green", (0.15, 0.7, 0.2), (0.55,), IDENTITY)
    grid = field_volume(spec, 20)[None].requires_grad_(True)
    out = render(SDFGrid(grid, TRUNCATION), orbit_cameras(OrbitConfig(views=1)), VolumeRenderConfig(resolution=24, samples=24))
    return grid, out

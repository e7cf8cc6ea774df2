"""The shared-points lookup and the renderer's batched path give what the per-field path gives."""
import pytest
import torch
import torch.nn.functional as F

from engine.models.fields import SDFGrid
from engine.render.cameras import orbit_cameras, OrbitConfig
from engine.render.volume import VolumeRenderConfig, render_field
from engine.render.volume_lookup import shared_trilinear, trilinear_matrix


def test_shared_lookup_is_grid_sample_of_every_field_values_and_gradient():
    g = torch.Generator().manual_seed(0)
    volume = torch.randn(3, 5, 6, 7, 9, generator=g, dtype=torch.float64, requires_grad=True)
    points = torch.rand(200, 3, generator=g, dtype=torch.float64) * 2.6 - 1.3  # some outside the cube: border
    corners = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [1.0, -1.0, 0.0]], dtype=torch.float64)
    points = torch.cat([points, corners])
    ours = shared_trilinear(volume, points)
    reference = F.grid_sample(volume, points.view(1, -1, 1, 1, 3).expand(3, -1, -1, -1, -1), mode="bilinear",
                              padding_mode="border", align_corners=True).view(3, 5, -1)
    assert ours.shape == (3, 5, len(points))
    assert torch.allclose(ours, reference, atol=1e-12)
    weights = torch.randn(ours.shape, generator=g, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), volume)
    (g_ref,) = torch.autograd.grad((reference * weights).sum(), volume)
    assert torch.allclose(g_ours, g_ref, atol=1e-12)


def test_trilinear_rows_sum_to_one_and_bad_points_are_refused():
    m = trilinear_matrix(torch.rand(50, 3) * 2 - 1, (4, 4, 4)).to_dense()
    assert torch.allclose(m.sum(1), torch.ones(50), atol=1e-6) and (m >= 0).all()
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        trilinear_matrix(torch.zeros(5, 2), (4, 4, 4))


def test_renderer_batched_lookup_matches_the_per_field_lookup_and_its_gradient(monkeypatch):
    calls = []
    original = SDFGrid.sample_shared
    monkeypatch.setattr(SDFGrid, "sample_shared", lambda self, points: calls.append(len(points)) or original(self, points))
    g = torch.Generator().manual_seed(1)
    # A smooth random field with a surface inside the cube: sdf = |p| - 0.5 plus noise, random colours.
    axis = torch.linspace(-1, 1, 12, dtype=torch.float64)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    radius = (x**2 + y**2 + z**2).sqrt()
    grids = []
    for _ in range(3):
        sdf = ((radius - 0.5 + 0.05 * torch.randn(radius.shape, generator=g, dtype=torch.float64)) / 0.2).clamp(-1, 1)
        grids.append(torch.cat([sdf[None], torch.rand(3, 12, 12, 12, generator=g, dtype=torch.float64)]))
    grid = torch.stack(grids).requires_grad_(True)
    cams = orbit_cameras(OrbitConfig(views=2, random_azimuth=True, elevation_jitter=5.0), torch.Generator().manual_seed(2))
    cfg = VolumeRenderConfig(resolution=10, samples=16, sharpness=0.05)
    shared = render_field(SDFGrid(grid, 0.2), cams, cfg, shared=True)
    assert calls == [2 * 10 * 10 * 16]  # one lookup for the batch: V * R * R rays x S samples
    single = render_field(SDFGrid(grid, 0.2), cams, cfg, shared=False)
    assert len(calls) == 1
    weights = {k: torch.rand(getattr(shared, k).shape, generator=g, dtype=torch.float64) for k in ("rgb", "albedo", "alpha", "depth", "normal")}
    for k in weights:
        assert getattr(shared, k).shape == (3, 2, getattr(shared, k).shape[2], 10, 10)
        assert torch.allclose(getattr(shared, k), getattr(single, k), atol=1e-10), k
    assert float(shared.alpha.detach().max()) > 0.5  # the surface is seen
    (g_shared,) = torch.autograd.grad(sum((getattr(shared, k) * w).sum() for k, w in weights.items()), grid)
    (g_single,) = torch.autograd.grad(sum((getattr(single, k) * w).sum() for k, w in weights.items()), grid)
    assert g_shared.abs().sum() > 0 and torch.allclose(g_shared, g_single, atol=1e-9)

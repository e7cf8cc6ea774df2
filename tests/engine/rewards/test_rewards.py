import pytest
import torch

from engine.models.embedded.procedural import TRUNCATION, ShapeSpec, field_volume
from engine.models.fields import SDFGrid
from engine.render import OrbitConfig, VolumeRenderConfig, orbit_cameras, render
from engine.rewards import DepthNormalConsistency, PaletteReward, WeightedSum

IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


@pytest.fixture(scope="module")
def renders():
    specs = [
        ShapeSpec("sphere", "red", (0.85, 0.12, 0.10), (0.6,), IDENTITY),
        ShapeSpec("cube", "blue", (0.12, 0.25, 0.85), (0.4, 0.4, 0.4), IDENTITY),
    ]
    grid = torch.stack([field_volume(s, 32) for s in specs])
    noisy = grid.clone()
    noisy[:, 0] += 0.6 * torch.randn(noisy[:, 0].shape, generator=torch.Generator().manual_seed(0))
    cams = orbit_cameras(OrbitConfig(views=2, azimuth_offset=20.0))
    cfg = VolumeRenderConfig(resolution=48, samples=64)
    return render(SDFGrid(grid, TRUNCATION), cams, cfg), render(SDFGrid(noisy, TRUNCATION), cams, cfg)


def test_dnc_rewards_consistent_geometry(renders):
    clean, noisy = renders
    dnc = DepthNormalConsistency()
    good = dnc(clean, ["a red sphere", "a blue cube"])
    bad = dnc(noisy, ["a red sphere", "a blue cube"])
    assert good.shape == (2,)
    assert (good > 0.9).all(), good
    assert (bad < good - 0.05).all(), (good, bad)


def test_palette_prefers_matching_colours(renders):
    clean, _ = renders
    red = PaletteReward([(0.85, 0.12, 0.10)])(clean, ["", ""])
    blue = PaletteReward([(0.12, 0.25, 0.85)])(clean, ["", ""])
    assert red[0] > blue[0] and blue[1] > red[1]
    assert red[0] > -0.05  # the red sphere sits almost exactly on its palette
    both = WeightedSum([(1.0, PaletteReward([(0.85, 0.12, 0.10), (0.12, 0.25, 0.85)])), (0.5, DepthNormalConsistency())])
    assert both.differentiable and both(clean, ["", ""]).shape == (2,)


def test_rewards_are_differentiable_to_the_field():
    spec = ShapeSpec("sphere", "green", (0.15, 0.7, 0.2), (0.55,), IDENTITY)
    grid = field_volume(spec, 24)[None].requires_grad_(True)
    out = render(SDFGrid(grid, TRUNCATION), orbit_cameras(OrbitConfig(views=1)), VolumeRenderConfig(resolution=24, samples=32))
    (DepthNormalConsistency()(out, [""]) + PaletteReward([(1.0, 0.0, 0.0)])(out, [""])).sum().backward()
    assert torch.isfinite(grid.grad).all() and grid.grad[0, 0].abs().sum() > 0 and grid.grad[0, 1:].abs().sum() > 0


def test_bad_input_is_rejected(renders):
    with pytest.raises(ValueError):
        PaletteReward([])
    with pytest.raises(ValueError):
        PaletteReward([(2.0, 0.0, 0.0)])
    with pytest.raises(ValueError):
        DepthNormalConsistency()(renders[0], ["only one prompt"])


def test_dnc_detach_depth_keeps_the_score_and_sends_the_gradient_only_through_the_normals(differentiable_render):
    from engine.rewards import build_reward

    _, out = differentiable_render
    plain, detached = build_reward("dnc", {}), build_reward("dnc", {"detach_depth": "true"})
    assert detached.detach_depth and not plain.detach_depth
    r_plain, r_det = plain(out, ["a green sphere"]), detached(out, ["a green sphere"])
    assert torch.allclose(r_plain, r_det)
    (g_depth,) = torch.autograd.grad(r_plain.sum(), out.depth, retain_graph=True)
    assert g_depth.abs().sum() > 0
    g_none, g_normal = torch.autograd.grad(r_det.sum(), [out.depth, out.normal], allow_unused=True, retain_graph=True)
    assert g_none is None and g_normal.abs().sum() > 0

import torch

from engine.models.embedded.grammar import SHAPES, Prompt
from engine.models.embedded.procedural import TRUNCATION, field_volume, grid_points, sample_spec, sdf_world


def _specs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [sample_spec(g, Prompt(shape=s, colour="red")) for s in SHAPES for _ in range(3)]


def test_centre_inside_corners_outside():
    for spec in _specs():
        pts = torch.tensor([[0.0, 0.0, 0.0] if spec.shape != "torus" else [0.0, 0.0, 2.0], [1.0, 1.0, 1.0]])
        d = sdf_world(spec, pts)
        assert d[1] > 0.3
        if spec.shape != "torus":
            assert d[0] < 0, spec
        else:
            # the hole of a torus is outside
            assert sdf_world(spec, torch.zeros(1, 3))[0] > 0


def test_objects_fit_in_scene_cube():
    for spec in _specs(1):
        surface = grid_points(24).reshape(-1, 3)
        border = surface[(surface.abs() > 0.95).any(-1)]
        assert (sdf_world(spec, border) > 0).all(), spec


def test_exact_sdfs_have_unit_gradient_near_surface():
    # Eikonal check on the families whose SDF is exact (the pyramid's is a bound outside).
    g = torch.Generator().manual_seed(3)
    for spec in _specs(2):
        if spec.shape == "pyramid":
            continue
        pts = (torch.rand(4000, 3, generator=g) * 2 - 1).requires_grad_(True)
        d = sdf_world(spec, pts)
        (grad,) = torch.autograd.grad(d.sum(), pts)
        near = (d.abs() < 0.1) & (d.abs() > 1e-3)
        norms = grad[near].norm(dim=-1)
        assert ((norms - 1).abs() < 1e-3).float().mean() > 0.97, spec.shape


def test_volume_layout_is_zyx():
    spec = _specs()[0]
    vol = field_volume(spec, 17)
    assert vol.shape == (4, 17, 17, 17)
    p = torch.tensor([[1.0, -1.0, 0.0]])  # x = +1, y = -1, z = 0 -> index [z=8, y=0, x=16]
    assert torch.isclose(vol[0, 8, 0, 16], (sdf_world(spec, p)[0] / TRUNCATION).clamp(-1, 1))
    assert torch.allclose(vol[1:, 0, 0, 0], torch.tensor(spec.rgb))


def test_size_words_change_proportions():
    g = torch.Generator().manual_seed(0)
    tall = [sample_spec(g, Prompt("cylinder", "red", "tall")).dims for _ in range(20)]
    flat = [sample_spec(g, Prompt("cylinder", "red", "flat")).dims for _ in range(20)]
    assert min(h / r for r, h in tall) > 1.5 > 0.5 > max(h / r for r, h in flat)


def test_an_open_shape_prompt_draws_every_family_and_keeps_its_colour():
    import torch

    from engine.models.embedded.grammar import SHAPES, parse_prompt
    from engine.models.embedded.procedural import sample_spec

    g = torch.Generator().manual_seed(0)
    specs = [sample_spec(g, parse_prompt("a red object")) for _ in range(120)]
    assert {s.shape for s in specs} == set(SHAPES)
    assert all(s.colour == "red" for s in specs) and all(s.size is None for s in specs)

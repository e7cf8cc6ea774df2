import math

import numpy as np
import pytest
import torch

import engine.render.splats as splats_module
from engine.render import GaussianSplats, SplatRenderConfig, render
from engine.render.cameras import Cameras, camera_rays
from engine.render.splat_render import camera_matrices, render_splats
from engine.render.splats import quaternion_multiply, quats_to_rotmats, rasterize
from engine.render.volume import VolumeRenderConfig

F64 = torch.float64


def _camera(width=24, height=20, f=30.0, cx=None, cy=None, dtype=F64):
    """Identity OpenCV camera at the origin looking down +z."""
    k = torch.tensor([[f, 0.0, width / 2 if cx is None else cx], [0.0, f, height / 2 if cy is None else cy],
                      [0.0, 0.0, 1.0]], dtype=dtype)
    return torch.eye(4, dtype=dtype)[None], k[None]


def _quat_z(angle):
    return torch.tensor([math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)], dtype=F64)


def _closed_form_alpha(mean, quat, scale, opacity, k, width, height, eps2d=0.3):
    """The classic-mode alpha of one Gaussian seen by the identity camera, written out in numpy."""
    w, x, y, z = np.asarray(quat, float) / np.linalg.norm(quat)
    rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                    [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                    [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    cov = rot @ np.diag(np.asarray(scale, float) ** 2) @ rot.T
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    mx, my, mz = mean
    jac = np.array([[fx / mz, 0, -fx * mx / mz**2], [0, fy / mz, -fy * my / mz**2]])
    cov2d = jac @ cov @ jac.T + eps2d * np.eye(2)
    centre = np.array([fx * mx / mz + cx, fy * my / mz + cy])
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    d = np.stack([centre[0] - cols, centre[1] - rows], -1)
    sigma = 0.5 * np.einsum("hwi,ij,hwj->hw", d, np.linalg.inv(cov2d), d)
    raw = opacity * np.exp(-sigma)
    return np.where(raw >= 1 / 255, np.minimum(raw, 0.999), 0.0), raw


def _one(mean, quat, scale, opacity, color):
    t = lambda v: torch.as_tensor(v, dtype=F64)[None]  # noqa: E731
    return t(mean), t(quat), t(scale), torch.tensor([opacity], dtype=F64), t(color)


def test_single_gaussian_is_the_closed_form_2d_gaussian():
    width, height = 24, 20
    viewmat, k = _camera(width, height)
    mean, quat, scale, opacity = [0.07, -0.05, 2.0], _quat_z(0.6), [0.12, 0.05, 0.02], 0.8
    m, q, s, o, c = _one(mean, quat, scale, opacity, [0.2, 0.5, 0.9])
    colors, alphas, meta = rasterize(m, q, s, o, c, viewmat, k, width, height, backend="torch")
    assert colors.shape == (1, height, width, 3) and alphas.shape == (1, height, width, 1)
    expected, raw = _closed_form_alpha(mean, quat, scale, opacity, k[0].numpy(), width, height)
    np.testing.assert_allclose(alphas[0, ..., 0].numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(colors[0].numpy(), expected[..., None] * np.array([0.2, 0.5, 0.9]), atol=1e-10)
    # the 1/255 skip rule is exercised: some pixels have a positive but sub-threshold alpha
    assert ((raw > 1e-6) & (raw < 1 / 255)).any() and (expected > 0.5).any()
    assert meta["backend"] == "torch" and meta["radii"].shape == (1, 1, 2) and meta["means2d"].shape == (1, 1, 2)


def test_off_axis_gaussian_uses_the_clamped_jacobian_limits():
    # far outside the view the Jacobian is taken at x/z clamped to 1.3x the half-width
    width, height, f = 16, 16, 20.0
    viewmat, k = _camera(width, height, f)
    m, q, s, o, c = _one([0.9, 0.0, 1.0], _quat_z(0.0), [0.3, 0.3, 0.3], 0.9, [1.0])
    _, _, meta = rasterize(m, q, s, o, c, viewmat, k, width, height, backend="torch")
    limit = (width - width / 2) / f + 0.3 * (0.5 * width / f)
    jxz = -f * limit / 1.0  # third column entry of J at the clamped x/z
    cov2d_xx = (f**2 + jxz**2) * 0.09 + 0.3
    cov2d_yy = f**2 * 0.09 + 0.3
    conic = meta["conics"][0, 0]
    assert float(conic[0]) == pytest.approx(1 / cov2d_xx, rel=1e-9)
    assert float(conic[2]) == pytest.approx(1 / cov2d_yy, rel=1e-9)
    assert float(meta["means2d"][0, 0, 0]) == pytest.approx(f * 0.9 + width / 2)  # the mean is not clamped


def test_front_gaussian_wins_whatever_the_input_order():
    width, height = 16, 16
    viewmat, k = _camera(width, height, f=20.0, cx=8.5, cy=8.5)
    means = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 2.0]], dtype=F64)  # back first
    quats = torch.stack([_quat_z(0.0), _quat_z(0.3)])
    scales = torch.full((2, 3), 0.3, dtype=F64)
    opac = torch.tensor([0.9, 0.7], dtype=F64)
    colors = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=F64)
    out1 = rasterize(means, quats, scales, opac, colors, viewmat, k, width, height, backend="torch")
    perm = torch.tensor([1, 0])
    out2 = rasterize(means[perm], quats[perm], scales[perm], opac[perm], colors[perm], viewmat, k, width, height,
                     backend="torch")
    torch.testing.assert_close(out1[0], out2[0])
    torch.testing.assert_close(out1[1], out2[1])
    centre = out1[0][0, 8, 8]  # both Gaussians are centred on this pixel: alpha = opacity there
    torch.testing.assert_close(centre, torch.tensor([0.7, 0.0, 0.3 * 0.9], dtype=F64))
    assert float(out1[1][0, 8, 8, 0]) == pytest.approx(1 - 0.3 * 0.1)


def test_expected_and_accumulated_depth_of_one_gaussian():
    width, height = 20, 20
    viewmat, k = _camera(width, height)
    m, q, s, o, c = _one([0.05, 0.02, 2.5], _quat_z(0.4), [0.1, 0.06, 0.05], 0.7, [0.3, 0.6, 0.9])
    rgbd, alphas, _ = rasterize(m, q, s, o, c, viewmat, k, width, height, render_mode="RGB+ED", backend="torch")
    assert rgbd.shape == (1, height, width, 4)
    covered = alphas[0, ..., 0] > 0
    assert covered.sum() > 20
    torch.testing.assert_close(rgbd[0, ..., 3][covered], torch.full_like(rgbd[0, ..., 3][covered], 2.5))
    d, alphas_d, _ = rasterize(m, q, s, o, c, viewmat, k, width, height, render_mode="D", backend="torch")
    ed, _, _ = rasterize(m, q, s, o, c, viewmat, k, width, height, render_mode="ED", backend="torch")
    assert d.shape == ed.shape == (1, height, width, 1)
    torch.testing.assert_close(d, alphas_d * 2.5)
    torch.testing.assert_close(ed[0, ..., 0][covered], torch.full_like(ed[0, ..., 0][covered], 2.5))
    rgb_d, _, _ = rasterize(m, q, s, o, c, viewmat, k, width, height, render_mode="RGB+D", backend="torch")
    torch.testing.assert_close(rgb_d[..., 3:], d)


def test_pixel_stops_before_transmittance_reaches_1e4():
    # four opaque-ish Gaussians centred on pixel (8, 8): after three T = 0.05^3 = 1.25e-4; the fourth
    # would take it to 6.25e-6 <= 1e-4, so the pixel stops and the fourth is not drawn
    width, height = 17, 17
    viewmat, k = _camera(width, height, f=20.0, cx=8.5, cy=8.5)
    n = 4
    means = torch.tensor([[0.0, 0.0, 2.0 + i] for i in range(n)], dtype=F64)
    quats = _quat_z(0.0).expand(n, 4)
    scales = torch.full((n, 3), 0.5, dtype=F64)
    opac = torch.full((n,), 0.95, dtype=F64)
    colors = torch.tensor([[1.0], [10.0], [100.0], [1000.0]], dtype=F64)
    img, alphas, _ = rasterize(means, quats, scales, opac, colors, viewmat, k, width, height,
                               backgrounds=torch.tensor([[7.0]], dtype=F64), backend="torch")
    t3 = 0.05**3
    expected = 0.95 * (1 + 10 * 0.05 + 100 * 0.05**2) + t3 * 7.0
    assert float(img[0, 8, 8, 0]) == pytest.approx(expected, rel=1e-12)
    assert float(alphas[0, 8, 8, 0]) == pytest.approx(1 - t3, rel=1e-12)


def test_gaussians_below_1_over_255_opacity_are_skipped():
    viewmat, k = _camera()
    m, q, s, o, c = _one([0.0, 0.0, 2.0], _quat_z(0.0), [0.2, 0.2, 0.2], 0.9 / 255, [1.0, 1.0, 1.0])
    img, alphas, meta = rasterize(m, q, s, o, c, viewmat, k, 24, 20, backend="torch")
    assert float(alphas.abs().max()) == 0.0 and float(img.abs().max()) == 0.0
    assert int(meta["radii"].abs().max()) == 0


def test_gaussians_behind_the_near_plane_are_culled_and_backward_still_runs():
    viewmat, k = _camera()
    m, q, s, o, c = _one([0.0, 0.0, 0.005], _quat_z(0.0), [0.2, 0.2, 0.2], 0.9, [1.0, 1.0, 1.0])
    m.requires_grad_(True)
    img, alphas, meta = rasterize(m, q, s, o, c, viewmat, k, 24, 20, near_plane=0.01, backend="torch")
    assert float(alphas.detach().abs().max()) == 0.0 and int(meta["radii"].abs().max()) == 0
    (img.sum() + alphas.sum()).backward()
    assert float(m.grad.abs().max()) == 0.0


def _tiny_scene(dtype=F64, seed=0, n=4, c=2):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([0.6, 0.5, 0.6], dtype=dtype) + \
        torch.tensor([0.0, 0.0, 2.5], dtype=dtype)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = 0.05 + 0.1 * torch.rand(n, 3, generator=g, dtype=dtype)
    opac = 0.3 + 0.6 * torch.rand(n, generator=g, dtype=dtype)
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    viewmats = torch.eye(4, dtype=dtype).repeat(c, 1, 1)
    for i in range(1, c):  # small sideways moves and turns
        angle = 0.15 * i
        viewmats[i, :3, :3] = torch.tensor([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0],
                                            [-math.sin(angle), 0, math.cos(angle)]], dtype=dtype)
        viewmats[i, :3, 3] = torch.tensor([0.1 * i, -0.05 * i, 0.1], dtype=dtype)
    ks = torch.tensor([[18.0, 0, 7.0], [0, 18.0, 6.0], [0, 0, 1]], dtype=dtype).repeat(c, 1, 1)
    return means, quats, scales, opac, colors, viewmats, ks


def test_gradients_match_finite_differences_in_float64():
    means, quats, scales, opac, colors, viewmats, ks = _tiny_scene()
    g = torch.Generator().manual_seed(3)
    w_col = torch.rand(2, 12, 14, 4, generator=g, dtype=F64)
    w_alpha = torch.rand(2, 12, 14, 1, generator=g, dtype=F64)
    bg = torch.rand(2, 3, generator=g, dtype=F64)

    def loss(m, q, s, o, c):
        img, alpha, _ = rasterize(m, q, s, o, c, viewmats, ks, 14, 12, backgrounds=bg, render_mode="RGB+ED",
                                  backend="torch")
        return (img * w_col).sum() + (alpha * w_alpha).sum()

    inputs = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
    loss(*inputs).backward()
    for t in inputs:  # every input really gets a gradient
        assert float(t.grad.abs().sum()) > 0


def test_chunked_passes_match_one_pass(monkeypatch):
    means, quats, scales, opac, colors, viewmats, ks = _tiny_scene(n=30, seed=5)
    inputs = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]

    def run():
        img, alpha, meta = rasterize(*inputs, viewmats, ks, 14, 12, render_mode="RGB+D", backend="torch")
        grads = torch.autograd.grad((img.sum() + alpha.square().sum()), inputs)
        return img.detach(), alpha.detach(), grads, meta["n_drawn"]

    img1, alpha1, grads1, drawn = run()
    assert drawn > 200
    monkeypatch.setattr(splats_module, "ENTRIES_PER_CHUNK", 40)
    monkeypatch.setattr(splats_module, "DRAWN_PER_CHUNK", 50)
    img2, alpha2, grads2, _ = run()
    torch.testing.assert_close(img1, img2)
    torch.testing.assert_close(alpha1, alpha2)
    for a, b in zip(grads1, grads2):
        torch.testing.assert_close(a, b)


def test_batch_dims_and_per_camera_colors_follow_gsplat_shapes():
    scenes = [_tiny_scene(dtype=torch.float32, seed=s, n=5, c=3) for s in range(6)]
    stacked = [torch.stack([sc[i] for sc in scenes]).reshape(2, 3, *scenes[0][i].shape) for i in range(7)]
    bg = torch.rand(2, 3, 3, 3)
    img, alpha, meta = rasterize(*stacked, 14, 12, backgrounds=bg, render_mode="RGB+ED", backend="torch")
    assert img.shape == (2, 3, 3, 12, 14, 4) and alpha.shape == (2, 3, 3, 12, 14, 1)
    assert meta["radii"].shape == (2, 3, 3, 5, 2) and meta["radii"].dtype == torch.int32
    assert meta["depths"].shape == (2, 3, 3, 5) and meta["conics"].shape == (2, 3, 3, 5, 3)
    for b in range(2):
        for a in range(3):
            single = rasterize(*scenes[b * 3 + a], 14, 12, backgrounds=bg[b, a], render_mode="RGB+ED", backend="torch")
            torch.testing.assert_close(img[b, a], single[0])
            torch.testing.assert_close(alpha[b, a], single[1])
    # colours given per camera equal the same colours broadcast
    means, quats, scales, opac, colors, viewmats, ks = scenes[0]
    per_camera = colors[None].expand(3, -1, -1)
    torch.testing.assert_close(rasterize(means, quats, scales, opac, per_camera, viewmats, ks, 14, 12)[0],
                               rasterize(means, quats, scales, opac, colors, viewmats, ks, 14, 12)[0])
    # any number of channels
    many = torch.rand(5, 11)
    out = rasterize(means, quats, scales, opac, many, viewmats, ks, 14, 12, render_mode="RGB+D")[0]
    assert out.shape == (3, 12, 14, 12)


def test_bad_input_raises_value_error():
    means, quats, scales, opac, colors, viewmats, ks = _tiny_scene(n=3, c=1)
    good = dict(means=means, quats=quats, scales=scales, opacities=opac, colors=colors, viewmats=viewmats, Ks=ks,
                width=14, height=12)
    bad_cases = [
        dict(means=means[:, :2]),
        dict(quats=quats[:2]),
        dict(scales=scales[None]),
        dict(opacities=opac[:, None]),
        dict(colors=colors[:2]),
        dict(viewmats=viewmats[0]),
        dict(Ks=ks[:, :2]),
        dict(width=0),
        dict(height=2.5),
        dict(means=means.clone().index_fill_(0, torch.tensor([1]), float("nan"))),
        dict(scales=scales.clone().index_fill_(0, torch.tensor([0]), float("inf"))),
        dict(quats=quats.clone().index_fill_(0, torch.tensor([2]), 0.0)),
        dict(render_mode="RGBD"),
        dict(backend="cuda"),
        dict(backgrounds=torch.zeros(1, 4, dtype=F64)),
        dict(near_plane=2.0, far_plane=1.0),
    ]
    for case in bad_cases:
        with pytest.raises(ValueError):
            rasterize(**{**good, **case})
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            rasterize(**good, backend="gsplat")
    assert rasterize(**good, backend="auto")[2]["backend"] == "torch"  # CPU tensors


def test_auto_backend_logs_why_it_uses_torch_once(caplog, monkeypatch):
    monkeypatch.setattr(splats_module, "_LOGGED", set())
    scene = _tiny_scene(n=3, c=1)
    with caplog.at_level("INFO", logger="engine.render.splats"):
        for _ in range(2):
            assert rasterize(*scene, 14, 12, backend="auto")[2]["backend"] == "torch"
    messages = [r.getMessage() for r in caplog.records if r.name == "engine.render.splats"]
    assert len(messages) == 1 and "torch backend" in messages[0] and "CUDA" in messages[0]


# --- the adapter: GaussianSplats + orbit cameras -> RenderOutput ------------------------------------


class AnalyticSphere:
    """A signed-distance sphere for the volume renderer."""

    def __init__(self, radius: float, colour=(0.8, 0.3, 0.2)):
        self.radius, self.colour = radius, torch.tensor(colour)
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def __len__(self) -> int:
        return 1

    def sample(self, points):
        norm = points.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        return norm[..., 0] - self.radius, self.colour.expand_as(points), points / norm


def _splat_sphere(radius: float, n: int, colour=(0.8, 0.3, 0.2)) -> GaussianSplats:
    """n flat Gaussians on a Fibonacci lattice of the sphere, thin axis along the outward normal."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = i * math.pi * (3 - math.sqrt(5))
    normal = torch.stack([torch.sqrt(1 - z * z) * torch.cos(phi), torch.sqrt(1 - z * z) * torch.sin(phi), z], -1)
    # quaternion turning +z onto the normal: axis z x n, half angle
    axis = torch.stack([-normal[:, 1], normal[:, 0], torch.zeros(n, dtype=torch.float64)], -1)
    half = torch.acos(normal[:, 2].clamp(-1, 1)) / 2
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    quats = torch.cat([torch.cos(half)[:, None], axis * torch.sin(half)[:, None]], -1)
    spacing = math.sqrt(4 * math.pi * radius**2 / n)
    scales = torch.tensor([spacing * 0.5, spacing * 0.5, spacing * 0.02]).expand(n, 3)
    return GaussianSplats(
        means=(normal * radius).float()[None], quats=quats.float()[None], scales=scales.float()[None].clone(),
        opacities=torch.full((1, n), 0.95), colors=torch.tensor(colour).expand(1, n, 3).clone())


def test_splat_sphere_matches_the_sdf_sphere_through_the_volume_renderer():
    # Splats seen edge-on at the rim and the eps2d blur widen the silhouette by about a pixel, and
    # expected depth uses Gaussian centres, which biases it ~0.01 towards the camera on oblique
    # surfaces: hence IoU > 0.9 at 128 px and a median depth difference < 0.025 world units.
    radius, res = 0.6, 128
    cams = Cameras(torch.tensor([30.0, 200.0]), torch.tensor([10.0, -25.0]), torch.tensor([3.0, 2.5]),
                   torch.tensor([40.0, 50.0]))
    volume = render(AnalyticSphere(radius), cams, VolumeRenderConfig(resolution=res, samples=96))
    splat = render(_splat_sphere(radius, 10000), cams, VolumeRenderConfig(resolution=res))
    for name in ("rgb", "albedo", "alpha", "depth", "normal"):
        assert getattr(splat, name).shape == getattr(volume, name).shape
    sil_v, sil_s = volume.alpha[:, :, 0] > 0.5, splat.alpha[:, :, 0] > 0.5
    iou = float((sil_v & sil_s).sum()) / float((sil_v | sil_s).sum())
    assert iou > 0.9, iou
    both = sil_v & sil_s
    depth_error = (volume.depth[:, :, 0][both] - splat.depth[:, :, 0][both]).abs()
    assert float(depth_error.median()) < 0.025, float(depth_error.median())  # world units, camera 2.5-3 away
    # shading uses the same key light: interior colours agree
    interior = (volume.alpha[:, :, 0] > 0.99) & (splat.alpha[:, :, 0] > 0.99)
    rgb_error = (volume.rgb - splat.rgb).abs().permute(0, 1, 3, 4, 2)[interior]
    assert float(rgb_error.median()) < 0.05, float(rgb_error.median())
    # background: colour, zero depth and normal
    assert torch.allclose(splat.rgb[0, 0, :, 0, 0], torch.ones(3)) and float(splat.depth[0, 0, 0, 0, 0]) == 0.0
    assert float(splat.normal[0, 0, :, 0, 0].abs().max()) == 0.0


def test_adapter_normals_point_outward_and_depth_is_along_the_ray():
    radius, res = 0.6, 48
    cams = Cameras(torch.tensor([0.0, 120.0, 250.0]), torch.tensor([20.0, 60.0, -40.0]), torch.full((3,), 3.0),
                   torch.full((3,), 40.0))
    out = render_splats(_splat_sphere(radius, 4000), cams, SplatRenderConfig(resolution=res, backend="torch"))
    origins, dirs = camera_rays(cams, res)
    covered = out.alpha[0, :, 0] > 0.9  # (V, R, R)
    points = origins + dirs * out.depth[0, :, 0, ..., None]
    outward = points / points.norm(dim=-1, keepdim=True)
    normal = torch.nn.functional.normalize(out.normal[0].permute(0, 2, 3, 1), dim=-1)
    cosine = (normal * outward).sum(-1)[covered]
    assert covered.sum() > 500
    assert float(cosine.min()) > 0.0 and float(cosine.median()) > 0.98
    # the surface points sit on the sphere (to the centre-depth bias of splats, see the test above)
    assert float((points.norm(dim=-1)[covered] - radius).abs().median()) < 0.025


def test_camera_conversion_puts_a_gaussian_on_the_pixel_its_ray_passes():
    res = 32
    cams = Cameras(torch.tensor([75.0]), torch.tensor([35.0]), torch.tensor([3.0]), torch.tensor([45.0]))
    origins, dirs = camera_rays(cams, res)
    row, col = 9, 22
    point = origins[0, row, col] + 2.7 * dirs[0, row, col]
    splats = GaussianSplats(point[None, None], torch.tensor([[[1.0, 0.0, 0.0, 0.0]]]), torch.full((1, 1, 3), 0.01),
                            torch.full((1, 1), 0.9), torch.ones(1, 1, 3))
    out = render(splats, cams, SplatRenderConfig(resolution=res, backend="torch"))
    alpha = out.alpha[0, 0, 0]
    assert divmod(int(alpha.argmax()), res) == (row, col)
    assert float(out.depth[0, 0, 0, row, col]) == pytest.approx(2.7, abs=1e-4)
    viewmats, ks = camera_matrices(cams, res)
    assert torch.allclose(viewmats[0, :3, :3] @ viewmats[0, :3, :3].T, torch.eye(3), atol=1e-6)


def test_render_gradients_reach_every_splat_field():
    splats = _splat_sphere(0.6, 300)
    fields = {k: getattr(splats, k).clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities", "colors")}
    cams = Cameras(torch.tensor([10.0, 100.0]), torch.tensor([20.0, 20.0]), torch.full((2,), 3.0), torch.full((2,), 40.0))
    out = render(GaussianSplats(**fields), cams, VolumeRenderConfig(resolution=24))
    (out.rgb.sum() + out.depth.sum() + out.normal.sum() + out.alpha.sum()).backward()
    for name, t in fields.items():
        assert t.grad is not None and torch.isfinite(t.grad).all() and float(t.grad.abs().sum()) > 0, name


def test_adapter_gradients_match_finite_differences_in_float64():
    g = torch.Generator().manual_seed(7)
    n = 5
    means = (torch.rand(1, n, 3, generator=g, dtype=F64) - 0.5) * 0.6
    quats = torch.randn(1, n, 4, generator=g, dtype=F64)
    scales = torch.tensor([0.12, 0.07, 0.02], dtype=F64) * (1 + 0.2 * torch.rand(1, n, 3, generator=g, dtype=F64))
    opac = 0.3 + 0.6 * torch.rand(1, n, generator=g, dtype=F64)
    colors = torch.rand(1, n, 3, generator=g, dtype=F64)
    cams = Cameras(torch.tensor([20.0, 140.0]), torch.tensor([15.0, -10.0]), torch.full((2,), 2.5), torch.full((2,), 40.0))
    config = SplatRenderConfig(resolution=10, backend="torch", background=(0.2, 0.4, 0.6))
    weights = {k: torch.rand(1, 2, c, 10, 10, generator=g, dtype=F64) for k, c in (("rgb", 3), ("albedo", 3),
                                                                                   ("alpha", 1), ("depth", 1), ("normal", 3))}

    def loss(m, q, s, o, c):
        out = render_splats(GaussianSplats(m, q, s, o, c), cams, config)
        return sum((getattr(out, k) * w).sum() for k, w in weights.items())

    inputs = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
    out = render_splats(GaussianSplats(means, quats, scales, opac, colors), cams, config)
    assert float(out.alpha.max()) > 0.5 and int((out.alpha > 0.01).sum()) > 20  # the scene is really seen


@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat parity needs CUDA")
def test_torch_backend_matches_gsplat_on_random_scenes():
    pytest.importorskip("gsplat")
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        n, c, res = 2000, 3, 64
        means = (torch.rand(n, 3, generator=g) * 2 - 1)
        quats = torch.randn(n, 4, generator=g)
        scales = torch.exp(torch.empty(n, 3).uniform_(math.log(0.005), math.log(0.08), generator=g))
        opac = torch.rand(n, generator=g)
        colors = torch.rand(n, 3, generator=g)
        cams = Cameras(torch.rand(c, generator=g) * 360, torch.rand(c, generator=g) * 60 - 30, torch.full((c,), 3.0),
                       torch.full((c,), 40.0))
        viewmats, ks = camera_matrices(cams, res)
        args = [t.cuda() for t in (means, quats, scales, opac, colors, viewmats, ks)]
        bg = torch.rand(c, 3, generator=g).cuda()
        inputs_t = [a.clone().requires_grad_(True) for a in args[:5]]
        inputs_g = [a.clone().requires_grad_(True) for a in args[:5]]
        out_t = rasterize(*inputs_t, *args[5:], res, res, backgrounds=bg, render_mode="RGB+ED", backend="torch")
        out_g = rasterize(*inputs_g, *args[5:], res, res, backgrounds=bg, render_mode="RGB+ED", backend="gsplat")
        assert out_g[2]["backend"] == "gsplat"
        # Float32 rounding (gsplat uses fast exp/log) can flip a contribution across the 1/255 or 1e-4
        # thresholds on a few pixels, so compare robustly: tiny mean error, rare larger ones.
        for a, b in ((out_t[1], out_g[1]), (out_t[0][..., :3], out_g[0][..., :3])):
            err = (a - b).abs()
            assert float(err.mean()) < 1e-4 and float((err > 1e-3).float().mean()) < 1e-3, float(err.max())
        opaque = (out_g[1][..., 0] > 0.5) & (out_t[1][..., 0] > 0.5)
        depth_err = (out_t[0][..., 3] - out_g[0][..., 3])[opaque].abs()
        assert float(depth_err.median()) < 1e-4
        radii_t, radii_g = out_t[2]["radii"], out_g[2]["radii"]
        assert int((radii_t - radii_g).abs().max()) <= 1 and float((radii_t != radii_g).float().mean()) < 1e-3
        w = torch.rand_like(out_t[0])
        grads_t = torch.autograd.grad((out_t[0][..., :3] * w[..., :3]).sum() + out_t[1].sum(), inputs_t)
        grads_g = torch.autograd.grad((out_g[0][..., :3] * w[..., :3]).sum() + out_g[1].sum(), inputs_g)
        for a, b in zip(grads_t, grads_g):
            cosine = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
            assert float(cosine) > 0.99 and abs(float(a.norm() / b.norm()) - 1) < 0.05


def test_quaternion_multiply_composes_rotations_in_wxyz_order():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 4, generator=g, dtype=F64), torch.randn(7, 4, generator=g, dtype=F64)
    product = quaternion_multiply(a, b)
    assert torch.allclose(quats_to_rotmats(product), quats_to_rotmats(a) @ quats_to_rotmats(b), atol=1e-12)
    assert torch.allclose(product.norm(dim=-1), a.norm(dim=-1) * b.norm(dim=-1), atol=1e-12)
    # Broadcasting, and the order matters: 90 degrees about X, then about Z, takes e_y to e_z, e_x to e_y.
    h = math.sqrt(0.5)
    about_z, about_x = torch.tensor([h, 0.0, 0.0, h], dtype=F64), torch.tensor([h, h, 0.0, 0.0], dtype=F64)
    both = quaternion_multiply(about_z, about_x.expand(3, 4))
    assert both.shape == (3, 4) and torch.allclose(both, torch.full((3, 4), 0.5, dtype=F64), atol=1e-15)
    rot = quats_to_rotmats(both[0])
    assert torch.allclose(rot @ torch.tensor([0.0, 1.0, 0.0], dtype=F64), torch.tensor([0.0, 0.0, 1.0], dtype=F64))
    assert torch.allclose(rot @ torch.tensor([1.0, 0.0, 0.0], dtype=F64), torch.tensor([0.0, 1.0, 0.0], dtype=F64))
    assert not torch.allclose(quaternion_multiply(about_x, about_z), both[0])

"""DiffSplat's cameras, Plücker rays, splatter-image decoding and frame conversion, against closed
forms (no weights needed)."""
from __future__ import annotations

import math

import pytest
import torch

from engine.models.diffsplat.cameras import orbit_camera_to_world, plucker_rays, unproject
from engine.models.diffsplat.frames import gaussians_to_engine, points_to_engine
from engine.models.diffsplat.settings import DiffSplatSettings, read_settings, settings_from_dict
from engine.models.diffsplat.splatter import splatter_to_gaussians
from engine.render.cameras import OrbitConfig, camera_positions, orbit_cameras
from engine.render.splats import quaternion_multiply, quats_to_rotmats

OFFICIAL = DiffSplatSettings()


def test_official_orbit_cameras_sit_where_the_official_code_puts_them():
    c2w = orbit_camera_to_world(OFFICIAL)
    r, el = 1.4, math.radians(10)
    expected = torch.tensor([[0, r * math.sin(el), r * math.cos(el)], [r * math.cos(el), r * math.sin(el), 0],
                             [0, r * math.sin(el), -r * math.cos(el)], [-r * math.cos(el), r * math.sin(el), 0]],
                            dtype=torch.float64)
    assert torch.allclose(c2w[:, :3, 3], expected, atol=1e-12)  # azimuth 0 on +Z, 90 on +X, above the ground
    rot = c2w[:, :3, :3]
    assert torch.allclose(rot.transpose(1, 2) @ rot, torch.eye(3, dtype=torch.float64).expand(4, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(4, dtype=torch.float64))
    forward = rot[:, :, 2]  # OpenCV: +z looks into the scene, at the origin
    assert torch.allclose(forward, -expected / r, atol=1e-12)
    assert (rot[:, 1, 1] < 0).all()  # OpenCV +y is image-down: against world +Y


def test_plucker_rays_are_the_official_buggy_quadrant_and_the_centred_rays_without_the_bug():
    c2w = orbit_camera_to_world(OFFICIAL)
    f, res = OFFICIAL.focal, 256
    buggy = plucker_rays(c2w, f, res, bug=True)
    fixed = plucker_rays(c2w, f, res, bug=False)
    assert buggy.shape == fixed.shape == (4, 6, res, res)
    forward = c2w[:, :3, 2]
    # bug=True: pixel (0, 0) looks straight ahead and the last pixel along (1, 1, f) / |.| in the camera.
    assert torch.allclose(buggy[:, 3:, 0, 0], forward, atol=1e-12)
    corner = c2w[:, :3, :3] @ torch.tensor([1 / f, 1 / f, 1.0], dtype=torch.float64)
    assert torch.allclose(buggy[:, 3:, -1, -1], corner / corner.norm(dim=-1, keepdim=True), atol=1e-12)
    # bug=False: symmetric about the optical axis.
    mean_dir = fixed[:, 3:].mean((2, 3))
    assert torch.allclose(mean_dir / mean_dir.norm(dim=-1, keepdim=True), forward, atol=1e-6)
    for rays in (buggy, fixed):  # unit directions and moments o x d
        d, m = rays[:, 3:], rays[:, :3]
        assert torch.allclose(d.norm(dim=1), torch.ones(4, res, res, dtype=torch.float64))
        o = c2w[:, :3, 3, None, None]
        assert torch.allclose(m, torch.linalg.cross(o.expand_as(d), d, dim=1), atol=1e-12)


def test_unprojected_depth_projects_back_to_its_pixel():
    c2w = orbit_camera_to_world(OFFICIAL)
    depth = 1.4 + 0.3 * torch.rand(1, 4, 5, 7, dtype=torch.float64)
    points = unproject(depth, c2w, OFFICIAL.focal)  # (1, 4, 5, 7, 3)
    w2c = torch.linalg.inv(c2w)
    cam = torch.einsum("vij,bvhwj->bvhwi", w2c[:, :3, :3], points) + w2c[None, :, None, None, :3, 3]
    assert torch.allclose(cam[..., 2], depth)
    u = cam[..., 0] / cam[..., 2] * OFFICIAL.focal + 0.5
    v = cam[..., 1] / cam[..., 2] * OFFICIAL.focal + 0.5
    assert torch.allclose(u[0, 0], (torch.arange(7, dtype=torch.float64) / 6).expand(5, 7))
    assert torch.allclose(v[0, 0], (torch.arange(5, dtype=torch.float64) / 4)[:, None].expand(5, 7))


def test_the_frame_conversion_is_a_proper_rotation_that_keeps_each_view_at_its_azimuth():
    c2w = orbit_camera_to_world(DiffSplatSettings(elevation=0.0))
    engine_positions = points_to_engine(c2w[:, :3, 3], 2.0)
    ours = camera_positions(orbit_cameras(OrbitConfig(views=4, elevation=0.0, radius=2.8))).double()
    assert torch.allclose(engine_positions, ours, atol=1e-6)
    up = points_to_engine(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), 1.0)
    assert torch.equal(up, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))  # Y up -> Z up
    # Rotations: the Gaussian's axes turn with the points (P R), norms and scales as promised.
    quats = torch.randn(10, 4, dtype=torch.float64)
    means, scales = torch.randn(10, 3, dtype=torch.float64), torch.rand(10, 3, dtype=torch.float64)
    m2, q2, s2 = gaussians_to_engine(means, quats, scales, 2.0)
    perm = torch.tensor([[0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=torch.float64)
    assert torch.allclose(m2, 2.0 * means @ perm.T) and torch.allclose(s2, 2.0 * scales)
    assert torch.allclose(q2.norm(dim=-1), quats.norm(dim=-1))
    assert torch.allclose(quats_to_rotmats(q2), perm @ quats_to_rotmats(quats), atol=1e-12)


def test_splatter_channels_map_to_gaussians_as_the_official_renderer_reads_them():
    settings = DiffSplatSettings(opacity_threshold=0.3)
    c2w = orbit_camera_to_world(settings)
    images = torch.rand(2, 4, 12, 3, 3, dtype=torch.float64) * 2 - 1
    images[0, 0, :, 0, 0] = torch.tensor([-1, 0, 1, -1, 1, 0, 0.5, 0.5, 0.5, 0.5, -0.8, 0.25], dtype=torch.float64)
    splats = splatter_to_gaussians(images, c2w, settings)
    assert splats.means.shape == (2, 4 * 9, 3) and splats.dtype == torch.float64
    assert torch.allclose(splats.colors[0, 0], torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    # scale: x = -1 is the largest (scale_max), x = 1 the smallest; then world_scale
    assert torch.allclose(splats.scales[0, 0], 2.0 * torch.tensor([0.02, 0.0005, 0.01025], dtype=torch.float64))
    assert splats.opacities[0, 0] == 0.0  # (x + 1) / 2 = 0.1 <= 0.3: dropped
    assert torch.allclose(splats.quats[0, 0], quaternion_multiply(torch.full((4,), 0.5, dtype=torch.float64),
                                                                  torch.full((4,), 0.5, dtype=torch.float64)))
    # depth 0.25 + radius 1.4 along pixel (0, 0)'s unprojection, in engine units
    expected = unproject(torch.full((1, 1, 3, 3), 1.65, dtype=torch.float64), c2w[:1], settings.focal)[0, 0, 0, 0]
    assert torch.allclose(splats.means[0, 0], points_to_engine(expected, 2.0))
    kept = ((images[:, :, 10] + 1) / 2).reshape(2, -1)  # (v, h, w) order
    assert torch.equal(splats.opacities > 0, kept > 0.3)
    with pytest.raises(ValueError, match="12"):
        splatter_to_gaussians(images[:, :, :11], c2w, settings)


def test_settings_file_overrides_defaults_and_refuses_what_it_cannot_read(tmp_path):
    assert read_settings(tmp_path) == DiffSplatSettings()
    (tmp_path / "diffsplat.json").write_text('{"elevation": 20, "azimuths": [0, 180], "plucker_bug": false}')
    s = read_settings(tmp_path)
    assert s.elevation == 20.0 and s.azimuths == (0.0, 180.0) and not s.plucker_bug and s.radius == 1.4
    assert settings_from_dict(s.to_dict()) == s
    for bad, match in (('{"elevaton": 20}', "unknown DiffSplat settings elevaton"),
                       ('{"radius": "far"}', "radius must be float"),
                       ('{"radius": NaN}', "not a JSON number"),
                       ('{"plucker_bug": 1}', "plucker_bug must be bool"),
                       ('{"scale_min": 0.5, "scale_max": 0.1}', "scale_min <= scale_max")):
        (tmp_path / "diffsplat.json").write_text(bad)
        with pytest.raises(ValueError, match=match):
            read_settings(tmp_path)

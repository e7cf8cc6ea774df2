import pytest
import torch

from engine.render.cameras import (Cameras, OrbitConfig, camera_positions, camera_rays, camera_to_world,
                                   cameras_from_positions, orbit_cameras)


def _cams(az, el, r=3.0, fov=40.0):
    t = lambda v: torch.tensor([float(v)])  # noqa: E731
    return Cameras(t(az), t(el), t(r), t(fov))


def test_positions_follow_azimuth_and_elevation():
    assert torch.allclose(camera_positions(_cams(0, 0)), torch.tensor([[3.0, 0.0, 0.0]]), atol=1e-6)
    assert torch.allclose(camera_positions(_cams(90, 0)), torch.tensor([[0.0, 3.0, 0.0]]), atol=1e-6)
    assert torch.allclose(camera_positions(_cams(0, 90)), torch.tensor([[0.0, 0.0, 3.0]]), atol=1e-5)


def test_camera_frame_is_orthonormal_and_looks_at_origin():
    m = camera_to_world(_cams(30, 20))[0]
    rot = m[:3, :3]
    assert torch.allclose(rot.T @ rot, torch.eye(3), atol=1e-5)
    assert torch.isclose(torch.det(rot), torch.tensor(1.0), atol=1e-5)
    look = -rot[:, 2]
    assert torch.allclose(look, -m[:3, 3] / m[:3, 3].norm(), atol=1e-5)


def test_rays_top_row_points_up_and_centre_hits_origin():
    origins, dirs = camera_rays(_cams(0, 0), 5)
    centre = dirs[0, 2, 2]
    assert torch.allclose(centre, torch.tensor([-1.0, 0.0, 0.0]), atol=1e-5)
    assert dirs[0, 0, 2, 2] > 0 > dirs[0, 4, 2, 2]  # row 0 is the top of the image
    # Facing -X with Z up, the camera's right hand points to +Y (right = forward x up).
    assert dirs[0, 2, 4, 1] > 0 > dirs[0, 2, 0, 1]
    half = torch.tan(torch.deg2rad(torch.tensor(20.0)))
    corner = dirs[0, 2, 4]
    assert torch.isclose(corner[1].abs() / corner[0].abs(), half * 0.8, atol=1e-4)  # pixel centre at 4.5/5


def test_orbit_config_azimuths_and_jitter():
    cams = orbit_cameras(OrbitConfig(views=4))
    assert cams.azimuth.tolist() == [0.0, 90.0, 180.0, 270.0]
    g = torch.Generator().manual_seed(0)
    jit = orbit_cameras(OrbitConfig(views=4, random_azimuth=True, elevation_jitter=5.0), g)
    steps = (jit.azimuth[1:] - jit.azimuth[:-1]).tolist()
    assert torch.allclose(torch.tensor(steps), torch.full((3,), 90.0)) and 0 < float(jit.azimuth[0]) < 90
    assert ((jit.elevation - 20).abs() <= 5).all() and (jit.elevation != 20).any()


def test_cameras_from_positions_invert_camera_positions_and_look_at_the_origin():
    positions = torch.tensor([[3.0, 0.0, 0.0], [0.0, -2.0, 0.5], [1.0, 2.0, -2.0], [-2.5, -0.1, 1.0],
                              [0.0, 0.0, 3.0], [0.0, 0.0, -3.0]], dtype=torch.float64)
    cams = cameras_from_positions(positions, 35.0)
    assert cams.azimuth.dtype == torch.float64 and torch.equal(cams.fov, torch.full((6,), 35.0, dtype=torch.float64))
    assert torch.allclose(camera_positions(cams), positions, atol=1e-12)
    assert cams.elevation[4] == 90.0 and cams.elevation[5] == -90.0  # straight above / below
    c2w = camera_to_world(cams)
    assert torch.isfinite(c2w).all()
    rot = c2w[:, :3, :3]
    assert torch.allclose(rot.transpose(1, 2) @ rot, torch.eye(3, dtype=torch.float64).expand(6, 3, 3), atol=1e-12)
    assert torch.allclose(torch.det(rot), torch.ones(6, dtype=torch.float64), atol=1e-12)
    # Blender frame: the camera looks down its local -Z, at the origin.
    assert torch.allclose(-rot[:, :, 2], -positions / positions.norm(dim=1, keepdim=True), atol=1e-12)
    # Image-up leans towards +Z wherever the camera is not on the Z axis.
    assert (rot[:4, 2, 1] > 0).all()


def test_cameras_from_positions_reject_bad_input():
    for bad in (torch.zeros(1, 3), torch.tensor([[1.0, float("nan"), 0.0]]), torch.ones(2, 2)):
        with pytest.raises(ValueError):
            cameras_from_positions(bad, 40.0)

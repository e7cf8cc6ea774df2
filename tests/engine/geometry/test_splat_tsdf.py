"""The TSDF fusion's cameras: the orbit cameras' convention, in the OpenCV world-to-camera form the
splat rasteriser takes (x right, y down, z forward)."""
import torch

from engine.geometry.splat_tsdf import fibonacci_directions, tsdf_cameras
from engine.render.splat_render import camera_matrices

F64 = torch.float64


def test_view_matrices_put_the_origin_on_the_optical_axis_in_front_with_z_up_in_the_image():
    distance, size = 2.5, 64
    viewmats, ks = camera_matrices(tsdf_cameras(24, distance), size, "cpu", F64)
    rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3, dtype=F64).expand(24, 3, 3), atol=1e-12)
    assert torch.allclose(torch.det(rot), torch.ones(24, dtype=F64), atol=1e-12)
    # Camera centres on the Fibonacci directions, and the origin straight ahead at that distance.
    centres = -(rot.transpose(1, 2) @ trans[..., None])[..., 0]
    assert torch.allclose(centres, fibonacci_directions(24) * distance, atol=1e-12)
    assert torch.allclose(trans, torch.tensor([0.0, 0.0, distance], dtype=F64).expand(24, 3), atol=1e-12)
    pixel = ks @ trans[..., None]
    assert torch.allclose(pixel[:, :2, 0] / pixel[:, 2:, 0], torch.full((24, 2), size / 2, dtype=F64), atol=1e-9)
    # A point above the origin is above the image centre (OpenCV y points down the image), and the
    # camera's right is forward x Z (so the image is not mirrored).
    above = (rot @ torch.tensor([0.0, 0.0, 0.1], dtype=F64))[:, 1]
    assert (above < 0).all()
    forward = -centres / distance
    right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0], dtype=F64).expand(24, 3))
    assert (((rot @ right[..., None])[:, 0, 0]) > 0).all()
